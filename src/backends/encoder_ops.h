// The op interface of the F32 encoders and encoder–decoders (BERT and XLM-R: sentence
// embeddings for retrieval, COMET's encoder; M2M100: NLLB-200), their side of the seam
// ops.h is for the Llama forward: BertEncoder and M2M100Model are written once over it;
// backends/cpu/encoder_ops.cpp and backends/cuda/encoder_ops.cpp implement it.
//
// Activations and sums are F32 on every device: COMET's segment scores must stay within 1e-4
// of unbabel-comet's F32 ones. A linear's weights may be stored F16 (the CPU: converted to
// F32 in its kernels; a GPU: the tensor cores, with the inputs rounded to F16 for the product
// — PyTorch's F16 numerics, a deviation the caller asked for). Activations are contiguous 2-D tensors
// of rows packed sequence after sequence (no padding); `starts` gives each sequence's first
// row. Shapes: T rows, H hidden, F intermediate, nh heads of d dims.
#pragma once
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backends/ops.h"
#include "backends/tensor.h"

namespace pivotmt {

// W [out, in] (Hugging Face's layout) and an optional bias [out], added after the product.
class EncoderLinear {
 public:
  virtual ~EncoderLinear() = default;
  size_t out = 0, in = 0;
  size_t bytes = 0;  // what the weights and the bias take in the device's memory
};

// One sequence's query rows of a decoder pass and the key/value cache they attend to.
// A cache is one tensor [layers · 2 · capacity, H]: layer l's keys in rows
// [2l · capacity, 2l · capacity + keys), its values `capacity` rows further.
struct CachedRows {
  size_t rows = 0;            // its query rows: the pass's next `rows` rows
  const Tensor* kv = nullptr;  // its cache
  size_t capacity = 0;        // positions a layer's block holds
  size_t keys = 0;            // keys its last row sees (self-attention: those before the pass + rows)
  bool causal = true;         // row i sees keys [0, keys − rows + i]; else each row sees all `keys`
};

// A logits row as a beam search reads it: log-softmax(x)[t] = (x[t] − max) − log_sum, and its
// k largest logits, the larger value first, the lower token on ties.
struct RowTop {
  float max = 0, log_sum = 0;
  std::vector<int32_t> tokens;
  std::vector<float> logits;
};
// The CPU's computation of one row (the reference every device's top_k is checked against):
// max and e^(x − max) summed by cpu::vmath, log in double, rounded to F32.
void row_top_k_host(const float* row, size_t V, size_t k, RowTop& out);

class EncoderOps {
 public:
  virtual ~EncoderOps() = default;
  virtual Device device() const = 0;
  virtual std::string describe() const = 0;

  // Weights from host values (moved in: a device copies them out, the CPU keeps them),
  // stored as `storage` (F32 or F16 everywhere; the CPU also I8 with per-row scales).
  virtual std::unique_ptr<EncoderLinear> make_linear(std::vector<float> w, size_t out, size_t in,
                                                     std::vector<float> bias, DType storage = DType::F32) = 0;
  Tensor upload(std::span<const float> values, size_t rows, size_t cols);  // F32 [rows, cols]
  std::vector<float> download(const Tensor& t);                           // rows × cols, row-major
  // t's values where host code can read them: in place on the CPU, else copied into
  // `scratch` (valid until the next call with it).
  virtual const float* read(const Tensor& t, std::vector<float>& scratch);
  Tensor empty(size_t rows, size_t cols) const { return Tensor(device(), DType::F32, rows, cols); }
  // A tensor over host memory `p` [rows, cols] when this device computes in host memory
  // (the CPU: results land there without a copy); an empty tensor otherwise.
  virtual Tensor host_view(float* p, size_t rows, size_t cols) const;
  void download(const Tensor& t, std::span<float> out);  // into host memory of t's size

  void linear(const Tensor& x, const EncoderLinear& w, const Tensor& y);  // y [T, out] = x Wᵀ (+ bias)
  // Each row of x [T, H] in place: (x − mean) / sqrt(var + eps) · w + b (biased variance).
  void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps);
  // x = LayerNorm(x + y + bias) per row: the post-norm residual of a projection y [T, H]
  // whose bias [1, H] is added here (the CPU's order of the sums).
  void residual_layer_norm(const Tensor& x, const Tensor& y, const Tensor& bias, const Tensor& w, const Tensor& b,
                           float eps);
  void gelu(const Tensor& x);  // x · Φ(x) in place, the exact (erf) GELU
  // qkv [T, 3 nh d] (queries, keys, values side by side) → out [T, nh d]: every row attends
  // to every row of its own sequence (rows [starts[i], starts[i + 1])), scale 1 / √d.
  void attention(const Tensor& qkv, std::span<const size_t> starts, size_t heads, size_t d, const Tensor& out);

  // --- the encoder–decoder's ops (M2M100 / NLLB-200: pre-norm, ReLU, cached decoding)
  void add(const Tensor& x, const Tensor& y);  // x += y, elementwise
  void relu(const Tensor& x);                  // max(x, 0) in place
  // dst[dst_row + i, dst_col + j] = src[src_row + i, src_col + j] for i < rows, j < cols.
  void copy(const Tensor& src, size_t src_row, size_t src_col, const Tensor& dst, size_t dst_row, size_t dst_col,
            size_t rows, size_t cols);
  // out [T, H] row t = table row ids[t] · scale + positions row positions[t] (the
  // multiplication rounded, then the sum: no fused multiply-add, as the CPU's loop).
  void embed(const EncoderLinear& table, std::span<const int32_t> ids, float scale, const Tensor& positions,
             std::span<const int32_t> position_ids, const Tensor& out);
  // Every span's new rows of kv_new [T, 2H] (keys | values, columns of a wider tensor
  // allowed) into layer `layer` of its cache at positions [keys − rows, keys).
  void write_cache(const Tensor& kv_new, std::span<const CachedRows> spans, size_t layer);
  // q [T, heads d] (columns of a wider tensor allowed) against each span's cache, layer
  // `layer`, scale 1 / √d → out [T, heads d].
  void cached_attention(const Tensor& q, std::span<const CachedRows> spans, size_t layer, size_t heads, size_t d,
                        const Tensor& out);
  // Each row of logits [n, V]: its RowTop with k ≤ V entries — a few floats a row where the
  // whole row would cross to the host.
  void top_k(const Tensor& logits, size_t k, std::vector<RowTop>& out);

  // --- pooling on the device (COMET's layer mix and mean): sums of rows kept in F64, so a
  // batch's [sequences, H] crosses to the host once instead of every layer's [T, H] states.
  Tensor pooled_sums(size_t sequences, size_t cols);  // F64 [sequences, cols] of zeros
  // acc [n, H] F64: acc[s] += weight · x[t] (the product and the sum in double, row after
  // row in order — the CPU's loop, so every device gives the same bits) for each row t of
  // sequence s (rows [starts[s], starts[s + 1]) of x [T, H]) whose keep[t] is nonzero.
  void pool_rows(const Tensor& x, std::span<const size_t> starts, std::span<const uint8_t> keep, double weight,
                 const Tensor& acc);
  std::vector<double> download_pooled(const Tensor& acc);
  virtual void synchronize() {}

  // A decoder step's ops (M2M100Model::decode) between begin_step and end_step: a GPU
  // records them and replays the CUDA graph it captured for this row count when they are
  // the same launches (same buffers, shapes, metadata addresses), else captures one. The
  // ops' results are there after end_step; a read to the host in between runs what was
  // recorded first. abort_step: an op threw — what was recorded runs as launches.
  virtual void begin_step(size_t rows) { (void)rows; }
  virtual void end_step() {}
  virtual void abort_step() {}
  // Graphs on (the default on a GPU) or every step launched op by op; between steps.
  virtual void set_cuda_graphs(bool) {}
  // Decoder steps run, captured into a new graph, replayed from one.
  const PassCounters& step_counters() const { return step_counters_; }

 protected:
  virtual void do_upload(const Tensor& t, std::span<const float> values) = 0;
  virtual void do_linear(const Tensor& x, const EncoderLinear& w, const Tensor& y) = 0;
  virtual void do_layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps) = 0;
  virtual void do_residual_layer_norm(const Tensor& x, const Tensor& y, const Tensor& bias, const Tensor& w,
                                      const Tensor& b, float eps) = 0;
  virtual void do_gelu(const Tensor& x) = 0;
  virtual void do_attention(const Tensor& qkv, std::span<const size_t> starts, size_t heads, size_t d,
                            const Tensor& out) = 0;
  virtual void do_download(const Tensor& t, void* out) = 0;  // numel × the dtype's size bytes
  virtual void do_zero(const Tensor& t) = 0;
  virtual void do_pool_rows(const Tensor& x, std::span<const size_t> starts, std::span<const uint8_t> keep,
                            double weight, const Tensor& acc) = 0;
  virtual void do_add(const Tensor& x, const Tensor& y) = 0;
  virtual void do_relu(const Tensor& x) = 0;
  virtual void do_copy(const Tensor& src, size_t src_row, size_t src_col, const Tensor& dst, size_t dst_row,
                       size_t dst_col, size_t rows, size_t cols) = 0;
  virtual void do_embed(const EncoderLinear& table, std::span<const int32_t> ids, float scale, const Tensor& positions,
                        std::span<const int32_t> position_ids, const Tensor& out) = 0;
  virtual void do_write_cache(const Tensor& kv_new, std::span<const CachedRows> spans, size_t layer) = 0;
  virtual void do_cached_attention(const Tensor& q, std::span<const CachedRows> spans, size_t layer, size_t heads,
                                   size_t d, const Tensor& out) = 0;
  // Default: the rows read on the host (read()), row_top_k_host on each.
  virtual void do_top_k(const Tensor& logits, size_t k, std::vector<RowTop>& out);

  PassCounters step_counters_;

 private:
  void check_tensor(const Tensor& t, const char* op, const char* what, bool strided = false) const;
  void check_spans(const Tensor& rows, std::span<const CachedRows> spans, size_t layer, size_t width, const char* op) const;
};

// The encoder ops of a device: the CPU's (`impl`: the plain loops or the fast kernels) or
// a GPU's (throws UnsupportedError in a build without CUDA).
std::unique_ptr<EncoderOps> make_encoder_ops(const Device& device, OpsImpl impl = OpsImpl::Fast);
std::unique_ptr<EncoderOps> make_cpu_encoder_ops(OpsImpl impl);
namespace cuda {
std::unique_ptr<EncoderOps> make_encoder_ops(int device);
}

}  // namespace pivotmt
