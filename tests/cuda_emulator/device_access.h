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

// A kernel or GEMM issued to `stream`. Stream capture (cudaStreamBeginCapture ...
// cudaStreamEndCapture): work issued to a capturing stream is recorded into its graph, to
// run at each cudaGraphLaunch of the instantiated graph, instead of running now. Returns
// false (and keeps `work`'s call to the caller) when `stream` is not capturing, after
// running the copies deferred on it (runtime.cpp: every stream's for the legacy stream).
bool capture(cudaStream_t stream, const std::function<void()>& work);

}  // namespace pivotmt::cuda::emu
