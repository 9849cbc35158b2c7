// CPU engine benchmark on generated checkpoints (`tiny` and `small` ~110M presets, F16
// weights, F32 compute), with ceilings measured in the same run:
//   - prefill tokens/s and GFLOP/s against an OpenBLAS SGEMM ceiling of the same shape;
//   - decode tokens/s at batch 1, 8, 32; batch-1 weight traffic in GB/s against the higher
//     of two bandwidth ceilings (same threads): a STREAM triad (counted as STREAM counts
//     it, 12 bytes per element, which understates the bus traffic of its write-allocates)
//     and a large memcpy (bytes read + written);
//   - peak RSS against weights + KV cache.
// Targets (issue): batch-1 decode >= 70% of bandwidth, prefill >= 60% of SGEMM, RSS
// overhead < 10%.
#include <cblas.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <fmt/format.h>

#include "backends/cpu/cpu_features.h"
#include "backends/cpu/ops.h"
#include "backends/cpu/thread_pool.h"
#include "core/progress.h"
#include "engine/generate.h"
#include "models/make_model.h"

using namespace pivotmt;
using Clock = std::chrono::steady_clock;

namespace {
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

size_t status_kb(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with(key)) return size_t(std::stoull(line.substr(std::strlen(key))));
  return 0;
}
size_t peak_rss_bytes() { return status_kb("VmHWM:") * 1024; }
size_t baseline_rss = 0;  // the process before any model is loaded

struct Figures {
  std::string preset;  // with the weight storage, e.g. "small f16"
  double params = 0, weight_mb = 0, prefill_tps = 0, prefill_gflops = 0, sgemm = 0, decode_tps[3] = {0, 0, 0},
         decode_gbs = 0, rss_mb = 0, expected_mb = 0, baseline_mb = 0, triad = 0, copy = 0;
  double bandwidth() const { return std::max(triad, copy); }
};

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

// memcpy bandwidth: each thread copies its half of 256 MiB; read + written bytes count
// (glibc copies buffers this large with non-temporal stores: no write-allocate reads).
double memcpy_gbs() {
  const size_t n = size_t(1) << 28;
  std::vector<char> src(n, 1), dst(n, 0);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = Clock::now();
    cpu::parallel_for(n / 4096, [&](size_t s, size_t e) { std::memcpy(&dst[s * 4096], &src[s * 4096], (e - s) * 4096); });
    best = std::max(best, 2.0 * double(n) / seconds_since(t0) / 1e9);
  }
  return best;
}

int g_threads = 2;
size_t g_only_batch = 0;  // "bN": decode at batch N only, no prefill (large shapes in side-by-side mode; profiling)

// OpenBLAS's own multi-threaded SGEMM on the whole shape, measured in a child process: the
// engine keeps OpenBLAS single-threaded in this one, and the child's buffers stay out of
// this process's peak RSS.
double sgemm_gflops(size_t M, size_t N, size_t K) {
  int fds[2];
  if (pipe(fds) != 0) return 0;
  const pid_t pid = fork();
  if (pid == 0) {
    openblas_set_num_threads(g_threads);
    std::vector<float> a(M * K, 0.5f), b(N * K, 0.25f), c(M * N);
    double best = 0;
    for (int rep = 0; rep < 11; ++rep) {  // the first warms OpenBLAS's threads up
      const auto t0 = Clock::now();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(N), int(K), 1.0f, a.data(), int(K), b.data(),
                  int(K), 0.0f, c.data(), int(N));
      if (rep > 0) best = std::max(best, 2.0 * double(M * N * K) / seconds_since(t0) / 1e9);
    }
    if (write(fds[1], &best, sizeof best) != sizeof best) _exit(1);
    _exit(0);
  }
  close(fds[1]);
  double best = 0;
  if (read(fds[0], &best, sizeof best) != sizeof best) best = 0;
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return best;
}

// Weight storage of one row: f16, int8 (weight-only), q8 (int8 weights and activations) or nf4.
struct Storage {
  std::string name;
  DType dtype = DType::F16;
  bool int8_activations = false;
};
Storage storage_named(const std::string& name) {
  if (name == "f16") return {name, DType::F16, false};
  if (name == "f32") return {name, DType::F32, false};
  if (name == "int8") return {name, DType::I8, false};
  if (name == "q8") return {name, DType::I8, true};
  if (name == "nf4") return {name, DType::NF4, false};  // bitsandbytes' 4-bit blocks (QLoRA's base)
  if (name == "gguf") return {name, DType::GGML, false};  // a GGUF file's blocks in place
  if (name == "gguf-q8") return {name, DType::GGML, true};  // the same blocks times int8 activations (llama.cpp's products)
  throw std::runtime_error("weights: expected f16, f32, int8, q8, nf4, gguf or gguf-q8, not " + name);
}

// model_dir: an existing checkpoint (the side-by-side mode), else the preset is generated.
Figures run(const std::string& preset, const std::filesystem::path& dir, bool measure_rss, const Storage& weights,
            const std::string& model_dir = "", bool ceilings = true) {
  MakeModelOptions o;
  o.preset = preset;
  o.out_dir = model_dir.empty() ? (dir / preset).string() : model_dir;
  o.dtype = DType::F16;
  if (model_dir.empty() && !std::filesystem::exists(o.out_dir + "/model.safetensors")) {
    // Written by a child process, so its buffers never count in this process's peak RSS.
    const pid_t pid = fork();
    if (pid == 0) {
      make_model(o);
      _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
  }
  LoadOptions load{weights.dtype, OpsImpl::Fast};
  load.int8_activations = weights.int8_activations;
  LlamaModel model(o.out_dir, load);
  const auto& c = model.config();
  Figures f;
  f.preset = preset + " " + weights.name;
  // The checkpoint is F16 on disk: 2 bytes per parameter, whatever the in-memory storage;
  // a GGUF file's parameters are counted from its config.
  size_t file_bytes = 0;
  if (std::filesystem::is_directory(o.out_dir)) {
    for (const auto& e : std::filesystem::directory_iterator(o.out_dir))
      if (e.path().extension() == ".safetensors") file_bytes += e.file_size();
    f.params = double(file_bytes) / 2;
  } else {
    const double V = double(c.vocab_size), H = double(c.hidden_size), F = double(c.intermediate_size);
    const double q = double(c.num_heads * c.head_dim), kv = double(c.num_kv_heads * c.head_dim);
    f.params = double(c.num_layers) * (H * (q + 2 * kv) + q * H + 3 * H * F) + 2 * V * H;  // as if untied
  }
  f.weight_mb = model.weight_bytes() / 1e6;

  // Prefill: one 512-token prompt.
  const size_t P = 512;
  std::vector<TokenId> prompt(P);
  for (size_t i = 0; i < P; ++i) prompt[i] = TokenId(1 + (i * 7919) % size_t(c.vocab_size - 1));
  double prefill_s = 1e9;
  for (int rep = 0; rep < (g_only_batch ? 0 : 5); ++rep) {
    KvCache cache = model.new_cache();
    std::vector<LlamaModel::Input> b = {{&cache, prompt, false}};
    const auto t0 = Clock::now();
    model.forward(b);
    prefill_s = std::min(prefill_s, seconds_since(t0));
  }
  // Peak RSS after the prefill, before the decode sweep allocates its batch caches.
  if (measure_rss) {
    KvCache cache = model.new_cache();
    std::vector<LlamaModel::Input> b = {{&cache, prompt, false}};
    model.forward(b);
    f.rss_mb = peak_rss_bytes() / 1e6;
    f.baseline_mb = baseline_rss / 1e6;
    f.expected_mb = (model.weight_bytes() + cache.length * model.kv_bytes_per_position()) / 1e6;
  }
  // FLOPs actually done: the layers' matrices for every token (2 per weight), the output
  // layer for the last token only, and attention (QK^T and PV over the causal triangle).
  const double V = double(c.vocab_size), H = double(c.hidden_size);
  const double layer_params = f.params - 2 * V * H;  // embedding and lm_head excluded (untied)
  const double attention = 2.0 * 2.0 * double(c.num_layers) * double(c.num_heads) * double(c.head_dim) * double(P) * double(P + 1) / 2;
  f.prefill_gflops = (2.0 * layer_params * double(P) + 2 * V * H + attention) / prefill_s / 1e9;
  f.prefill_tps = double(P) / prefill_s;
  if (ceilings) {
    f.sgemm = sgemm_gflops(P, size_t(c.intermediate_size), size_t(c.hidden_size));
    // The bandwidth ceilings right before the decode runs (this VM's bandwidth drifts).
    f.triad = triad_gbs();
    f.copy = memcpy_gbs();
  }

  // Decode at batch 1, 8, 32: a 64-token context each, 32 steps.
  int slot = 0;
  for (size_t batch : {size_t(1), size_t(8), size_t(32)}) {
    if (g_only_batch && batch != g_only_batch) {
      ++slot;
      continue;
    }
    std::vector<KvCache> caches;
    const int steps = 32;
    for (size_t s = 0; s < batch; ++s) {
      caches.push_back(model.new_cache());
      model.reserve(caches.back(), 64 + steps);  // as the engine reserves prompt + new tokens
    }
    std::vector<LlamaModel::Input> pre;
    for (size_t s = 0; s < batch; ++s) pre.push_back({&caches[s], std::vector<TokenId>(prompt.begin(), prompt.begin() + 64), false});
    model.forward(pre);
    const auto t0 = Clock::now();
    for (int step = 0; step < steps; ++step) {
      std::vector<LlamaModel::Input> b;
      for (size_t s = 0; s < batch; ++s) b.push_back({&caches[s], {TokenId(5 + step)}, false});
      model.forward_greedy(b);  // the engine's greedy path: argmax on the logits in place
    }
    const double s = seconds_since(t0);
    f.decode_tps[slot++] = double(batch * steps) / s;
    if (batch == 1) f.decode_gbs = double(model.streamed_bytes_per_token()) * steps / s / 1e9;
  }
  return f;
}
}  // namespace

int main(int argc, char** argv) {
  // Side-by-side mode (bench/side_by_side_llamacpp.py): the figures of one checkpoint and
  // weight storage as one JSON line, no ceilings.
  if ((argc == 5 || argc == 6) && std::string(argv[1]) == "--figures") {
    if (argc == 6) {
      const std::string only = argv[5];
      if (only != "b1" && only != "b8" && only != "b32") {
        fmt::print(stderr, "bench_engine --figures: the last argument must be b1, b8 or b32, not '{}'\n", only);
        return 2;
      }
      g_only_batch = size_t(std::stoul(only.substr(1)));
    }
    const int threads = std::atoi(argv[4]);
    cpu::set_num_threads(threads);
    g_threads = threads;
    Progress::set_quiet(true);
    const Figures f = run("model", {}, false, storage_named(argv[3]), argv[2], false);
    fmt::print("{{\"isa\": \"{}\", \"prefill_tps\": {:.2f}, \"decode_b1_tps\": {:.2f}, \"decode_b8_tps\": {:.2f}, "
               "\"decode_b32_tps\": {:.2f}, \"weight_mb\": {:.1f}}}\n",
               cpu::describe_isa(), f.prefill_tps, f.decode_tps[0], f.decode_tps[1], f.decode_tps[2], f.weight_mb);
    return 0;
  }
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  cpu::set_num_threads(threads);
  g_threads = threads;
  Progress::set_quiet(true);
  baseline_rss = status_kb("VmRSS:") * 1024;
  const auto dir = std::filesystem::temp_directory_path() / "pivotmt-bench-engine";
  std::filesystem::create_directories(dir);
  // The small model first, so its peak RSS is not inflated by the ceiling measurements.
  const Figures small = run("small", dir, true, storage_named("f16")), tiny = run("tiny", dir, false, storage_named("f16"));
  const Figures small_int8 = run("small", dir, false, storage_named("int8"));
  const Figures small_q8 = run("small", dir, false, storage_named("q8"));
  const Figures small_nf4 = run("small", dir, false, storage_named("nf4"));
  fmt::print("kernels: {}\n", cpu::describe_isa());
  fmt::print("threads {}; bandwidth ceiling per row = max(STREAM triad, memcpy), measured just before its decode runs\n\n",
             threads);
  fmt::print("| preset | params | prefill tok/s | prefill GFLOP/s | SGEMM ceiling | % | decode b1 tok/s | b1 GB/s | triad / memcpy GB/s | % of ceiling | b8 tok/s | b32 tok/s |\n");
  fmt::print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& f : {small, small_int8, small_q8, small_nf4, tiny})
    fmt::print("| {} | {:.1f}M | {:.0f} | {:.1f} | {:.1f} | {:.0f}% | {:.1f} | {:.2f} | {:.1f} / {:.1f} | {:.0f}%{} | {:.1f} | {:.1f} |\n",
               f.preset, f.params / 1e6, f.prefill_tps, f.prefill_gflops, f.sgemm, 100 * f.prefill_gflops / f.sgemm,
               f.decode_tps[0], f.decode_gbs, f.triad, f.copy, 100 * f.decode_gbs / f.bandwidth(),
               f.weight_mb < 32 ? " (weights in cache)" : "", f.decode_tps[1], f.decode_tps[2]);
  fmt::print("\nsmall: peak RSS {:.1f} MB vs weights + KV {:.1f} MB -> overhead {:+.1f}%; without the {:.1f} MB the "
             "process held before loading (libraries, ICU data): {:+.1f}%\n",
             small.rss_mb, small.expected_mb, 100.0 * (small.rss_mb / small.expected_mb - 1), small.baseline_mb,
             100.0 * ((small.rss_mb - small.baseline_mb) / small.expected_mb - 1));
  fmt::print("targets: decode b1 >= 70% of the bandwidth ceiling, prefill >= 60% of SGEMM, RSS overhead < 10%\n");
  return 0;
}
