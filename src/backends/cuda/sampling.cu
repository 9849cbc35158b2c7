// Sampling on the device, with engine/sampling.cpp's arithmetic (the specification): so a
// sampled decode step copies a few ids back, not [rows x vocabulary] F32 logits.
//
// One block per row. A greedy row takes the first maximum. A sampled row: scores =
// logits / temperature; the k-th largest score by a radix select over the scores' order-
// preserving keys (four passes of 8 bits, a 256-bin histogram in shared memory); the tokens
// scoring at least that (ties kept, as Hugging Face) gathered into shared memory — at most
// kMaxKept, else the row is left to the host (id -1) —; then, on those few, top-p and the
// draw exactly as the host does them: sums in index order, top-p's cumulative in ascending
// (score, index) order, the final distribution in F32 and the draw's cumulative in F64.
#include <cstdint>
#include <cstring>

#include "backends/cuda/cuda_util.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"

namespace pivotmt::cuda::kernels {
namespace {

constexpr int kThreads = 1024;
constexpr int kMaxKept = 2048;  // kept tokens sorted in shared memory (top-k plus its ties)

struct Kept {
  float score;
  int index;
  int removed;  // by top-p
};

// Unsigned keys in the order of the floats (negative ones reversed).
__device__ __forceinline__ uint32_t order_key(float f) {
  uint32_t b;
  memcpy(&b, &f, 4);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float from_order_key(uint32_t k) {
  const uint32_t b = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
  float f;
  memcpy(&f, &b, 4);
  return f;
}

__device__ __forceinline__ bool by_index(const Kept& a, const Kept& b) { return a.index < b.index; }
__device__ __forceinline__ bool by_score(const Kept& a, const Kept& b) {
  return a.score < b.score || (a.score == b.score && a.index < b.index);  // std::stable_sort's order
}

// Bitonic sort of n (a power of two) entries in shared memory by the whole block.
template <bool (*Less)(const Kept&, const Kept&)>
__device__ void bitonic_sort(Kept* e, int n) {
  for (int size = 2; size <= n; size *= 2)
    for (int stride = size / 2; stride > 0; stride /= 2) {
      for (int i = int(threadIdx.x); i < n; i += int(blockDim.x)) {
        const int j = i ^ stride;
        if (j > i && Less(e[j], e[i]) == ((i & size) == 0)) {
          const Kept t = e[i];
          e[i] = e[j];
          e[j] = t;
        }
      }
      __syncthreads();
    }
}

__device__ void better(float& v, int& i, float ov, int oi) {  // first maximum
  if (ov > v || (ov == v && oi < i)) v = ov, i = oi;
}

__global__ void sample_kernel(const float* logits, int ld, int V, const DeviceSampling* params, int32_t* ids) {
  __shared__ Kept kept[kMaxKept];
  __shared__ unsigned hist[256];
  __shared__ uint32_t prefix_shared;
  __shared__ unsigned remaining_shared;
  __shared__ int count;
  __shared__ float warp_v[kThreads / 32];
  __shared__ int warp_i[kThreads / 32];
  const float* row = logits + size_t(blockIdx.x) * ld;
  const DeviceSampling p = params[blockIdx.x];
  const int tid = int(threadIdx.x);

  if (p.greedy) {
    float v = -INFINITY;
    int idx = 0x7fffffff;
    for (int c = tid; c < V; c += int(blockDim.x)) better(v, idx, row[c], c);
    for (int o = 16; o > 0; o /= 2)
      better(v, idx, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, idx, o));
    if (tid % 32 == 0) warp_v[tid / 32] = v, warp_i[tid / 32] = idx;
    __syncthreads();
    if (tid == 0) {
      for (int w = 1; w < int(blockDim.x) / 32; ++w) better(v, idx, warp_v[w], warp_i[w]);
      ids[blockIdx.x] = idx == 0x7fffffff ? 0 : idx;
    }
    return;
  }

  // The k-th largest score: 8 bits of its key per pass, from the top.
  uint32_t prefix = 0, mask = 0;
  unsigned remaining = unsigned(p.top_k);
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = tid; b < 256; b += int(blockDim.x)) hist[b] = 0;
    __syncthreads();
    for (int i = tid; i < V; i += int(blockDim.x)) {
      const uint32_t key = order_key(row[i] / p.temperature);
      if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (tid == 0) {
      int b = 255;
      for (; b > 0 && remaining > hist[b]; --b) remaining -= hist[b];
      prefix_shared = prefix | (uint32_t(b) << shift);
      remaining_shared = remaining;
      count = 0;
    }
    __syncthreads();
    prefix = prefix_shared;
    remaining = remaining_shared;
    mask |= 255u << shift;
    __syncthreads();  // hist is read by thread 0 above before the next pass clears it
  }
  const float kth = from_order_key(prefix);

  // The kept tokens (top-k with its ties), in any order for now.
  for (int i = tid; i < V; i += int(blockDim.x)) {
    const float s = row[i] / p.temperature;
    if (s >= kth) {
      const int at = atomicAdd(&count, 1);
      if (at < kMaxKept) kept[at] = {s, i, 0};
    }
  }
  __syncthreads();
  const int m = count;
  if (m > kMaxKept) {  // too many ties at the k-th score: the host samples this row
    if (tid == 0) ids[blockIdx.x] = -1;
    return;
  }
  int n = 1;
  while (n < m) n *= 2;
  for (int i = m + tid; i < n; i += int(blockDim.x)) kept[i] = {INFINITY, 0x7fffffff, 1};
  __syncthreads();
  bitonic_sort<by_index>(kept, n);

  if (p.top_p < 1.0f) {
    // Drop the lowest tokens whose cumulative probability stays <= 1 - p, the highest kept.
    __shared__ double total_shared;
    __shared__ float top_shared;
    if (tid == 0) {
      float top = -INFINITY;
      for (int i = 0; i < m; ++i) top = fmaxf(top, kept[i].score);
      double total = 0;
      for (int i = 0; i < m; ++i) total += exp(double(kept[i].score - top));  // index order, as the host
      total_shared = total;
      top_shared = top;
    }
    __syncthreads();
    bitonic_sort<by_score>(kept, n);
    if (tid == 0) {
      double cumulative = 0;
      for (int r = 0; r + 1 < m; ++r) {
        cumulative += exp(double(kept[r].score - top_shared)) / total_shared;
        if (cumulative <= 1.0 - double(p.top_p)) kept[r].removed = 1;
      }
    }
    __syncthreads();
    bitonic_sort<by_index>(kept, n);
  }

  if (tid == 0) {  // the distribution in F32 and the draw, in index order
    float top = -INFINITY;
    for (int i = 0; i < m; ++i)
      if (!kept[i].removed) top = fmaxf(top, kept[i].score);
    double total = 0;
    for (int i = 0; i < m; ++i)
      if (!kept[i].removed) total += double(expf(kept[i].score - top));
    double cumulative = 0;
    int last = 0, chosen = -1;
    for (int i = 0; i < m && chosen < 0; ++i) {
      if (kept[i].removed) continue;
      const float d = float(double(expf(kept[i].score - top)) / total);
      if (d <= 0) continue;
      cumulative += d;
      last = kept[i].index;
      if (p.u < cumulative) chosen = kept[i].index;
    }
    ids[blockIdx.x] = chosen >= 0 ? chosen : last;
  }
}

}  // namespace

bool sampling_supported(int top_k, int V) { return top_k >= 1 && top_k < V && top_k <= kMaxSampledTopK; }

void sample_rows(const float* logits, int ld, int rows, int V, const DeviceSampling* params, int32_t* ids,
                 cudaStream_t s) {
  if (rows == 0) return;
  launch("sample_kernel", sample_kernel, rows, kThreads, s, logits, ld, V, params, ids);
}

}  // namespace pivotmt::cuda::kernels
