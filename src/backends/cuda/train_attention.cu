// Training attention's kernels for the tensor-core path (cuda/train_attention.cpp).
//
// The backward's steps between its cuBLAS GEMMs. Every value a GEMM will read is rounded
// here to TF32 (round to nearest even, 10 mantissa bits): the tensor cores read only the top
// 10 bits of an F32 input, so unrounded inputs would be truncated — a bias of half a TF32
// unit per operand (~1e-3 relative on each product) rather than an unbiased rounding.
//
// The forward, fused (head dims 64 and 128): FlashAttention-2's scheme as attention_prefill.cu
// runs it for inference, over a training sequence's contiguous F32 queries, keys and values.
// One block per (64 query rows, head), 4 warps of 16 rows; key tiles of 32 rounded to F16
// into shared memory; S = Q Kᵀ and O += P V by mma.sync (F16 in, F32 accumulate); masks,
// online softmax in registers, P rounded to F16; O and lse = max + log Σ written in F32. No
// score matrix passes through memory (the GEMM path writes and reads [heads, rows, keys]
// four times), and the backward recomputes P from this lse.
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "backends/cuda/block_reduce.cuh"
#include "backends/cuda/cuda_util.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/mma_rows.cuh"
#include "backends/cuda/ptx.cuh"
#include "backends/paged_attention.h"
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

// Row i sees key j: causal, within the sliding window (0: none) — train_ops.cpp's rule.
__device__ bool sees(int i, int j, int window) { return j <= i && (window == 0 || i - j < window); }

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
      if (sees(qi, k0 + j, window)) m = fmaxf(m, row[j]);
    m = block_max(m);
    double s = 0;
    for (int j = threadIdx.x; j < Tk; j += blockDim.x)
      if (sees(qi, k0 + j, window)) s += exp(double(row[j] - m));
    l = m + float(log(block_sum(s)));
    if (threadIdx.x == 0) lse_out[at] = l;
  }
  for (int j = threadIdx.x; j < Tk; j += blockDim.x)
    row[j] = sees(qi, k0 + j, window) ? tf32_round(expf(row[j] - l)) : 0.0f;
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

constexpr int kFusedRows = 64;  // query rows per block: 4 warps of 16
constexpr int kFusedKeys = kAttentionTileKeys;  // keys per shared-memory tile

template <int D>
struct alignas(16) KeyValueTile {
  static constexpr int Ld = D + 8;  // padded by 16 bytes: ldmatrix's 8 row addresses in distinct banks
  __half k[kFusedKeys][Ld];
  __half v[kFusedKeys][Ld];
};

__device__ __forceinline__ uint32_t half_pair(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  uint32_t bits;
  memcpy(&bits, &h, sizeof(bits));
  return bits;
}

template <int D>
__global__ void fused_forward_kernel(const float* q, const float* k, const float* v, int T, int nh, int nkv, int window,
                                     float scale, float* out, float* lse) {
  __shared__ KeyValueTile<D> sh;
  const int tile = int(blockIdx.x) / nh, head = int(blockIdx.x) % nh, kv_head = head / (nh / nkv);
  const int row0 = tile * kFusedRows, rows = T - row0 < kFusedRows ? T - row0 : kFusedRows;
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32, g = lane / 4, t4 = lane % 4;
  const size_t ldq = size_t(nh) * D, ldkv = size_t(nkv) * D;
  // The block's keys [lo, hi), this warp's [warp_lo, warp_hi) (empty past the rows).
  const int64_t lo = paged::first_visible(row0, window), hi = row0 + rows;
  const bool warp_rows = 16 * warp < rows;
  const int64_t warp_lo = warp_rows ? paged::first_visible(row0 + 16 * warp, window) : INT64_MAX;
  const int64_t warp_hi = warp_rows ? row0 + (16 * warp + 16 < rows ? 16 * warp + 16 : rows) : 0;
  // This lane's two rows of the warp's 16 (fragment rows g and g + 8); position = row.
  const int ra = 16 * warp + g, rb = ra + 8;
  const int64_t pos_a = ra < rows ? row0 + ra : -1, pos_b = rb < rows ? row0 + rb : -1;
  const int64_t first_a = paged::first_visible(pos_a, window), first_b = paged::first_visible(pos_b, window);

  // Q's A fragments for the head, rounded to F16, in registers: qf[kc] covers dims 16 kc ..
  uint32_t qf[D / 16][4];
  const float* qa = q + size_t(row0 + ra) * ldq + size_t(head) * D + 2 * t4;
  const float* qb = q + size_t(row0 + rb) * ldq + size_t(head) * D + 2 * t4;
#pragma unroll
  for (int kc = 0; kc < D / 16; ++kc) {
    qf[kc][0] = ra < rows ? half_pair(qa[16 * kc], qa[16 * kc + 1]) : 0u;
    qf[kc][1] = rb < rows ? half_pair(qb[16 * kc], qb[16 * kc + 1]) : 0u;
    qf[kc][2] = ra < rows ? half_pair(qa[16 * kc + 8], qa[16 * kc + 9]) : 0u;
    qf[kc][3] = rb < rows ? half_pair(qb[16 * kc + 8], qb[16 * kc + 9]) : 0u;
  }

  RowsState<D> st;
#pragma unroll
  for (int n = 0; n < D / 8; ++n) st.o[n][0] = st.o[n][1] = st.o[n][2] = st.o[n][3] = 0.0f;

  for (int64_t key0 = lo; key0 < hi; key0 += kFusedKeys) {
    // Keys [key0, key0 + 32) into shared memory as F16, 16-byte F32 loads (4 values); zeros
    // past hi (their values meet P = 0, which must not meet a NaN left in shared memory).
    for (int c = int(threadIdx.x); c < kFusedKeys * (D / 4); c += int(blockDim.x)) {
      const int key = c / (D / 4), at = 4 * (c % (D / 4));
      const int64_t j = key0 + key;
      float4 kk = make_float4(0.0f, 0.0f, 0.0f, 0.0f), vv = kk;
      if (j < hi) {
        kk = *reinterpret_cast<const float4*>(k + size_t(j) * ldkv + size_t(kv_head) * D + at);
        vv = *reinterpret_cast<const float4*>(v + size_t(j) * ldkv + size_t(kv_head) * D + at);
      }
      *reinterpret_cast<uint2*>(&sh.k[key][at]) = make_uint2(half_pair(kk.x, kk.y), half_pair(kk.z, kk.w));
      *reinterpret_cast<uint2*>(&sh.v[key][at]) = make_uint2(half_pair(vv.x, vv.y), half_pair(vv.z, vv.w));
    }
    __syncthreads();  // the tile is in
    if (key0 < warp_hi && key0 + kFusedKeys > warp_lo)  // warp-uniform
      attend_key_tile<D, KeyValueTile<D>::Ld>(sh.k, sh.v, key0, qf, pos_a, first_a, pos_b, first_b, scale, st);
    __syncthreads();  // every warp is done with the tile before it is refilled
  }

  const float l_a = quad_sum(st.l_a), l_b = quad_sum(st.l_b);
  const auto& o = st.o;
  const auto store = [&](int r, float m, float l, int first_reg) {
    if (r >= rows) return;
    float* dst = out + size_t(row0 + r) * ldq + size_t(head) * D + 2 * t4;
    const float inv = 1.0f / l;
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
      *reinterpret_cast<float2*>(dst + 8 * n) = make_float2(o[n][first_reg] * inv, o[n][first_reg + 1] * inv);
    if (t4 == 0) lse[size_t(head) * T + row0 + r] = m + logf(l);
  };
  store(ra, st.m_a, l_a, 0);
  store(rb, st.m_b, l_b, 2);
}

}  // namespace

bool train_attention_fused_supported(int nh, int nkv, int d, const void* q, const void* k, const void* v,
                                     const void* out) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return (d == 64 || d == 128) && nkv > 0 && nh % nkv == 0 && aligned(q) && aligned(k) && aligned(v) && aligned(out);
}

void train_attention_fused_forward(const float* q, const float* k, const float* v, int T, int nh, int nkv, int d,
                                   int window, float* out, float* lse, cudaStream_t s) {
  if (!train_attention_fused_supported(nh, nkv, d, q, k, v, out))
    throw Error("cuda training attention (fused): " + std::to_string(nh) + " heads over " + std::to_string(nkv) +
                " of " + std::to_string(d) + " dims, or unaligned buffers, are not supported");
  if (T == 0) return;
  const size_t blocks = size_t((T + kFusedRows - 1) / kFusedRows) * size_t(nh);
  if (blocks > 0x7fffffffu) throw Error("cuda training attention (fused): too many (row tile, head) blocks");
  const float scale = 1.0f / sqrtf(float(d));
  if (d == 64)
    launch("fused_forward_kernel<64>", fused_forward_kernel<64>, unsigned(blocks), 32 * (kFusedRows / 16), s, q, k, v,
           T, nh, nkv, window, scale, out, lse);
  else
    launch("fused_forward_kernel<128>", fused_forward_kernel<128>, unsigned(blocks), 32 * (kFusedRows / 16), s, q, k,
           v, T, nh, nkv, window, scale, out, lse);
}

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
