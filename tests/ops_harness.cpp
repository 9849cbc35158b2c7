// The op harness (in the manner of llama.cpp's test-backend-ops): every op of a device
// against the CPU reference ops, on fresh random data (the seed is printed), odd shapes
// (1, 7, 769, 4097) and model shapes, outputs poisoned with NaN before each run and guarded
// by sentinel rows / columns that must come back untouched, and a normalised error
// NMSE = Σ(a − b)² / Σb² under a per-dtype threshold. Inputs are rounded to the device's
// activation dtype first, so both sides compute on the same values.
//
//   ops_harness [--device cpu|cuda:N] [--seed S] [--small] [--perf] [--filter TEXT]
//
// --device cpu checks the fast CPU kernels (CTest, every build); cuda:N the GPU's (label
// gpu; exit code 77 = skipped when there is no such device). --small keeps to small shapes
// (for compute-sanitizer). --perf times the device's ops on model shapes instead (GB/s and
// TFLOP/s against ceilings measured in the same run on a GPU).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "backends/backend.h"
#include "backends/kv_blocks.h"
#include "backends/ops.h"
#include "core/dtype.h"
#include "core/error.h"

namespace pivotmt {
namespace {

constexpr float kSentinel = 4096.0f;  // exact in F16 and F32, far from any op's output here

struct Harness {
  std::unique_ptr<Ops> ref;  // CPU reference kernels, F32
  std::unique_ptr<Ops> dut;  // the device under test
  std::mt19937_64 rng;
  bool small = false;
  std::string filter;
  int checks = 0, failures = 0;

  bool half() const { return dut->activation_dtype() == DType::F16; }
  DType storage() const { return half() ? DType::F16 : DType::F32; }
  // Normalised error allowed: F16 rounding of inputs and outputs vs an F32 reference; F32
  // kernels (SIMD / BLAS order of summation) vs double-accumulating loops.
  double threshold(double f16, double f32 = 1e-9) const { return half() ? f16 : f32; }
  bool wanted(const std::string& op) const { return filter.empty() || op.find(filter) != std::string::npos; }

  // Random values rounded to what the device stores, so both sides see the same inputs.
  std::vector<float> values(size_t n, float scale = 1.0f) {
    std::normal_distribution<float> normal(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = normal(rng);
    if (half())
      for (auto& x : v) x = f16_to_f32(f32_to_f16(x));
    return v;
  }
  static Tensor upload(Ops& ops, const std::vector<float>& v, size_t rows, size_t cols, DType dtype) {
    Tensor t = ops.empty(rows, cols, dtype);
    ops.from_host_f32(t, v);
    return t;
  }

  // An output [rows, cols] inside a buffer with sentinel rows above and below (and sentinel
  // columns either side when `columns`), its own elements NaN.
  struct Guarded {
    Tensor whole, inner;
    size_t rows, cols;
    bool columns;
  };
  Guarded guarded(Ops& ops, size_t rows, size_t cols, DType dtype, bool columns) {
    const size_t extra_cols = columns ? 5 : 0;
    Guarded g{ops.empty(rows + 2, cols + extra_cols, dtype), {}, rows, cols, columns};
    ops.from_host_f32(g.whole, std::vector<float>(g.whole.numel(), kSentinel));
    g.inner = g.whole.rows(1, rows);
    if (columns) g.inner = g.inner.cols(2, cols);
    ops.from_host_f32(g.inner, std::vector<float>(rows * cols, NAN));
    return g;
  }
  // The guarded output's values; records a failure when a sentinel changed or a NaN remains.
  std::vector<float> read(Ops& ops, const Guarded& g, const std::string& what) {
    const auto all = ops.to_host_f32(g.whole);
    const size_t width = g.whole.cols(), c0 = g.columns ? 2 : 0;
    std::vector<float> inner;
    size_t touched = 0, unwritten = 0;
    for (size_t r = 0; r < g.rows + 2; ++r)
      for (size_t c = 0; c < width; ++c) {
        const float v = all[r * width + c];
        const bool inside = r >= 1 && r <= g.rows && c >= c0 && c < c0 + g.cols;
        if (inside) {
          inner.push_back(v);
          unwritten += std::isnan(v) ? 1 : 0;
        } else {
          touched += v == kSentinel ? 0 : 1;
        }
      }
    if (touched || unwritten) {
      ++failures;
      std::cout << fmt::format("FAIL {}: {} sentinel elements overwritten, {} output elements never written\n", what,
                               touched, unwritten);
    }
    return inner;
  }

  void compare(const std::string& what, const std::vector<float>& got, const std::vector<float>& want, double limit) {
    ++checks;
    double err = 0, norm = 0;
    bool finite = got.size() == want.size();
    for (size_t i = 0; finite && i < got.size(); ++i) {
      if (!std::isfinite(got[i])) finite = false;
      err += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
      norm += double(want[i]) * want[i];
    }
    const double nmse = norm > 0 ? err / norm : err;
    const bool ok = finite && nmse <= limit;
    if (!ok) ++failures;
    std::cout << fmt::format("{} {:<44} nmse {:.3e} (limit {:.0e}){}\n", ok ? "ok  " : "FAIL", what, nmse, limit,
                             finite ? "" : " non-finite or size mismatch");
  }
};

AttentionShape attention_shape(size_t heads, size_t kv_heads, size_t d, size_t window) {
  AttentionShape s{.layers = 2, .heads = heads, .kv_heads = kv_heads, .head_dim = d, .window = window};
  for (size_t i = 0; i < d / 2; ++i) s.inv_freq.push_back(std::pow(10000.0f, -float(2 * i) / float(d)));
  return s;
}

// Ops that need a batch (embed, rope) run inside a pass over one sequence of T rows at
// position `start`, aborted afterwards (no KV written).
void with_pass(Ops& ops, KvCache& cache, size_t start, const std::vector<int32_t>& tokens, const std::function<void()>& body) {
  if (!ops.grow(cache, start + tokens.size())) throw Error("harness: no KV room");
  cache.length = start;
  const SeqRows seq{&cache, 0, tokens.size()};
  ops.begin_forward(tokens, std::span(&seq, 1));
  body();
  ops.abort_forward();
}

void check_elementwise(Harness& h) {
  const std::vector<size_t> rows = h.small ? std::vector<size_t>{1, 7} : std::vector<size_t>{1, 7, 769};
  const std::vector<size_t> cols = h.small ? std::vector<size_t>{7, 64} : std::vector<size_t>{7, 769, 4097};
  const DType act = h.dut->activation_dtype();
  for (size_t R : rows)
    for (size_t C : cols) {
      const std::string shape = fmt::format("[{}, {}]", R, C);
      if (h.wanted("rmsnorm")) {
        const auto x = h.values(R * C, 3.0f), w = h.values(C, 0.5f);
        const Tensor rx = Harness::upload(*h.ref, x, R, C, DType::F32), rw = h.ref->make_vector(w);
        const Tensor dx = Harness::upload(*h.dut, x, R, C, act), dw = h.dut->make_vector(w);
        const Tensor ry = h.ref->empty(R, C);
        auto dy = h.guarded(*h.dut, R, C, act, false);
        h.ref->rmsnorm(rx, rw, 1e-5f, ry);
        h.dut->rmsnorm(dx, dw, 1e-5f, dy.inner);
        h.compare("rmsnorm " + shape, h.read(*h.dut, dy, "rmsnorm " + shape), h.ref->to_host_f32(ry), h.threshold(1e-5, 1e-10));
      }
      if (h.wanted("add")) {
        const auto x = h.values(R * C), y = h.values(R * C);
        const Tensor rx = Harness::upload(*h.ref, x, R, C, DType::F32), ry = Harness::upload(*h.ref, y, R, C, DType::F32);
        auto dx = h.guarded(*h.dut, R, C, act, true);
        h.dut->from_host_f32(dx.inner, x);
        const Tensor dy = Harness::upload(*h.dut, y, R, C, act);
        h.ref->add(rx, ry);
        h.dut->add(dx.inner, dy);
        h.compare("add " + shape, h.read(*h.dut, dx, "add " + shape), h.ref->to_host_f32(rx), h.threshold(1e-6, 0));
      }
      if (h.wanted("add_rmsnorm")) {  // as the Llama forward calls it: out is y
        const auto x = h.values(R * C), y = h.values(R * C), w = h.values(C, 0.5f);
        const Tensor rx = Harness::upload(*h.ref, x, R, C, DType::F32), ry = Harness::upload(*h.ref, y, R, C, DType::F32);
        const Tensor rw = h.ref->make_vector(w), dw = h.dut->make_vector(w);
        auto dx = h.guarded(*h.dut, R, C, act, false), dy = h.guarded(*h.dut, R, C, act, false);
        h.dut->from_host_f32(dx.inner, x);
        h.dut->from_host_f32(dy.inner, y);
        h.ref->add_rmsnorm(rx, ry, rw, 1e-5f, ry);
        h.dut->add_rmsnorm(dx.inner, dy.inner, dw, 1e-5f, dy.inner);
        h.compare("add_rmsnorm x " + shape, h.read(*h.dut, dx, "add_rmsnorm x " + shape), h.ref->to_host_f32(rx),
                  h.threshold(1e-6, 0));
        h.compare("add_rmsnorm out " + shape, h.read(*h.dut, dy, "add_rmsnorm out " + shape), h.ref->to_host_f32(ry),
                  h.threshold(1e-5, 1e-10));
      }
      if (h.wanted("silu_mul")) {
        const auto gu = h.values(R * 2 * C, 2.0f);
        const Tensor rg = Harness::upload(*h.ref, gu, R, 2 * C, DType::F32), dg = Harness::upload(*h.dut, gu, R, 2 * C, act);
        const Tensor ro = h.ref->empty(R, C);
        auto dout = h.guarded(*h.dut, R, C, act, false);
        h.ref->silu_mul(rg, ro);
        h.dut->silu_mul(dg, dout.inner);
        h.compare("silu_mul " + shape, h.read(*h.dut, dout, "silu_mul " + shape), h.ref->to_host_f32(ro), h.threshold(1e-5, 1e-10));
      }
      if (h.wanted("gather_rows")) {
        const auto x = h.values(R * C);
        std::vector<size_t> pick;
        for (size_t i = 0; i < std::min<size_t>(R, 5); ++i) pick.push_back(size_t(h.rng() % R));
        const Tensor rx = Harness::upload(*h.ref, x, R, C, DType::F32), dx = Harness::upload(*h.dut, x, R, C, act);
        const Tensor ro = h.ref->empty(pick.size(), C);
        auto dout = h.guarded(*h.dut, pick.size(), C, act, false);
        h.ref->gather_rows(rx, pick, ro);
        h.dut->gather_rows(dx, pick, dout.inner);
        h.compare("gather_rows " + shape, h.read(*h.dut, dout, "gather_rows " + shape), h.ref->to_host_f32(ro), 0);
      }
    }
}

void check_linear(Harness& h) {
  if (!h.wanted("linear")) return;
  struct Case {
    size_t T, in, out;
  };
  // Decode's few rows (a GPU's GEMV kernel where the width is a multiple of 8) and many.
  std::vector<Case> cases = {{1, 7, 769}, {3, 520, 33}, {7, 769, 13}, {9, 64, 64}, {33, 4097, 7}, {8, 128, 257}};
  if (!h.small) cases.push_back({4, 4096, 4096}), cases.push_back({300, 512, 1024});
  if (h.small) cases.resize(3);
  const DType act = h.dut->activation_dtype();
  for (const auto& c : cases)
    for (DType out_dtype : {act, DType::F32}) {
      const auto x = h.values(c.T * c.in), w = h.values(c.out * c.in, 1.0f / std::sqrt(float(c.in)));
      const auto rw = h.ref->make_linear(w, c.out, c.in, DType::F32);
      const auto dw = h.dut->make_linear(w, c.out, c.in, h.storage());
      const Tensor rx = Harness::upload(*h.ref, x, c.T, c.in, DType::F32), dx = Harness::upload(*h.dut, x, c.T, c.in, act);
      const Tensor ry = h.ref->empty(c.T, c.out);
      auto dy = h.guarded(*h.dut, c.T, c.out, out_dtype, true);  // a strided output (a fused projection's columns)
      h.ref->linear(rx, *rw, ry);
      h.dut->linear(dx, *dw, dy.inner);
      const std::string what = fmt::format("linear T={} in={} out={} -> {}", c.T, c.in, c.out, dtype_name(out_dtype));
      h.compare(what, h.read(*h.dut, dy, what), h.ref->to_host_f32(ry), h.threshold(out_dtype == DType::F32 ? 2e-6 : 5e-6, 1e-9));
      if (act == DType::F32) break;  // the CPU has one activation dtype
    }
}

void check_embed_rope_argmax(Harness& h) {
  const DType act = h.dut->activation_dtype();
  struct Heads {
    size_t heads, kv, d;
  };
  for (const Heads& hd : {Heads{4, 2, 16}, Heads{32, 8, 128}}) {
    const size_t heads = hd.heads, kv = hd.kv, d = hd.d;  // (clang 14 cannot capture structured bindings)
    const auto shape = attention_shape(heads, kv, d, 0);
    h.ref->configure(shape);
    h.dut->configure(shape);
    for (size_t T : h.small ? std::vector<size_t>{1, 7} : std::vector<size_t>{1, 7, 40}) {
      KvCache rc = h.ref->new_cache(), dc = h.dut->new_cache();
      const size_t start = h.small ? 3 : 4093;  // positions up to ~4100: large angles
      std::vector<int32_t> tokens(T);
      const size_t V = 769;
      for (auto& t : tokens) t = int32_t(h.rng() % V);
      if (h.wanted("embed")) {
        const size_t H = d * 3 + 1;
        const auto table = h.values(V * H);
        const auto rt = h.ref->make_linear(table, V, H, DType::F32), dt = h.dut->make_linear(table, V, H, h.storage());
        const Tensor rx = h.ref->empty(T, H);
        auto dx = h.guarded(*h.dut, T, H, act, false);
        with_pass(*h.ref, rc, start, tokens, [&] { h.ref->embed(*rt, rx); });
        with_pass(*h.dut, dc, start, tokens, [&] { h.dut->embed(*dt, dx.inner); });
        const std::string what = fmt::format("embed T={} H={}", T, H);
        h.compare(what, h.read(*h.dut, dx, what), h.ref->to_host_f32(rx), 0);
      }
      if (h.wanted("rope")) {
        const size_t width = (heads + 2 * kv) * d;  // a fused QKV row; q and k heads rotate
        const auto qkv = h.values(T * width);
        const Tensor rq = Harness::upload(*h.ref, qkv, T, width, DType::F32);
        auto dq = h.guarded(*h.dut, T, width, act, true);
        h.dut->from_host_f32(dq.inner, qkv);
        with_pass(*h.ref, rc, start, tokens, [&] { h.ref->rope(rq, heads + kv); });
        with_pass(*h.dut, dc, start, tokens, [&] { h.dut->rope(dq.inner, heads + kv); });
        const std::string what = fmt::format("rope T={} heads={}+{} d={} from {}", T, heads, kv, d, start);
        h.compare(what, h.read(*h.dut, dq, what), h.ref->to_host_f32(rq), h.threshold(2e-6, 1e-10));
      }
    }
  }
  if (h.wanted("argmax")) {
    for (size_t R : {size_t(1), size_t(7)})
      for (size_t V : {size_t(1), size_t(769), size_t(32007)}) {
        std::normal_distribution<float> normal(0.0f, 5.0f);
        std::vector<float> logits(R * V);
        for (auto& x : logits) x = normal(h.rng);
        const Tensor rl = Harness::upload(*h.ref, logits, R, V, DType::F32), dl = Harness::upload(*h.dut, logits, R, V, DType::F32);
        const auto want = h.ref->argmax_rows(rl), got = h.dut->argmax_rows(dl);
        ++h.checks;
        const bool ok = want == got;
        if (!ok) ++h.failures;
        std::cout << fmt::format("{} argmax [{}, {}]\n", ok ? "ok  " : "FAIL", R, V);
      }
  }
  // Sampling: the same F32 logits and draws on both devices, the original study's settings,
  // greedy rows mixed in, a top-k the device leaves to the host (whole call on the host).
  if (h.wanted("sample_rows")) {
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    for (size_t V : {size_t(769), size_t(32007)})
      for (int top_k : {50, 0}) {
        const size_t R = 9;
        std::normal_distribution<float> normal(0.0f, 3.0f);
        std::vector<float> logits(R * V);
        for (auto& x : logits) x = normal(h.rng);
        std::vector<RowSampling> rows;
        for (size_t r = 0; r < R; ++r)
          rows.push_back({{.greedy = r % 4 == 3, .temperature = r % 2 ? 0.1f : 1.0f, .top_k = top_k,
                           .top_p = r % 3 ? 0.75f : 1.0f},
                          uniform(h.rng)});
        const Tensor rl = Harness::upload(*h.ref, logits, R, V, DType::F32), dl = Harness::upload(*h.dut, logits, R, V, DType::F32);
        const auto want = h.ref->sample_rows(rl, rows), got = h.dut->sample_rows(dl, rows);
        ++h.checks;
        const bool ok = want == got;
        if (!ok) ++h.failures;
        std::cout << fmt::format("{} sample_rows [{}, {}] top-k {}\n", ok ? "ok  " : "FAIL", R, V, top_k);
      }
  }
}

// Attention over the KV cache: three sequences, lengths crossing block boundaries, a shared
// prefix (referenced on a GPU, copied on the CPU) that does not end on a block, prefill
// continued in chunks and decode steps; every pass's output compared.
void check_attention(Harness& h) {
  if (!h.wanted("attention")) return;
  struct Case {
    size_t heads, kv, d, window;
  };
  // 64-dim heads take the GPU's tensor-core kernel for the prefill passes (GQA and a window too).
  std::vector<Case> cases = {{4, 2, 16, 0}, {6, 2, 16, 5}, {4, 4, 64, 0}, {8, 2, 64, 7}};
  if (!h.small) cases.push_back({32, 8, 128, 0}), cases.push_back({32, 32, 128, 0}), cases.push_back({8, 2, 128, 23});
  const DType act = h.dut->activation_dtype();
  const size_t B = kKvBlockPositions;
  for (const auto& c : cases) {
    const auto shape = attention_shape(c.heads, c.kv, c.d, c.window);
    h.ref->configure(shape);
    h.dut->configure(shape);
    const size_t width = (c.heads + 2 * c.kv) * c.d;
    KvCache ra = h.ref->new_cache(), rb = h.ref->new_cache(), da = h.dut->new_cache(), db = h.dut->new_cache();
    KvCache rc, dc;
    // Pass 1: A prefills 2B + 5, B prefills 5. Pass 2: C = A's first B + 5 positions, then A +1,
    // B +B+3 (crosses a block), C +3. Pass 3: one token each.
    const std::vector<std::vector<size_t>> passes = {{2 * B + 5, 5, 0}, {1, B + 3, 3}, {1, 1, 1}};
    for (size_t p = 0; p < passes.size(); ++p) {
      if (p == 1) {
        rc = h.ref->prefix_of(ra, B + 5);
        dc = h.dut->prefix_of(da, B + 5);
      }
      std::vector<KvCache*> rs = {&ra, &rb, &rc}, ds = {&da, &db, &dc};
      std::vector<SeqRows> rseq, dseq;
      size_t T = 0;
      for (size_t s = 0; s < 3; ++s) {
        const size_t n = passes[p][s];
        if (!n) continue;
        if (!h.ref->grow(*rs[s], rs[s]->length + n) || !h.dut->grow(*ds[s], ds[s]->length + n)) throw Error("harness: no KV room");
        rseq.push_back({rs[s], T, n});
        dseq.push_back({ds[s], T, n});
        T += n;
      }
      const auto qkv = h.values(T * width);
      const std::vector<int32_t> tokens(T, 0);
      const Tensor rq = Harness::upload(*h.ref, qkv, T, width, DType::F32), dq = Harness::upload(*h.dut, qkv, T, width, act);
      // Both layers (each sequence's cache holds every layer; layer 1 sees other keys and
      // values than layer 0: the pool's per-layer offsets are checked too).
      const auto qkv1 = h.values(T * width);
      const Tensor rq1 = Harness::upload(*h.ref, qkv1, T, width, DType::F32), dq1 = Harness::upload(*h.dut, qkv1, T, width, act);
      const Tensor ro = h.ref->empty(T, c.heads * c.d), ro1 = h.ref->empty(T, c.heads * c.d);
      auto dout = h.guarded(*h.dut, T, c.heads * c.d, act, false), dout1 = h.guarded(*h.dut, T, c.heads * c.d, act, false);
      // Layer 1 through rope_attention (RoPE then attention; fused on a GPU).
      h.ref->begin_forward(tokens, rseq);
      h.ref->attention(0, rq, ro);
      h.ref->rope_attention(1, rq1, ro1);
      h.ref->end_forward();
      h.dut->begin_forward(tokens, dseq);
      h.dut->attention(0, dq, dout.inner);
      h.dut->rope_attention(1, dq1, dout1.inner);
      h.dut->end_forward();
      const std::string what = fmt::format("attention {}/{}x{} window {} pass {} (T={})", c.heads, c.kv, c.d, c.window, p + 1, T);
      h.compare(what, h.read(*h.dut, dout, what), h.ref->to_host_f32(ro), h.threshold(1e-5, 1e-9));
      h.compare(what + " layer 1 (rope_attention)", h.read(*h.dut, dout1, what), h.ref->to_host_f32(ro1), h.threshold(1e-5, 1e-9));
    }
  }
}

// --- perf mode: the device's ops on model shapes.
double median_seconds(Ops& ops, const std::function<void()>& body, int reps = 20) {
  for (int i = 0; i < 3; ++i) body();
  ops.synchronize();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    body();
    ops.synchronize();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void perf(Harness& h) {
  Ops& ops = *h.dut;
  const DType act = ops.activation_dtype();
  if (ops.device().kind == DeviceKind::CUDA) {
    std::cout << fmt::format("ceiling: device-to-device copy {:.0f} GB/s (read + write); F16 GEMM 8192^3 {:.0f} TFLOP/s\n",
                             cuda::measure_copy_gbps(ops.device().index, size_t(1) << 30),
                             cuda::measure_gemm_tflops(ops.device().index, 8192));
  }
  struct Shape {
    const char* name;
    size_t in, out;
  };
  const Shape shapes[] = {{"qkv 4096->12288", 4096, 12288}, {"gate_up 4096->28672", 4096, 28672}, {"down 14336->4096", 14336, 4096}};
  for (const auto& s : shapes) {
    const auto w = ops.random_linear(s.out, s.in, h.storage(), 7, 0.02f);
    for (size_t T : {1, 4, 16, 64, 256, 512}) {
      const Tensor x = ops.empty(T, s.in), y = ops.empty(T, s.out);
      ops.from_host_f32(x, h.values(T * s.in));
      const double bytes = double(s.in * s.out) * dtype_size(h.storage()) + double(T) * (s.in + s.out) * dtype_size(act);
      // A GPU's few rows: its GEMV kernel, then cuBLAS for the same product.
      const bool both = ops.device().kind == DeviceKind::CUDA && T <= 8;
      for (const bool gemv : both ? std::vector<bool>{true, false} : std::vector<bool>{true}) {
        if (both) cuda::set_gemv_enabled(gemv);
        const double sec = median_seconds(ops, [&] { ops.linear(x, *w, y); });
        std::cout << fmt::format("perf linear {:<22} T={:<4} {:8.3f} ms {:8.1f} TFLOP/s {:8.0f} GB/s{}\n", s.name, T,
                                 sec * 1e3, 2.0 * T * s.in * s.out / sec / 1e12, bytes / sec / 1e9,
                                 !both ? "" : gemv ? " (GEMV kernel)" : " (cuBLAS)");
      }
      if (both) cuda::set_gemv_enabled(true);
    }
  }
  {
    const size_t R = 512, H = 4096;
    const Tensor x = ops.empty(R, H), y = ops.empty(R, H);
    ops.from_host_f32(x, h.values(R * H));
    const Tensor w = ops.make_vector(h.values(H));
    const double sec = median_seconds(ops, [&] { ops.rmsnorm(x, w, 1e-5f, y); });
    std::cout << fmt::format("perf rmsnorm [512, 4096] {:8.3f} ms {:8.0f} GB/s\n", sec * 1e3, 2.0 * R * H * dtype_size(act) / sec / 1e9);
  }
  // Decode attention: batch 64 at 1024 cached positions, Llama-3-8B heads (32 / 8 x 128).
  {
    const auto shape = attention_shape(32, 8, 128, 0);
    ops.configure(shape);
    const size_t batch = 64, ctx = 1024, width = (32 + 16) * 128;
    std::vector<KvCache> caches;
    for (size_t b = 0; b < batch; ++b) {
      caches.push_back(ops.new_cache());
      if (!ops.grow(caches.back(), ctx + 1)) throw Error("perf: no KV room");
      caches.back().length = ctx;  // contents are whatever the pool holds: timing only
    }
    std::vector<SeqRows> seqs;
    for (size_t b = 0; b < batch; ++b) seqs.push_back({&caches[b], b, 1});
    const std::vector<int32_t> tokens(batch, 0);
    const Tensor q = ops.empty(batch, width), out = ops.empty(batch, 32 * 128);
    ops.from_host_f32(q, h.values(batch * width));
    const double sec = median_seconds(ops, [&] {
      ops.begin_forward(tokens, seqs);
      ops.attention(0, q, out);
      ops.abort_forward();
    });
    const double kv_bytes = double(batch) * ctx * 2 * 8 * 128 * dtype_size(act);
    std::cout << fmt::format("perf decode attention batch {} ctx {} {:8.3f} ms {:8.0f} GB/s of KV\n", batch, ctx, sec * 1e3,
                             kv_bytes / sec / 1e9);
  }
  // Prefill attention: one 4096-token prompt, Llama-3-8B heads. Causal FLOPs: Q Kᵀ and P V
  // over the T (T + 1) / 2 visible (query, key) pairs, 2 d each, per head.
  {
    const size_t T = 4096, width = (32 + 16) * 128;
    KvCache cache = ops.new_cache();
    if (!ops.grow(cache, T)) throw Error("perf: no KV room");
    const std::vector<SeqRows> seqs = {{&cache, 0, T}};
    const std::vector<int32_t> tokens(T, 0);
    const Tensor q = ops.empty(T, width), out = ops.empty(T, 32 * 128);
    ops.from_host_f32(q, h.values(T * width));
    const double sec = median_seconds(
        ops,
        [&] {
          ops.begin_forward(tokens, seqs);
          ops.attention(0, q, out);
          ops.abort_forward();
        },
        5);
    const double flops = 2.0 * 2.0 * 128 * 32 * double(T) * double(T + 1) / 2;
    std::cout << fmt::format("perf prefill attention {} tokens {:8.3f} ms {:8.1f} TFLOP/s\n", T, sec * 1e3, flops / sec / 1e12);
  }
}

int run(int argc, char** argv) {
  std::string device = "cpu";
  uint64_t seed = std::random_device{}();
  bool perf_mode = false, small = false;
  std::string filter;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw Error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--device") device = next();
    else if (a == "--seed") seed = std::stoull(next());
    else if (a == "--perf") perf_mode = true;
    else if (a == "--small") small = true;
    else if (a == "--filter") filter = next();
    else throw Error("unknown argument " + a + " (see the comment at the top of tests/ops_harness.cpp)");
  }
  const Device dev = Device::parse(device);
  if (dev.kind == DeviceKind::CUDA && (!cuda_compiled() || dev.index >= cuda_device_count())) {
    std::cout << "SKIP: no device " << device << (cuda_compiled() ? "" : " (built without CUDA)") << "\n";
    return 77;
  }
  Harness h;
  h.ref = make_cpu_ops({.impl = OpsImpl::Reference});
  h.dut = make_ops(dev, {.impl = OpsImpl::Fast, .kv_capacity_bytes = dev.kind == DeviceKind::CUDA ? size_t(2) << 30 : 0});
  h.rng.seed(seed);
  h.small = small;
  h.filter = filter;
  std::cout << fmt::format("ops harness: {} against the CPU reference, seed {}{}\n", h.dut->describe(), seed,
                           small ? " (small shapes)" : "");
  if (perf_mode) {
    perf(h);
    return 0;
  }
  check_elementwise(h);
  check_linear(h);
  check_embed_rope_argmax(h);
  check_attention(h);
  std::cout << fmt::format("{} passed, {} failed\n", h.checks - h.failures, h.failures);
  return h.failures ? 1 : 0;
}

}  // namespace
}  // namespace pivotmt

int main(int argc, char** argv) {
  try {
    return pivotmt::run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "ops_harness: " << e.what() << "\n";
    return 2;
  }
}
