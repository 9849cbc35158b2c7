// The op interface on the CPU: F32 activations, the reference or fast kernels of
// cpu/ops.h, and one head-major [kv_heads, capacity, head_dim] buffer per layer and
// sequence for keys and values (a shared prefix is copied).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>

#include <fmt/format.h>

#include "backends/backend.h"
#include "backends/cpu/host_buffer.h"
#include "backends/cpu/ops.h"
#include "backends/ops.h"
#include "backends/random_fill.h"
#include "core/error.h"
#include "io/checkpoint.h"

namespace pivotmt {
namespace {

// The stacked matrices of a (possibly fused) projection; each writes its own columns.
class CpuLinear final : public LinearWeights {
 public:
  std::vector<cpu::Matrix> parts;
  struct Lora {
    cpu::Matrix A, B;  // [r, in], [out_part, r] F32
    float scaling = 1;
  };
  std::vector<std::optional<Lora>> lora;  // per part, when an adapter is attached
  size_t bytes() const override {
    size_t b = 0;
    for (const auto& p : parts) b += p.bytes();
    return b;
  }
};

cpu::Matrix load_matrix(const Checkpoint& ckpt, const std::string& name, DType storage, bool int8_activations) {
  const auto& info = ckpt.at(name);
  cpu::Matrix m;
  m.out = size_t(info.shape.at(0));
  m.in = info.shape.size() > 1 ? size_t(info.shape[1]) : 1;
  m.dtype = storage;
  if (storage == DType::I8) {
    const auto f = ckpt.load_f32(name);
    return cpu::quantize_int8(f.data(), m.out, m.in, int8_activations);
  }
  if (storage == DType::NF4) {
    m.nf4 = nf4::quantize(ckpt.load_f32(name), true);
    return m;
  }
  if (storage == DType::GGML) {
    // A GGUF tensor in a type the kernels multiply (Q8_0, Q4_0, Q4_1; the K-quants Q4_K,
    // Q5_K, Q6_K) stays as the file stores it; any other tensor (F32 norms, Q5_0...) is
    // stored as F16. (The kernels read out rows of ggml_row_bytes(in): the view must be
    // exactly that.)
    const auto view = ckpt.ggml_view(name);
    const bool kept = view && view->rows == m.out && view->cols == m.in && ggml_multiplied_in_place(view->type, m.in) &&
                      view->bytes.size() == m.out * ggml_row_bytes(view->type, m.in);
    const bool blocks_of_32 = kept && ggml_traits(view->type).block_size == 32;
    if (!kept) return load_matrix(ckpt, name, DType::F16, false);
    m.ggml_type = view->type;
    m.ggml_row_bytes = ggml_row_bytes(view->type, m.in);
    // gguf-q8: Q8_0 / Q4_0 / Q4_1 repacked for the int8 kernels (Q and K rows put back on
    // the way). The K-quants keep F32 activations there too (llama.cpp's Q8_K products are
    // not reproduced): in place, at the file's size, as with `gguf`.
    if (int8_activations && blocks_of_32) {
      m.int8_activations = true;
      m.ggml_packed = cpu::GgmlPacked::pack(view->type, m.out, m.in, [&](size_t r) {
        return reinterpret_cast<const uint8_t*>(view->bytes.data()) + view->stored_row(r) * m.ggml_row_bytes;
      });
      return m;
    }
    if (!view->interleaved_heads) {
      m.borrowed = view->bytes.data();  // in place: the model takes its file's size in memory
      return m;
    }
    m.ggml_owned.resize(m.out * m.ggml_row_bytes);  // Q and K: rows back in Hugging Face order
    for (size_t r = 0; r < m.out; ++r)
      std::memcpy(&m.ggml_owned[r * m.ggml_row_bytes], view->bytes.data() + view->stored_row(r) * m.ggml_row_bytes,
                  m.ggml_row_bytes);
    return m;
  }
  const size_t align = storage == DType::F32 ? 4 : 2;
  if (info.dtype == storage && ckpt.stored_as_is(name)) {
    const auto raw = ckpt.raw(name);
    if (reinterpret_cast<uintptr_t>(raw.data()) % align == 0) {
      m.borrowed = raw.data();  // stored as wanted: use the mapped pages in place (zero copy)
      return m;
    }
  }
  if (storage == DType::F32) {
    m.f32 = ckpt.load_f32(name);
  } else {
    m.f16.resize(m.out * m.in);
    ckpt.load_into(name, DType::F16, std::as_writable_bytes(std::span(m.f16)));
  }
  return m;
}

// Positions held by all caches, for the optional capacity (kv_capacity_bytes).
struct KvAccount {
  size_t positions = 0;
};

// One sequence's keys and values, head-major: per layer [kv_heads, capacity, head_dim] for
// keys, then the same for values, all layers in one buffer (HostBuffer: pages faulted in
// at once, huge pages where it spans them). Attention reads each head's keys (and values)
// as one contiguous stream. Positions at and past the cache's length are not data (an
// aborted pass leaves nothing to undo).
class CpuKv final : public KvStorage {
 public:
  CpuKv(size_t layers, size_t heads, size_t head_dim, std::shared_ptr<KvAccount> account)
      : layers_(layers), heads_(heads), head_dim_(head_dim), account_(std::move(account)) {}
  ~CpuKv() override { account_->positions -= held; }
  void hold(size_t positions) {
    account_->positions = account_->positions - held + positions;
    held = positions;
  }
  size_t capacity() const { return capacity_; }
  cpu::KvStrides strides() const { return {head_dim_, capacity_ * head_dim_}; }
  float* k(size_t layer) const { return side(2 * layer); }
  float* v(size_t layer) const { return side(2 * layer + 1); }
  // Room for `positions`, the first `keep` of every head copied over (nothing happens when
  // the capacity is already that).
  void set_capacity(size_t positions, size_t keep) {
    if (positions == capacity_) return;
    cpu::HostBuffer fresh(2 * layers_ * heads_ * positions * head_dim_ * sizeof(float));
    copy_positions(*this, fresh.floats(), positions, std::min(keep, std::min(positions, capacity_)));
    buffer_ = std::move(fresh);
    capacity_ = positions;
  }
  // This cache as the first n positions of `from` (same shape), capacity n.
  void assign_prefix(const CpuKv& from, size_t n) {
    set_capacity(n, 0);
    copy_positions(from, buffer_.floats(), capacity_, n);
  }
  // Positions [at, at + n) of every kv head from rows of a fused QKV output: row i's heads
  // start at src + i * src_stride.
  void write(float* side, const float* src, size_t src_stride, size_t at, size_t n) const {
    for (size_t i = 0; i < n; ++i)
      for (size_t h = 0; h < heads_; ++h)
        std::memcpy(side + (h * capacity_ + at + i) * head_dim_, src + i * src_stride + h * head_dim_,
                    head_dim_ * sizeof(float));
  }
  size_t held = 0;  // positions counted against the capacity

 private:
  float* side(size_t index) const { return buffer_.floats() + index * heads_ * capacity_ * head_dim_; }
  // The first n positions of every (layer, k / v, head) block of `from` into dst, whose
  // blocks hold dst_capacity positions each.
  static void copy_positions(const CpuKv& from, float* dst, size_t dst_capacity, size_t n) {
    const size_t d = from.head_dim_;
    for (size_t block = 0; n && block < 2 * from.layers_ * from.heads_; ++block)
      std::memcpy(dst + block * dst_capacity * d, from.buffer_.floats() + block * from.capacity_ * d, n * d * sizeof(float));
  }
  size_t layers_, heads_, head_dim_, capacity_ = 0;
  cpu::HostBuffer buffer_;  // [layers, 2 (k, v), kv_heads, capacity, head_dim]
  std::shared_ptr<KvAccount> account_;
};

CpuKv& kv_of(const KvCache& c) { return static_cast<CpuKv&>(*c.storage); }

// Half of what /proc/meminfo's MemAvailable leaves once the weights are resident
// (MemAvailable counts the page cache, where weights read in place from the mapped file
// live), at least 256 MiB; 8 GiB when it cannot be read.
size_t mem_available_budget(size_t weight_bytes) {
  const size_t available = host_memory().available;
  if (available == 0) return size_t(8) << 30;
  return std::max(available > weight_bytes ? (available - weight_bytes) / 2 : 0, size_t(256) << 20);
}

void require_contiguous(const Tensor& t, const char* op) {
  if (!t.contiguous()) throw Error(fmt::format("cpu {}: {} must be contiguous", op, t.describe()));
}

class CpuOps final : public Ops {
 public:
  explicit CpuOps(const OpsOptions& o) : options_(o), account_(std::make_shared<KvAccount>()) {}
  Device device() const override { return Device{}; }
  DType activation_dtype() const override { return DType::F32; }
  std::string describe() const override {
    return options_.impl == OpsImpl::Reference ? "cpu (reference kernels)" : fmt::format("cpu (fast kernels, {} threads)", cpu::num_threads());
  }

  std::unique_ptr<LinearWeights> load_linear(const Checkpoint& ckpt, const std::vector<std::string>& names,
                                             DType storage) override {
    if (storage != DType::F32 && storage != DType::F16 && storage != DType::I8 && storage != DType::NF4 &&
        storage != DType::GGML)
      throw UnsupportedError("cpu: weights can be stored as F32, F16, INT8 (I8), NF4 or a GGUF file's blocks");
    auto w = std::make_unique<CpuLinear>();
    for (const auto& name : names) {
      w->parts.push_back(load_matrix(ckpt, name, storage, options_.int8_activations));
      if (w->in && w->parts.back().in != w->in)
        throw Error(fmt::format("{}: {} columns, the fused projection has {}", name, w->parts.back().in, w->in));
      w->in = w->parts.back().in;
      w->out += w->parts.back().out;
    }
    return w;
  }
  Tensor load_vector(const Checkpoint& ckpt, const std::string& name) override { return make_vector(ckpt.load_f32(name)); }
  std::unique_ptr<LinearWeights> make_linear(std::span<const float> values, size_t out, size_t in, DType storage) override {
    if (values.size() != out * in) throw Error(fmt::format("make_linear: {} values for [{}, {}]", values.size(), out, in));
    cpu::Matrix m;
    if (storage == DType::I8) {
      m = cpu::quantize_int8(values.data(), out, in, options_.int8_activations);
    } else if (storage == DType::F16) {
      m.f16.resize(values.size());
      convert_floats(DType::F32, values.data(), DType::F16, m.f16.data(), values.size());
    } else if (storage == DType::F32) {
      m.f32.assign(values.begin(), values.end());
    } else if (storage == DType::NF4) {
      m.nf4 = nf4::quantize(values, true);
    } else {
      throw UnsupportedError("cpu: weights can be stored as F32, F16, INT8 (I8) or NF4");
    }
    m.dtype = storage;
    m.out = out;
    m.in = in;
    auto w = std::make_unique<CpuLinear>();
    w->out = out;
    w->in = in;
    w->parts.push_back(std::move(m));
    return w;
  }

  KvCache new_cache() override {
    KvCache c;
    c.storage = std::make_unique<CpuKv>(shape().layers, shape().kv_heads, shape().head_dim, account_);
    return c;
  }
  void reserve(KvCache& cache, size_t positions) override {
    auto& kv = kv_of(cache);
    if (positions > kv.capacity()) kv.set_capacity(positions, cache.length);
  }
  bool grow(KvCache& cache, size_t positions) override {
    auto& kv = kv_of(cache);
    if (positions <= kv.held) return true;
    if (options_.kv_capacity_bytes &&
        (account_->positions - kv.held + positions) * kv_bytes_per_position() > options_.kv_capacity_bytes)
      return false;
    kv.hold(positions);
    return true;
  }
  size_t kv_bytes_per_position() const override { return 2 * shape().layers * width() * sizeof(float); }
  size_t default_kv_budget(size_t weight_bytes) const override { return mem_available_budget(weight_bytes); }
  size_t kv_capacity_bytes() const override { return options_.kv_capacity_bytes; }

 protected:
  KvCache do_prefix_of(const KvCache& from, size_t n) override {
    KvCache c = new_cache();
    kv_of(c).assign_prefix(kv_of(from), n);
    kv_of(c).hold(n);
    c.length = n;
    return c;
  }
  void do_truncate(KvCache& cache, size_t n) override {
    auto& kv = kv_of(cache);
    kv.set_capacity(n, n);  // the memory past n is given back
    kv.hold(n);
  }
  void do_configure() override { rope_.inv_freq = shape().inv_freq; }
  void do_begin_forward() override {
    rope_rows_ = SIZE_MAX;
    for (const auto& s : batch().seqs) {
      if (!grow(*s.cache, s.cache->length + s.count))
        throw Error(fmt::format("cpu: the KV capacity ({} bytes) cannot hold {} more positions", options_.kv_capacity_bytes, s.count));
      // A first pass takes exactly what it needs (the engine reserves ahead; a lone
      // prefill should not double its cache), later ones grow geometrically.
      auto& kv = kv_of(*s.cache);
      const size_t needed = s.cache->length + s.count;
      if (kv.capacity() < needed) kv.set_capacity(kv.capacity() == 0 ? needed : std::max(needed, 2 * kv.capacity()), s.cache->length);
    }
  }

  // What an aborted pass wrote lies past each cache's length: nothing to undo.
  void do_abort_forward() override {}
  void do_embed(const LinearWeights& table, const Tensor& x) override {
    require_contiguous(x, "embed");
    const auto& m = static_cast<const CpuLinear&>(table).parts.at(0);
    const auto& tokens = batch().tokens;
    for (size_t t = 0; t < tokens.size(); ++t) m.row_to_f32(size_t(tokens[t]), x.as<float>() + t * x.cols());
  }
  void do_rmsnorm(const Tensor& x, const Tensor& w, float eps, const Tensor& y) override {
    require_contiguous(x, "rmsnorm");
    require_contiguous(y, "rmsnorm");
    (ref() ? cpu::ref::rmsnorm : cpu::fast::rmsnorm)(x.as<float>(), w.as<float>(), x.rows(), x.cols(), eps, y.as<float>());
  }
  void do_linear(const Tensor& x, const LinearWeights& w, const Tensor& y) override {
    const auto& cw = static_cast<const CpuLinear&>(w);
    const auto linear = ref() ? cpu::ref::linear : cpu::fast::linear;
    size_t col = 0;
    for (size_t p = 0; p < cw.parts.size(); ++p) {
      const auto& part = cw.parts[p];
      linear(x.as<float>(), x.rows(), part, y.as<float>() + col, y.stride());
      if (p < cw.lora.size() && cw.lora[p]) {  // + scaling · (x Aᵀ) Bᵀ
        const auto& l = *cw.lora[p];
        const size_t T = x.rows();
        std::vector<float> h(T * l.A.out), delta(T * part.out);
        linear(x.as<float>(), T, l.A, h.data(), 0);
        linear(h.data(), T, l.B, delta.data(), 0);
        for (size_t t = 0; t < T; ++t) {
          float* yr = y.as<float>() + t * y.stride() + col;
          for (size_t i = 0; i < part.out; ++i) yr[i] += delta[t * part.out + i] * l.scaling;
        }
      }
      col += part.out;
    }
  }
  void add_lora(LinearWeights& w, size_t part, std::span<const float> A, std::span<const float> B, size_t r,
                float scaling) override {
    auto& cw = static_cast<CpuLinear&>(w);
    if (part >= cw.parts.size()) throw Error(fmt::format("add_lora: part {} of a projection with {}", part, cw.parts.size()));
    const auto& base = cw.parts[part];
    if (A.size() != r * base.in || B.size() != base.out * r)
      throw Error(fmt::format("add_lora: A [{}] and B [{}] do not fit a [{}, {}] projection with r = {}", A.size(), B.size(),
                              base.out, base.in, r));
    cw.lora.resize(cw.parts.size());
    CpuLinear::Lora l;
    l.A.out = r;
    l.A.in = base.in;
    l.A.f32.assign(A.begin(), A.end());
    l.B.out = base.out;
    l.B.in = r;
    l.B.f32.assign(B.begin(), B.end());
    l.scaling = scaling;
    cw.lora[part] = std::move(l);
  }
  void do_add(const Tensor& x, const Tensor& y) override {
    if (!ref()) return cpu::fast::add_rows(x.as<float>(), x.stride(), y.as<float>(), y.stride(), x.rows(), x.cols());
    for (size_t r = 0; r < x.rows(); ++r) {
      float* a = x.as<float>() + r * x.stride();
      const float* b = y.as<float>() + r * y.stride();
      for (size_t i = 0; i < x.cols(); ++i) a[i] += b[i];
    }
  }
  void do_silu_mul(const Tensor& gate_up, const Tensor& out) override {
    require_contiguous(gate_up, "silu_mul");
    require_contiguous(out, "silu_mul");
    (ref() ? cpu::ref::silu_mul : cpu::fast::silu_mul)(gate_up.as<float>(), out.rows(), out.cols(), out.as<float>());
  }
  void do_rope(const Tensor& x, size_t heads) override {
    if (ref())
      return cpu::ref::rope(x.as<float>(), x.rows(), x.stride(), heads, shape().head_dim, batch().positions.data(), rope_);
    if (rope_rows_ != x.rows()) {  // once per pass: every layer rotates at the same positions
      rope_table_ = cpu::fast::rope_table(batch().positions.data(), x.rows(), rope_);
      rope_rows_ = x.rows();
    }
    cpu::fast::rope_apply(x.as<float>(), x.rows(), x.stride(), heads, shape().head_dim, rope_table_);
  }
  void do_attention(size_t layer, const Tensor& qkv, const Tensor& out) override {
    const size_t nh = shape().heads, nkv = shape().kv_heads, d = shape().head_dim;
    bool all_few_rows = true;  // a decode step: one parallel section for all sequences
    for (const auto& s : batch().seqs) {
      auto& kv = kv_of(*s.cache);
      const float* rows = qkv.as<float>() + s.row0 * qkv.stride();
      kv.write(kv.k(layer), rows + nh * d, qkv.stride(), s.cache->length, s.count);
      kv.write(kv.v(layer), rows + (nh + nkv) * d, qkv.stride(), s.cache->length, s.count);
      all_few_rows = all_few_rows && s.count < 16;
    }
    if (!ref() && all_few_rows) {
      std::vector<cpu::fast::AttentionJob> jobs;
      for (const auto& s : batch().seqs) {
        const auto& kv = kv_of(*s.cache);
        cpu::fast::AttentionJob j;
        j.q = qkv.as<float>() + s.row0 * qkv.stride();
        j.q_stride = qkv.stride();
        j.k = kv.k(layer);
        j.v = kv.v(layer);
        j.kv = kv.strides();
        j.T = s.count;
        j.L = s.cache->length + s.count;
        j.out = out.as<float>() + s.row0 * out.stride();
        j.out_stride = out.stride();
        jobs.push_back(j);
      }
      return cpu::fast::attention_many(jobs, nh, nkv, d, shape().window);
    }
    for (const auto& s : batch().seqs) {
      const auto& kv = kv_of(*s.cache);
      const size_t len = s.cache->length + s.count;
      (ref() ? cpu::ref::attention : cpu::fast::attention)(qkv.as<float>() + s.row0 * qkv.stride(), qkv.stride(),
                                                           kv.k(layer), kv.v(layer), s.count, len, nh, nkv,
                                                           d, shape().window, out.as<float>() + s.row0 * out.stride(),
                                                           kv.strides());
    }
  }
  void do_gather_rows(const Tensor& x, std::span<const size_t> rows, const Tensor& out) override {
    for (size_t i = 0; i < rows.size(); ++i)
      std::memcpy(out.as<float>() + i * out.stride(), x.as<float>() + rows[i] * x.stride(), x.cols() * sizeof(float));
  }
  std::vector<float> do_to_host_f32(const Tensor& t) override {
    std::vector<float> v(t.numel());
    for (size_t r = 0; r < t.rows(); ++r)
      std::memcpy(&v[r * t.cols()], t.as<float>() + r * t.stride(), t.cols() * sizeof(float));
    return v;
  }
  std::unique_ptr<LinearWeights> random_linear(size_t out, size_t in, DType storage, uint64_t seed, float scale) override {
    std::vector<float> values(out * in);
    for (size_t i = 0; i < values.size(); ++i) values[i] = random_fill::value(seed, i, scale, 0.0f);
    return make_linear(values, out, in, storage);
  }
  Tensor random_vector(size_t n, uint64_t seed, float scale, float offset) override {
    std::vector<float> values(n);
    for (size_t i = 0; i < n; ++i) values[i] = random_fill::value(seed, i, scale, offset);
    return make_vector(values);
  }
  void do_from_host_f32(const Tensor& t, std::span<const float> values) override {
    for (size_t r = 0; r < t.rows(); ++r)
      std::memcpy(t.as<float>() + r * t.stride(), &values[r * t.cols()], t.cols() * sizeof(float));
  }
  DType vector_dtype() const override { return DType::F32; }
  std::vector<int32_t> do_argmax_rows(const Tensor& logits) override {
    std::vector<int32_t> ids(logits.rows());
    for (size_t r = 0; r < logits.rows(); ++r) {
      const float* row = logits.as<float>() + r * logits.stride();
      ids[r] = int32_t(std::max_element(row, row + logits.cols()) - row);  // first maximum
    }
    return ids;
  }

 private:
  bool ref() const { return options_.impl == OpsImpl::Reference; }
  size_t width() const { return shape().kv_heads * shape().head_dim; }  // floats per position and layer

  OpsOptions options_;
  std::shared_ptr<KvAccount> account_;
  cpu::Rope rope_;
  cpu::fast::RopeTable rope_table_;  // this pass's cos / sin (fast kernels)
  size_t rope_rows_ = SIZE_MAX;      // rows rope_table_ holds; SIZE_MAX: not made this pass
};

}  // namespace

std::unique_ptr<Ops> make_cpu_ops(const OpsOptions& options) { return std::make_unique<CpuOps>(options); }

}  // namespace pivotmt
