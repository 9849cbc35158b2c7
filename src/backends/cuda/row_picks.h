// A pass's chosen tokens on the device (host side; the kernels are argmax.cu and
// sampling.cu): each logits row's argmax, or its draw under its sampling settings, computed
// where the logits are, so only the ids cross to the host — a few bytes a row, not a
// [rows × vocabulary] F32 copy. Owns the pinned and device buffers the ids and settings
// travel through (CudaOps' argmax_rows / sample_rows; split from cuda_ops.cpp).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "backends/cuda/cuda_util.h"
#include "backends/ops.h"
#include "backends/tensor.h"

namespace pivotmt::cuda {

class RowPicks {
 public:
  explicit RowPicks(Device device) : device_(device) {}
  // logits [rows, V] F32 on the device, work queued on `stream`; both wait for the ids.
  std::vector<int32_t> argmax(const Tensor& logits, cudaStream_t stream);
  // Rows whose top-k the kernel cannot keep, or whose ties overflow it, go to `on_host`
  // (Ops' host sampler) with the logits of those rows.
  using HostSampler = std::function<std::vector<int32_t>(const Tensor& logits, std::span<const RowSampling> rows)>;
  std::vector<int32_t> sample(const Tensor& logits, std::span<const RowSampling> rows, cudaStream_t stream,
                              const HostSampler& on_host);

 private:
  void reserve_ids(size_t rows);
  Device device_;
  Pinned ids_host_, sampling_host_;
  Tensor ids_device_, sampling_device_;  // the ids; the rows' DeviceSampling parameters
};

}  // namespace pivotmt::cuda
