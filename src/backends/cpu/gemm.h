// The GEMM kernels behind fast::linear (internal to the CPU backend). All compute
// y[m, n] = Σ_k x[m, k] · w[n, k] for m < M and output rows n in [n0, n1), with x and the
// weight rows both contiguous along k (Hugging Face's [out, in] layout, no repacking), so
// one kernel serves prefill (M in the hundreds) and batched decode (M = batch): each
// weight tile is read once per call for all of M.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "backends/cpu/ops.h"

namespace pivotmt::cpu::kernels {

// AVX-512 (F, BW, VL, DQ): F32, F16, I8 (per-row scale, F32 activations) or NF4 (rows a
// multiple of 16 wide; codes decoded in registers) weights, F32 FMA. Register tiles of up
// to 6 x-rows × 4 weight rows, k blocked for L1 above 8 x rows (decode reads each weight row
// whole, in order), weight rows blocked for L2. Only call when isa() >= Avx512.
void gemm_f32_avx512(const float* x, size_t M, const Matrix& w, float* y, size_t ldy, size_t n0, size_t n1);

// Attention's two products, F32 on both sides, rows of every operand any stride apart
// (heads interleaved in the KV cache), single-threaded (the caller splits the work):
// c[M, N] = alpha · a[M, K] · b[N, K]ᵀ (dot-product tiles: decode's scores, one query
// against the keys in place) and c[M, N] = a[M, K] · b[K, N] (broadcast tiles: prefill's
// queries against transposed keys, and weights against values). AVX-512 only.
void gemm_nt_avx512(const float* a, size_t lda, size_t M, const float* b, size_t ldb, size_t N, size_t K, float alpha,
                    float* c, size_t ldc);
void gemm_nn_avx512(const float* a, size_t lda, size_t M, const float* b, size_t ldb, size_t K, size_t N, float* c,
                    size_t ldc);

// dst[i, j] = scale · src[j, i] for j < rows, i < cols (prefill attention's keys, scaled by
// 1/sqrt(d), as the rows of Kᵀ): 16 × 16 blocks in registers. AVX-512 only.
void transpose_scaled_avx512(const float* src, size_t ld_src, size_t rows, size_t cols, float scale, float* dst,
                             size_t ld_dst);

// x quantised for int8 · int8 products: one scale per row and kQ8Block values,
// q = round(x / scale) + 128 as unsigned bytes (VNNI multiplies unsigned by signed bytes),
// rows padded with 128 (zero) to a multiple of 64 bytes.
struct Q8Rows {
  size_t rows = 0, cols = 0, stride = 0, blocks = 0;  // stride: bytes per padded row
  std::vector<uint8_t> q;                             // [rows, stride]
  std::vector<float> scale;                           // [rows, blocks]
};
void quantize_rows_q8(const float* x, size_t M, size_t K, Q8Rows& out);
// The same bytes and scales with AVX-512 over the thread pool (isa() >= Avx512); the
// reference above is the plain loop it is tested against.
void quantize_rows_q8_fast(const float* x, size_t M, size_t K, Q8Rows& out);

// y = w.scale[n] · Σ_blocks xq.scale[m, b] · (Σ_{k in b} xq[m, k] · w[n, k] − 128 · w.block_sums[n, b])
// with exact int32 block sums: AVX-512 VNNI (isa() >= Avx512Vnni; one x row runs a GEMV
// that streams the weight rows one after another) and the plain reference.
void gemm_q8_vnni(const Q8Rows& x, const Matrix& w, float* y, size_t ldy, size_t n0, size_t n1);
void gemm_q8_ref(const Q8Rows& x, const Matrix& w, float* y, size_t ldy, size_t n0, size_t n1);

// GGUF weights kept as the file's blocks (Matrix::dtype GGML): Q8_0, Q4_0 or Q4_1 (32
// values and an F16 scale per block, Q4_1 also an F16 minimum) and the K-quants Q4_K, Q5_K
// and Q6_K (super-blocks of 256 values with 6- or 8-bit sub-block scales) times F32
// activations: each block dequantised in registers as gguf-py does (d · q, Q4_1 d · q + m,
// K (d · sc) · q − dmin · m: every product and sum rounded on its own) and multiplied with
// FMAs, y[m, n] = Σ_k x[m, k] · w[n, k] for n in [n0, n1).
// Activations stay F32 rather than llama.cpp's int8 blocks: with int8 activations
// SmolLM2-135M's logits moved by up to 1.2 (of 25) from transformers' and its first greedy
// token changed (measured); here they stay within 1e-4. The reference is ref::linear over
// Matrix::row_to_f32. AVX2 (isa() >= Avx2) and AVX-512 (isa() >= Avx512).
void gemm_ggml_avx2(const float* x, size_t M, const Matrix& w, float* y, size_t ldy, size_t n0, size_t n1);
void gemm_ggml_avx512(const float* x, size_t M, const Matrix& w, float* y, size_t ldy, size_t n0, size_t n1);
// Their dequantisation: rows [n0, n1) of such a matrix into out ([n1 - n0, in] F32), bit
// for bit ggml_dequantize's (gguf-py's) values.
void ggml_rows_avx2(const Matrix& w, size_t n0, size_t n1, float* out);
void ggml_rows_avx512(const Matrix& w, size_t n0, size_t n1, float* out);

// `--weights gguf-q8`: GGUF blocks (Matrix::ggml_packed) times activations quantised as
// llama.cpp's CPU backend quantises them on x86, to Q8_0 blocks: 32 values, d = max|x| /
// 127 rounded to F16, q = x · (127 / max|x|) rounded to nearest even (ggml-cpu's
// quantize_row_q8_0; Q8_1's d · Σ q rounded to F16 for Q4_1). Per block the int32
// Σ q_w · q_x is exact; y = Σ_blocks d_w · d_x · Σ (q_w − z) · q_x (+ m_w · s_x for
// Q4_1), as ggml's vec_dot_q4_0_q8_0 / q4_1_q8_1 / q8_0_q8_0 up to the order of the sums.
// Much faster than F32 activations (one instruction per 4 values of 16 rows) and as far
// from transformers' F32 products as llama.cpp is: SmolLM2-135M's logits move by up to
// ~1 (of 25) and its chat answer changes (test_gguf).
struct GgmlQ8Blocks {
  size_t rows = 0, cols = 0, blocks = 0;  // blocks per row
  std::vector<int8_t> q;                  // [rows, cols]
  std::vector<float> d;                   // [rows, blocks] the F16-rounded scale
  std::vector<int32_t> sum;               // [rows, blocks] Σ q
  std::vector<float> ds;                  // [rows, blocks] Q8_1's s: d · Σ q rounded to F16
};
void quantize_rows_ggml_q8(const float* x, size_t M, size_t K, GgmlQ8Blocks& out);  // the plain loop
// The same bytes with AVX-512 over the thread pool (isa() >= Avx512).
void quantize_rows_ggml_q8_fast(const float* x, size_t M, size_t K, GgmlQ8Blocks& out);
// Output rows [n0, n1): the reference (any rows), AVX-512 VNNI (n0 a multiple of 16,
// isa() >= Avx512Vnni) and AVX2 (n0 a multiple of 8, isa() >= Avx2).
void gemm_ggml_q8_ref(const GgmlQ8Blocks& x, const Matrix& w, float* y, size_t ldy, size_t n0, size_t n1);
void gemm_ggml_q8_vnni(const GgmlQ8Blocks& x, const Matrix& w, float* y, size_t ldy, size_t n0, size_t n1);
void gemm_ggml_q8_avx2(const GgmlQ8Blocks& x, const Matrix& w, float* y, size_t ldy, size_t n0, size_t n1);

}  // namespace pivotmt::cpu::kernels
