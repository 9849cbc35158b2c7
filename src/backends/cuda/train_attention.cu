// Training attention's kernels for the tensor-core path (cuda/train_attention.cpp): the
// elementwise and row-wise steps between its cuBLAS GEMMs. Every value a GEMM will read is
// rounded here to TF32 (round to nearest even, 10 mantissa bits): the tensor cores read only
// the top 10 bits of an F32 input, so unrounded inputs would be truncated — a bias of half a
// TF32 unit per operand (~1e-3 relative on each product) rather than an unbiased rounding.
#include <cstdint>

#include "backends/cuda/block_reduce.cuh"
#include "backends/cuda/cuda_util.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "core/error.h"

namespace pivotmt::cuda::kernels {
namespace {

constexpr int kThreads = kMaxBlockThreads;

__device__ float tf32_round(float x) {
  uint32_t u = __float_as_uint(x);
  if ((u & 0x7f800000u) == 0x7f800000u) return x;  // infinities and NaNs as they are
  u += 0xfffu + ((u >> 13) & 1u);                  // to nearest, ties to the even TF32 value
  return __uint_as_float(u & ~0x1fffu);
}

// out [rows, cols] (contiguous) = in [rows, cols] (ld apart) rounded to TF32.
__global__ void tf32_round_kernel(const float* in, int rows, int cols, int ld, float* out) {
  const size_t n = size_t(rows) * cols;
  for (size_t e = blockIdx.x * size_t(blockDim.x) + threadIdx.x; e < n; e += size_t(gridDim.x) * blockDim.x) {
    const size_t r = e / size_t(cols), c = e % size_t(cols);
    out[e] = tf32_round(in[r * size_t(ld) + c]);
  }
}

__device__ bool visible(int i, int j, int window) { return j <= i && (window == 0 || i - j < window); }

// One block per row of S [heads, R, Tk] (head h's row i at (h R + i) ld): the scaled scores
// of query position r0 + i against key positions k0 .. k0 + Tk − 1 become the probabilities
// exp(s − lse) where visible (else 0), rounded to TF32. lse [heads, T]: read from
// saved_lse (backward), or computed as max + log Σ exp(s − max) and stored in lse_out.
__global__ void probabilities_kernel(float* S, int R, int Tk, int ld, int r0, int k0, int window, int T,
                                     const float* saved_lse, float* lse_out) {
  const int h = int(blockIdx.x) / R, i = int(blockIdx.x) % R, qi = r0 + i;
  float* row = S + size_t(blockIdx.x) * ld;
  const size_t at = size_t(h) * T + qi;
  float l;
  if (saved_lse) {
    l = saved_lse[at];
  } else {
    float m = -INFINITY;
    for (int j = threadIdx.x; j < Tk; j += blockDim.x)
      if (visible(qi, k0 + j, window)) m = fmaxf(m, row[j]);
    m = block_max(m);
    double s = 0;
    for (int j = threadIdx.x; j < Tk; j += blockDim.x)
      if (visible(qi, k0 + j, window)) s += exp(double(row[j] - m));
    l = m + float(log(block_sum(s)));
    if (threadIdx.x == 0) lse_out[at] = l;
  }
  for (int j = threadIdx.x; j < Tk; j += blockDim.x)
    row[j] = visible(qi, k0 + j, window) ? tf32_round(expf(row[j] - l)) : 0.0f;
}

// One block per row: dS = P ⊙ (dP − D) in place in dP, rounded to TF32 (D of head h, query
// position r0 + i at D[h T + r0 + i]).
__global__ void score_gradients_kernel(const float* P, float* dP, int R, int Tk, int ld, int r0, int T, const float* D) {
  const int h = int(blockIdx.x) / R, i = int(blockIdx.x) % R;
  const float Di = D[size_t(h) * T + r0 + i];
  const size_t at = size_t(blockIdx.x) * ld;
  for (int j = threadIdx.x; j < Tk; j += blockDim.x) dP[at + j] = tf32_round(P[at + j] * (dP[at + j] - Di));
}

// One warp per (row i, head h): D[h T + i] = dO_i · O_i over the head's dims, summed in
// double as the CPU's attention_backward does.
__global__ void output_dot_kernel(const float* dout, const float* out, int T, int nh, int d, float* D) {
  const int warp = int(blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32), lane = int(threadIdx.x % 32);
  if (warp >= T * nh) return;
  const int i = warp / nh, h = warp % nh;
  const size_t at = size_t(i) * nh * d + size_t(h) * d;
  double s = 0;
  for (int c = lane; c < d; c += 32) s += double(dout[at + c]) * out[at + c];
  for (int o = 16; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (lane == 0) D[size_t(h) * T + i] = float(s);
}

}  // namespace

void train_tf32_round(const float* in, int rows, int cols, int ld, float* out, cudaStream_t s) {
  const size_t n = size_t(rows) * cols;
  if (n) launch("tf32_round_kernel", tf32_round_kernel, blocks_for(n, kThreads), kThreads, s, in, rows, cols, ld, out);
}

void train_attention_probabilities(float* S, int heads, int R, int Tk, int ld, int r0, int k0, int window, int T,
                                   const float* saved_lse, float* lse_out, cudaStream_t s) {
  if (heads * R == 0 || Tk == 0) return;
  if ((saved_lse == nullptr) == (lse_out == nullptr))
    throw Error("train_attention_probabilities: exactly one of the saved lse and the lse to write");
  launch("probabilities_kernel", probabilities_kernel, unsigned(heads * R), kThreads, s, S, R, Tk, ld, r0, k0, window,
         T, saved_lse, lse_out);
}

void train_attention_score_gradients(const float* P, float* dP, int heads, int R, int Tk, int ld, int r0, int T,
                                     const float* D, cudaStream_t s) {
  if (heads * R == 0 || Tk == 0) return;
  launch("score_gradients_kernel", score_gradients_kernel, unsigned(heads * R), kThreads, s, P, dP, R, Tk, ld, r0, T, D);
}

void train_attention_output_dot(const float* dout, const float* out, int T, int nh, int d, float* D, cudaStream_t s) {
  if (T == 0) return;
  constexpr int kWarps = 4;
  launch("output_dot_kernel", output_dot_kernel, unsigned((size_t(T) * nh + kWarps - 1) / kWarps), 32 * kWarps, s,
         dout, out, T, nh, d, D);
}

}  // namespace pivotmt::cuda::kernels
