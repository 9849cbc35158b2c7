// The op interface on an NVIDIA GPU (host code; the kernels are in the *.cu files): F16 weights and activations (F32 accumulation and
// F32 logits), cuBLAS for every linear, one stream and one cuBLAS handle per device, and a
// paged KV cache (blocks of kKvBlockPositions positions in a pool sized from free memory,
// a block table per sequence, shared prefixes referenced). Weights reach the device through
// pinned staging buffers (weight_upload.h); F32 / BF16 checkpoints are converted to F16 on
// the device.
//
// Decode passes run as CUDA graphs (OpsOptions::cuda_graphs): decode_graphs.h records,
// captures and replays them; the ops here issue their kernels through it.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>

#include <fmt/format.h>

#include "backends/backend.h"
#include "backends/cuda/cublas_loader.h"
#include "backends/cuda/decode_graphs.h"
#include "backends/cuda/row_picks.h"
#include "backends/cuda/cuda_util.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/weight_upload.h"
#include "backends/kv_blocks.h"
#include "backends/ops.h"
#include "backends/paged_attention.h"
#include "io/checkpoint.h"

namespace pivotmt::cuda {
namespace {

constexpr size_t kMiB = size_t(1) << 20;

class CudaLinear final : public LinearWeights {
 public:
  Tensor w;  // [out, in] F16
  size_t bytes() const override { return out * in * 2; }
};

class CudaKv final : public KvStorage {
 public:
  explicit CudaKv(std::shared_ptr<BlockPool> pool) : pool_(std::move(pool)), table(*pool_) {}

 private:
  std::shared_ptr<BlockPool> pool_;  // declared first: outlives the table that releases into it

 public:
  BlockTable table;
};

BlockTable& table_of(const KvCache& c) { return static_cast<CudaKv&>(*c.storage).table; }

class CudaOps final : public Ops {
 public:
  CudaOps(int device, const OpsOptions& options) : device_{DeviceKind::CUDA, device}, options_(options) {
    info_ = device_info(device);  // validates the index (clear error naming it)
    int driver = 0, runtime = 0;
    check(cudaDriverGetVersion(&driver), "cudaDriverGetVersion");
    check(cudaRuntimeGetVersion(&runtime), "cudaRuntimeGetVersion");
    // Within one major version CUDA's minor-version compatibility runs a newer runtime on an
    // older driver (features the driver lacks fail with cudaErrorCallRequiresNewerDriver,
    // which every call's check names); only say so, once per device.
    if (driver < runtime) {
      static std::once_flag warned[64];
      std::call_once(warned[std::clamp(device, 0, 63)], [&] {
        fmt::print(stderr,
                   "warning: cuda:{}: the NVIDIA driver supports CUDA {}.{}, older than the runtime pivotmt was built "
                   "with ({}.{}); if a CUDA call fails, update the driver\n",
                   device, driver / 1000, driver % 1000 / 10, runtime / 1000, runtime % 1000 / 10);
      });
    }
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    graphs_ = std::make_unique<DecodeGraphs>(device_, stream_);
    check_cublas(cublas().create(&blas_), "cublasCreate");
    check_cublas(cublas().set_stream(blas_, stream_), "cublasSetStream");
    try {
      blas_workspace_ = device_alloc(device, kBlasWorkspaceBytes);
    } catch (const Error& e) {  // the first allocation of all: say what it is for
      throw Error(fmt::format("{} (cuBLAS's workspace, before any weight: this device has too little free memory "
                              "for pivotmt)",
                              e.what()));
    }
    check_cublas(cublas().set_workspace(blas_, blas_workspace_.get(), kBlasWorkspaceBytes), "cublasSetWorkspace");
    upload_ = std::make_unique<WeightUpload>(device, stream_);
    check(cudaEventCreateWithFlags(&meta_done_, cudaEventDisableTiming), "cudaEventCreate");
  }
  ~CudaOps() override {
    cudaSetDevice(device_.index);
    cudaStreamSynchronize(stream_);
    graphs_.reset();
    upload_.reset();
    cudaEventDestroy(meta_done_);
    if (rows_done_) cudaEventDestroy(rows_done_);
    if (copies_done_) cudaEventDestroy(copies_done_);
    if (blas_) cublas().destroy(blas_);
    cudaStreamDestroy(stream_);
  }

  Device device() const override { return device_; }
  DType activation_dtype() const override { return DType::F16; }
  size_t row_stride_multiple(DType t) const override { return 16 / dtype_size(t); }
  std::string describe() const override {
    return fmt::format("cuda:{} ({}, {:.1f} GiB)", device_.index, info_.name, double(info_.total_memory) / (kMiB * 1024));
  }

  // --- Weights
  std::unique_ptr<LinearWeights> load_linear(const Checkpoint& ckpt, const std::vector<std::string>& names,
                                             DType storage) override {
    require_f16(storage);
    size_t out = 0, in = 0;
    for (const auto& name : names) {
      const auto& info = ckpt.at(name);
      const size_t o = size_t(info.shape.at(0)), i = info.shape.size() > 1 ? size_t(info.shape[1]) : 1;
      if (in && i != in) throw Error(fmt::format("{}: {} columns, the fused projection has {}", name, i, in));
      in = i;
      out += o;
    }
    auto w = std::make_unique<CudaLinear>();
    w->out = out;
    w->in = in;
    w->w = Tensor(device_, DType::F16, out, in);
    size_t row = 0;
    for (const auto& name : names) {
      const auto& info = ckpt.at(name);
      if (info.dtype != DType::F32 && info.dtype != DType::F16 && info.dtype != DType::BF16)
        throw UnsupportedError(fmt::format("{}: stored as {}; the GPU loads F32, F16 or BF16", name, dtype_name(info.dtype)));
      if (ckpt.stored_as_is(name)) {
        upload_->to_f16(ckpt.raw(name), info.dtype, w->w.as<char>() + row * in * 2);
      } else {  // a GGUF tensor: dequantised (and its rows reordered) on the host, uploaded as F16
        std::vector<uint16_t> f16(size_t(info.numel()));
        ckpt.load_into(name, DType::F16, std::as_writable_bytes(std::span(f16)));
        upload_->to_f16(std::as_bytes(std::span(f16)), DType::F16, w->w.as<char>() + row * in * 2);
      }
      row += size_t(info.shape.at(0));
    }
    return w;
  }
  Tensor load_vector(const Checkpoint& ckpt, const std::string& name) override {
    const std::vector<float> values = ckpt.load_f32(name);
    return make_vector(std::span<const float>(values));
  }
  std::unique_ptr<LinearWeights> make_linear(std::span<const float> values, size_t out, size_t in, DType storage) override {
    require_f16(storage);
    if (values.size() != out * in) throw Error(fmt::format("make_linear: {} values for [{}, {}]", values.size(), out, in));
    auto w = std::make_unique<CudaLinear>();
    w->out = out;
    w->in = in;
    w->w = Tensor(device_, DType::F16, out, in);
    from_host_f32(w->w, values);
    return w;
  }
  DType vector_dtype() const override { return DType::F16; }  // an FP16 model's norm weights
  std::unique_ptr<LinearWeights> random_linear(size_t out, size_t in, DType storage, uint64_t seed, float scale) override {
    require_f16(storage);
    auto w = std::make_unique<CudaLinear>();
    w->out = out;
    w->in = in;
    w->w = Tensor(device_, DType::F16, out, in);
    kernels::fill_random_f16(w->w.data(), out * in, seed, scale, 0.0f, stream_);
    return w;
  }
  Tensor random_vector(size_t n, uint64_t seed, float scale, float offset) override {
    Tensor t(device_, DType::F16, 1, n);
    kernels::fill_random_f16(t.data(), n, seed, scale, offset, stream_);
    return t;
  }

  // --- KV caches
  KvCache new_cache() override {
    if (!pool_) throw Error("cuda: KV cache before configure()");
    KvCache c;
    c.storage = std::make_unique<CudaKv>(pool_);
    return c;
  }
  void reserve(KvCache&, size_t) override {}  // blocks are taken as positions are written
  bool grow(KvCache& cache, size_t positions) override {
    std::vector<BlockCopy> copies;
    if (!table_of(cache).grow(cache.length, positions, copies)) return false;
    queue_copies(copies);
    return true;
  }
  size_t kv_bytes_per_position() const override { return 2 * shape().layers * width() * 2; }
  size_t default_kv_budget(size_t) const override { return kv_capacity_bytes(); }
  size_t kv_capacity_bytes() const override { return pool_ ? pool_->capacity() * kKvBlockPositions * kv_bytes_per_position() : 0; }

  void set_cuda_graphs(bool on) override { options_.cuda_graphs = on; }
  void synchronize() override {
    flush_deferred();
    run_copies();
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

 protected:
  void do_configure() override {
    select();
    // The weights are in: their staging buffers go back to the pool (a later upload, the op
    // harness's, makes them again).
    upload_->release();
    // Split-KV attention's partial softmax states: a fixed buffer taken before the pool is
    // sized (attention_splits() keeps every pass's splits inside it).
    graphs_->clear();  // they name the pool, the RoPE table and the partials being replaced
    attention_partials_ = Tensor(device_, DType::F32, 1, kAttentionPartialFloats);
    check(cudaDeviceGetAttribute(&multiprocessors_, cudaDevAttrMultiProcessorCount, device_.index),
          "cudaDeviceGetAttribute(MultiProcessorCount)");
    std::vector<float> f(shape().inv_freq);
    inv_freq_ = Tensor(device_, DType::F32, 1, f.size());
    from_host_f32(inv_freq_, f);
    pending_copies_.clear();
    pool_.reset();  // a second configure() replaces the pool (tests, the op harness)
    kv_memory_.reset();
    // The pool: what is free once the weights are in, less the activations' room, the
    // cuBLAS workspace (already taken) and a safety margin.
    size_t free = 0, total = 0;
    check(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
    const size_t block_bytes = kKvBlockPositions * kv_bytes_per_position();
    const size_t keep = options_.activation_reserve_bytes + kSafetyBytes;
    // 90% of the rest: other allocations (cuBLAS, another process) keep some room.
    size_t pool_bytes = free > keep ? (free - keep) / 10 * 9 : 0;
    if (options_.kv_capacity_bytes) pool_bytes = std::min(pool_bytes, options_.kv_capacity_bytes);
    const size_t blocks = pool_bytes / block_bytes;
    if (blocks == 0)
      throw Error(fmt::format("{}: no memory left for the KV cache: {:.0f} MiB free after the weights, {:.0f} MiB kept for "
                              "activations and {:.0f} MiB needed per block of {} positions",
                              describe(), double(free) / kMiB, double(keep) / kMiB, double(block_bytes) / kMiB,
                              kKvBlockPositions));
    kv_memory_ = device_alloc(device_.index, blocks * block_bytes);
    layer_elems_ = blocks * kKvBlockPositions * width();
    pool_ = std::make_shared<BlockPool>(blocks);
  }
  KvCache do_prefix_of(const KvCache& from, size_t n) override {
    KvCache c = new_cache();
    std::vector<BlockCopy> copies;
    // No block free for a partial last block: share the full blocks only (the caller
    // computes the rest; c.length says how much was shared).
    if (!table_of(c).share_prefix(table_of(from), n, copies)) {
      n -= n % kKvBlockPositions;
      table_of(c).share_prefix(table_of(from), n, copies);
    }
    queue_copies(copies);
    c.length = n;
    return c;
  }
  void do_truncate(KvCache& cache, size_t n) override { table_of(cache).truncate(n); }

  void do_begin_forward() override {
    select();
    run_copies();  // before this pass writes into (or reads) the copied blocks
    const auto& b = batch();
    std::vector<PassSequence> pass;  // pack_pass refuses a position past a sequence's blocks (grow() first)
    for (const auto& s : b.seqs) pass.push_back({&table_of(*s.cache).blocks(), s.row0, s.count});
    pass_max_keys_ = 0;
    pass_max_seq_rows_ = 0;
    size_t min_seq_rows = SIZE_MAX;
    for (const auto& s : b.seqs) {
      pass_max_seq_rows_ = std::max(pass_max_seq_rows_, s.count);
      min_seq_rows = std::min(min_seq_rows, s.count);
    }
    // A pass mixing prompt chunks with decode rows: the tensor cores take the prompts' tiles,
    // the split-KV kernel the few-row sequences (a 1-row tile would read its keys once per
    // query head of a GQA group, in blocks of 64 rows with one live).
    const bool mixed = pass_max_seq_rows_ > kSplitKvMaxRowsPerSequence && min_seq_rows <= kSplitKvMaxRowsPerSequence &&
                       split_kv_shape_supported();
    const PassMetadata meta = pack_pass(b.tokens, b.positions, pass, mixed ? kSplitKvMaxRowsPerSequence + 1 : 1);
    for (int64_t p : b.positions)
      pass_max_keys_ = std::max(pass_max_keys_, p + 1 - paged::first_visible(p, int64_t(shape().window)));
    if (options_.cuda_graphs && graphs_->usable() && pass_max_seq_rows_ == 1 && meta.T <= kMaxGraphRows &&
        split_kv_shape_supported()) {
      begin_graph_pass(meta);
      return;
    }
    const size_t count = meta.data.size();
    check(cudaEventSynchronize(meta_done_), "wait for the previous pass's metadata copy");
    if (meta_host_.bytes < count * 4) {
      meta_host_.reset(count * 8);
      meta_device_ = Tensor(device_, DType::I32, 1, count * 2);
    }
    std::memcpy(meta_host_.ptr, meta.data.data(), count * 4);
    check(cudaMemcpyAsync(meta_device_.data(), meta_host_.ptr, count * 4, cudaMemcpyHostToDevice, stream_), "copy pass metadata");
    check(cudaEventRecord(meta_done_, stream_), "cudaEventRecord");
    const int32_t* d = meta_device_.as<int32_t>();
    d_tokens_ = d + meta.tokens();
    d_positions_ = d + meta.positions();
    d_slots_ = d + meta.slots();
    d_row_seq_ = d + meta.row_seq();
    d_offsets_ = d + meta.table_offsets();
    d_tables_ = d + meta.tables();
    d_query_tiles_ = d + meta.query_tiles();
    query_tiles_ = int(meta.Q);
    d_few_rows_ = d + meta.few_rows();
    few_rows_ = int(meta.R);
  }
  // The split-KV kernel takes this model's heads (and the model's fused QKV rows).
  bool split_kv_shape_supported() const {
    const int nh = int(shape().heads), nkv = int(shape().kv_heads), d = int(shape().head_dim);
    return kernels::attention_split_supported(nh, nkv, d, (nh + 2 * nkv) * d, kv_memory_.get());
  }

  // A decode pass headed for a CUDA graph: its metadata into its row count's buffer (fixed
  // addresses), its ops recorded until end_forward.
  void begin_graph_pass(const PassMetadata& meta) {
    // Tokens through the block tables (a decode pass reads no query tiles).
    const int32_t* d =
        graphs_->begin(meta.T, meta.data.data(), meta.query_tiles(),
                       attention_splits(int(meta.T), int(shape().heads), int(shape().kv_heads), int(shape().head_dim),
                                        kUnboundedKeys));
    d_tokens_ = d + meta.tokens();
    d_positions_ = d + meta.positions();
    d_slots_ = d + meta.slots();
    d_row_seq_ = d + meta.row_seq();  // also the identity 0..T-1: T one-row sequences in order
    d_offsets_ = d + meta.table_offsets();
    d_tables_ = d + meta.tables();
    d_query_tiles_ = nullptr;
    query_tiles_ = 0;
    d_few_rows_ = nullptr;
    few_rows_ = 0;
  }

  // An op's kernels, through the graphs (launched now, or recorded for the pass's graph).
  template <class Body>
  void issue(std::initializer_list<int64_t> signature, Body&& body) {
    graphs_->issue(signature, std::forward<Body>(body));
  }
  static int64_t address(const void* p) { return DecodeGraphs::address(p); }
  static int64_t bits(float f) { return DecodeGraphs::bits(f); }
  static int64_t shape_of(const Tensor& t) { return DecodeGraphs::shape_of(t); }

  void do_end_forward() override { graphs_->end(counters_, describe()); }
  // The ops called before the abort run, as they would have without a graph (the op
  // harness ends its passes so).
  void do_abort_forward() override { graphs_->abort(); }
  // Something needs the pass's results before end_forward (a read to the host mid-pass: the
  // op harness): the recorded ops run now, and the rest of the pass as it comes.
  void flush_deferred() { graphs_->flush(); }

  void do_embed(const LinearWeights& table, const Tensor& x) override {
    const void* w = static_cast<const CudaLinear&>(table).w.data();
    issue({kEmbed, address(w), address(x.data()), shape_of(x)}, [=, this] {
      kernels::embed(w, d_tokens_, int(x.rows()), int(x.cols()), x.data(), int(x.stride()), stream_);
    });
  }
  void do_rmsnorm(const Tensor& x, const Tensor& w, float eps, const Tensor& y) override {
    require(x, DType::F16, "rmsnorm x");
    require(w, DType::F16, "rmsnorm weight");
    issue({kRmsnorm, address(x.data()), shape_of(x), address(w.data()), bits(eps), address(y.data()), shape_of(y)},
          [=, this] {
            kernels::rmsnorm(x.data(), int(x.stride()), w.data(), int(x.rows()), int(x.cols()), eps, y.data(),
                             int(y.stride()), stream_);
          });
  }
  void do_linear(const Tensor& x, const LinearWeights& w, const Tensor& y) override {
    require(x, DType::F16, "linear x");
    if (y.dtype() != DType::F16 && y.dtype() != DType::F32) throw Error("cuda linear: y must be F16 or F32, is " + y.describe());
    const void* weights = static_cast<const CudaLinear&>(w).w.data();
    const int out = int(w.out), in = int(w.in);
    const bool f32 = y.dtype() == DType::F32;
    issue({kLinear, address(x.data()), shape_of(x), address(weights), out, in, address(y.data()), shape_of(y), f32},
          [=, this] {
            kernels::linear(blas_, stream_, x.data(), int(x.stride()), int(x.rows()), weights, out, in, y.data(), int(y.stride()),
                            f32);
          });
  }
  void do_add(const Tensor& x, const Tensor& y) override {
    require(x, DType::F16, "add x");
    issue({kAdd, address(x.data()), shape_of(x), address(y.data()), shape_of(y)}, [=, this] {
      kernels::add(x.data(), int(x.stride()), y.data(), int(y.stride()), int(x.rows()), int(x.cols()), stream_);
    });
  }
  void do_silu_mul(const Tensor& gate_up, const Tensor& out) override {
    require(gate_up, DType::F16, "silu_mul gate_up");
    issue({kSiluMul, address(gate_up.data()), shape_of(gate_up), address(out.data()), shape_of(out)}, [=, this] {
      kernels::silu_mul(gate_up.data(), int(gate_up.stride()), int(out.rows()), int(out.cols()), out.data(),
                        int(out.stride()), stream_);
    });
  }
  void do_rope(const Tensor& x, size_t heads) override {
    require(x, DType::F16, "rope x");
    issue({kRope, address(x.data()), shape_of(x), int64_t(heads), address(inv_freq_.data())}, [=, this] {
      kernels::rope(x.data(), int(x.stride()), int(x.rows()), int(heads), int(shape().head_dim), d_positions_,
                    inv_freq_.as<float>(), stream_);
    });
  }
  void do_add_rmsnorm(const Tensor& x, const Tensor& y, const Tensor& w, float eps, const Tensor& out) override {
    require(x, DType::F16, "add_rmsnorm x");
    require(y, DType::F16, "add_rmsnorm y");
    require(w, DType::F16, "add_rmsnorm weight");
    if (!kernels::add_rmsnorm_supported(x.data(), int(x.stride()), y.data(), int(y.stride()), w.data(), int(x.cols()),
                                        out.data(), int(out.stride()))) {
      do_add(x, y);
      do_rmsnorm(x, w, eps, out);
      return;
    }
    issue({kAddRmsnorm, address(x.data()), shape_of(x), address(y.data()), shape_of(y), address(w.data()), bits(eps),
           address(out.data()), shape_of(out)},
          [=, this] {
            kernels::add_rmsnorm(x.data(), int(x.stride()), y.data(), int(y.stride()), w.data(), int(x.rows()),
                                 int(x.cols()), eps, out.data(), int(out.stride()), stream_);
          });
  }
  void do_attention(size_t layer, const Tensor& qkv, const Tensor& out) override {
    require(qkv, DType::F16, "attention qkv");
    const int splits = graph_splits(qkv);
    issue({kAttention, int64_t(layer), address(qkv.data()), shape_of(qkv), address(out.data()), shape_of(out),
           address(k_pool(layer)), address(v_pool(layer)), splits},
          [=, this] {
            kernels::kv_write(qkv.data(), int(qkv.stride()), int(qkv.rows()), int(shape().heads), int(shape().kv_heads),
                              int(shape().head_dim), d_slots_, k_pool(layer), v_pool(layer), stream_);
            attend(layer, qkv, out, splits);
          });
  }
  // RoPE on q and k, k and v into the cache: one kernel, then attention.
  void do_rope_attention(size_t layer, const Tensor& qkv, const Tensor& out) override {
    require(qkv, DType::F16, "rope_attention qkv");
    const int d = int(shape().head_dim);
    if (!kernels::rope_kv_write_supported(qkv.data(), int(qkv.stride()), d, k_pool(layer), v_pool(layer))) {
      do_rope(qkv, shape().heads + shape().kv_heads);
      do_attention(layer, qkv, out);
      return;
    }
    const int splits = graph_splits(qkv);
    issue({kRopeAttention, int64_t(layer), address(qkv.data()), shape_of(qkv), address(out.data()), shape_of(out),
           address(k_pool(layer)), address(v_pool(layer)), address(inv_freq_.data()), splits},
          [=, this] {
            kernels::rope_kv_write(qkv.data(), int(qkv.stride()), int(qkv.rows()), int(shape().heads),
                                   int(shape().kv_heads), d, d_positions_, inv_freq_.as<float>(), d_slots_,
                                   k_pool(layer), v_pool(layer), stream_);
            attend(layer, qkv, out, splits);
          });
  }
  // A graph's split count (fixed per row count), when this pass is headed for one and the
  // split-KV kernel takes these rows (else the pass runs as launches: 0).
  int graph_splits(const Tensor& qkv) {
    if (!graphs_->recording()) return 0;
    if (kernels::attention_split_supported(int(shape().heads), int(shape().kv_heads), int(shape().head_dim),
                                           int(qkv.stride()), qkv.data()))
      return graphs_->splits();
    graphs_->not_graphable();
    return 0;
  }
  // The attention kernels over the cache (this pass's keys and values already in it);
  // `graph_splits` > 0: split-KV with that many splits (a graph's).
  void attend(size_t layer, const Tensor& qkv, const Tensor& out, int graph_splits) {
    const int T = int(qkv.rows()), nh = int(shape().heads), nkv = int(shape().kv_heads), d = int(shape().head_dim);
    void* k = k_pool(layer);
    void* v = v_pool(layer);
    // Decode (a few rows per sequence): split-KV, each key read once per GQA group. Prefill:
    // the tensor cores, 64 rows of a sequence per block. Else the warp-per-(row, head) kernel.
    if (pass_max_seq_rows_ <= kSplitKvMaxRowsPerSequence &&
        kernels::attention_split_supported(nh, nkv, d, int(qkv.stride()), qkv.data())) {
      // Splits past a row's keys stay empty (each at least kMinKeysPerSplit keys): a graph's
      // count, made for the longest rows, computes what this pass's would.
      const int splits = graph_splits > 0 ? graph_splits : attention_splits(T, nh, nkv, d, pass_max_keys_);
      kernels::attention_split(qkv.data(), int(qkv.stride()), T, nh, nkv, d, int(shape().window), d_row_seq_,
                               d_positions_, d_offsets_, d_tables_, k, v, splits, int(kMinKeysPerSplit), nullptr,
                               attention_partials_.as<float>(), out.data(), int(out.stride()), stream_);
      return;
    }
    // The tiles (every sequence's, or in a mixed pass the prompts') on the tensor cores, the
    // few-row sequences' rows split-KV. When either kernel cannot take this pass, the
    // warp-per-(row, head) kernel takes every row.
    const bool split_ok = kernels::attention_split_supported(nh, nkv, d, int(qkv.stride()), qkv.data());
    if (query_tiles_ > 0 && (few_rows_ == 0 || split_ok) &&
        kernels::attention_prefill_supported(nh, nkv, d, int(qkv.stride()), qkv.data(), int(out.stride()), out.data())) {
      kernels::attention_prefill(qkv.data(), int(qkv.stride()), nh, nkv, d, int(shape().window), d_query_tiles_,
                                 query_tiles_, d_row_seq_, d_positions_, d_offsets_, d_tables_, k, v, out.data(),
                                 int(out.stride()), stream_);
      if (few_rows_ > 0)
        kernels::attention_split(qkv.data(), int(qkv.stride()), few_rows_, nh, nkv, d, int(shape().window), d_row_seq_,
                                 d_positions_, d_offsets_, d_tables_, k, v,
                                 attention_splits(few_rows_, nh, nkv, d, pass_max_keys_), int(kMinKeysPerSplit),
                                 d_few_rows_, attention_partials_.as<float>(), out.data(), int(out.stride()), stream_);
      return;
    }
    kernels::attention(qkv.data(), int(qkv.stride()), T, nh, nkv, d, int(shape().window), d_row_seq_, d_positions_,
                       d_offsets_, d_tables_, k, v, out.data(), int(out.stride()), stream_);
  }
  // Decode passes' split count: enough (row, KV head, split) blocks for two per
  // multiprocessor, each split at least kMinKeysPerSplit of the longest row's `max_keys`,
  // the partial states inside their buffer.
  int attention_splits(int T, int nh, int nkv, int d, int64_t max_keys) const {
    const int64_t blocks = int64_t(T) * nkv;
    int64_t splits = (2 * int64_t(multiprocessors_) + blocks - 1) / blocks;
    splits = std::min(splits, (max_keys + kMinKeysPerSplit - 1) / kMinKeysPerSplit);
    while (splits > 1 && kernels::attention_split_partials(T, nh, d, int(splits)) > kAttentionPartialFloats) --splits;
    return int(std::max<int64_t>(splits, 1));
  }
  void do_gather_rows(const Tensor& x, std::span<const size_t> rows, const Tensor& out) override {
    if (rows.empty()) return;
    if (graphs_->recording()) {
      bool identity = rows.size() == x.rows();
      for (size_t i = 0; identity && i < rows.size(); ++i) identity = rows[i] == i;
      const int elem = int(dtype_size(x.dtype()));
      if (identity) {  // every row's logits (a decode pass): the indices are the metadata's row → sequence map
        issue({kGatherRows, address(x.data()), shape_of(x), address(out.data()), shape_of(out), elem}, [=, this] {
          kernels::gather_rows(x.data(), int(x.stride()), d_row_seq_, int(x.rows()), int(x.cols()), elem, out.data(),
                               int(out.stride()), stream_);
        });
        return;
      }
      graphs_->not_graphable();
      issue({}, [=, this, rows = std::vector<size_t>(rows.begin(), rows.end())] { gather_now(x, rows, out); });
      return;
    }
    gather_now(x, rows, out);
  }
  void gather_now(const Tensor& x, std::span<const size_t> rows, const Tensor& out) {
    check(cudaEventSynchronize(rows_done_ ? rows_done_ : meta_done_), "wait for the previous row copy");
    if (rows_host_.bytes < rows.size() * 4) {
      rows_host_.reset(rows.size() * 8);
      rows_device_ = Tensor(device_, DType::I32, 1, rows.size() * 2);
      if (!rows_done_) check(cudaEventCreateWithFlags(&rows_done_, cudaEventDisableTiming), "cudaEventCreate");
    }
    int32_t* h = static_cast<int32_t*>(rows_host_.ptr);
    for (size_t i = 0; i < rows.size(); ++i) h[i] = int32_t(rows[i]);
    check(cudaMemcpyAsync(rows_device_.data(), h, rows.size() * 4, cudaMemcpyHostToDevice, stream_), "copy row indices");
    check(cudaEventRecord(rows_done_, stream_), "cudaEventRecord");
    kernels::gather_rows(x.data(), int(x.stride()), rows_device_.as<int32_t>(), int(rows.size()), int(x.cols()),
                         int(dtype_size(x.dtype())), out.data(), int(out.stride()), stream_);
  }
  std::vector<float> do_to_host_f32(const Tensor& t) override {
    flush_deferred();
    const size_t elem = dtype_size(t.dtype());
    std::vector<float> v(t.numel());
    if (t.dtype() == DType::F32) {
      check(cudaMemcpy2DAsync(v.data(), t.cols() * 4, t.data(), t.stride() * 4, t.cols() * 4, t.rows(),
                              cudaMemcpyDeviceToHost, stream_), "copy to host");
      synchronize();
      return v;
    }
    std::vector<uint16_t> halves(t.numel());
    check(cudaMemcpy2DAsync(halves.data(), t.cols() * elem, t.data(), t.stride() * elem, t.cols() * elem, t.rows(),
                            cudaMemcpyDeviceToHost, stream_), "copy to host");
    synchronize();
    convert_floats(DType::F16, halves.data(), DType::F32, v.data(), v.size());
    return v;
  }
  // On our stream (ordered with the kernels that read it), then waited for: a copy from
  // pageable memory may return before its DMA is done, and the legacy default stream would
  // not order it with a non-blocking stream's kernels.
  void do_from_host_f32(const Tensor& t, std::span<const float> values) override {
    select();
    flush_deferred();
    if (t.dtype() == DType::F32) {
      check(cudaMemcpy2DAsync(t.data(), t.stride() * 4, values.data(), t.cols() * 4, t.cols() * 4, t.rows(),
                              cudaMemcpyHostToDevice, stream_), "copy to device");
      synchronize();
      return;
    }
    std::vector<uint16_t> halves(values.size());
    convert_floats(DType::F32, values.data(), DType::F16, halves.data(), values.size());
    check(cudaMemcpy2DAsync(t.data(), t.stride() * 2, halves.data(), t.cols() * 2, t.cols() * 2, t.rows(),
                            cudaMemcpyHostToDevice, stream_), "copy to device");
    synchronize();
  }
  std::vector<int32_t> do_argmax_rows(const Tensor& logits) override {
    flush_deferred();
    return picks_.argmax(logits, stream_);
  }
  // Sampled rows on the device when each row's top-k allows it (the ids come back), else
  // the logits to the host (Ops' default).
  std::vector<int32_t> do_sample_rows(const Tensor& logits, std::span<const RowSampling> rows) override {
    flush_deferred();
    return picks_.sample(logits, rows, stream_, [this](const Tensor& l, std::span<const RowSampling> r) {
      return Ops::do_sample_rows(l, r);
    });
  }

 private:
  void select() const { check(cudaSetDevice(device_.index), "cudaSetDevice"); }
  size_t width() const { return shape().kv_heads * shape().head_dim; }  // elements per position and layer
  // Layer l's keys, then its values: [slots, kv_heads, head_dim] halves each.
  void* k_pool(size_t layer) const { return static_cast<uint16_t*>(kv_memory_.get()) + 2 * layer * layer_elems_; }
  void* v_pool(size_t layer) const { return static_cast<uint16_t*>(kv_memory_.get()) + (2 * layer + 1) * layer_elems_; }

  void require_f16(DType storage) const {
    if (storage != DType::F16)
      throw UnsupportedError(fmt::format("{}: weights are F16 on a GPU (asked for {}; use --weights f16)", describe(),
                                         storage == DType::I8 ? "INT8" : std::string(dtype_name(storage))));
  }
  static void require(const Tensor& t, DType dtype, const char* what) {
    if (t.dtype() != dtype) throw Error(fmt::format("cuda {}: {} (expected {})", what, t.describe(), dtype_name(dtype)));
  }

  // Block copies (a partial prefix block, copy on write) wait for the next pass and run
  // as one kernel launch; one that depends on a waiting copy makes those run first.
  void queue_copies(const std::vector<BlockCopy>& copies) {
    for (const auto& c : copies) {
      if (c.positions == 0) continue;
      if (!pending_copies_.independent(c)) run_copies();
      pending_copies_.add(c);
    }
  }
  void run_copies() {
    if (pending_copies_.empty()) return;
    flush_deferred();
    select();
    const int count = int(pending_copies_.size());
    const std::vector<int32_t> entries = pending_copies_.take_entries();
    check(cudaEventSynchronize(copies_done_ ? copies_done_ : meta_done_), "wait for the previous block copies' upload");
    if (copies_host_.bytes < entries.size() * 4) {
      copies_host_.reset(entries.size() * 8);
      copies_device_ = Tensor(device_, DType::I32, 1, entries.size() * 2);
      if (!copies_done_) check(cudaEventCreateWithFlags(&copies_done_, cudaEventDisableTiming), "cudaEventCreate");
    }
    std::memcpy(copies_host_.ptr, entries.data(), entries.size() * 4);
    check(cudaMemcpyAsync(copies_device_.data(), copies_host_.ptr, entries.size() * 4, cudaMemcpyHostToDevice, stream_),
          "copy the KV block copies' entries");
    check(cudaEventRecord(copies_done_, stream_), "cudaEventRecord");
    kernels::kv_copy_blocks(copies_device_.as<int32_t>(), count, int(2 * shape().layers), layer_elems_ * 2,
                            int(width() * 2), kv_memory_.get(), stream_);
  }

  Device device_;
  OpsOptions options_;
  CudaDeviceInfo info_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  std::shared_ptr<void> blas_workspace_;
  std::unique_ptr<WeightUpload> upload_;  // made with the stream

  Tensor inv_freq_;                 // [1, head_dim / 2] F32
  std::shared_ptr<void> kv_memory_;  // [layers][K, V][slots, kv_heads, head_dim] F16
  size_t layer_elems_ = 0;
  std::shared_ptr<BlockPool> pool_;
  PendingBlockCopies pending_copies_;
  Pinned copies_host_;
  Tensor copies_device_;
  cudaEvent_t copies_done_ = nullptr;

  Pinned meta_host_, rows_host_;
  Tensor meta_device_, rows_device_;
  RowPicks picks_{device_};  // argmax and sampling on the device
  // Split-KV decode attention (attention.cu): passes of at most this many rows per sequence.
  static constexpr size_t kSplitKvMaxRowsPerSequence = 4;
  static constexpr int64_t kMinKeysPerSplit = 64;
  static constexpr int64_t kUnboundedKeys = int64_t(1) << 40;  // a graph's rows may grow to any length
  static constexpr size_t kAttentionPartialFloats = size_t(2) << 20;  // 8 MiB
  Tensor attention_partials_;
  int multiprocessors_ = 1;
  int64_t pass_max_keys_ = 0;     // the longest row's visible keys in this pass
  size_t pass_max_seq_rows_ = 0;  // the most rows one sequence has in this pass
  const int32_t* d_query_tiles_ = nullptr;
  int query_tiles_ = 0;
  const int32_t* d_few_rows_ = nullptr;  // a mixed pass's rows of few-row sequences (split-KV)
  int few_rows_ = 0;
  cudaEvent_t meta_done_ = nullptr, rows_done_ = nullptr;

  // --- CUDA graphs of decode passes (decode_graphs.h says how they work)
  static constexpr size_t kMaxGraphRows = 256;  // passes of more rows are not graphed
  enum OpCode : int64_t { kEmbed = 1, kRmsnorm, kLinear, kAdd, kSiluMul, kRope, kAttention, kRopeAttention, kAddRmsnorm, kGatherRows };
  std::unique_ptr<DecodeGraphs> graphs_;  // made with the stream
  const int32_t *d_tokens_ = nullptr, *d_positions_ = nullptr, *d_slots_ = nullptr, *d_row_seq_ = nullptr,
                *d_offsets_ = nullptr, *d_tables_ = nullptr;
};

}  // namespace

std::unique_ptr<Ops> make_ops(int device, const OpsOptions& options) { return std::make_unique<CudaOps>(device, options); }

}  // namespace pivotmt::cuda
