#include "backends/encoder_ops.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "backends/cpu/thread_pool.h"
#include "backends/cpu/vmath.h"

#include "core/error.h"

namespace pivotmt {

void EncoderOps::check_tensor(const Tensor& t, const char* op, const char* what, bool strided) const {
  if (t.device() != device() || t.dtype() != DType::F32 || (!strided && !t.contiguous()))
    throw Error(fmt::format("encoder {}: {} is {} (expected {}F32 on {})", op, what, t.describe(),
                            strided ? "" : "contiguous ", describe()));
}

void EncoderOps::check_spans(const Tensor& rows, std::span<const CachedRows> spans, size_t layer, size_t width,
                             const char* op) const {
  size_t total = 0;
  for (const auto& s : spans) {
    if (!s.kv) throw Error(fmt::format("encoder {}: a span without its cache", op));
    check_tensor(*s.kv, op, "a cache");
    if (s.kv->cols() != width || s.kv->rows() < (2 * layer + 2) * s.capacity)
      throw Error(fmt::format("encoder {}: cache {} holds no layer {} of {} positions × {}", op, s.kv->describe(), layer,
                              s.capacity, width));
    if (s.keys > s.capacity || s.rows == 0 || (s.causal && s.rows > s.keys) || s.keys == 0)
      throw Error(fmt::format("encoder {}: {} rows seeing {} keys of a cache of {} positions", op, s.rows, s.keys,
                              s.capacity));
    total += s.rows;
  }
  if (total != rows.rows())
    throw Error(fmt::format("encoder {}: the spans hold {} rows, the pass {}", op, total, rows.rows()));
}

Tensor EncoderOps::host_view(float*, size_t, size_t) const { return Tensor(); }

void EncoderOps::download(const Tensor& t, std::span<float> out) {
  check_tensor(t, "download", "the tensor");
  if (out.size() != t.numel())
    throw Error(fmt::format("encoder download: {} into {} host values", t.describe(), out.size()));
  if (!out.empty()) do_download(t, out.data());
}

Tensor EncoderOps::upload(std::span<const float> values, size_t rows, size_t cols) {
  if (values.size() != rows * cols)
    throw Error(fmt::format("encoder upload: {} values for [{}, {}]", values.size(), rows, cols));
  Tensor t = empty(rows, cols);
  if (!values.empty()) do_upload(t, values);
  return t;
}

Tensor EncoderOps::pooled_sums(size_t sequences, size_t cols) {
  Tensor t(device(), DType::F64, sequences, cols);
  if (t.numel() > 0) do_zero(t);
  return t;
}

void EncoderOps::pool_rows(const Tensor& x, std::span<const size_t> starts, std::span<const uint8_t> keep, double weight,
                           const Tensor& acc) {
  check_tensor(x, "pool_rows", "x");
  if (acc.device() != device() || acc.dtype() != DType::F64 || !acc.contiguous() || acc.cols() != x.cols() ||
      acc.rows() + 1 != starts.size())
    throw Error(fmt::format("encoder pool_rows: the sums {} for {} sequences of x {} (expected contiguous F64 [{}, {}] on {})",
                            acc.describe(), starts.empty() ? 0 : starts.size() - 1, x.describe(),
                            starts.empty() ? 0 : starts.size() - 1, x.cols(), describe()));
  if (starts.front() != 0 || starts.back() != x.rows() || keep.size() != x.rows())
    throw Error(fmt::format("encoder pool_rows: sequence starts from 0 to the {} rows and a flag per row ({} given)",
                            x.rows(), keep.size()));
  for (size_t i = 1; i < starts.size(); ++i)
    if (starts[i] < starts[i - 1]) throw Error("encoder pool_rows: sequence starts must ascend");
  if (x.numel() > 0 && acc.rows() > 0) do_pool_rows(x, starts, keep, weight, acc);
}

std::vector<double> EncoderOps::download_pooled(const Tensor& acc) {
  if (acc.device() != device() || acc.dtype() != DType::F64 || !acc.contiguous())
    throw Error(fmt::format("encoder download_pooled: {} (expected contiguous F64 on {})", acc.describe(), describe()));
  std::vector<double> v(acc.numel());
  if (!v.empty()) do_download(acc, v.data());
  return v;
}

std::vector<float> EncoderOps::download(const Tensor& t) {
  std::vector<float> v(t.numel());
  download(t, v);
  return v;
}

const float* EncoderOps::read(const Tensor& t, std::vector<float>& scratch) {
  scratch = download(t);
  return scratch.data();
}

void EncoderOps::linear(const Tensor& x, const EncoderLinear& w, const Tensor& y) {
  check_tensor(x, "linear", "x");
  check_tensor(y, "linear", "y");
  if (x.cols() != w.in || y.cols() != w.out || y.rows() != x.rows())
    throw Error(fmt::format("encoder linear: x {} · W [{}, {}]ᵀ into y {}", x.describe(), w.out, w.in, y.describe()));
  if (x.rows() > 0) do_linear(x, w, y);
}

void EncoderOps::layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps) {
  check_tensor(x, "layer_norm", "x");
  check_tensor(w, "layer_norm", "weight");
  check_tensor(b, "layer_norm", "bias");
  if (w.numel() != x.cols() || b.numel() != x.cols())
    throw Error(fmt::format("encoder layer_norm: x {} with weight {} and bias {}", x.describe(), w.describe(), b.describe()));
  if (x.rows() > 0) do_layer_norm(x, w, b, eps);
}

void EncoderOps::residual_layer_norm(const Tensor& x, const Tensor& y, const Tensor& bias, const Tensor& w,
                                     const Tensor& b, float eps) {
  check_tensor(x, "residual_layer_norm", "x");
  check_tensor(y, "residual_layer_norm", "y");
  check_tensor(bias, "residual_layer_norm", "y's bias");
  check_tensor(w, "residual_layer_norm", "weight");
  check_tensor(b, "residual_layer_norm", "bias");
  if (y.rows() != x.rows() || y.cols() != x.cols() || bias.numel() != x.cols() || w.numel() != x.cols() ||
      b.numel() != x.cols())
    throw Error(fmt::format("encoder residual_layer_norm: x {}, y {}, y's bias {}, weight {}, bias {}", x.describe(),
                            y.describe(), bias.describe(), w.describe(), b.describe()));
  if (x.rows() > 0) do_residual_layer_norm(x, y, bias, w, b, eps);
}

void EncoderOps::gelu(const Tensor& x) {
  check_tensor(x, "gelu", "x");
  if (x.numel() > 0) do_gelu(x);
}

void EncoderOps::attention(const Tensor& qkv, std::span<const size_t> starts, size_t heads, size_t d, const Tensor& out) {
  check_tensor(qkv, "attention", "qkv");
  check_tensor(out, "attention", "out");
  if (qkv.cols() != 3 * heads * d || out.cols() != heads * d || out.rows() != qkv.rows())
    throw Error(fmt::format("encoder attention: qkv {} and out {} for {} heads of {}", qkv.describe(), out.describe(),
                            heads, d));
  if (starts.empty() || starts.front() != 0 || starts.back() != qkv.rows())
    throw Error(fmt::format("encoder attention: sequence starts must run from 0 to the {} rows", qkv.rows()));
  for (size_t i = 1; i < starts.size(); ++i)
    if (starts[i] < starts[i - 1]) throw Error("encoder attention: sequence starts must ascend");
  if (qkv.rows() > 0) do_attention(qkv, starts, heads, d, out);
}

void EncoderOps::add(const Tensor& x, const Tensor& y) {
  check_tensor(x, "add", "x");
  check_tensor(y, "add", "y");
  if (x.rows() != y.rows() || x.cols() != y.cols())
    throw Error(fmt::format("encoder add: x {} and y {}", x.describe(), y.describe()));
  if (x.numel() > 0) do_add(x, y);
}

void row_top_k_host(const float* row, size_t V, size_t k, RowTop& out) {
  // One buffer per thread for every call (a fresh V-float vector per row is a fresh mapping
  // to fault in).
  thread_local std::vector<float> scratch;
  scratch.resize(V);
  out.max = cpu::vmath::max_of(row, V);
  std::copy(row, row + V, scratch.data());
  out.log_sum = float(std::log(double(cpu::vmath::exp_shifted_sum(scratch.data(), V, out.max))));
  // The k best in one pass (ties: the lower token first, as a stable top-k).
  out.tokens.clear();
  for (size_t v = 0; v < V; ++v) {
    if (out.tokens.size() == k && !(row[v] > row[out.tokens.back()])) continue;
    auto at = std::upper_bound(out.tokens.begin(), out.tokens.end(), row[v],
                               [&](float value, int32_t t) { return value > row[t]; });
    out.tokens.insert(at, int32_t(v));
    if (out.tokens.size() > k) out.tokens.pop_back();
  }
  out.logits.resize(out.tokens.size());
  for (size_t i = 0; i < out.tokens.size(); ++i) out.logits[i] = row[out.tokens[i]];
}

void EncoderOps::top_k(const Tensor& logits, size_t k, std::vector<RowTop>& out) {
  check_tensor(logits, "top_k", "the logits");
  if (k == 0 || k > logits.cols())
    throw Error(fmt::format("encoder top_k: k = {} of rows of {} values", k, logits.cols()));
  out.resize(logits.rows());
  if (logits.rows() > 0) do_top_k(logits, k, out);
}

void EncoderOps::do_top_k(const Tensor& logits, size_t k, std::vector<RowTop>& out) {
  std::vector<float> scratch;
  const float* values = read(logits, scratch);
  const size_t V = logits.cols();
  cpu::parallel_for(logits.rows(), [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r) row_top_k_host(values + r * V, V, k, out[r]);
  });
}

void EncoderOps::relu(const Tensor& x) {
  check_tensor(x, "relu", "x");
  if (x.numel() > 0) do_relu(x);
}

void EncoderOps::copy(const Tensor& src, size_t src_row, size_t src_col, const Tensor& dst, size_t dst_row,
                      size_t dst_col, size_t rows, size_t cols) {
  check_tensor(src, "copy", "the source", true);
  check_tensor(dst, "copy", "the destination", true);
  if (src_row + rows > src.rows() || src_col + cols > src.cols() || dst_row + rows > dst.rows() ||
      dst_col + cols > dst.cols())
    throw Error(fmt::format("encoder copy: [{}, {}] from ({}, {}) of {} to ({}, {}) of {}", rows, cols, src_row, src_col,
                            src.describe(), dst_row, dst_col, dst.describe()));
  if (rows > 0 && cols > 0) do_copy(src, src_row, src_col, dst, dst_row, dst_col, rows, cols);
}

void EncoderOps::embed(const EncoderLinear& table, std::span<const int32_t> ids, float scale, const Tensor& positions,
                       std::span<const int32_t> position_ids, const Tensor& out) {
  check_tensor(positions, "embed", "the positions");
  check_tensor(out, "embed", "out");
  if (ids.size() != out.rows() || position_ids.size() != out.rows() || table.in != out.cols() ||
      positions.cols() != out.cols())
    throw Error(fmt::format("encoder embed: {} ids at {} positions of a [{}, {}] table and {} positions into {}",
                            ids.size(), position_ids.size(), table.out, table.in, positions.describe(), out.describe()));
  for (size_t t = 0; t < ids.size(); ++t) {
    if (ids[t] < 0 || size_t(ids[t]) >= table.out)
      throw Error(fmt::format("encoder embed: token id {} is outside the vocabulary ({})", ids[t], table.out));
    if (position_ids[t] < 0 || size_t(position_ids[t]) >= positions.rows())
      throw Error(fmt::format("encoder embed: position {} beyond the table's {}", position_ids[t], positions.rows()));
  }
  if (!ids.empty()) do_embed(table, ids, scale, positions, position_ids, out);
}

void EncoderOps::write_cache(const Tensor& kv_new, std::span<const CachedRows> spans, size_t layer) {
  check_tensor(kv_new, "write_cache", "the new keys and values", true);
  if (kv_new.cols() % 2 != 0) throw Error(fmt::format("encoder write_cache: {} is not keys | values", kv_new.describe()));
  check_spans(kv_new, spans, layer, kv_new.cols() / 2, "write_cache");
  for (const auto& s : spans)
    if (s.rows > s.keys) throw Error("encoder write_cache: a span writes more rows than its keys");
  if (kv_new.rows() > 0) do_write_cache(kv_new, spans, layer);
}

void EncoderOps::cached_attention(const Tensor& q, std::span<const CachedRows> spans, size_t layer, size_t heads,
                                  size_t d, const Tensor& out) {
  check_tensor(q, "cached_attention", "q", true);
  check_tensor(out, "cached_attention", "out");
  if (q.cols() != heads * d || out.cols() != heads * d || out.rows() != q.rows())
    throw Error(fmt::format("encoder cached_attention: q {} and out {} for {} heads of {}", q.describe(), out.describe(),
                            heads, d));
  check_spans(q, spans, layer, heads * d, "cached_attention");
  if (q.rows() > 0) do_cached_attention(q, spans, layer, heads, d, out);
}

std::unique_ptr<EncoderOps> make_encoder_ops(const Device& device, OpsImpl impl) {
  if (device.kind == DeviceKind::CUDA) return cuda::make_encoder_ops(device.index);
  return make_cpu_encoder_ops(impl);
}

}  // namespace pivotmt
