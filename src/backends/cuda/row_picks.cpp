#include "backends/cuda/row_picks.h"

#include "backends/cuda/kernels.h"

namespace pivotmt::cuda {

void RowPicks::reserve_ids(size_t rows) {
  if (ids_host_.bytes >= rows * 4) return;
  ids_host_.reset(rows * 8);
  ids_device_ = Tensor(device_, DType::I32, 1, rows * 2);
}

std::vector<int32_t> RowPicks::argmax(const Tensor& logits, cudaStream_t stream) {
  const size_t rows = logits.rows();
  reserve_ids(rows);
  kernels::argmax_rows(logits.as<float>(), int(logits.stride()), int(rows), int(logits.cols()), ids_device_.as<int32_t>(),
                       stream);
  check(cudaMemcpyAsync(ids_host_.ptr, ids_device_.data(), rows * 4, cudaMemcpyDeviceToHost, stream), "copy ids to host");
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");  // the one wait of a greedy step: the chosen ids
  const int32_t* ids = static_cast<const int32_t*>(ids_host_.ptr);
  return std::vector<int32_t>(ids, ids + rows);
}

std::vector<int32_t> RowPicks::sample(const Tensor& logits, std::span<const RowSampling> rows, cudaStream_t stream,
                                      const HostSampler& on_host) {
  const int V = int(logits.cols());
  for (const auto& r : rows)
    if (!r.params.greedy && !kernels::sampling_supported(r.params.top_k, V)) return on_host(logits, rows);
  const size_t n = rows.size();
  if (sampling_host_.bytes < n * sizeof(kernels::DeviceSampling)) {
    sampling_host_.reset(2 * n * sizeof(kernels::DeviceSampling));
    sampling_device_ = Tensor(device_, DType::F32, 1, 2 * n * sizeof(kernels::DeviceSampling) / 4);
  }
  reserve_ids(n);
  auto* params = static_cast<kernels::DeviceSampling*>(sampling_host_.ptr);
  for (size_t r = 0; r < n; ++r) {
    const SamplingParams& p = rows[r].params;
    params[r] = {rows[r].u, p.temperature, p.top_p, p.top_k, p.greedy ? 1 : 0};
  }
  // The previous call's synchronisation finished every use of both pinned buffers.
  check(cudaMemcpyAsync(sampling_device_.data(), params, n * sizeof(kernels::DeviceSampling), cudaMemcpyHostToDevice,
                        stream),
        "copy sampling parameters");
  kernels::sample_rows(logits.as<float>(), int(logits.stride()), int(n), V,
                       static_cast<const kernels::DeviceSampling*>(sampling_device_.data()), ids_device_.as<int32_t>(),
                       stream);
  check(cudaMemcpyAsync(ids_host_.ptr, ids_device_.data(), n * 4, cudaMemcpyDeviceToHost, stream), "copy ids to host");
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  const int32_t* got = static_cast<const int32_t*>(ids_host_.ptr);
  std::vector<int32_t> ids(got, got + n);
  for (size_t r = 0; r < n; ++r)  // more ties into the top-k than the kernel keeps: this row on the host
    if (ids[r] < 0) ids[r] = on_host(logits.rows(r, 1), rows.subspan(r, 1))[0];
  return ids;
}

}  // namespace pivotmt::cuda
