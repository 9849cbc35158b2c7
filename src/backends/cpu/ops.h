// CPU operations of the Llama-family forward pass. Each op has a plain reference
// implementation (namespace ref: obviously correct loops, F32) that the fast one
// (namespace fast: SIMD GEMM kernels chosen at run time, see gemm.h, threads) is
// tested against. Shapes: T rows (tokens), row-major.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "core/dtype.h"
#include "quant/ggml_quants.h"
#include "quant/nf4.h"

namespace pivotmt::cpu {

// A weight matrix W [out, in] as stored by Hugging Face (y = x W^T), F32 or F16.
// The data either lives in the matrix (converted at load) or is borrowed from a memory
// map of the checkpoint when it is stored in the wanted dtype (zero copy: the weights
// cost their file pages once, not twice).
// I8: weight-only INT8, one F32 scale per output row (w ≈ scale[o] * q[o, i]), so a 7B
// model fits in 24 GiB; activations and accumulation stay F32.
// NF4: bitsandbytes' 4-bit format with double quantisation (QLoRA's base), dequantised
// block by block as it is used.
// I8 with int8_activations: the activations are quantised too (one scale per row and
// kQ8Block values) and the products are int8 · int8 with exact int32 sums (VNNI), as
// llama.cpp's Q8_0 × Q8_0; otherwise the activations stay F32 (weight-only INT8).
constexpr size_t kQ8Block = 256;

// A GGUF matrix's Q8_0 / Q4_0 / Q4_1 blocks repacked for int8 · int8 products
// (`--weights gguf-q8`): 16 rows per group, each group's blocks one after another, one
// record per (group, block) — the quants of the 16 rows interleaved 4 values at a time,
// then their F16 scales (and Q4_1's minimums). The layout and the arithmetic are described
// in gemm_ggml_q8.cpp; the accessors below read it value by value (for the reference).
struct GgmlPacked {
  static constexpr size_t kGroupRows = 16;
  GgmlType type = GgmlType::Q8_0;
  size_t rows = 0, cols = 0, blocks = 0, groups = 0;  // blocks per row, groups of 16 rows
  std::vector<uint8_t> bytes;                         // [groups, blocks, record_bytes]

  static constexpr size_t quant_bytes(GgmlType t) { return t == GgmlType::Q8_0 ? 512 : 256; }
  static constexpr size_t record_bytes(GgmlType t) { return quant_bytes(t) + 2 * kGroupRows * (t == GgmlType::Q4_1 ? 2 : 1); }
  // What the stored quant exceeds the signed value by: Q4_0's nibbles 8, the Q8_0 bytes
  // (stored + 128, as VNNI's unsigned operand) 128, Q4_1 none.
  static constexpr int zero_point(GgmlType t) { return t == GgmlType::Q4_0 ? 8 : t == GgmlType::Q8_0 ? 128 : 0; }
  // Rows [0, rows) of a matrix whose row n's file blocks start at row(n).
  static GgmlPacked pack(GgmlType type, size_t rows, size_t cols, const std::function<const uint8_t*(size_t)>& row);
  const uint8_t* record(size_t n, size_t b) const;  // row n's group, block b
  int quant(size_t n, size_t k) const;              // stored (unsigned) quant of value k of row n
  float scale(size_t n, size_t b) const;
  float minimum(size_t n, size_t b) const;  // Q4_1; 0 otherwise
  void row_to_f32(size_t n, float* dst) const;  // as gguf-py dequantises the file's block
};
struct Matrix {
  DType dtype = DType::F32;
  size_t out = 0, in = 0;
  std::vector<float> f32;      // [out, in] when dtype == F32 and owned
  std::vector<uint16_t> f16;   // [out, in] when dtype == F16 and owned
  std::vector<int8_t> i8;      // [out, in] when dtype == I8
  std::vector<float> scale;    // [out] when dtype == I8
  std::vector<int32_t> block_sums;  // [out, ceil(in / kQ8Block)] Σ q per block, when dtype == I8
  bool int8_activations = false;    // I8 or GGML: quantise the activations (see above)
  nf4::Quantized nf4;          // the whole matrix flattened row-major, when dtype == NF4
  // GGML: a GGUF file's blocks (Q8_0, Q4_0 or Q4_1 of 32 values; Q4_K, Q5_K or Q6_K
  // super-blocks of 256), ggml_row_bytes per row,
  // read in place from the file's mapping (borrowed) or reordered into ggml_owned (Q and K,
  // whose rows the converter interleaved).
  GgmlType ggml_type = GgmlType::F32;
  size_t ggml_row_bytes = 0;
  std::vector<uint8_t> ggml_owned;
  // GGML with int8_activations: the blocks repacked (no borrowed, no ggml_owned).
  GgmlPacked ggml_packed;
  const void* borrowed = nullptr;  // [out, in] in the checkpoint mapping, else null
  const float* data_f32() const { return borrowed ? static_cast<const float*>(borrowed) : f32.data(); }
  const uint16_t* data_f16() const { return borrowed ? static_cast<const uint16_t*>(borrowed) : f16.data(); }
  const float* row_f32(size_t o) const { return data_f32() + o * in; }
  const uint16_t* row_f16(size_t o) const { return data_f16() + o * in; }
  const int8_t* row_i8(size_t o) const { return i8.data() + o * in; }
  const uint8_t* row_ggml(size_t o) const {
    return (borrowed ? static_cast<const uint8_t*>(borrowed) : ggml_owned.data()) + o * ggml_row_bytes;
  }
  size_t bytes() const {
    if (dtype == DType::NF4) return nf4.bytes();
    if (dtype == DType::GGML) return ggml_packed.bytes.empty() ? out * ggml_row_bytes : ggml_packed.bytes.size();
    return dtype == DType::I8 ? out * in + out * 4 : out * in * (dtype == DType::F32 ? 4 : 2);
  }
  // Row o as F32 (dequantised / converted).
  void row_to_f32(size_t o, float* dst) const;
};

// Per-row absmax quantisation of an F32 [out, in] matrix to I8 (with its block sums).
Matrix quantize_int8(const float* w, size_t out, size_t in, bool int8_activations = false);

// Rotary embedding tables for one model: inv_freq per pair (already rope_scaling-adjusted).
struct Rope {
  std::vector<float> inv_freq;  // [head_dim / 2]
};

// Where a cache keeps key (or value) vector j of kv head h: k + j · pos + h · head floats.
// The default {0, 0} means [L, n_kv, d] (pos = n_kv · d, head = d); the CPU engine's cache
// is head-major, [n_kv, capacity, d] (pos = d, head = capacity · d), so one head's keys
// are one contiguous stream.
struct KvStrides {
  size_t pos = 0, head = 0;
  KvStrides resolved(size_t n_kv, size_t d) const { return pos || head ? *this : KvStrides{n_kv * d, d}; }
};

namespace ref {
// y[T, out] = x[T, in] · W^T; rows of y are ldy floats apart (0: out), so a projection
// can write its columns of a fused output.
void linear(const float* x, size_t T, const Matrix& w, float* y, size_t ldy = 0);
// y = w * x / sqrt(mean(x^2) + eps), per row of [T, H]
void rmsnorm(const float* x, const float* w, size_t T, size_t H, float eps, float* y);
// Rotate-half RoPE in place on the first `heads` heads of each row of x (rows `stride`
// floats apart, head h of row t at x + t * stride + h * head_dim) at the given positions.
void rope(float* x, size_t T, size_t stride, size_t heads, size_t head_dim, const int64_t* positions, const Rope& rope);
// out[t, i] = silu(gate_up[t, i]) * gate_up[t, F + i]: gate_up [T, 2F], out [T, F]
void silu_mul(const float* gate_up, size_t T, size_t F, float* out);
// Causal attention of T new query rows against the sequence's cache.
//   q [T, n_heads, d] with rows q_stride floats apart; k, v: L positions of n_kv heads of d
//   values laid out as `kv` says (L = cached + T, new rows last);
//   query t sits at cache position L - T + t; out [T, n_heads, d].
//   window > 0: only the last `window` positions are visible (Mistral).
void attention(const float* q, size_t q_stride, const float* k, const float* v, size_t T, size_t L, size_t n_heads,
               size_t n_kv, size_t d, size_t window, float* out, KvStrides kv = {});

// Encoder (BERT, XLM-R) ops.
// Each row of x [T, H] in place: (x − mean) / sqrt(var + eps) · w + b, the variance biased
// (torch.nn.LayerNorm).
void layer_norm(float* x, size_t T, size_t H, const float* w, const float* b, float eps);
// x = LayerNorm(x + y + bias) per row (post-norm residual: y [T, H] a projection's output
// before its bias [H]).
void residual_layer_norm(float* x, const float* y, const float* bias, size_t T, size_t H, const float* w,
                         const float* b, float eps);
// x[i] = x · Φ(x) = 0.5 · x · (1 + erf(x / √2)) in place: the exact GELU of BERT and XLM-R.
void gelu(float* x, size_t n);
// Bidirectional self-attention of sequences packed one after another, without padding
// (every token sees every token of its own sequence):
//   qkv [rows, 3 · n_heads · d]: each row's queries, keys and values side by side (the
//   fused projection); sequence i holds rows [starts[i], starts[i + 1]) (starts ascending,
//   starts.front() = 0); out [rows, n_heads · d].
void encoder_attention(const float* qkv, const std::vector<size_t>& starts, size_t n_heads, size_t d, float* out);
}  // namespace ref

namespace fast {
void linear(const float* x, size_t T, const Matrix& w, float* y, size_t ldy = 0);
void rmsnorm(const float* x, const float* w, size_t T, size_t H, float eps, float* y);
void rope(float* x, size_t T, size_t stride, size_t heads, size_t head_dim, const int64_t* positions, const Rope& rope);
// The same in two steps: a pass's cos / sin per (row, pair) computed once (every layer
// rotates at the same positions), then applied.
struct RopeTable {
  size_t half = 0;
  std::vector<float> cos, sin;  // [T, half]
};
RopeTable rope_table(const int64_t* positions, size_t T, const Rope& rope);
void rope_apply(float* x, size_t T, size_t stride, size_t heads, size_t head_dim, const RopeTable& table);
// x[t, :n] += y[t, :n] for t < T (rows x_stride / y_stride floats apart).
void add_rows(float* x, size_t x_stride, const float* y, size_t y_stride, size_t T, size_t n);
void silu_mul(const float* gate_up, size_t T, size_t F, float* out);
void attention(const float* q, size_t q_stride, const float* k, const float* v, size_t T, size_t L, size_t n_heads,
               size_t n_kv, size_t d, size_t window, float* out, KvStrides kv = {});

// Attention of one sequence's few new rows (decode), for attention_many.
struct AttentionJob {
  const float* q = nullptr;  // [T, n_heads, d], rows q_stride floats apart
  size_t q_stride = 0;
  const float *k = nullptr, *v = nullptr;  // L positions of n_kv heads, laid out as `kv` says
  size_t T = 0, L = 0;
  float* out = nullptr;  // [T, n_heads, d], rows out_stride floats apart
  size_t out_stride = 0;
  KvStrides kv;  // the default: [L, n_kv, d]
};
// Several sequences' attention in one parallel section (a decode step of a batch): every
// (sequence, row, head) is an independent job. Same arithmetic as attention() per row.
void attention_many(const std::vector<AttentionJob>& jobs, size_t n_heads, size_t n_kv, size_t d, size_t window);

// The encoder ops of namespace ref, threaded, with AVX-512 where the CPU has it.
void layer_norm(float* x, size_t T, size_t H, const float* w, const float* b, float eps);
void residual_layer_norm(float* x, const float* y, const float* bias, size_t T, size_t H, const float* w,
                         const float* b, float eps);
void gelu(float* x, size_t n);
void encoder_attention(const float* qkv, const std::vector<size_t>& starts, size_t n_heads, size_t d, float* out);
}  // namespace fast

// Threads used by the fast kernels (default: the PIVOTMT_THREADS environment variable, else all cores).
void set_num_threads(int n);
// OpenBLAS computes on the calling thread only and its worker threads are stopped: the
// fast ops call it from their own pool (called once by them; again after using OpenBLAS's
// threads elsewhere, as the engine benchmark's SGEMM ceiling does).
void blas_use_caller_thread_only();
int num_threads();

}  // namespace pivotmt::cpu
