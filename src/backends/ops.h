// The op interface: the seam between model code and devices (STYLE: one op, one
// interface, per-device files). LlamaModel's layer sequence is written once over these
// ops; backends/cpu/cpu_ops.cpp and backends/cuda/cuda_ops.cu implement them. Each public
// op checks shapes and dtypes here (ops.cpp), then calls the device's do_* override, so an
// implementation may assume well-formed arguments.
//
// Shapes: T = new tokens of a forward pass (all sequences' rows stacked), H = hidden size,
// d = head_dim, nh / nkv = query / key-value heads, F = intermediate size, V = vocabulary.
// Activations are 2-D tensors in the device's activation dtype (F32 on the CPU, F16 on a
// GPU, as Hugging Face computes in FP16); rows of a fused output may be strided views.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backends/tensor.h"
#include "engine/sampling_params.h"

namespace pivotmt {

class Checkpoint;

// The CPU's kernels: plain loops (the specification) or the fast SIMD / BLAS ones.
enum class OpsImpl { Reference, Fast };

// y = x Wᵀ with W [out, in] as Hugging Face stores it. Several checkpoint matrices may be
// stacked by rows (QKV, gate/up), so a fused projection is one GEMM.
class LinearWeights {
 public:
  virtual ~LinearWeights() = default;
  size_t out = 0, in = 0;
  virtual size_t bytes() const = 0;
};

// One sequence's keys and values, every layer, in the device's KV memory. Opaque outside
// the backend that made it; releasing it (destruction) returns its memory.
class KvStorage {
 public:
  virtual ~KvStorage() = default;
};
struct KvCache {
  size_t length = 0;  // positions held
  std::unique_ptr<KvStorage> storage;
};

// What the attention and KV ops need to know of the model.
struct AttentionShape {
  size_t layers = 0, heads = 0, kv_heads = 0, head_dim = 0;
  size_t window = 0;             // Mistral's sliding window; 0: none
  std::vector<float> inv_freq;   // [head_dim / 2] RoPE inverse frequencies (rope_scaling applied)
};

// The sequences of one forward pass: sequence i's new tokens are rows [row0, row0 + count)
// of the activations and take positions cache->length, ..., cache->length + count - 1.
struct SeqRows {
  KvCache* cache = nullptr;
  size_t row0 = 0, count = 0;
};

struct OpsOptions {
  OpsImpl impl = OpsImpl::Fast;  // CPU only
  // KV memory the device may hold, in bytes. 0: the CPU counts nothing (the engine's budget
  // rules), a GPU sizes its block pool from free memory. Set on the CPU to make the paging
  // decisions (a sequence that cannot grow) testable without a GPU.
  size_t kv_capacity_bytes = 0;
  // Device memory a GPU leaves free beside the weights and the KV pool: the activations of
  // the largest forward pass (the model estimates them) and the GEMM workspace.
  size_t activation_reserve_bytes = 0;
  // INT8 weights (CPU): quantise the activations too, per row and 256-value block, and
  // multiply int8 · int8 with exact int32 sums (VNNI where present; `--weights q8`).
  // false: weight-only INT8, F32 activations (`--weights int8`). GGML (a GGUF file's
  // Q8_0 / Q4_0 / Q4_1 blocks): activations quantised to Q8_0 blocks as llama.cpp does
  // (`--weights gguf-q8`), else F32 activations (`--weights gguf`, and K-quant blocks
  // under either).
  bool int8_activations = false;
  // GPU: decode passes (one new token per sequence) run as CUDA graphs, one per row count,
  // captured at that count's first pass and replayed after, so a step's few hundred kernel
  // launches cost the host one. false: every pass launches its kernels. Same results.
  bool cuda_graphs = true;
};

// What a device did with its forward passes, for tests and benchmarks.
struct PassCounters {
  size_t passes = 0;          // forward passes completed
  size_t graph_captures = 0;  // passes captured into a new CUDA graph (then run from it)
  size_t graph_replays = 0;   // passes run by replaying a graph captured before
};

// How one row of logits becomes a token: its request's settings and its uniform draw
// u ∈ [0, 1), made by the request's generator on the host (the seed stays there).
struct RowSampling {
  SamplingParams params;
  double u = 0.0;
};

class Ops {
 public:
  virtual ~Ops() = default;
  virtual Device device() const = 0;
  virtual DType activation_dtype() const = 0;
  // Rows of a buffer of this dtype padded to a multiple of this many elements, where a
  // device reads and writes them faster aligned (a GPU: 16 bytes; the model's F32 logits,
  // whose vocabulary is often odd — TowerInstruct's 32,007 — take it). 1: no padding.
  virtual size_t row_stride_multiple(DType) const { return 1; }
  virtual std::string describe() const = 0;  // "cpu (fast kernels)", "cuda:0 (NVIDIA H200)"

  Tensor empty(size_t rows, size_t cols) const { return Tensor(device(), activation_dtype(), rows, cols); }
  Tensor empty(size_t rows, size_t cols, DType dtype) const { return Tensor(device(), dtype, rows, cols); }

  // --- Weights (converted while loading: a GPU stages through pinned memory and converts
  // F32 / BF16 to F16 on the device). `storage` is F32, F16 or I8 on the CPU; F16 on a GPU.
  virtual std::unique_ptr<LinearWeights> load_linear(const Checkpoint& ckpt, const std::vector<std::string>& names,
                                                     DType storage) = 0;
  // A norm weight [1, n] in the dtype the device's rmsnorm multiplies by.
  virtual Tensor load_vector(const Checkpoint& ckpt, const std::string& name) = 0;
  // The same from values in memory (W [out, in] row-major as F32): tests, merged adapters.
  virtual std::unique_ptr<LinearWeights> make_linear(std::span<const float> w, size_t out, size_t in, DType storage) = 0;
  Tensor make_vector(std::span<const float> values);
  // Random weights made on the device itself (random_fill.h: the same values on every
  // device): W [out, in] ~ U(-scale, scale); a vector offset + U(-scale, scale).
  virtual std::unique_ptr<LinearWeights> random_linear(size_t out, size_t in, DType storage, uint64_t seed, float scale) = 0;
  virtual Tensor random_vector(size_t n, uint64_t seed, float scale, float offset) = 0;
  // An unmerged LoRA adapter on stacked part `part` of a projection (QKV: 0 q, 1 k, 2 v):
  // y_part += scaling · (x Aᵀ) Bᵀ with A [r, in] and B [out_part, r] in F32, as PEFT
  // computes it. Throws UnsupportedError on devices that do not implement it.
  virtual void add_lora(LinearWeights& w, size_t part, std::span<const float> A, std::span<const float> B, size_t r,
                        float scaling);
  // Writes F32 values (rows × cols, row-major) into t, converted to its dtype.
  void from_host_f32(const Tensor& t, std::span<const float> values);

  // --- KV caches. configure() once, before any cache exists.
  void configure(const AttentionShape& shape);
  const AttentionShape& shape() const { return shape_; }
  virtual KvCache new_cache() = 0;
  // A cache holding the first n positions of `from` (n <= from.length): a shared prompt
  // prefix, copied on the CPU, referenced (full blocks) on a GPU.
  KvCache prefix_of(const KvCache& from, size_t n);
  void truncate(KvCache& cache, size_t n);  // keep the first n positions
  // Preallocates room for `positions` (no reallocation while it grows that far).
  virtual void reserve(KvCache& cache, size_t positions) = 0;
  // Makes room for `positions` in all; false (nothing changed) when the device's KV memory
  // cannot hold them now: the engine then frees donors or preempts a sequence.
  virtual bool grow(KvCache& cache, size_t positions) = 0;
  virtual size_t kv_bytes_per_position() const = 0;
  // The engine's default KV budget: what this device can give keys and values.
  virtual size_t default_kv_budget(size_t weight_bytes) const = 0;
  virtual size_t kv_capacity_bytes() const = 0;  // 0: not limited by the backend

  // --- One forward pass. begin_forward takes the token ids and sequences (grow() must have
  // made room for every sequence's new positions); end_forward advances the lengths.
  void begin_forward(std::span<const int32_t> tokens, std::span<const SeqRows> seqs);
  void end_forward();
  // After an exception inside a pass: the caches keep the positions they had before it.
  void abort_forward();

  void embed(const LinearWeights& table, const Tensor& x);                     // x [T, H] = table rows of the tokens
  void rmsnorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& y);  // [rows, H]
  void linear(const Tensor& x, const LinearWeights& w, const Tensor& y);        // [rows, in] -> [rows, out]
  void add(const Tensor& x, const Tensor& y);                                   // x += y, [rows, H]
  void silu_mul(const Tensor& gate_up, const Tensor& out);                      // [rows, 2F] -> [rows, F]
  // RoPE in place on the first `heads` heads of each row of x [T, >= heads * d], at the
  // batch's positions (q and k heads are adjacent in the fused QKV output).
  void rope(const Tensor& x, size_t heads);
  // qkv [T, (nh + 2 nkv) d]: stores each row's k and v in its sequence's cache at its
  // position, then causal attention of the q rows over the caches. out [T, nh d].
  void attention(size_t layer, const Tensor& qkv, const Tensor& out);
  // Fused forms of the sequences the Llama forward runs (a device may do each in one pass;
  // the result is the sequence's):
  //   add_rmsnorm: add(x, y) then rmsnorm(x, weight, eps, out) (out may be y);
  //   rope_attention: rope(qkv, heads + kv_heads) then attention(layer, qkv, out).
  void add_rmsnorm(const Tensor& x, const Tensor& y, const Tensor& weight, float eps, const Tensor& out);
  void rope_attention(size_t layer, const Tensor& qkv, const Tensor& out);
  void gather_rows(const Tensor& x, std::span<const size_t> rows, const Tensor& out);  // out[i] = x[rows[i]]
  std::vector<float> to_host_f32(const Tensor& t);  // rows × cols, row-major
  std::vector<int32_t> argmax_rows(const Tensor& logits);  // first maximum of each row
  // One token per row of logits [R, V] F32 as engine/sampling.h's sample_token_at(row,
  // params, u) picks it (argmax for a greedy row). A device may sample where the logits are,
  // so that only the ids travel; the default copies the logits to the host.
  std::vector<int32_t> sample_rows(const Tensor& logits, std::span<const RowSampling> rows);
  virtual void synchronize() {}
  const PassCounters& pass_counters() const { return counters_; }
  // A GPU's decode steps as CUDA graphs or launched kernel by kernel (OpsOptions::cuda_graphs;
  // benchmarks measure both). Between passes.
  virtual void set_cuda_graphs(bool) {}

 protected:
  // The batch of the pass in progress, for the implementations.
  struct Batch {
    std::vector<int32_t> tokens;    // [T] token ids
    std::vector<int64_t> positions;  // [T]
    std::vector<SeqRows> seqs;
  };
  const Batch& batch() const { return batch_; }

  virtual void do_configure() {}
  virtual KvCache do_prefix_of(const KvCache& from, size_t n) = 0;
  virtual void do_truncate(KvCache& cache, size_t n) = 0;
  virtual void do_begin_forward() {}
  virtual void do_end_forward() {}  // before the caches' lengths advance; may run the pass's work
  virtual void do_abort_forward() {}
  virtual void do_embed(const LinearWeights& table, const Tensor& x) = 0;
  virtual void do_rmsnorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& y) = 0;
  virtual void do_linear(const Tensor& x, const LinearWeights& w, const Tensor& y) = 0;
  virtual void do_add(const Tensor& x, const Tensor& y) = 0;
  virtual void do_silu_mul(const Tensor& gate_up, const Tensor& out) = 0;
  virtual void do_rope(const Tensor& x, size_t heads) = 0;
  virtual void do_attention(size_t layer, const Tensor& qkv, const Tensor& out) = 0;
  virtual void do_add_rmsnorm(const Tensor& x, const Tensor& y, const Tensor& weight, float eps, const Tensor& out) {
    do_add(x, y);
    do_rmsnorm(x, weight, eps, out);
  }
  virtual void do_rope_attention(size_t layer, const Tensor& qkv, const Tensor& out) {
    do_rope(qkv, shape_.heads + shape_.kv_heads);
    do_attention(layer, qkv, out);
  }
  virtual void do_gather_rows(const Tensor& x, std::span<const size_t> rows, const Tensor& out) = 0;
  virtual std::vector<float> do_to_host_f32(const Tensor& t) = 0;
  virtual void do_from_host_f32(const Tensor& t, std::span<const float> values) = 0;
  virtual DType vector_dtype() const = 0;  // the dtype of norm weights on this device
  virtual std::vector<int32_t> do_argmax_rows(const Tensor& logits) = 0;
  virtual std::vector<int32_t> do_sample_rows(const Tensor& logits, std::span<const RowSampling> rows);

  PassCounters counters_;

 private:
  void check_device(const Tensor& t, const char* op, const char* what) const;
  AttentionShape shape_;
  Batch batch_;
  bool in_forward_ = false;
};

// The ops of a device: the CPU, or a GPU (throws UnsupportedError in a build without CUDA,
// Error naming the device when it is not there).
std::unique_ptr<Ops> make_ops(const Device& device, const OpsOptions& options = {});
std::unique_ptr<Ops> make_cpu_ops(const OpsOptions& options);
namespace cuda {
std::unique_ptr<Ops> make_ops(int device, const OpsOptions& options);
}

}  // namespace pivotmt
