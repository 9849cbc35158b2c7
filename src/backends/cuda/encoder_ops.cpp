// The encoder ops on an NVIDIA GPU (host side; the kernels are in encoder.cu): F32
// activations; a linear's weights F32 (COMET's numerics: cuBLAS F32 GEMMs without TF32) or
// F16 (the tensor cores: its inputs rounded to F16 for the product, F32 sums and output, as
// PyTorch's F16 autocast computes — twice the memory bandwidth and ~15× the FLOP rate of F32
// on an H100). One stream and cuBLAS handle. A pass's sequence boundaries travel as each
// row's [begin, end) of keys.
//
// A decoder step (begin_step .. end_step) runs as a CUDA graph per row count
// (decode_graphs.h): its ops are recorded with their launches' arguments as a signature and
// replayed from the graph captured for that row count when the signature is the same, else
// captured anew. Their metadata — token and position ids, each row's cache — is uploaded as
// the op is recorded, through pinned staging, into buffers whose addresses are in the
// signature: the step's kernels read it at fixed addresses. A batch-1 NLLB-600M step is
// ~340 launches of a few microseconds of GPU work each, which the host issues more slowly
// than the GPU runs them; a replay is one launch.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "backends/backend.h"
#include "backends/cuda/blas_stream.h"
#include "backends/cuda/cublas_loader.h"
#include "backends/cuda/cuda_util.h"
#include "backends/cuda/decode_graphs.h"
#include "backends/cuda/kernels.h"
#include "backends/encoder_ops.h"
#include "core/dtype.h"

namespace pivotmt::cuda {
namespace {

class CudaEncoderLinear final : public EncoderLinear {
 public:
  Tensor w;     // [out, in] F32 or F16
  Tensor bias;  // [1, out] F32, or empty
  bool f16() const { return w.dtype() == DType::F16; }
};

class CudaEncoderOps final : public EncoderOps {
 public:
  // device_info first: it validates the index with a clear error naming it.
  explicit CudaEncoderOps(int device)
      : device_{DeviceKind::CUDA, device}, info_(device_info(device)), bs_(device), graphs_(device_, bs_.stream()) {}
  Device device() const override { return device_; }
  std::string describe() const override {
    return fmt::format("cuda:{} ({}, {})", device_.index, info_.name,
                       f16_linears_ ? "F16 weights on the tensor cores, F32 sums" : "F32 encoder");
  }
  std::unique_ptr<EncoderLinear> make_linear(std::vector<float> w, size_t out, size_t in, std::vector<float> bias,
                                             DType storage) override {
    if (w.size() != out * in || (!bias.empty() && bias.size() != out))
      throw Error(fmt::format("encoder linear: {} weights and {} biases for [{}, {}]", w.size(), bias.size(), out, in));
    if (storage != DType::F32 && storage != DType::F16)
      throw UnsupportedError(fmt::format("{}: encoder weights as {} (a GPU stores them as f32 or f16)", describe(),
                                         dtype_name(storage)));
    auto l = std::make_unique<CudaEncoderLinear>();
    l->out = out;
    l->in = in;
    if (storage == DType::F16) {
      // Rounded on the host (the CPU's F16 storage gives the same bits), then copied.
      std::vector<uint16_t> halves(w.size());
      convert_floats(DType::F32, w.data(), DType::F16, halves.data(), w.size());
      l->w = Tensor(device_, DType::F16, out, in);
      select();
      check(cudaMemcpyAsync(l->w.data(), halves.data(), halves.size() * 2, cudaMemcpyHostToDevice, stream_),
            "copy F16 weights to the device");
      synchronize();  // pageable memory: `halves` must outlive the copy
      ++f16_linears_;
    } else {
      l->w = upload(w, out, in);
    }
    if (!bias.empty()) l->bias = upload(bias, 1, out);
    l->bytes = w.size() * dtype_size(storage) + bias.size() * sizeof(float);
    return l;
  }
  void synchronize() override {
    graphs_.flush();  // what a step recorded runs first
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

  void begin_step(size_t rows) override {
    stepping_ = true;
    if (!graphs_on_ || !graphs_.usable() || graphs_.recording() || rows == 0 || rows > kMaxGraphRows) return;
    select();
    ++step_serial_;
    graphs_.begin(rows, nullptr, 0, 1);
  }
  void end_step() override {
    if (!std::exchange(stepping_, false)) return;
    ++step_counters_.passes;
    select();
    graphs_.end(step_counters_, describe());
  }
  void abort_step() override {
    stepping_ = false;
    graphs_.abort();
  }
  void set_cuda_graphs(bool on) override {
    graphs_.flush();
    graphs_on_ = on;
  }

 protected:
  void do_upload(const Tensor& t, std::span<const float> values) override {
    select();
    graphs_.flush();
    // On our stream, then waited for (pageable memory: the copy may return before its DMA).
    check(cudaMemcpyAsync(t.data(), values.data(), values.size_bytes(), cudaMemcpyHostToDevice, stream_),
          "copy to the device");
    synchronize();
  }
  void do_download(const Tensor& t, void* out) override {
    select();
    graphs_.flush();
    check(cudaMemcpyAsync(out, t.data(), t.numel() * dtype_size(t.dtype()), cudaMemcpyDeviceToHost, stream_),
          "copy to the host");
    synchronize();
  }
  void do_zero(const Tensor& t) override {
    select();
    issue({kZero, address(t.data()), shape_of(t), int64_t(dtype_size(t.dtype()))}, [=, this] {
      check(cudaMemsetAsync(t.data(), 0, t.numel() * dtype_size(t.dtype()), stream_), "cudaMemsetAsync");
    });
  }
  void do_pool_rows(const Tensor& x, std::span<const size_t> starts, std::span<const uint8_t> keep, double weight,
                    const Tensor& acc) override {
    select();
    graphs_.flush();  // (an encoder's op: never part of a decoder step)
    // Each sequence's rows and the rows left out, uploaded once per batch (its layers all
    // pool the same rows): [n + 1] starts, then the kept flags.
    if (!std::equal(starts.begin(), starts.end(), pool_starts_.begin(), pool_starts_.end()) ||
        !std::equal(keep.begin(), keep.end(), pool_keep_.begin(), pool_keep_.end())) {
      std::vector<int32_t> meta(starts.size() + keep.size());
      for (size_t i = 0; i < starts.size(); ++i) meta[i] = int32_t(starts[i]);
      for (size_t t = 0; t < keep.size(); ++t) meta[starts.size() + t] = keep[t] ? 1 : 0;
      if (pool_meta_.numel() < meta.size()) pool_meta_ = Tensor(device_, DType::I32, 1, 2 * meta.size());
      // Ordered after the previous batch's kernels that read the buffer.
      pool_upload_.copy(meta.data(), meta.size() * 4, pool_meta_.data(), stream_, "copy the pooled rows");
      pool_starts_.assign(starts.begin(), starts.end());
      pool_keep_.assign(keep.begin(), keep.end());
    }
    kernels::encoder_pool_rows(x.as<float>(), int(x.cols()), pool_meta_.as<int32_t>(), int(starts.size() - 1),
                               pool_meta_.as<int32_t>() + starts.size(), weight, static_cast<double*>(acc.data()), stream_);
  }
  void do_linear(const Tensor& x, const EncoderLinear& w, const Tensor& y) override {
    select();
    const auto& l = static_cast<const CudaEncoderLinear&>(w);
    // x rounded to F16 into a scratch that grows to the largest [T, in] seen.
    const size_t n = x.rows() * l.in;
    if (l.f16() && x16_.numel() < n) {
      graphs_.flush();  // recorded ops may still name the scratch being replaced
      x16_ = Tensor(device_, DType::F16, 1, n);
    }
    issue({kLinear, address(x.data()), shape_of(x), address(l.w.data()), address(l.bias.data()), int64_t(l.out),
           int64_t(l.in), address(y.data()), shape_of(y), address(x16_.data())},
          [=, this, &l] {
            if (l.f16()) {
              kernels::encoder_to_f16(x.as<float>(), n, x16_.data(), stream_);
              kernels::linear(blas_, stream_, x16_.data(), int(l.in), int(x.rows()), l.w.data(), int(l.out), int(l.in),
                              y.data(), int(l.out), true);
            } else {
              kernels::linear_f32(blas_, x.as<float>(), int(x.rows()), l.w.as<float>(), int(l.out), int(l.in),
                                  y.as<float>());
            }
            if (!l.bias.empty())
              kernels::encoder_add_bias(y.as<float>(), int(y.rows()), int(l.out), l.bias.as<float>(), stream_);
          });
  }
  void do_layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps) override {
    select();
    issue({kLayerNorm, address(x.data()), shape_of(x), address(w.data()), address(b.data()), bits(eps)}, [=, this] {
      kernels::encoder_layer_norm(x.as<float>(), nullptr, nullptr, int(x.rows()), int(x.cols()), w.as<float>(),
                                  b.as<float>(), eps, stream_);
    });
  }
  void do_residual_layer_norm(const Tensor& x, const Tensor& y, const Tensor& bias, const Tensor& w, const Tensor& b,
                              float eps) override {
    select();
    issue({kResidualLayerNorm, address(x.data()), shape_of(x), address(y.data()), address(bias.data()),
           address(w.data()), address(b.data()), bits(eps)},
          [=, this] {
            kernels::encoder_layer_norm(x.as<float>(), y.as<float>(), bias.as<float>(), int(x.rows()), int(x.cols()),
                                        w.as<float>(), b.as<float>(), eps, stream_);
          });
  }
  void do_gelu(const Tensor& x) override {
    select();
    issue({kGelu, address(x.data()), shape_of(x)}, [=, this] { kernels::encoder_gelu(x.as<float>(), x.numel(), stream_); });
  }
  void do_attention(const Tensor& qkv, std::span<const size_t> starts, size_t heads, size_t d,
                    const Tensor& out) override {
    select();
    graphs_.flush();  // (an encoder's op: never part of a decoder step)
    if (!kernels::encoder_attention_supported(int(d)))
      throw UnsupportedError(fmt::format("{}: encoder attention heads of {} dims (at most 256)", describe(), d));
    // Each row's keys: its sequence's rows. Uploaded once per batch (every layer of a
    // batch has the same sequences).
    const size_t T = qkv.rows();
    if (!std::equal(starts.begin(), starts.end(), bounds_starts_.begin(), bounds_starts_.end())) {
      std::vector<int32_t> bounds(2 * T);
      for (size_t s = 0; s + 1 < starts.size(); ++s)
        for (size_t t = starts[s]; t < starts[s + 1]; ++t) {
          bounds[t] = int32_t(starts[s]);
          bounds[T + t] = int32_t(starts[s + 1]);
        }
      if (bounds_.numel() < bounds.size()) bounds_ = Tensor(device_, DType::I32, 1, 2 * bounds.size());
      // Ordered after the previous batch's kernels that read the buffer.
      bounds_upload_.copy(bounds.data(), bounds.size() * 4, bounds_.data(), stream_, "copy the sequences' bounds");
      bounds_starts_.assign(starts.begin(), starts.end());
    }
    kernels::encoder_attention(qkv.as<float>(), int(T), int(heads), int(d), bounds_.as<int32_t>(),
                               bounds_.as<int32_t>() + T, out.as<float>(), stream_);
  }
  void do_add(const Tensor& x, const Tensor& y) override {
    select();
    issue({kAdd, address(x.data()), shape_of(x), address(y.data())},
          [=, this] { kernels::encoder_add(x.as<float>(), y.as<float>(), x.numel(), stream_); });
  }
  void do_top_k(const Tensor& logits, size_t k, std::vector<RowTop>& out) override {
    if (k > size_t(kernels::kMaxTopK)) return EncoderOps::do_top_k(logits, k, out);  // the rows cross to the host
    select();
    graphs_.flush();
    const size_t n = logits.rows();
    // stats [n, 2] F32, values [n, k] F32, tokens [n, k] I32: one buffer, one copy back.
    const size_t floats = n * (2 + 2 * k);
    if (top_.empty() || top_.numel() < floats) top_ = Tensor(device_, DType::F32, 1, std::max<size_t>(floats, 1024));
    float* stats = top_.as<float>();
    float* values = stats + 2 * n;
    auto* tokens = reinterpret_cast<int32_t*>(values + n * k);
    kernels::row_top_k(logits.as<float>(), int(n), int(logits.cols()), int(k), stats, values, tokens, stream_);
    std::vector<float> host(floats);
    check(cudaMemcpyAsync(host.data(), stats, floats * 4, cudaMemcpyDeviceToHost, stream_), "copy the top k to the host");
    synchronize();
    for (size_t r = 0; r < n; ++r) {
      RowTop& t = out[r];
      t.max = host[2 * r];
      t.log_sum = host[2 * r + 1];
      t.logits.assign(host.begin() + long(2 * n + r * k), host.begin() + long(2 * n + (r + 1) * k));
      t.tokens.resize(k);
      std::memcpy(t.tokens.data(), host.data() + 2 * n + n * k + r * k, k * 4);
    }
  }
  void do_relu(const Tensor& x) override {
    select();
    issue({kRelu, address(x.data()), shape_of(x)}, [=, this] { kernels::encoder_relu(x.as<float>(), x.numel(), stream_); });
  }
  void do_copy(const Tensor& src, size_t src_row, size_t src_col, const Tensor& dst, size_t dst_row, size_t dst_col,
               size_t rows, size_t cols) override {
    select();
    // Pitches are a row of a tensor (a cache's block row: capacity · d floats), far below
    // the 2 GiB limit.
    float* to = dst.as<float>() + dst_row * dst.stride() + dst_col;
    const float* from = src.as<float>() + src_row * src.stride() + src_col;
    issue({kCopy, address(to), int64_t(dst.stride()), address(from), int64_t(src.stride()), int64_t(rows), int64_t(cols)},
          [=, this] {
            check(cudaMemcpy2DAsync(to, dst.stride() * 4, from, src.stride() * 4, cols * 4, rows,
                                    cudaMemcpyDeviceToDevice, stream_),
                  "copy on the device");
          });
  }
  void do_embed(const EncoderLinear& table, std::span<const int32_t> ids, float scale, const Tensor& positions,
                std::span<const int32_t> position_ids, const Tensor& out) override {
    select();
    const auto& t = static_cast<const CudaEncoderLinear&>(table);
    std::vector<int32_t> both(ids.begin(), ids.end());
    both.insert(both.end(), position_ids.begin(), position_ids.end());
    if (ids_.numel() < both.size()) {
      graphs_.flush();  // recorded ops may still name the buffer being replaced
      ids_ = Tensor(device_, DType::I32, 1, 2 * both.size());
    }
    // Now, ahead of the step's recorded kernels (which read it at this fixed address).
    ids_upload_.copy(both.data(), both.size() * 4, ids_.data(), stream_, "copy the token ids");
    const int n = int(ids.size());
    issue({kEmbed, address(t.w.data()), int64_t(t.f16()), address(ids_.data()), n, shape_of(out), address(out.data()),
           bits(scale), address(positions.data())},
          [=, this, &t] {
            kernels::encoder_embed(t.w.data(), t.f16(), ids_.as<int32_t>(), n, int(out.cols()), scale,
                                   positions.as<float>(), out.as<float>(), stream_);
          });
  }
  void do_write_cache(const Tensor& kv_new, std::span<const CachedRows> spans, size_t layer) override {
    select();
    const auto* meta = cache_rows(spans);
    issue({kWriteCache, address(kv_new.data()), shape_of(kv_new), address(meta), int64_t(layer)}, [=, this] {
      kernels::encoder_write_cache(kv_new.as<float>(), int(kv_new.stride()), meta, int(kv_new.rows()),
                                   int(kv_new.cols() / 2), int(layer), stream_);
    });
  }
  void do_cached_attention(const Tensor& q, std::span<const CachedRows> spans, size_t layer, size_t heads, size_t d,
                           const Tensor& out) override {
    select();
    if (!kernels::encoder_attention_supported(int(d)))
      throw UnsupportedError(fmt::format("{}: decoder attention heads of {} dims (at most 256)", describe(), d));
    const auto* meta = cache_rows(spans);
    issue({kCachedAttention, address(q.data()), shape_of(q), address(meta), int64_t(heads), int64_t(d), int64_t(layer),
           address(out.data()), shape_of(out)},
          [=, this] {
            kernels::encoder_cached_attention(q.as<float>(), int(q.stride()), meta, int(q.rows()), int(heads), int(d),
                                              int(layer), out.as<float>(), stream_);
          });
  }

 private:
  // Each row's cache, visible keys and write position on the device. A decoder step's
  // layers all see the same spans (its self-attention's, then its cross-attention's): the
  // last two uploads are kept, so a step uploads each once.
  const kernels::CacheRow* cache_rows(std::span<const CachedRows> spans) {
    std::vector<kernels::CacheRow> rows;
    for (const auto& s : spans)
      for (size_t i = 0; i < s.rows; ++i) {
        const size_t position = s.keys - std::min(s.keys, s.rows) + i;
        rows.push_back({s.kv->as<float>(), int32_t(s.capacity), int32_t(s.causal ? position + 1 : s.keys),
                        int32_t(position), 0});
      }
    const size_t bytes = rows.size() * sizeof(kernels::CacheRow);
    for (auto& slot : meta_slots_)
      if (slot.bytes.size() == bytes && std::memcmp(slot.bytes.data(), rows.data(), bytes) == 0) {
        slot.used = ++meta_clock_;
        if (graphs_.recording()) slot.step = step_serial_;
        return slot.device.as<kernels::CacheRow>();
      }
    auto& slot = meta_slots_[0].used <= meta_slots_[1].used ? meta_slots_[0] : meta_slots_[1];
    // Rewritten now, ahead of the step's recorded kernels: if one of them reads it (a step
    // with a third set of rows), what was recorded runs first, and the step as launches.
    if (graphs_.recording() && slot.step == step_serial_) graphs_.flush();
    if (graphs_.recording()) slot.step = step_serial_;
    if (slot.device.numel() * 4 < bytes) slot.device = Tensor(device_, DType::I32, 1, 2 * bytes / 4);
    // Ordered after the kernels that read the slot's previous rows.
    slot.upload.copy(rows.data(), bytes, slot.device.data(), stream_, "copy the decoder rows' caches");
    slot.bytes.assign(reinterpret_cast<const char*>(rows.data()), reinterpret_cast<const char*>(rows.data()) + bytes);
    slot.used = ++meta_clock_;
    return slot.device.as<kernels::CacheRow>();
  }
  struct MetaSlot {
    std::vector<char> bytes;  // what `device` holds
    Tensor device;
    size_t used = 0;
    size_t step = 0;  // the recorded step that last read it
    StagedUpload upload;
  };
  MetaSlot meta_slots_[2];
  size_t meta_clock_ = 0;
  Tensor ids_;  // token ids, then position ids, of an embedding
  // The per-step and per-batch metadata through pinned staging: the host does not wait for
  // these copies (a decode step waits once, for its top k).
  StagedUpload ids_upload_, bounds_upload_, pool_upload_;

  void select() const { check(cudaSetDevice(device_.index), "cudaSetDevice"); }

  // An op's kernels: launched now, or recorded for the step's graph with the values that
  // make its launches what they are (decode_graphs.h).
  template <class Body>
  void issue(std::initializer_list<int64_t> signature, Body&& body) {
    graphs_.issue(signature, std::forward<Body>(body));
  }
  static int64_t address(const void* p) { return DecodeGraphs::address(p); }
  static int64_t bits(float f) { return DecodeGraphs::bits(f); }
  static int64_t shape_of(const Tensor& t) { return DecodeGraphs::shape_of(t); }
  // Signature tags: which op a recorded launch is.
  enum : int64_t { kZero = 1, kLinear, kLayerNorm, kResidualLayerNorm, kGelu, kAdd, kRelu, kCopy, kEmbed, kWriteCache,
                   kCachedAttention };
  // Steps of more rows run as launches (their launch overhead is small beside their work).
  static constexpr size_t kMaxGraphRows = 1024;
  Device device_;
  CudaDeviceInfo info_;
  BlasStream bs_;
  cudaStream_t stream_ = bs_.stream();
  cublasHandle_t blas_ = bs_.blas();
  Tensor bounds_;  // [2 T] int32: each row's first key, then each row's end
  Tensor top_;     // top_k's results: stats, values, tokens
  Tensor x16_;     // an F16 linear's inputs rounded
  size_t f16_linears_ = 0;
  DecodeGraphs graphs_;  // a decoder step's ops recorded, captured, replayed (made with the stream)
  bool graphs_on_ = true;
  size_t step_serial_ = 0;  // begin_step's count
  bool stepping_ = false;   // between begin_step and end_step
  std::vector<size_t> bounds_starts_;  // the sequence starts bounds_ holds
  Tensor pool_meta_;                   // pool_rows' starts and kept flags on the device
  std::vector<size_t> pool_starts_;    // what pool_meta_ holds
  std::vector<uint8_t> pool_keep_;
};

}  // namespace

std::unique_ptr<EncoderOps> make_encoder_ops(int device) { return std::make_unique<CudaEncoderOps>(device); }

}  // namespace pivotmt::cuda
