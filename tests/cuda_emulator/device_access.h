// Emulated device memory is inaccessible to host code (PROT_NONE) but while one of these
// lives: kernels, copies and GEMMs open it; nesting is counted.
#pragma once
#include <cstddef>

namespace pivotmt::cuda::emu {

struct DeviceAccess {
  DeviceAccess();
  ~DeviceAccess();
  DeviceAccess(const DeviceAccess&) = delete;
  DeviceAccess& operator=(const DeviceAccess&) = delete;
};

// Whether [p, p + n) lies inside one device allocation.
bool device_range(const void* p, size_t n);

}  // namespace pivotmt::cuda::emu
