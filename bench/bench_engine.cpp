// CPU engine benchmark on generated checkpoints (`tiny` and `small` ~110M presets, F16
// weights, F32 compute), with ceilings measured in the same run:
//   - prefill tokens/s and GFLOP/s against an OpenBLAS SGEMM ceiling of the same shape;
//   - decode tokens/s at batch 1, 8, 32; batch-1 weight traffic in GB/s against a STREAM
//     triad bandwidth ceiling (same threads);
//   - peak RSS against weights + KV cache.
// Targets (issue): batch-1 decode >= 70% of bandwidth, prefill >= 60% of SGEMM, RSS
// overhead < 10%.
#include <cblas.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "backends/cpu/ops.h"
#include "backends/cpu/thread_pool.h"
#include "core/progress.h"
#include "engine/generate.h"
#include "models/make_model.h"

using namespace pivotmt;
using Clock = std::chrono::steady_clock;

namespace {
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

size_t peak_rss_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with("VmHWM:")) return size_t(std::stoull(line.substr(6))) * 1024;
  return 0;
}

double triad_gbs() {
  const size_t n = size_t(1) << 25;  // 3 x 128 MiB: far beyond the caches
  std::vector<float> a(n), b(n, 1.0f), c(n, 2.0f);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = Clock::now();
    cpu::parallel_for(n, [&](size_t s, size_t e) {
      for (size_t i = s; i < e; ++i) a[i] = b[i] + 3.0f * c[i];
    });
    best = std::max(best, 3.0 * 4 * double(n) / seconds_since(t0) / 1e9);
  }
  return best;
}

double sgemm_gflops(size_t M, size_t N, size_t K) {
  std::vector<float> a(M * K, 0.5f), b(N * K, 0.25f), c(M * N);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(N), int(K), 1.0f, a.data(), int(K), b.data(),
                int(K), 0.0f, c.data(), int(N));
    best = std::max(best, 2.0 * double(M * N * K) / seconds_since(t0) / 1e9);
  }
  return best;
}

void run(const std::string& preset, const std::filesystem::path& dir, double triad, bool measure_rss) {
  MakeModelOptions o;
  o.preset = preset;
  o.out_dir = (dir / preset).string();
  o.dtype = DType::F16;
  if (!std::filesystem::exists(o.out_dir + "/model.safetensors")) make_model(o);
  LlamaModel model(o.out_dir, {DType::F16, OpsImpl::Fast});
  const auto& c = model.config();
  const double params = double(model.weight_bytes()) / 2;
  fmt::print("\n== {} ({:.1f}M parameters, {} layers, hidden {}, F16 weights {:.1f} MB)\n", preset, params / 1e6,
             c.num_layers, c.hidden_size, model.weight_bytes() / 1e6);

  // Prefill: one 512-token prompt.
  const size_t P = 512;
  std::vector<TokenId> prompt(P);
  for (size_t i = 0; i < P; ++i) prompt[i] = TokenId(1 + (i * 7919) % size_t(c.vocab_size - 1));
  double prefill_s = 1e9;
  for (int rep = 0; rep < 3; ++rep) {
    KvCache cache = model.new_cache();
    std::vector<LlamaModel::Input> b = {{&cache, prompt, false}};
    const auto t0 = Clock::now();
    model.forward(b);
    prefill_s = std::min(prefill_s, seconds_since(t0));
  }
  // FLOPs: 2 x params-without-embedding x tokens (+ attention, small at 512).
  const double linear_params = params - double(c.vocab_size * c.hidden_size);
  const double prefill_gflops = 2.0 * linear_params * double(P) / prefill_s / 1e9;
  const double ceiling = sgemm_gflops(P, size_t(c.intermediate_size), size_t(c.hidden_size));
  fmt::print("prefill  {:>9.0f} tokens/s  {:>7.1f} GFLOP/s  SGEMM ceiling {:.1f} GFLOP/s  -> {:.0f}% (target 60%)\n",
             double(P) / prefill_s, prefill_gflops, ceiling, 100 * prefill_gflops / ceiling);

  // Decode at batch 1, 8, 32: a 64-token context each, 32 steps.
  for (size_t batch : {size_t(1), size_t(8), size_t(32)}) {
    std::vector<KvCache> caches;
    for (size_t s = 0; s < batch; ++s) caches.push_back(model.new_cache());
    std::vector<LlamaModel::Input> pre;
    for (size_t s = 0; s < batch; ++s) pre.push_back({&caches[s], std::vector<TokenId>(prompt.begin(), prompt.begin() + 64), false});
    model.forward(pre);
    const int steps = 32;
    const auto t0 = Clock::now();
    for (int step = 0; step < steps; ++step) {
      std::vector<LlamaModel::Input> b;
      for (size_t s = 0; s < batch; ++s) b.push_back({&caches[s], {TokenId(5 + step)}, false});
      model.forward(b);
    }
    const double s = seconds_since(t0);
    const double tps = double(batch * steps) / s;
    if (batch == 1) {
      const double gbs = double(model.weight_bytes()) * steps / s / 1e9;
      fmt::print("decode b1 {:>8.1f} tokens/s  weights {:.2f} GB/s  triad ceiling {:.2f} GB/s  -> {:.0f}% (target 70%)\n",
                 tps, gbs, triad, 100 * gbs / triad);
    } else {
      fmt::print("decode b{:<2} {:>7.1f} tokens/s\n", batch, tps);
    }
  }
  if (measure_rss) {
    KvCache cache = model.new_cache();
    std::vector<LlamaModel::Input> b = {{&cache, prompt, false}};
    model.forward(b);
    const size_t rss = peak_rss_bytes(), expected = model.weight_bytes() + cache.bytes();
    fmt::print("peak RSS {:.1f} MB vs weights + KV {:.1f} MB -> overhead {:+.1f}% (target < 10%; includes the "
               "process, allocator and benchmark buffers)\n",
               rss / 1e6, expected / 1e6, 100.0 * (double(rss) / double(expected) - 1));
  }
}
}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  cpu::set_num_threads(threads);
  openblas_set_num_threads(threads);
  Progress::set_quiet(true);
  const auto dir = std::filesystem::temp_directory_path() / "pivotmt-bench-engine";
  std::filesystem::create_directories(dir);
  fmt::print("threads: {} (pool {})\n", threads, cpu::num_threads());
  const double triad = triad_gbs();
  fmt::print("STREAM triad: {:.2f} GB/s\n", triad);
  run("small", dir, triad, true);
  run("tiny", dir, triad, false);
  return 0;
}
