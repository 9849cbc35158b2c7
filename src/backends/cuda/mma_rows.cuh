// Register-level pieces of the tensor-core attention kernels (attention_prefill.cu for
// inference, train_attention.cu for training), for mma.sync's m16n8 fragments (ptx.cuh): a
// fragment row's values lie in the 4 lanes of a quad (lane / 4 names the row), two F16
// values per 32-bit register. attend_key_tile is the step both kernels take per key tile.
#pragma once
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

#include "backends/cuda/ptx.cuh"
#include "backends/paged_attention.h"

namespace pivotmt::cuda::kernels {

__device__ __forceinline__ uint32_t load_pair(const __half* p) {  // two halves, 4-byte aligned
  const __half2 h = *reinterpret_cast<const __half2*>(p);
  uint32_t bits;
  memcpy(&bits, &h, sizeof(bits));
  return bits;
}

// Two floats rounded to F16 as one register; rounded_sum gets their rounded values (a
// softmax's denominator sums what the product with V will use).
__device__ __forceinline__ uint32_t pack_pair(float lo, float hi, float& rounded_sum) {
  const __half2 h = __floats2half2_rn(lo, hi);
  const float2 back = __half22float2(h);
  rounded_sum += back.x + back.y;
  uint32_t bits;
  memcpy(&bits, &h, sizeof(bits));
  return bits;
}

__device__ __forceinline__ float quad_max(float v) {  // over the 4 lanes holding one row
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

constexpr int kAttentionTileKeys = 32;  // keys per shared-memory tile of both kernels

// Whether key j is visible to a row at `pos` (pos < 0: no row) whose first visible key is `first`.
__device__ __forceinline__ bool visible(int64_t j, int64_t pos, int64_t first) { return pos >= 0 && j <= pos && j >= first; }

// A warp's online-softmax state for its 16 query rows; this lane holds rows a = g and
// b = g + 8 (g = lane / 4): o the output's C fragments (dims 8 n + 2 t4, + 1 of rows a in
// [0, 1] and b in [2, 3]), m the rows' running maxima, l this lane's part of their sums.
template <int D>
struct RowsState {
  float o[D / 8][4];
  float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;
};

// One key tile [key0, key0 + 32) in shared memory (k and v: [32][Ld] F16 rows) against the
// warp's rows: S = Q Kᵀ by mma.sync (qf: Q's A fragments for the head, dims 16 kc ..),
// masked per row and scaled, folded into the online softmax, O += P V with P rounded to F16
// (as FlashAttention does; l sums the rounded P). No score leaves the registers.
template <int D, int Ld>
__device__ __forceinline__ void attend_key_tile(const __half (*k)[Ld], const __half (*v)[Ld], int64_t key0,
                                                const uint32_t (&qf)[D / 16][4], int64_t pos_a, int64_t first_a,
                                                int64_t pos_b, int64_t first_b, float scale, RowsState<D>& st) {
  constexpr int Keys = kAttentionTileKeys;
  const int lane = int(threadIdx.x) % 32, t4 = lane % 4;
  // S = Q Kᵀ: s[nt] holds keys key0 + 8 nt + 2 t4, + 1 of rows a (0, 1) and b (2, 3).
  float s[Keys / 8][4];
#pragma unroll
  for (int nt = 0; nt < Keys / 8; ++nt) {
    s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
    for (int c = 0; c < D / 32; ++c) {
      // Matrix i = lane / 8: keys 8 nt .. + 7, dims 32 c + 8 i .. + 7 — B fragments of two k-steps.
      uint32_t kf[4];
      ptx::ldmatrix_x4(kf, &k[8 * nt + lane % 8][32 * c + 8 * (lane / 8)]);
      ptx::mma_f16_f32(s[nt], qf[2 * c], kf);
      ptx::mma_f16_f32(s[nt], qf[2 * c + 1], kf + 2);
    }
  }
  // Mask and scale, then the online softmax per row (a row's 32 keys lie in 4 lanes).
  float max_a = -INFINITY, max_b = -INFINITY;
#pragma unroll
  for (int nt = 0; nt < Keys / 8; ++nt)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t j = key0 + 8 * nt + 2 * t4 + (i % 2);
      const bool row_a = i < 2;
      const bool seen = row_a ? visible(j, pos_a, first_a) : visible(j, pos_b, first_b);
      s[nt][i] = seen ? s[nt][i] * scale : -INFINITY;
      if (row_a) max_a = fmaxf(max_a, s[nt][i]);
      else max_b = fmaxf(max_b, s[nt][i]);
    }
  const float new_a = fmaxf(st.m_a, quad_max(max_a)), new_b = fmaxf(st.m_b, quad_max(max_b));
  const float alpha_a = paged::rescale(st.m_a, new_a), alpha_b = paged::rescale(st.m_b, new_b);
  // P in F16 as the next mma's A fragments: p[nt][0] row a's pair, p[nt][1] row b's.
  uint32_t p[Keys / 8][2];
  float sum_a = 0.0f, sum_b = 0.0f;
#pragma unroll
  for (int nt = 0; nt < Keys / 8; ++nt) {
    const auto weight = [](float score, float top) { return score == -INFINITY ? 0.0f : expf(score - top); };
    p[nt][0] = pack_pair(weight(s[nt][0], new_a), weight(s[nt][1], new_a), sum_a);
    p[nt][1] = pack_pair(weight(s[nt][2], new_b), weight(s[nt][3], new_b), sum_b);
  }
  st.l_a = st.l_a * alpha_a + sum_a;
  st.l_b = st.l_b * alpha_b + sum_b;
  st.m_a = new_a;
  st.m_b = new_b;
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    st.o[n][0] *= alpha_a;
    st.o[n][1] *= alpha_a;
    st.o[n][2] *= alpha_b;
    st.o[n][3] *= alpha_b;
  }
  // O += P V, 16 keys per k-step: P's A fragment is S's C fragments of n-tiles 2 kc, 2 kc + 1.
#pragma unroll
  for (int kc = 0; kc < Keys / 16; ++kc) {
    const uint32_t a[4] = {p[2 * kc][0], p[2 * kc][1], p[2 * kc + 1][0], p[2 * kc + 1][1]};
#pragma unroll
    for (int dn = 0; dn < D / 16; ++dn) {
      // Matrix i: keys 16 kc + 8 (i % 2) .. + 7, dims 16 dn + 8 (i / 2) .. + 7, transposed.
      uint32_t vf[4];
      ptx::ldmatrix_x4_trans(vf, &v[16 * kc + 8 * ((lane / 8) % 2) + lane % 8][16 * dn + 8 * (lane / 16)]);
      ptx::mma_f16_f32(st.o[2 * dn], a, vf);
      ptx::mma_f16_f32(st.o[2 * dn + 1], a, vf + 2);
    }
  }
}

}  // namespace pivotmt::cuda::kernels
