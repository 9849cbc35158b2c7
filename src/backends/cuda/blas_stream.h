// One non-blocking stream on a device with its cuBLAS handle bound to it and the handle's
// workspace: what the encoder ops and the training ops each own (the Llama ops keep their
// own, beside their graphs and events). Destroyed after the stream's work is done.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <memory>

#include "backends/backend.h"
#include "backends/cuda/cublas_loader.h"
#include "backends/cuda/cuda_util.h"

namespace pivotmt::cuda {

class BlasStream {
 public:
  explicit BlasStream(int device) : device_(device) {
    check(cudaSetDevice(device), "cudaSetDevice");
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    try {
      check_cublas(cublas().create(&blas_), "cublasCreate");
      check_cublas(cublas().set_stream(blas_, stream_), "cublasSetStream");
      workspace_ = device_alloc(device, kWorkspaceBytes);
      check_cublas(cublas().set_workspace(blas_, workspace_.get(), kWorkspaceBytes), "cublasSetWorkspace");
    } catch (...) {
      release();
      throw;
    }
  }
  ~BlasStream() { release(); }
  BlasStream(const BlasStream&) = delete;
  BlasStream& operator=(const BlasStream&) = delete;
  cudaStream_t stream() const { return stream_; }
  cublasHandle_t blas() const { return blas_; }

 private:
  static constexpr size_t kWorkspaceBytes = size_t(32) << 20;
  void release() {
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_);
    if (blas_) cublas().destroy(blas_);
    blas_ = nullptr;
    cudaStreamDestroy(stream_);
  }
  int device_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  std::shared_ptr<void> workspace_;
};

}  // namespace pivotmt::cuda
