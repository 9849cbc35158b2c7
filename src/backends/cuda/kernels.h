// Launchers of the CUDA kernels behind the op interface (one .cu file per op family).
// Pointers are device memory; "half" buffers are IEEE F16. Row-major 2-D buffers take their
// row stride in elements (ld*). Every launcher checks its launch.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace pivotmt::train {
struct AdamWScalars;
}

namespace pivotmt::cuda::kernels {

// --- elementwise.cu
// x[t] = table[ids[t]], rows of H halves.
void embed(const void* table, const int32_t* ids, int T, int H, void* x, int ldx, cudaStream_t s);
// x += y (F16, rounded once per element as PyTorch's half add).
void add(void* x, int ldx, const void* y, int ldy, int rows, int cols, cudaStream_t s);
// out[r, i] = f16(f16(silu(gate)) * up) with gate_up rows [gate F | up F].
void silu_mul(const void* gate_up, int ldg, int rows, int F, void* out, int ldo, cudaStream_t s);
// out[i] = x[rows[i]] for rows of `cols` elements of `elem_bytes` bytes.
void gather_rows(const void* x, int ldx, const int32_t* rows, int n, int cols, int elem_bytes, void* out, int ldo,
                 cudaStream_t s);
// dst[i] = random_fill::value(seed, i, scale, offset) as F16 (random_fill.h).
// --- top_k.cu: each logits row's max, log Σ e^(x − max) and k largest (EncoderOps::top_k).
constexpr int kMaxTopK = 64;
void row_top_k(const float* logits, int rows, int V, int k, float* stats, float* values, int32_t* tokens, cudaStream_t s);

void fill_random_f16(void* dst, size_t count, uint64_t seed, float scale, float offset, cudaStream_t s);
void fill_random_f32(float* dst, size_t count, uint64_t seed, float scale, float offset, cudaStream_t s);
// Float conversion (F32 / F16 / BF16 codes 0 / 1 / 2), round to nearest even.
void convert(const void* src, int from, void* dst, int to, size_t count, cudaStream_t s);

// --- norm_rope.cu
// y = f16(f16(x * rsqrt(mean(x²) + eps)) * w), the sum in F32 (Hugging Face's LlamaRMSNorm).
void rmsnorm(const void* x, int ldx, const void* w, int rows, int H, float eps, void* y, int ldy, cudaStream_t s);
// Rotate-half RoPE in place on the first `heads` heads of each row (F16, cos/sin computed
// in F32 and rounded to F16, then the rotation in F16 as transformers does it).
void rope(void* x, int ldx, int T, int heads, int head_dim, const int32_t* positions, const float* inv_freq,
          cudaStream_t s);

// x += y, then out = rmsnorm(x) · w (add() and rmsnorm()'s arithmetic) in one pass, one row
// per block with 16-byte accesses; out may be y. Needs add_rmsnorm_supported: 16-byte
// aligned rows, H a multiple of 8.
bool add_rmsnorm_supported(const void* x, int ldx, const void* y, int ldy, const void* w, int H, const void* out,
                           int ldo);
void add_rmsnorm(void* x, int ldx, const void* y, int ldy, const void* w, int rows, int H, float eps, void* out,
                 int ldo, cudaStream_t s);
// rope() on the q and k heads of qkv and kv_write() of its rows in one pass (one row per
// block, 16-byte accesses). Needs rope_kv_write_supported: head_dim a multiple of 16,
// 16-byte aligned rows and pools.
bool rope_kv_write_supported(const void* qkv, int ldq, int d, const void* k_pool, const void* v_pool);
void rope_kv_write(void* qkv, int ldq, int T, int nh, int nkv, int d, const int32_t* positions, const float* inv_freq,
                   const int32_t* slots, void* k_pool, void* v_pool, cudaStream_t s);

// --- attention.cu (paged KV: a layer's keys are [slots, kv_heads, head_dim] halves)
// Stores row t's k and v (columns nh*d and (nh+nkv)*d of qkv) in slot slots[t].
void kv_write(const void* qkv, int ldq, int T, int nh, int nkv, int d, const int32_t* slots, void* k_pool,
              void* v_pool, cudaStream_t s);
// Runs `count` block copies (entries: (from block, to block, positions) int32 triples on the
// device, independent of each other) over a pool of `arrays` arrays `array_bytes` apart,
// each [slots, position_bytes]: positions [0, positions) of every array's block `from`
// into block `to`. One launch, whatever the pool's size (no pitch limit).
void kv_copy_blocks(const int32_t* entries, int count, int arrays, size_t array_bytes, int position_bytes, void* pool,
                    cudaStream_t s);
// Causal attention of each q row over its sequence's cached positions [first, pos]:
// row t belongs to sequence row_seq[t] at position positions[t]; sequence i's block table
// starts at tables + table_offsets[i]. F32 scores and softmax (online), F16 out.
void attention(const void* qkv, int ldq, int T, int nh, int nkv, int d, int window, const int32_t* row_seq,
               const int32_t* positions, const int32_t* table_offsets, const int32_t* tables, const void* k_pool,
               const void* v_pool, void* out, int ldo, cudaStream_t s);

// Decode rows' attention, split-KV: one thread block per (row, KV head, split of the row's
// visible keys: `splits` consecutive ranges of max(min_keys_per_split, ⌈visible / splits⌉)
// keys, so a short row leaves its last splits empty), over T rows — rows 0..T−1, or with
// `rows` the T rows it lists (the few-row sequences of a pass the tensor cores take the
// rest of; partials then indexed by position in the list) —, the GQA group's query heads sharing each loaded key and value
// (16-byte loads, d / 8 lanes per key); with splits > 1 each split's softmax state goes to
// `partials` (attention_split_partials(T, nh, d, splits) floats) and a second kernel merges
// them by log-sum-exp. The same output as attention() up to the order of the sums. Needs
// attention_split_supported: d of 64, 128 or 256, at most 8 query heads per KV head, qkv
// rows 16-byte aligned.
bool attention_split_supported(int nh, int nkv, int d, int ldq, const void* qkv);
size_t attention_split_partials(int T, int nh, int d, int splits);
void attention_split(const void* qkv, int ldq, int T, int nh, int nkv, int d, int window, const int32_t* row_seq,
                     const int32_t* positions, const int32_t* table_offsets, const int32_t* tables, const void* k_pool,
                     const void* v_pool, int splits, int min_keys_per_split, const int32_t* rows, float* partials,
                     void* out, int ldo, cudaStream_t s);

// --- attention_prefill.cu
// The same attention on the tensor cores for rows in query tiles ((first row, rows) int32
// pairs, each up to kQueryTileRows consecutive rows of one sequence: PassMetadata's), one
// thread block per (tile, head): keys and values staged through shared memory by cp.async,
// S = Q Kᵀ and O += P V by mma.sync (F16 in, F32 accumulate, P rounded to F16), an online
// softmax in registers. Needs attention_prefill_supported: d of 64 or 128, 4-byte aligned
// rows.
bool attention_prefill_supported(int nh, int nkv, int d, int ldq, const void* qkv, int ldo, const void* out);
void attention_prefill(const void* qkv, int ldq, int nh, int nkv, int d, int window, const int32_t* tiles,
                       int tile_count, const int32_t* row_seq, const int32_t* positions, const int32_t* table_offsets,
                       const int32_t* tables, const void* k_pool, const void* v_pool, void* out, int ldo,
                       cudaStream_t s);

// --- sampling.cu
// One row's sampling as the kernel reads it (24 bytes, 8-byte aligned).
struct DeviceSampling {
  double u;  // the row's uniform draw in [0, 1)
  float temperature, top_p;
  int32_t top_k, greedy;
};
constexpr int kMaxSampledTopK = 1024;
// Whether a sampled row can be sampled on the device: top-k on, under the vocabulary and at
// most kMaxSampledTopK (otherwise every token may stay in: the host samples it).
bool sampling_supported(int top_k, int V);
// ids[r] = engine/sampling.cpp's sample_token_at(row r, params[r]) — argmax for a greedy row
// — or -1 when more than 2048 tokens tie into the top-k (the host then samples the row).
void sample_rows(const float* logits, int ld, int rows, int V, const DeviceSampling* params, int32_t* ids,
                 cudaStream_t s);

// --- argmax.cu
// ids[r] = the first index of the maximum of row r (F32).
void argmax_rows(const float* x, int ldx, int rows, int cols, int32_t* ids, cudaStream_t s);

}  // namespace pivotmt::cuda::kernels

#include <cublas_v2.h>
namespace pivotmt::cuda::kernels {
// --- linear.cu: y[rows, out] = x[rows, in] · Wᵀ with W [out, in] row-major, F16 inputs,
// F32 accumulation (cuBLAS compute type 32F, as PyTorch), F16 or F32 output. Up to
// kGemvMaxRows rows (a decode step) through a GEMV kernel where gemv_supported (in a
// multiple of 8, 16-byte aligned rows) and gemv_enabled(), else cuBLAS on the handle's stream
// (which must be `s`).
constexpr int kGemvMaxRows = 8;
bool gemv_supported(const void* x, int ldx, int rows, const void* w, int in);
// Process-wide: whether linear() may take the GEMV kernel (default on; PIVOTMT_CUDA_GEMV=0
// at start turns it off). ops_harness --perf times both sides.
void set_gemv_enabled(bool on);
bool gemv_enabled();
void linear(cublasHandle_t blas, cudaStream_t s, const void* x, int ldx, int rows, const void* w, int out, int in,
            void* y, int ldy, bool y_f32);

// --- encoder.cu: the encoder ops (BERT, XLM-R), F32 throughout, contiguous rows.
// y[rows, out] = x[rows, in] · Wᵀ, F32 inputs and sums (no TF32).
void linear_f32(cublasHandle_t blas, const float* x, int rows, const float* w, int out, int in, float* y);
// out [n] F16 = x rounded to nearest even, finite values saturated to ±65504: the inputs of
// an F16 encoder linear (then linear() above with an F32 output).
void encoder_to_f16(const float* x, size_t n, void* out, cudaStream_t s);
void encoder_add_bias(float* y, int rows, int n, const float* bias, cudaStream_t s);  // y[r] += bias
// x = LayerNorm(x + y + bias) per row of H (y and bias null: LayerNorm(x)), in place.
void encoder_layer_norm(float* x, const float* y, const float* bias, int rows, int H, const float* w, const float* b,
                        float eps, cudaStream_t s);
void encoder_gelu(float* x, size_t n, cudaStream_t s);  // the exact (erf) GELU, in place
// qkv [rows, 3 heads d] → out [rows, heads d]: row t attends to rows [row_begin[t], row_end[t]).
bool encoder_attention_supported(int d);  // d ≤ 256
void encoder_attention(const float* qkv, int rows, int heads, int d, const int32_t* row_begin, const int32_t* row_end,
                       float* out, cudaStream_t s);
// acc[s, i] += weight · x[t, i] in double, row after row, for the rows t ∈ [starts[s],
// starts[s + 1]) with keep[t] ≠ 0 (EncoderOps::pool_rows; x [rows, H] contiguous).
void encoder_pool_rows(const float* x, int H, const int32_t* starts, int sequences, const int32_t* keep, double weight,
                       double* acc, cudaStream_t s);
// The encoder–decoder's ops (M2M100): x += y; max(x, 0); embedding rows.
void encoder_add(float* x, const float* y, size_t n, cudaStream_t s);
void encoder_relu(float* x, size_t n, cudaStream_t s);
// out[r] = table[ids[r]] · scale + positions[position_ids[r]] (rounded product, then the sum);
// ids_and_positions: rows ids, then rows position ids. The table F32, or F16 (table_f16).
void encoder_embed(const void* table, bool table_f16, const int32_t* ids_and_positions, int rows, int H, float scale,
                   const float* positions, float* out, cudaStream_t s);
// A decoder row's cache: [layers · 2 · capacity, H]; the row sees keys [0, visible) of
// layer l and writes its own at `position`.
struct CacheRow {
  float* kv;
  int32_t capacity, visible, position, unused;
};
// kv_new [rows, 2H] (ld floats apart: keys | values) into each row's cache at its position.
void encoder_write_cache(const float* kv_new, int ld, const CacheRow* rows_meta, int rows, int H, int layer,
                         cudaStream_t s);
// q [rows, heads d] (ldq apart) against each row's visible keys and values of `layer` →
// out [rows, heads d]; the encoder attention's online softmax (d ≤ 256).
void encoder_cached_attention(const float* q, int ldq, const CacheRow* rows_meta, int rows, int heads, int d, int layer,
                              float* out, cudaStream_t s);
}  // namespace pivotmt::cuda::kernels

namespace pivotmt::cuda::kernels {
// --- train.cu: training's ops (train/train_device.h), F32, train_ops.cpp's contracts.
// Row-major C[M, N] = alpha op(A) op(B) + beta C, all F32, compute 32F (no TF32).
void train_gemm(cublasHandle_t blas, bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                int lda, const float* B, int ldb, float beta, float* C, int ldc);
void train_rmsnorm_forward(const float* x, const float* w, int T, int H, float eps, float* y, float* rinv, cudaStream_t s);
void train_rmsnorm_backward(const float* x, const float* w, const float* rinv, const float* dy, int T, int H, float* dx,
                            cudaStream_t s);
void train_rope(float* x, int T, int stride, int heads, int d, const float* cos_t, const float* sin_t, bool inverse,
                cudaStream_t s);
void train_attention_forward(const float* q, const float* k, const float* v, int T, int nh, int nkv, int d, int window,
                             float* out, float* lse, cudaStream_t s);
// D: scratch [nh, T].
void train_attention_backward(const float* q, const float* k, const float* v, const float* out, const float* dout,
                              const float* lse, int T, int nh, int nkv, int d, int window, float* D, float* dq,
                              float* dk, float* dv, cudaStream_t s);
void train_silu_mul_forward(const float* g, const float* u, size_t n, float* out, cudaStream_t s);
void train_silu_mul_backward(const float* g, const float* u, const float* dout, size_t n, float* dg, float* du,
                             cudaStream_t s);
void train_add(const float* a, const float* b, size_t n, float* out, cudaStream_t s);
void train_dropout(const float* x, size_t n, uint64_t seed, uint32_t threshold, float scale, float* out, cudaStream_t s);
void train_add_dropped(const float* dxd, size_t n, uint64_t seed, uint32_t threshold, float scale, bool drop, float* dx,
                       cudaStream_t s);
void train_cross_entropy(float* logits, const int32_t* labels, int rows, int V, float scale, double* row_loss,
                         cudaStream_t s);
void train_embed_rows(const float* table, const int32_t* ids, int T, int H, float* out, cudaStream_t s);
void train_nf4_dequantize(const uint8_t* packed, const float* absmax, const float* codes, size_t numel, float* out,
                          cudaStream_t s);
void train_f16_to_f32(const uint16_t* in, size_t n, float* out, cudaStream_t s);
// Σ x² in double: one partial per block (at most max_blocks) written to partial[]; returns
// how many blocks ran. x *= scale. AdamW's update (train/optimizer.h) over n elements.
int train_sum_squares(const float* x, size_t n, double* partial, int max_blocks, cudaStream_t s);
void train_scale(float* x, size_t n, float scale, cudaStream_t s);
void train_adamw(float* p, const float* g, float* m, float* v, size_t n, const train::AdamWScalars& scalars,
                 cudaStream_t s);
// out contiguous = in · scale rounded to F16 (scale: device memory holding a power of two,
// exact; null: 1).
void train_f32_to_f16(const float* in, int rows, int cols, int ld, uint16_t* out, cudaStream_t s,
                      const float* scale = nullptr);
// From train_max_abs's partials of A: scalars [3] = {scale, alpha / scale, beta} (device),
// scale the power of two that brings max |A| to [2^13, 2^14) (1 for 0, NaN, infinity).
void train_f16_scalars(const float* partial, int blocks, float alpha, float beta, float* scalars, cudaStream_t s);
// train_gemm with F16 A and B whose alpha and beta are device memory (alpha_beta [2]).
void train_gemm_f16(cublasHandle_t blas, bool trans_a, bool trans_b, int M, int N, int K, const float* alpha_beta,
                    const void* A, int lda, const void* B, int ldb, float* C, int ldc);
// max |x| of a [rows, cols] matrix: one partial per block (at most max_blocks) in partial[];
// returns how many blocks ran (a NaN anywhere makes a partial NaN).
int train_max_abs(const float* in, int rows, int cols, int ld, float* partial, int max_blocks, cudaStream_t s);
void train_nf4_to_f16(const uint8_t* packed, const float* absmax, const float* codes, size_t numel, uint16_t* out,
                      cudaStream_t s);

// --- train_attention.cu: the tensor-core attention's steps between its GEMMs
// (cuda/train_attention.cpp). out [rows, cols] contiguous = in (ld apart) rounded to TF32.
void train_tf32_round(const float* in, int rows, int cols, int ld, float* out, cudaStream_t s);
// S [heads, R, Tk] (rows ld apart): query positions r0.., key positions k0..; scores →
// exp(s − lse) where visible, 0 elsewhere, TF32-rounded; lse [heads, T] read from
// saved_lse, or computed and written to lse_out (exactly one given).
void train_attention_probabilities(float* S, int heads, int R, int Tk, int ld, int r0, int k0, int window, int T,
                                   const float* saved_lse, float* lse_out, cudaStream_t s);
// dP [heads, R, Tk] (rows ld apart) = P ⊙ (dP − D[h, r0 + i]), TF32-rounded.
void train_attention_score_gradients(const float* P, float* dP, int heads, int R, int Tk, int ld, int r0, int T,
                                     const float* D, cudaStream_t s);
// The fused forward (head dims 64 and 128, 16-byte aligned buffers): out [T, nh d] and
// lse [nh, T] of causal attention over contiguous q [T, nh d], k, v [T, nkv d], F16 tensor
// cores, no score matrix in memory.
bool train_attention_fused_supported(int nh, int nkv, int d, const void* q, const void* k, const void* v,
                                     const void* out);
void train_attention_fused_forward(const float* q, const float* k, const float* v, int T, int nh, int nkv, int d,
                                   int window, float* out, float* lse, cudaStream_t s);
// The fused backward (the same head dims and alignment, dout too): dq, dk, dv [as q, k, v]
// += causal attention's gradients, from the forward's lse and D [nh, T] = dO · O; two
// kernels, no score matrix in memory, no atomics (each element summed by one thread).
void train_attention_fused_backward(const float* q, const float* k, const float* v, const float* dout,
                                    const float* lse, const float* D, int T, int nh, int nkv, int d, int window,
                                    float* dq, float* dk, float* dv, cudaStream_t s);
// D [nh, T] = rowwise dO · O per head (double sums).
void train_attention_output_dot(const float* dout, const float* out, int T, int nh, int d, float* D, cudaStream_t s);
}  // namespace pivotmt::cuda::kernels
