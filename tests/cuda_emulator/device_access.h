// Emulated device memory is inaccessible to host code (PROT_NONE) but while one of these
// lives: kernels, copies and GEMMs open it; nesting is counted.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <functional>

namespace pivotmt::cuda::emu {

struct DeviceAccess {
  DeviceAccess();
  ~DeviceAccess();
  DeviceAccess(const DeviceAccess&) = delete;
  DeviceAccess& operator=(const DeviceAccess&) = delete;
};

// Whether [p, p + n) lies inside one device allocation.
bool device_range(const void* p, size_t n);

// A kernel, GEMM or graph launch issued to `stream`: recorded into its graph when the
// stream is capturing (run at each cudaGraphLaunch of the instantiated graph), deferred in
// the stream's order when it is a created stream (streams.cpp: run when something waits for
// it); both return true. On the legacy default stream it returns false (the caller runs
// `work` now) after every stream's deferred work has run.
bool capture(cudaStream_t stream, const std::function<void()>& work);

}  // namespace pivotmt::cuda::emu
