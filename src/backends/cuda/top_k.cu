// The beam search's view of a logits row on the device (EncoderOps::top_k): its maximum,
// log Σ e^(x − max) and its k largest logits — so a decode step of NLLB-200 copies a few
// floats a hypothesis back instead of the 256k-word row (1 MB each).
//
// One block per row: the maximum and the sum of exponentials (F32 exponentials, summed in
// double) by block reductions; then each thread keeps its own k best of a strided share of
// the row, sorted (value descending, lower index first: a thread sees its indices in
// increasing order, so equal values stay in index order), and k rounds of a block-wide
// arg-max over the threads' heads merge them into the row's k best in that same order.
#include <cfloat>
#include <climits>
#include <cstdint>
#include <string>

#include "backends/cuda/cuda_util.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"

namespace pivotmt::cuda::kernels {
namespace {

constexpr int kThreads = 256;

// a before b: the larger value, then the lower index.
__device__ __forceinline__ bool before(float av, int ai, float bv, int bi) { return av > bv || (av == bv && ai < bi); }

__device__ float block_max(float v, float* shared) {
  for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if (threadIdx.x % 32 == 0) shared[threadIdx.x / 32] = v;
  __syncthreads();
  float m = shared[0];
  for (int w = 1; w < kThreads / 32; ++w) m = fmaxf(m, shared[w]);
  return m;
}

__device__ double block_sum(double v, double* shared) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (threadIdx.x % 32 == 0) shared[threadIdx.x / 32] = v;
  __syncthreads();
  double s = 0;
  for (int w = 0; w < kThreads / 32; ++w) s += shared[w];  // in warp order: every thread the same total
  return s;
}

// The block's first (value, index) in `before` order; every thread gets it.
__device__ void block_best(float& v, int& i, float* shared_v, int* shared_i) {
  for (int o = 16; o > 0; o /= 2) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (before(ov, oi, v, i)) {
      v = ov;
      i = oi;
    }
  }
  __syncthreads();
  if (threadIdx.x % 32 == 0) {
    shared_v[threadIdx.x / 32] = v;
    shared_i[threadIdx.x / 32] = i;
  }
  __syncthreads();
  v = shared_v[0];
  i = shared_i[0];
  for (int w = 1; w < kThreads / 32; ++w)
    if (before(shared_v[w], shared_i[w], v, i)) {
      v = shared_v[w];
      i = shared_i[w];
    }
}

// stats [rows, 2]: max, log Σ e^(x − max); values / tokens [rows, k].
__global__ void top_k_kernel(const float* logits, int V, int k, float* stats, float* values, int32_t* tokens) {
  __shared__ float reduce_f[kThreads / 32];
  __shared__ double reduce_d[kThreads / 32];
  __shared__ int reduce_i[kThreads / 32];
  const float* row = logits + size_t(blockIdx.x) * size_t(V);
  float m = -INFINITY;
  for (int j = int(threadIdx.x); j < V; j += kThreads) m = fmaxf(m, row[j]);
  m = block_max(m, reduce_f);
  double s = 0;
  for (int j = int(threadIdx.x); j < V; j += kThreads) s += double(expf(row[j] - m));
  s = block_sum(s, reduce_d);

  float best_v[kMaxTopK];
  int best_i[kMaxTopK];
  int count = 0;
  for (int j = int(threadIdx.x); j < V; j += kThreads) {
    const float x = row[j];
    if (count == k && !(x > best_v[k - 1])) continue;
    int at = count < k ? count : k - 1;  // shift the smaller ones down, the last one falls off
    while (at > 0 && x > best_v[at - 1]) {
      best_v[at] = best_v[at - 1];
      best_i[at] = best_i[at - 1];
      --at;
    }
    best_v[at] = x;
    best_i[at] = j;
    if (count < k) ++count;
  }
  int head = 0;
  for (int r = 0; r < k; ++r) {
    float v = head < count ? best_v[head] : -INFINITY;
    int i = head < count ? best_i[head] : INT_MAX;
    block_best(v, i, reduce_f, reduce_i);
    if (head < count && best_i[head] == i) ++head;  // the winner's list moves on
    if (threadIdx.x == 0) {
      values[size_t(blockIdx.x) * k + r] = v;
      tokens[size_t(blockIdx.x) * k + r] = i;
    }
  }
  if (threadIdx.x == 0) {
    stats[2 * size_t(blockIdx.x)] = m;
    stats[2 * size_t(blockIdx.x) + 1] = float(log(s));
  }
}

}  // namespace

void row_top_k(const float* logits, int rows, int V, int k, float* stats, float* values, int32_t* tokens, cudaStream_t s) {
  if (k < 1 || k > kMaxTopK || k > V)
    throw Error("row_top_k: k = " + std::to_string(k) + " of rows of " + std::to_string(V) +
                " logits (1 <= k <= min(64, V))");
  if (rows) launch("top_k_kernel", top_k_kernel, unsigned(rows), kThreads, s, logits, V, k, stats, values, tokens);
}

}  // namespace pivotmt::cuda::kernels
