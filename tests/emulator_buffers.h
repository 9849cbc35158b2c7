// Device buffers for the CUDA emulator's own tests, through the backend's allocation (the
// emulated cudaMalloc) and synchronous copies.
#pragma once
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "backends/backend.h"

namespace pivotmt::test {

template <class T>
std::shared_ptr<void> upload(const std::vector<T>& v) {
  auto d = cuda::device_alloc(0, v.size() * sizeof(T));
  EXPECT_EQ(cudaMemcpy(d.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return d;
}
template <class T>
std::vector<T> download(const std::shared_ptr<void>& d, size_t n) {
  std::vector<T> v(n);
  EXPECT_EQ(cudaMemcpy(v.data(), d.get(), n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return v;
}

}  // namespace pivotmt::test
