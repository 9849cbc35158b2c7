// Included by host code (cuda_*.cpp, compiled by the C++ compiler) and by the kernels
// (*.cu; nvcc cannot compile fmt's headers, so those stay free of fmt).
// Status checks for CUDA and cuBLAS calls: every call is checked, and every kernel launch
// is followed by a check of the launch error (a launch that fails says so at once, with
// the kernel's name, instead of corrupting what runs after it).
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "core/error.h"

namespace pivotmt::cuda {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string("CUDA ") + what + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}
inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }
void check_cublas(cublasStatus_t s, const char* what);

// Pinned host memory (page-locked, so copies to the device are asynchronous): staging
// buffers and the per-pass metadata's host side (cuda_backend.cpp).
struct Pinned {
  void* ptr = nullptr;
  size_t bytes = 0;
  void reset(size_t n);
  void release();
  Pinned() = default;
  Pinned(const Pinned&) = delete;
  Pinned& operator=(const Pinned&) = delete;
  ~Pinned();
};

// Host data to the device without the host waiting for the copy: staged in pinned memory
// (what lets the copy run asynchronously), whose previous copy is waited for before the
// staging is rewritten (an event recorded after each copy; long done in the usual case).
class StagedUpload {
 public:
  StagedUpload() = default;
  StagedUpload(const StagedUpload&) = delete;
  StagedUpload& operator=(const StagedUpload&) = delete;
  ~StagedUpload();
  // `bytes` of `src` to device memory `dst`, ordered on `stream` (of the current device).
  void copy(const void* src, size_t bytes, void* dst, cudaStream_t stream, const char* what);

 private:
  Pinned host_;
  cudaEvent_t copied_ = nullptr;
};

// Blocks of `threads` covering n items, capped where a grid-stride loop takes over.
inline unsigned blocks_for(size_t n, unsigned threads) {
  const size_t b = (n + threads - 1) / threads;
  return unsigned(b < 65535 * 16 ? (b ? b : 1) : 65535 * 16);
}

}  // namespace pivotmt::cuda
