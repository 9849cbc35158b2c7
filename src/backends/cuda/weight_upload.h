// Weights to a GPU through two pinned staging buffers: the host copies one chunk of a
// tensor's bytes into one buffer while the device copies (and, for F32 / BF16 checkpoints,
// converts to F16 in a device-side staging buffer) the other. The buffers (2 ×
// kStagingBytes pinned and on the device, backend.h) are made by the first upload and given
// back by release() once the weights are in, before the KV pool is sized from free memory.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <memory>
#include <span>

#include "backends/cuda/cuda_util.h"
#include "core/dtype.h"

namespace pivotmt::cuda {

class WeightUpload {
 public:
  WeightUpload(int device, cudaStream_t stream);
  ~WeightUpload();
  WeightUpload(const WeightUpload&) = delete;
  WeightUpload& operator=(const WeightUpload&) = delete;

  // raw: a tensor's bytes in `from` (F32, F16 or BF16) → F16 at dst (device memory).
  void to_f16(std::span<const std::byte> raw, DType from, void* dst);
  // Waits for the stream, then frees the buffers (a later upload makes them again).
  void release();

 private:
  int device_;
  cudaStream_t stream_;
  Pinned host_[2];
  std::shared_ptr<void> device_buffer_[2];
  cudaEvent_t done_[2] = {nullptr, nullptr};  // a buffer's last copy finished
};

}  // namespace pivotmt::cuda
