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
//
// The backward, fused (the same head dims): two kernels, described where they are defined
// below — F16 scores as the forward computes them, TF32 mma.sync for the products with a
// gradient, no score matrix in memory and no atomics.
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

__device__ __forceinline__ uint32_t tf32_bits(float x) { return __float_as_uint(tf32_round(x)); }
__device__ __forceinline__ void half_pair_bits(const __half* p, uint32_t& lo, uint32_t& hi) {
  const float2 f = __half22float2(*reinterpret_cast<const __half2*>(p));
  lo = __float_as_uint(f.x);
  hi = __float_as_uint(f.y);
}

// Rows [first, first + rows) of x (ld floats apart, the head's columns from `col`) into
// shared memory with 16-byte loads, rounded to F16 (stage_half_rows) or TF32
// (stage_tf32_rows); zeros for rows from `end` on. The forward and both backward kernels
// stage their tiles so.
template <int D, int Ld>
__device__ void stage_half_rows(__half (*dst)[Ld], const float* x, size_t ld, size_t col, int64_t first, int rows,
                                int64_t end) {
  for (int c = int(threadIdx.x); c < rows * (D / 4); c += int(blockDim.x)) {
    const int r = c / (D / 4), at = 4 * (c % (D / 4));
    float4 f = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (first + r < end) f = *reinterpret_cast<const float4*>(x + size_t(first + r) * ld + col + at);
    *reinterpret_cast<uint2*>(&dst[r][at]) = make_uint2(half_pair(f.x, f.y), half_pair(f.z, f.w));
  }
}
template <int D, int Ld>
__device__ void stage_tf32_rows(float (*dst)[Ld], const float* x, size_t ld, size_t col, int64_t first, int rows,
                                int64_t end) {
  for (int c = int(threadIdx.x); c < rows * (D / 4); c += int(blockDim.x)) {
    const int r = c / (D / 4), at = 4 * (c % (D / 4));
    float4 f = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (first + r < end) f = *reinterpret_cast<const float4*>(x + size_t(first + r) * ld + col + at);
    *reinterpret_cast<float4*>(&dst[r][at]) =
        make_float4(tf32_round(f.x), tf32_round(f.y), tf32_round(f.z), tf32_round(f.w));
  }
}

// A block of up to 64 query rows [row0, row0 + rows) of one head, as the fused forward
// and the backward's queries kernel tile a sequence: the keys the block sees [lo, hi), this
// warp's [warp_lo, warp_hi) (empty past the rows), and this lane's two fragment rows
// a = g and b = g + 8 of the warp's 16 — their positions (−1 past the rows) and first keys.
struct RowTile {
  int row0, rows, ra, rb;
  int64_t lo, hi, warp_lo, warp_hi, pos_a, pos_b, first_a, first_b;
  __device__ RowTile(int tile, int T, int window, int warp, int g) {
    row0 = tile * kFusedRows;
    rows = T - row0 < kFusedRows ? T - row0 : kFusedRows;
    lo = paged::first_visible(row0, window);
    hi = row0 + rows;
    const bool warp_rows = 16 * warp < rows;
    warp_lo = warp_rows ? paged::first_visible(row0 + 16 * warp, window) : INT64_MAX;
    warp_hi = warp_rows ? row0 + (16 * warp + 16 < rows ? 16 * warp + 16 : rows) : 0;
    ra = 16 * warp + g;
    rb = ra + 8;
    pos_a = ra < rows ? row0 + ra : -1;
    pos_b = rb < rows ? row0 + rb : -1;
    first_a = paged::first_visible(pos_a, window);
    first_b = paged::first_visible(pos_b, window);
  }
  // Whether keys [key0, key0 + keys) meet any of the warp's rows (warp-uniform).
  __device__ bool warp_sees(int64_t key0, int keys) const { return key0 < warp_hi && key0 + keys > warp_lo; }
};

// The warp's rows of Q for `head` as F16 A fragments (qf[kc] covers dims 16 kc ..; zeros
// past the rows), in registers for the whole block.
template <int D>
__device__ void load_query_fragments(uint32_t (&qf)[D / 16][4], const float* q, size_t ldq, int head, const RowTile& r,
                                     int t4) {
  const float* qa = q + size_t(r.row0 + r.ra) * ldq + size_t(head) * D + 2 * t4;
  const float* qb = q + size_t(r.row0 + r.rb) * ldq + size_t(head) * D + 2 * t4;
#pragma unroll
  for (int kc = 0; kc < D / 16; ++kc) {
    qf[kc][0] = r.ra < r.rows ? half_pair(qa[16 * kc], qa[16 * kc + 1]) : 0u;
    qf[kc][1] = r.rb < r.rows ? half_pair(qb[16 * kc], qb[16 * kc + 1]) : 0u;
    qf[kc][2] = r.ra < r.rows ? half_pair(qa[16 * kc + 8], qa[16 * kc + 9]) : 0u;
    qf[kc][3] = r.rb < r.rows ? half_pair(qb[16 * kc + 8], qb[16 * kc + 9]) : 0u;
  }
}

template <int D>
__global__ void fused_forward_kernel(const float* q, const float* k, const float* v, int T, int nh, int nkv, int window,
                                     float scale, float* out, float* lse) {
  __shared__ KeyValueTile<D> sh;
  const int head = int(blockIdx.x) % nh, kv_head = head / (nh / nkv);
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32, t4 = lane % 4;
  const size_t ldq = size_t(nh) * D, ldkv = size_t(nkv) * D;
  const RowTile r(int(blockIdx.x) / nh, T, window, warp, lane / 4);
  uint32_t qf[D / 16][4];
  load_query_fragments<D>(qf, q, ldq, head, r, t4);

  RowsState<D> st;
#pragma unroll
  for (int n = 0; n < D / 8; ++n) st.o[n][0] = st.o[n][1] = st.o[n][2] = st.o[n][3] = 0.0f;

  for (int64_t key0 = r.lo; key0 < r.hi; key0 += kFusedKeys) {
    // Keys [key0, key0 + 32) into shared memory as F16; zeros past hi (their values meet
    // P = 0, which must not meet a NaN left in shared memory).
    stage_half_rows<D, KeyValueTile<D>::Ld>(sh.k, k, ldkv, size_t(kv_head) * D, key0, kFusedKeys, r.hi);
    stage_half_rows<D, KeyValueTile<D>::Ld>(sh.v, v, ldkv, size_t(kv_head) * D, key0, kFusedKeys, r.hi);
    __syncthreads();  // the tile is in
    if (r.warp_sees(key0, kFusedKeys))
      attend_key_tile<D, KeyValueTile<D>::Ld>(sh.k, sh.v, key0, qf, r.pos_a, r.first_a, r.pos_b, r.first_b, scale, st);
    __syncthreads();  // every warp is done with the tile before it is refilled
  }

  const float l_a = quad_sum(st.l_a), l_b = quad_sum(st.l_b);
  const auto& o = st.o;
  const auto store = [&](int row, float m, float l, int first_reg) {
    if (row >= r.rows) return;
    float* dst = out + size_t(r.row0 + row) * ldq + size_t(head) * D + 2 * t4;
    const float inv = 1.0f / l;
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
      *reinterpret_cast<float2*>(dst + 8 * n) = make_float2(o[n][first_reg] * inv, o[n][first_reg + 1] * inv);
    if (t4 == 0) lse[size_t(head) * T + r.row0 + row] = m + logf(l);
  };
  store(r.ra, st.m_a, l_a, 0);
  store(r.rb, st.m_b, l_b, 2);
}

// --- The fused backward (head dims 64 and 128): FlashAttention-2's backward without atomics,
// as two kernels that each recompute the probabilities from the forward's lse, so that every
// gradient element is summed by one thread in a fixed order (the same bits every run):
//   keys kernel:    a block per (64 keys, key-value head), a warp per 16 keys; over the
//                   group's heads and every 16-query tile that sees its keys: Sᵀ = K Qᵀ,
//                   Pᵀ, dPᵀ = V dOᵀ, dSᵀ = Pᵀ ⊙ (dPᵀ − D); dV += Pᵀ dO, dK += scale dSᵀ Q.
//   queries kernel: a block per (64 query rows, head), a warp per 16 rows; over the key
//                   tiles of 16 the rows see: S = Q Kᵀ, P, dP = dO Vᵀ, dS; dQ += scale dS K.
// 7 products where the blocked GEMMs take 5, but nothing quadratic passes through memory
// (the GEMM path writes and reads [heads, rows, keys] ten times a pass).
//
// Numerics: S as the fused forward computes it (Q and K rounded to F16, mma F16 → F32), so
// that exp(S − lse) uses the forward's own scores; every product with a gradient in TF32
// (F32's range: dO and dS are ~1e-6..1e-8 in a long window, below F16's normal range), its
// operands rounded to TF32 first — V, Q and K from their F16 roundings (exact in TF32), dO
// rounded as it is staged, P and dS rounded in registers, as the GEMM path rounds them.
//
// Fragment reuse: a C fragment (row g, cols 2t, 2t + 1) becomes the next product's TF32 A
// fragment (row g, k = t and t + 4) by reading k = t as column 2t and k = t + 4 as 2t + 1 —
// a permutation of the product's k order, which the B fragment follows (its rows t, t + 4
// read as 2t, 2t + 1). The same permutation lets an F16 pair (cols 2t, 2t + 1) feed a TF32
// A fragment, and dO's float pairs a B fragment, with one load each.
constexpr int kBackwardKeys = 64;     // keys a block of the keys kernel: 4 warps of 16
constexpr int kBackwardQueries = 16;  // query rows a tile of the keys kernel
constexpr int kBackwardKeyTile = 16;  // keys a tile of the queries kernel

template <int D>
struct alignas(16) BackwardKeysShared {
  static constexpr int Ld = D + 8;   // F16 rows: ldmatrix's 8 row addresses in distinct banks
  static constexpr int LdF = D + 4;  // F32 rows: a B fragment's 32 scalar loads in distinct banks
  __half k[kBackwardKeys][Ld];
  __half v[kBackwardKeys][Ld];
  __half q[kBackwardQueries][Ld];
  float dout[kBackwardQueries][LdF];
  float lse[kBackwardQueries];
  float dsum[kBackwardQueries];
};

template <int D>
__global__ void fused_backward_keys_kernel(const float* q, const float* k, const float* v, const float* dout,
                                           const float* lse, const float* Dsum, int T, int nh, int nkv, int window,
                                           float scale, float* dk, float* dv) {
  __shared__ BackwardKeysShared<D> sh;
  using S = BackwardKeysShared<D>;
  const int tile = int(blockIdx.x) / nkv, kv_head = int(blockIdx.x) % nkv, group = nh / nkv;
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32, g = lane / 4, t4 = lane % 4;
  const size_t ldq = size_t(nh) * D, ldkv = size_t(nkv) * D;
  const int64_t key0 = int64_t(tile) * kBackwardKeys, key_end = key0 + kBackwardKeys < T ? key0 + kBackwardKeys : T;
  // The queries that see any of the block's keys: [key0, query_end).
  const int64_t query_end = window > 0 && key_end - 1 + window < T ? key_end - 1 + window : T;
  const int64_t wkey = key0 + 16 * warp;  // this warp's keys [wkey, wkey + 16)
  stage_half_rows<D, S::Ld>(sh.k, k, ldkv, size_t(kv_head) * D, key0, kBackwardKeys, T);
  stage_half_rows<D, S::Ld>(sh.v, v, ldkv, size_t(kv_head) * D, key0, kBackwardKeys, T);

  float dkf[D / 8][4], dvf[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n)
#pragma unroll
    for (int i = 0; i < 4; ++i) dkf[n][i] = dvf[n][i] = 0.0f;

  for (int j = 0; j < group; ++j) {
    const int head = kv_head * group + j;
    for (int64_t q0 = key0; q0 < query_end; q0 += kBackwardQueries) {
      __syncthreads();  // every warp is done with the previous tile (and the keys are in)
      stage_half_rows<D, S::Ld>(sh.q, q, ldq, size_t(head) * D, q0, kBackwardQueries, T);
      stage_tf32_rows<D, S::LdF>(sh.dout, dout, ldq, size_t(head) * D, q0, kBackwardQueries, T);
      if (threadIdx.x < kBackwardQueries) {
        const int64_t row = q0 + threadIdx.x;
        sh.lse[threadIdx.x] = row < T ? lse[size_t(head) * T + row] : 0.0f;
        sh.dsum[threadIdx.x] = row < T ? Dsum[size_t(head) * T + row] : 0.0f;
      }
      __syncthreads();  // the tile is in
      // Warp-uniform: does any of the tile's queries see any of this warp's keys?
      const bool seen = wkey < T && q0 + kBackwardQueries - 1 >= wkey &&
                        (window == 0 || q0 - (wkey + 15) < window);
      if (!seen) continue;
      // Sᵀ [16 keys, 16 queries] = K Qᵀ, F16: s[nt] holds queries q0 + 8 nt + 2 t4, + 1 of
      // keys g (0, 1) and g + 8 (2, 3).
      float s[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
#pragma unroll
      for (int kc = 0; kc < D / 16; ++kc) {
        uint32_t a[4], b[4];
        ptx::ldmatrix_x4(a, &sh.k[16 * warp + lane % 8 + 8 * ((lane / 8) % 2)][16 * kc + 8 * (lane / 16)]);
        ptx::ldmatrix_x4(b, &sh.q[lane % 8 + 8 * (lane / 16)][16 * kc + 8 * ((lane / 8) % 2)]);
        ptx::mma_f16_f32(s[0], a, b);
        ptx::mma_f16_f32(s[1], a, b + 2);
      }
      // dPᵀ [16 keys, 16 queries] = V dOᵀ, TF32, k (the head's dims) permuted in pairs.
      float dp[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
#pragma unroll
      for (int kk = 0; kk < D / 8; ++kk) {
        const int c = 8 * kk + 2 * t4;
        uint32_t a[4];
        half_pair_bits(&sh.v[16 * warp + g][c], a[0], a[2]);
        half_pair_bits(&sh.v[16 * warp + g + 8][c], a[1], a[3]);
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
          const float2 f = *reinterpret_cast<const float2*>(&sh.dout[8 * nt + g][c]);
          const uint32_t b[2] = {__float_as_uint(f.x), __float_as_uint(f.y)};
          ptx::mma_tf32_f32(dp[nt], a, b);
        }
      }
      // Pᵀ = exp(scale S − lse) where the query sees the key, dSᵀ = Pᵀ ⊙ (dPᵀ − D), both TF32.
      uint32_t p[2][4], ds[2][4];
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int qi = 8 * nt + 2 * t4 + i % 2;
          const int64_t query = q0 + qi, key = wkey + g + 8 * (i / 2);
          const float pv =
              query < T && key < T && sees(int(query), int(key), window) ? tf32_round(expf(s[nt][i] * scale - sh.lse[qi]))
                                                                          : 0.0f;
          p[nt][i] = __float_as_uint(pv);
          ds[nt][i] = tf32_bits(pv * (dp[nt][i] - sh.dsum[qi]));
        }
      // dV [16 keys, D] += Pᵀ dO and dK += dSᵀ Q (scaled at the end): k = the tile's
      // queries, 8 a step (the C fragments of n-tile nt, permuted).
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const uint32_t pa[4] = {p[nt][0], p[nt][2], p[nt][1], p[nt][3]};
        const uint32_t da[4] = {ds[nt][0], ds[nt][2], ds[nt][1], ds[nt][3]};
        const int r = 8 * nt + 2 * t4;
#pragma unroll
        for (int dn = 0; dn < D / 8; ++dn) {
          const uint32_t bo[2] = {__float_as_uint(sh.dout[r][8 * dn + g]), __float_as_uint(sh.dout[r + 1][8 * dn + g])};
          ptx::mma_tf32_f32(dvf[dn], pa, bo);
          const uint32_t bq[2] = {__float_as_uint(__half2float(sh.q[r][8 * dn + g])),
                                  __float_as_uint(__half2float(sh.q[r + 1][8 * dn + g]))};
          ptx::mma_tf32_f32(dkf[dn], da, bq);
        }
      }
    }
  }
  // dK and dV of keys g, g + 8 of the warp, dims 8 dn + 2 t4, + 1: added to what is there.
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t key = wkey + g + 8 * half;
    if (key >= T) continue;
    float* kr = dk + size_t(key) * ldkv + size_t(kv_head) * D + 2 * t4;
    float* vr = dv + size_t(key) * ldkv + size_t(kv_head) * D + 2 * t4;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) {
      kr[8 * dn] += scale * dkf[dn][2 * half];
      kr[8 * dn + 1] += scale * dkf[dn][2 * half + 1];
      vr[8 * dn] += dvf[dn][2 * half];
      vr[8 * dn + 1] += dvf[dn][2 * half + 1];
    }
  }
}

template <int D>
struct alignas(16) BackwardQueriesShared {
  static constexpr int Ld = D + 8, LdF = D + 4;
  __half k[kBackwardKeyTile][Ld];
  __half v[kBackwardKeyTile][Ld];
  float dout[kFusedRows][LdF];
};

template <int D>
__global__ void fused_backward_queries_kernel(const float* q, const float* k, const float* v, const float* dout,
                                              const float* lse, const float* Dsum, int T, int nh, int nkv, int window,
                                              float scale, float* dq) {
  __shared__ BackwardQueriesShared<D> sh;
  using S = BackwardQueriesShared<D>;
  const int tiles = (T + kFusedRows - 1) / kFusedRows;
  const int head = int(blockIdx.x) % nh, kv_head = head / (nh / nkv);
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32, g = lane / 4, t4 = lane % 4;
  const size_t ldq = size_t(nh) * D, ldkv = size_t(nkv) * D;
  const RowTile r(tiles - 1 - int(blockIdx.x) / nh, T, window, warp, g);  // the longest tiles (the last rows) first
  const float lse_a = r.pos_a >= 0 ? lse[size_t(head) * T + r.pos_a] : 0.0f;
  const float lse_b = r.pos_b >= 0 ? lse[size_t(head) * T + r.pos_b] : 0.0f;
  const float d_a = r.pos_a >= 0 ? Dsum[size_t(head) * T + r.pos_a] : 0.0f;
  const float d_b = r.pos_b >= 0 ? Dsum[size_t(head) * T + r.pos_b] : 0.0f;
  stage_tf32_rows<D, S::LdF>(sh.dout, dout, ldq, size_t(head) * D, r.row0, kFusedRows, T);
  uint32_t qf[D / 16][4];  // Q's F16 A fragments, as the forward holds them
  load_query_fragments<D>(qf, q, ldq, head, r, t4);
  float dqf[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) dqf[n][0] = dqf[n][1] = dqf[n][2] = dqf[n][3] = 0.0f;

  for (int64_t key0 = r.lo; key0 < r.hi; key0 += kBackwardKeyTile) {
    __syncthreads();  // every warp is done with the previous tile
    stage_half_rows<D, S::Ld>(sh.k, k, ldkv, size_t(kv_head) * D, key0, kBackwardKeyTile, r.hi);
    stage_half_rows<D, S::Ld>(sh.v, v, ldkv, size_t(kv_head) * D, key0, kBackwardKeyTile, r.hi);
    __syncthreads();  // the tile (and, the first time, dO) is in
    if (!r.warp_sees(key0, kBackwardKeyTile)) continue;
    // S [16 rows, 16 keys] = Q Kᵀ (F16, as the forward): s[nt] keys key0 + 8 nt + 2 t4, + 1.
    float s[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int c = 0; c < D / 32; ++c) {
        uint32_t kf[4];
        ptx::ldmatrix_x4(kf, &sh.k[8 * nt + lane % 8][32 * c + 8 * (lane / 8)]);
        ptx::mma_f16_f32(s[nt], qf[2 * c], kf);
        ptx::mma_f16_f32(s[nt], qf[2 * c + 1], kf + 2);
      }
    // dP [16 rows, 16 keys] = dO Vᵀ, TF32, k (dims) permuted in pairs.
    float dp[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
#pragma unroll
    for (int kk = 0; kk < D / 8; ++kk) {
      const int c = 8 * kk + 2 * t4;
      const float2 fa = *reinterpret_cast<const float2*>(&sh.dout[r.ra][c]);
      const float2 fb = *reinterpret_cast<const float2*>(&sh.dout[r.rb][c]);
      const uint32_t a[4] = {__float_as_uint(fa.x), __float_as_uint(fb.x), __float_as_uint(fa.y), __float_as_uint(fb.y)};
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        uint32_t b[2];
        half_pair_bits(&sh.v[8 * nt + g][c], b[0], b[1]);
        ptx::mma_tf32_f32(dp[nt], a, b);
      }
    }
    // P and dS (TF32), then dQ [16 rows, D] += dS K: k = the tile's keys, 8 a step.
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      uint32_t ds[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t key = key0 + 8 * nt + 2 * t4 + i % 2;
        const bool row_a = i < 2;
        const bool seen = row_a ? visible(key, r.pos_a, r.first_a) : visible(key, r.pos_b, r.first_b);
        const float pv = seen ? tf32_round(expf(s[nt][i] * scale - (row_a ? lse_a : lse_b))) : 0.0f;
        ds[i] = tf32_bits(pv * (dp[nt][i] - (row_a ? d_a : d_b)));
      }
      const uint32_t a[4] = {ds[0], ds[2], ds[1], ds[3]};
      const int key = 8 * nt + 2 * t4;
#pragma unroll
      for (int dn = 0; dn < D / 8; ++dn) {
        const uint32_t b[2] = {__float_as_uint(__half2float(sh.k[key][8 * dn + g])),
                               __float_as_uint(__half2float(sh.k[key + 1][8 * dn + g]))};
        ptx::mma_tf32_f32(dqf[dn], a, b);
      }
    }
  }
  const auto store = [&](int row, int first_reg) {
    if (row >= r.rows) return;
    float* dst = dq + size_t(r.row0 + row) * ldq + size_t(head) * D + 2 * t4;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) {
      dst[8 * dn] += scale * dqf[dn][first_reg];
      dst[8 * dn + 1] += scale * dqf[dn][first_reg + 1];
    }
  };
  store(r.ra, 0);
  store(r.rb, 2);
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

void train_attention_fused_backward(const float* q, const float* k, const float* v, const float* dout,
                                    const float* lse, const float* D, int T, int nh, int nkv, int d, int window,
                                    float* dq, float* dk, float* dv, cudaStream_t s) {
  if (!train_attention_fused_supported(nh, nkv, d, q, k, v, dout))
    throw Error("cuda training attention (fused backward): " + std::to_string(nh) + " heads over " +
                std::to_string(nkv) + " of " + std::to_string(d) + " dims, or unaligned buffers, are not supported");
  if (T == 0) return;
  const size_t key_blocks = size_t((T + kBackwardKeys - 1) / kBackwardKeys) * size_t(nkv);
  const size_t query_blocks = size_t((T + kFusedRows - 1) / kFusedRows) * size_t(nh);
  if (key_blocks > 0x7fffffffu || query_blocks > 0x7fffffffu)
    throw Error("cuda training attention (fused backward): too many blocks");
  const float scale = 1.0f / sqrtf(float(d));
  const unsigned threads = 32 * (kBackwardKeys / 16);
  if (d == 64) {
    launch("fused_backward_keys_kernel<64>", fused_backward_keys_kernel<64>, unsigned(key_blocks), threads, s, q, k, v,
           dout, lse, D, T, nh, nkv, window, scale, dk, dv);
    launch("fused_backward_queries_kernel<64>", fused_backward_queries_kernel<64>, unsigned(query_blocks),
           32 * (kFusedRows / 16), s, q, k, v, dout, lse, D, T, nh, nkv, window, scale, dq);
  } else {
    launch("fused_backward_keys_kernel<128>", fused_backward_keys_kernel<128>, unsigned(key_blocks), threads, s, q, k,
           v, dout, lse, D, T, nh, nkv, window, scale, dk, dv);
    launch("fused_backward_queries_kernel<128>", fused_backward_queries_kernel<128>, unsigned(query_blocks),
           32 * (kFusedRows / 16), s, q, k, v, dout, lse, D, T, nh, nkv, window, scale, dq);
  }
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
