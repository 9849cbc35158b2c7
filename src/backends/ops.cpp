// Shape and dtype checks of every op, in one place; the devices' do_* implementations
// then assume well-formed arguments.
#include "backends/ops.h"

#include <fmt/format.h>

#include "core/error.h"
#include "engine/sampling.h"  // the specification of sample_rows (the host path)

namespace pivotmt {

namespace {
[[noreturn]] void shape_error(const char* op, const std::string& what) {
  throw Error(fmt::format("op {}: {}", op, what));
}
}  // namespace

void Ops::check_device(const Tensor& t, const char* op, const char* what) const {
  if (t.empty()) shape_error(op, fmt::format("{} is an empty tensor", what));
  if (!(t.device() == device()))
    shape_error(op, fmt::format("{} is on {}, the ops run on {}", what, t.device().to_string(), device().to_string()));
}

void Ops::configure(const AttentionShape& shape) {
  if (shape.heads == 0 || shape.kv_heads == 0 || shape.heads % shape.kv_heads != 0)
    throw Error(fmt::format("attention: {} heads cannot be grouped over {} key-value heads", shape.heads, shape.kv_heads));
  if (shape.head_dim == 0 || shape.head_dim % 2 != 0 || shape.inv_freq.size() != shape.head_dim / 2)
    throw Error(fmt::format("attention: head_dim {} with {} RoPE frequencies", shape.head_dim, shape.inv_freq.size()));
  shape_ = shape;
  do_configure();
}

KvCache Ops::prefix_of(const KvCache& from, size_t n) {
  if (n > from.length) throw Error(fmt::format("prefix of {} positions from a cache of {}", n, from.length));
  if (!from.storage) throw Error("prefix of a released cache");
  return do_prefix_of(from, n);
}

void Ops::truncate(KvCache& cache, size_t n) {
  if (n >= cache.length) return;
  do_truncate(cache, n);
  cache.length = n;
}

void Ops::begin_forward(std::span<const int32_t> tokens, std::span<const SeqRows> seqs) {
  if (in_forward_) throw Error("begin_forward: a forward pass is already in progress");
  batch_.tokens.assign(tokens.begin(), tokens.end());
  batch_.seqs.assign(seqs.begin(), seqs.end());
  batch_.positions.assign(tokens.size(), 0);
  size_t row = 0;
  for (const auto& s : seqs) {
    if (!s.cache || !s.cache->storage) throw Error("begin_forward: a sequence without a cache");
    if (s.row0 != row || s.count == 0) throw Error(fmt::format("begin_forward: sequence rows start at {} (expected {}), count {}", s.row0, row, s.count));
    for (size_t i = 0; i < s.count; ++i) batch_.positions[row + i] = int64_t(s.cache->length + i);
    row += s.count;
  }
  if (row != tokens.size()) throw Error(fmt::format("begin_forward: {} tokens for {} sequence rows", tokens.size(), row));
  in_forward_ = true;
  try {
    do_begin_forward();
  } catch (...) {  // no pass began: the next one may
    in_forward_ = false;
    throw;
  }
}

void Ops::end_forward() {
  if (!in_forward_) throw Error("end_forward without begin_forward");
  do_end_forward();  // throws with the pass still in progress: the caller aborts it
  for (auto& s : batch_.seqs) s.cache->length += s.count;
  in_forward_ = false;
  ++counters_.passes;
}

void Ops::abort_forward() {
  if (!in_forward_) return;
  in_forward_ = false;
  do_abort_forward();
}

void Ops::embed(const LinearWeights& table, const Tensor& x) {
  check_device(x, "embed", "x");
  if (x.rows() != batch_.tokens.size() || x.cols() != table.in)
    shape_error("embed", fmt::format("x is {}, expected [{}, {}]", x.describe(), batch_.tokens.size(), table.in));
  for (int32_t t : batch_.tokens)
    if (t < 0 || size_t(t) >= table.out) shape_error("embed", fmt::format("token id {} outside 0..{}", t, table.out - 1));
  do_embed(table, x);
}

void Ops::rmsnorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& y) {
  check_device(x, "rmsnorm", "x");
  check_device(y, "rmsnorm", "y");
  check_device(weight, "rmsnorm", "weight");
  if (weight.numel() != x.cols() || y.rows() != x.rows() || y.cols() != x.cols())
    shape_error("rmsnorm", fmt::format("x {}, weight {}, y {}", x.describe(), weight.describe(), y.describe()));
  do_rmsnorm(x, weight, eps, y);
}

void Ops::linear(const Tensor& x, const LinearWeights& w, const Tensor& y) {
  check_device(x, "linear", "x");
  check_device(y, "linear", "y");
  if (x.cols() != w.in || y.cols() != w.out || y.rows() != x.rows() || !x.contiguous())
    shape_error("linear", fmt::format("x {} (contiguous) · W [{}, {}]ᵀ into y {}", x.describe(), w.out, w.in, y.describe()));
  if (x.rows() == 0) return;
  do_linear(x, w, y);
}

void Ops::add(const Tensor& x, const Tensor& y) {
  check_device(x, "add", "x");
  check_device(y, "add", "y");
  if (x.rows() != y.rows() || x.cols() != y.cols() || x.dtype() != y.dtype())
    shape_error("add", fmt::format("x {} += y {}", x.describe(), y.describe()));
  do_add(x, y);
}

void Ops::silu_mul(const Tensor& gate_up, const Tensor& out) {
  check_device(gate_up, "silu_mul", "gate_up");
  check_device(out, "silu_mul", "out");
  if (gate_up.cols() != 2 * out.cols() || gate_up.rows() != out.rows())
    shape_error("silu_mul", fmt::format("gate_up {} into out {}", gate_up.describe(), out.describe()));
  do_silu_mul(gate_up, out);
}

void Ops::rope(const Tensor& x, size_t heads) {
  check_device(x, "rope", "x");
  if (x.rows() != batch_.positions.size() || x.cols() < heads * shape_.head_dim)
    shape_error("rope", fmt::format("x {} for {} heads of {} at {} positions", x.describe(), heads, shape_.head_dim,
                                    batch_.positions.size()));
  do_rope(x, heads);
}

void Ops::attention(size_t layer, const Tensor& qkv, const Tensor& out) {
  check_device(qkv, "attention", "qkv");
  check_device(out, "attention", "out");
  const size_t d = shape_.head_dim;
  if (layer >= shape_.layers || qkv.rows() != batch_.positions.size() ||
      qkv.cols() != (shape_.heads + 2 * shape_.kv_heads) * d || out.rows() != qkv.rows() ||
      out.cols() != shape_.heads * d || !out.contiguous())
    shape_error("attention", fmt::format("layer {} of {}, qkv {}, out {}, {} heads / {} kv heads of {}", layer,
                                         shape_.layers, qkv.describe(), out.describe(), shape_.heads, shape_.kv_heads, d));
  do_attention(layer, qkv, out);
}

void Ops::add_rmsnorm(const Tensor& x, const Tensor& y, const Tensor& weight, float eps, const Tensor& out) {
  for (const auto& [t, what] : {std::pair{&x, "x"}, {&y, "y"}, {&weight, "weight"}, {&out, "out"}})
    check_device(*t, "add_rmsnorm", what);
  if (x.rows() != y.rows() || x.cols() != y.cols() || x.dtype() != y.dtype() || weight.numel() != x.cols() ||
      out.rows() != x.rows() || out.cols() != x.cols())
    shape_error("add_rmsnorm", fmt::format("x {} += y {}, weight {}, out {}", x.describe(), y.describe(),
                                           weight.describe(), out.describe()));
  do_add_rmsnorm(x, y, weight, eps, out);
}

void Ops::rope_attention(size_t layer, const Tensor& qkv, const Tensor& out) {
  check_device(qkv, "rope_attention", "qkv");
  check_device(out, "rope_attention", "out");
  const size_t d = shape_.head_dim;
  if (layer >= shape_.layers || qkv.rows() != batch_.positions.size() ||
      qkv.cols() != (shape_.heads + 2 * shape_.kv_heads) * d || out.rows() != qkv.rows() ||
      out.cols() != shape_.heads * d || !out.contiguous())
    shape_error("rope_attention", fmt::format("layer {} of {}, qkv {}, out {}, {} heads / {} kv heads of {}", layer,
                                              shape_.layers, qkv.describe(), out.describe(), shape_.heads,
                                              shape_.kv_heads, d));
  do_rope_attention(layer, qkv, out);
}

void Ops::gather_rows(const Tensor& x, std::span<const size_t> rows, const Tensor& out) {
  check_device(x, "gather_rows", "x");
  check_device(out, "gather_rows", "out");
  if (out.rows() != rows.size() || out.cols() != x.cols() || out.dtype() != x.dtype())
    shape_error("gather_rows", fmt::format("{} rows of x {} into {}", rows.size(), x.describe(), out.describe()));
  for (size_t r : rows)
    if (r >= x.rows()) shape_error("gather_rows", fmt::format("row {} of x {}", r, x.describe()));
  do_gather_rows(x, rows, out);
}

std::vector<float> Ops::to_host_f32(const Tensor& t) {
  check_device(t, "to_host_f32", "t");
  if (t.dtype() != DType::F32 && t.dtype() != DType::F16)
    shape_error("to_host_f32", fmt::format("{} is not F32 or F16", t.describe()));
  return do_to_host_f32(t);
}

void Ops::from_host_f32(const Tensor& t, std::span<const float> values) {
  check_device(t, "from_host_f32", "t");
  if (values.size() != t.numel() || (t.dtype() != DType::F32 && t.dtype() != DType::F16))
    shape_error("from_host_f32", fmt::format("{} values into {}", values.size(), t.describe()));
  do_from_host_f32(t, values);
}

Tensor Ops::make_vector(std::span<const float> values) {
  Tensor t = empty(1, values.size(), vector_dtype());
  from_host_f32(t, values);
  return t;
}

std::vector<int32_t> Ops::argmax_rows(const Tensor& logits) {
  check_device(logits, "argmax_rows", "logits");
  if (logits.dtype() != DType::F32 || logits.cols() == 0)
    shape_error("argmax_rows", fmt::format("{} is not F32 rows", logits.describe()));
  return do_argmax_rows(logits);
}

std::vector<int32_t> Ops::sample_rows(const Tensor& logits, std::span<const RowSampling> rows) {
  check_device(logits, "sample_rows", "logits");
  if (logits.dtype() != DType::F32 || logits.cols() == 0 || logits.rows() != rows.size())
    shape_error("sample_rows", fmt::format("{} is not F32 rows, one per sampling ({})", logits.describe(), rows.size()));
  for (const auto& [p, u] : rows)
    if (!p.greedy && !(p.temperature > 0 && u >= 0 && u < 1 && p.top_k >= 0 && p.top_p > 0 && p.top_p <= 1))
      throw Error(fmt::format("sampling with temperature {}, top-k {}, top-p {}, draw {}: the temperature must be "
                              "positive (use greedy decoding instead), top-k >= 0, top-p in (0, 1], the draw in [0, 1)",
                              p.temperature, p.top_k, p.top_p, u));
  return do_sample_rows(logits, rows);
}

std::vector<int32_t> Ops::do_sample_rows(const Tensor& logits, std::span<const RowSampling> rows) {
  const std::vector<float> host = do_to_host_f32(logits);
  const size_t V = logits.cols();
  std::vector<int32_t> ids(rows.size());
  for (size_t r = 0; r < rows.size(); ++r) ids[r] = sample_token_at(std::span(host).subspan(r * V, V), rows[r].params, rows[r].u);
  return ids;
}

std::unique_ptr<Ops> make_ops(const Device& device, const OpsOptions& options) {
  if (device.kind == DeviceKind::CPU) return make_cpu_ops(options);
  return cuda::make_ops(device.index, options);
}

void Ops::add_lora(LinearWeights&, size_t, std::span<const float>, std::span<const float>, size_t, float) {
  throw UnsupportedError(fmt::format("{}: unmerged LoRA adapters run on the CPU only for now; merge the adapter into the "
                                     "model (pivotmt merge) to use it here", describe()));
}

}  // namespace pivotmt
