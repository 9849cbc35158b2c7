// LoRA training speed: tokens/s and peak memory (RSS on the CPU, device memory on a GPU with
// --device cuda:N) of `pivotmt finetune`'s trainer on
// the generated `small` checkpoint (~110M parameters, F32 base and NF4 base), LoRA r 16 on
// all projections, batch 2 x accumulation 2 of 256-token sequences, gradient checkpointing.
// With --python PY (an interpreter with torch and transformers; peft used when installed) the
// same training of the same checkpoint on the same sequences by PyTorch runs beside it
// (bench_train_pytorch.py: F32 on the CPU; on a GPU an F16 base under autocast, as QLoRA
// computes) and the ratios are printed (targets: CPU >= 1.5x; GPU >= 2x at <= 60% memory).
//
// usage: bench_train [--steps N] [--seq-len T] [--python PY] [--preset small|tiny|7b-shape] [--device cpu|cuda:N]
//
// --attention 7b|8b: training attention alone (forward + backward of one layer) at the
// shapes of TowerInstruct-7B (32 heads of 128) or Llama-3-8B (32 query, 8 key-value heads),
// at --seq-len T (default 512, 2048 and 4096 tokens): on a GPU the F32 kernels
// (--base-compute f32) and the tensor cores (f16) both fused — the default — and as blocks
// of TF32 GEMMs, in ms and TFLOP/s of the causal FLOPs (forward 4·heads·d a visible key,
// backward 2.5x).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <thread>
#include <random>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backends/backend.h"
#include "backends/cpu/ops.h"
#include "models/make_model.h"
#include "train/train_device.h"
#include "train/trainer.h"

using namespace pivotmt;
namespace fs = std::filesystem;

namespace {

struct Result {
  double tokens_per_second = 0;
  size_t peak_rss = 0;
  size_t offloaded = 0;  // pinned host memory holding offloaded layer inputs (a GPU with checkpointing)
};

std::string run_command(const std::string& cmd) {
  std::string out;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[4096];
    while (fgets(buf, sizeof buf, p)) out += buf;
    pclose(p);
  }
  return out;
}

Result parse_result(const std::string& out) {
  const auto brace = out.rfind('{');
  if (brace == std::string::npos) throw std::runtime_error("no result: " + out);
  const auto j = nlohmann::json::parse(out.substr(brace));
  return {j.at("tokens_per_second").get<double>(), j.at("peak_rss_bytes").get<size_t>(),
          j.value("offloaded_host_bytes", size_t(0))};
}

std::vector<TrainSequence> read_sequences(const std::string& path) {
  std::ifstream in(path);
  const auto j = nlohmann::json::parse(in);
  std::vector<TrainSequence> data;
  for (const auto& ids : j) {
    TrainSequence t;
    t.tokens = ids.get<std::vector<int32_t>>();
    t.target.assign(t.tokens.size(), 1);
    data.push_back(std::move(t));
  }
  return data;
}

Result train_run(const std::string& dir, BaseWeights base, Checkpointing ckpt, const std::vector<TrainSequence>& data,
                 int64_t steps, const Device& device) {
  LoraLlama model(dir, base, train::Kernels::Fast, device);
  model.set_checkpointing(ckpt);
  LoraConfig c;  // the original's: r 16, alpha 16, dropout 0.05, all seven projections
  model.set_adapter(init_lora(model.config(), c, 1));
  TrainOptions o;
  o.steps = steps + 1;  // step 1 warms up and is not timed
  o.warmup = 0;
  o.batch_size = 2;
  o.grad_accum = 2;
  o.progress = false;
  o.shuffle = false;
  double tokens = 0, seconds = 0;
  Trainer(model, data, {}, o).run([&](const StepRecord& r) {
    if (r.step == 1) return;
    tokens += double(r.tokens);
    seconds += r.seconds;
  });
  return {tokens / seconds, 0, model.offloaded_host_bytes()};
}

// One layer's attention forward and backward on `device_name` for each mode and length.
int attention_bench(const std::string& shape, const std::string& device_name, const std::vector<size_t>& lengths) {
  if (shape != "7b" && shape != "8b") throw std::runtime_error("--attention: 7b or 8b, not " + shape);
  const size_t nh = 32, nkv = shape == "7b" ? 32 : 8, d = 128;
  const Device device = resolve_device(device_name);
  const bool gpu = device.kind == DeviceKind::CUDA;
  fmt::print("training attention, {} shape ({} heads, {} key-value heads, d {}), one layer forward + backward on {}\n", shape,
             nh, nkv, d, device_name);
  fmt::print("{:<40} {:>7} {:>10} {:>10} {:>9}\n", "", "tokens", "forward", "backward", "TFLOP/s");
  // F32 kernels; on a GPU also F16 mode's tensor cores, fused (the default) and as blocks of
  // TF32 GEMMs (the fused kernels off: their baseline).
  struct Mode {
    train::BaseCompute compute;
    bool fused;
    const char* name;
  };
  std::vector<Mode> modes = {{train::BaseCompute::F32, false, gpu ? "F32 kernels (--base-compute f32)" : "CPU, F32"}};
  if (gpu) {
    modes.push_back({train::BaseCompute::F16, true, "tensor cores, fused (F16 S, TF32 grads)"});
    modes.push_back({train::BaseCompute::F16, false, "tensor cores, blocked TF32 GEMMs"});
  }
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (size_t T : lengths) {
    std::vector<float> qh(T * nh * d), kvh(T * nkv * d);
    for (auto& x : qh) x = u(rng);
    for (auto& x : kvh) x = u(rng);
    std::vector<double> ms_total;
    for (const Mode& mode : modes) {
      auto dev = train::make_train_device(device, train::Kernels::Fast, mode.compute);
      dev->set_attention_fused(mode.fused);
      auto put = [&](const std::vector<float>& h) {
        Tensor t = dev->buffer(h.size());
        dev->upload(h.data(), h.size() * 4, t.data());
        return t;
      };
      Tensor q = put(qh), k = put(kvh), v = put(kvh), dout = put(qh), dq = put(qh), dk = put(kvh), dv = put(kvh);
      Tensor out = dev->buffer(T * nh * d), lse = dev->buffer(nh * T);
      auto f = [](Tensor& t) { return t.as<float>(); };
      double fwd = 1e30, bwd = 1e30;
      for (int rep = 0; rep < 3; ++rep) {  // the best of three (the first warms up)
        dev->synchronize();
        const auto t0 = std::chrono::steady_clock::now();
        dev->attention_forward(f(q), f(k), f(v), T, nh, nkv, d, 0, f(out), f(lse));
        dev->synchronize();
        const auto t1 = std::chrono::steady_clock::now();
        dev->attention_backward(f(q), f(k), f(v), f(out), f(dout), f(lse), T, nh, nkv, d, 0, f(dq), f(dk), f(dv));
        dev->synchronize();
        const auto t2 = std::chrono::steady_clock::now();
        fwd = std::min(fwd, std::chrono::duration<double>(t1 - t0).count());
        bwd = std::min(bwd, std::chrono::duration<double>(t2 - t1).count());
      }
      // The work counted alike for every mode: forward 1, backward 2.5 (the products a
      // backward needs at least: S recomputed, dP, dQ, dK, dV), whatever a mode recomputes.
      const double flops = 4.0 * double(nh) * double(d) * double(T) * double(T + 1) / 2 * (1 + 2.5);
      ms_total.push_back(fwd + bwd);
      fmt::print("{:<40} {:>7} {:>7.2f} ms {:>7.2f} ms {:>9.1f}\n", mode.name, T, fwd * 1e3, bwd * 1e3,
                 flops / (fwd + bwd) / 1e12);
      std::fflush(stdout);
    }
    if (ms_total.size() == 3) {
      fmt::print("{:<40} {:>7} {:>32.2f}x\n", "tensor cores (fused) over F32 kernels", T, ms_total[0] / ms_total[1]);
      fmt::print("{:<40} {:>7} {:>32.2f}x\n", "fused over blocked GEMMs", T, ms_total[2] / ms_total[1]);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t steps = 3;
  size_t seq_len = 256;
  std::string python, preset = "small", child, child_model, child_seqs, device_name = "cpu", attention;
  bool seq_len_given = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--child") child = argv[i + 1];  // internal: one configuration, in its own process
    else if (a == "--child-model") child_model = argv[i + 1];
    else if (a == "--child-seqs") child_seqs = argv[i + 1];
    else if (a == "--steps") steps = std::stoll(argv[i + 1]);
    else if (a == "--seq-len") seq_len = std::stoul(argv[i + 1]), seq_len_given = true;
    else if (a == "--attention") attention = argv[i + 1];
    else if (a == "--python") python = argv[i + 1];
    else if (a == "--preset") preset = argv[i + 1];
    else if (a == "--device") device_name = argv[i + 1];
    else {
      fmt::print(stderr,
                 "usage: bench_train [--steps N] [--seq-len T] [--python PY] [--preset small|tiny|7b-shape] "
                 "[--device cpu|cuda:N] [--attention 7b|8b]\n");
      return 2;
    }
  }
  if (!attention.empty())
    return attention_bench(attention, device_name,
                           seq_len_given ? std::vector<size_t>{seq_len} : std::vector<size_t>{512, 2048, 4096});
  if (!child.empty()) {
    const auto colon = child.find(':');  // BASE:CHECKPOINTING
    const Device device = resolve_device(device_name);
    const Result r = train_run(child_model, parse_base_weights(child.substr(0, colon)),
                               parse_checkpointing(child.substr(colon + 1)), read_sequences(child_seqs), steps, device);
    // Peak memory: the device's on a GPU (what limits the batch there), else the RSS.
    const size_t peak = device.kind == DeviceKind::CUDA ? cuda::peak_allocated_bytes(device.index) : peak_rss_bytes();
    fmt::print("{}\n", nlohmann::json{{"tokens_per_second", r.tokens_per_second},
                                      {"peak_rss_bytes", peak},
                                      {"offloaded_host_bytes", r.offloaded}}
                          .dump());
    return 0;
  }
  const fs::path dir = fs::temp_directory_path() / fmt::format("pivotmt-bench-train-{}", getpid());
  MakeModelOptions mo;
  mo.preset = preset;
  mo.out_dir = (dir / "model").string();
  mo.dtype = DType::F32;
  mo.seed = 3;
  const uint64_t params = make_model(mo);
  const auto cfg = load_model_config(mo.out_dir);

  std::mt19937 g(11);
  nlohmann::json ids = nlohmann::json::array();
  for (int s = 0; s < 8; ++s) {
    std::vector<int32_t> t;
    for (size_t i = 0; i < seq_len; ++i) t.push_back(int32_t(3 + g() % uint32_t(cfg.vocab_size - 3)));
    ids.push_back(t);
  }
  const std::string seqs = (dir / "sequences.json").string();
  std::ofstream(seqs) << ids.dump();
  const int threads = int(std::thread::hardware_concurrency());
  fmt::print("LoRA training, {} preset ({:.0f}M parameters), r 16 on all projections, batch 2 x accumulation 2 of {}-token "
             "sequences, {}, {} timed steps\n",
             preset, double(params) / 1e6, seq_len,
             device_name == "cpu" ? fmt::format("{} threads", threads)
                                  : device_name + " (base products F16 with F32 sums, the rest F32)",
             steps);
  fmt::print("{:<52} {:>9} {:>12}\n", "", "tokens/s", device_name == "cpu" ? "peak RSS" : "peak device");
  // PIVOTMT_BENCH_LAUNCH: a prefix for the children (gpu-check.sh's loader of a bundle's libraries).
  const char* launch = std::getenv("PIVOTMT_BENCH_LAUNCH");
  auto child_run = [&](const char* base) {
    return parse_result(run_command(fmt::format("{}{} --child {} --child-model {} --child-seqs {} --steps {} --device {}",
                                                launch ? launch : "", argv[0], base, mo.out_dir, seqs, steps, device_name)));
  };
  const Result f32 = child_run("f32:auto"), f32_ckpt = child_run("f32:always"), nf4 = child_run("nf4:auto"),
               nf4_ckpt = child_run("nf4:always");
  auto row = [](const std::string& name, const Result& r) {
    fmt::print("{:<52} {:>9.0f} {:>9.0f} MB{}\n", name, r.tokens_per_second, double(r.peak_rss) / 1e6,
               r.offloaded ? fmt::format(" (+ {:.0f} MB of layer inputs in pinned host memory)", double(r.offloaded) / 1e6)
                           : std::string());
    std::fflush(stdout);  // a time limit that stops the peer keeps the rows before it
  };
  row("pivotmt, F32 base (activations kept: they fit)", f32);
  row("pivotmt, F32 base, checkpointing every layer", f32_ckpt);
  row("pivotmt, NF4 base (activations kept)", nf4);
  row("pivotmt, NF4 base, checkpointing every layer", nf4_ckpt);
  if (!python.empty()) {
    // On a GPU the peer is PyTorch's: the base in F16 under F16 autocast, LoRA in F32 (PEFT's
    // layers when peft is installed), peak memory torch's device peak.
    const bool gpu = device_name != "cpu";
    // Beside this source, or (a bundle run elsewhere: gpu-check.sh) in bench/ of the working directory.
    fs::path script_path = fs::path(__FILE__).parent_path() / "bench_train_pytorch.py";
    if (!fs::exists(script_path)) script_path = fs::path("bench") / "bench_train_pytorch.py";
    const std::string script = script_path.string();
    auto py = [&](const char* mode) -> std::optional<std::pair<Result, std::string>> {
      const std::string out = run_command(fmt::format("{} {} {} {} {} 2 2 {} {} {} 2>/dev/null", python, script, mo.out_dir,
                                                      seqs, steps, threads, mode, gpu ? "cuda" : "cpu"));
      try {
        const auto j = nlohmann::json::parse(out.substr(out.rfind('{')));
        return std::make_pair(parse_result(out),
                              fmt::format("{} + {}", j["torch"].get<std::string>(), j.value("peer", std::string("PEFT"))));
      } catch (const std::exception&) {
        fmt::print("PyTorch run failed: {}\n", out.empty() ? "no output (is torch/peft installed for " + python + "?)" : out);
        return std::nullopt;
      }
    };
    const auto ckpt = py("checkpointing"), plain = py("no-checkpointing");
    if (ckpt && plain && gpu) {
      row(fmt::format("PyTorch {}, F16 base, checkpointing (the recipe)", ckpt->second), ckpt->first);
      row(fmt::format("PyTorch {}, F16 base, no checkpointing", plain->second), plain->first);
      const Result& recipe = ckpt->first;
      // The targets: >= 2x PEFT + bitsandbytes' tokens/s at <= 60% of its memory.
      fmt::print("pivotmt NF4 / PyTorch (the recipe's checkpointing): {:.2f}x tokens/s keeping activations, {:.2f}x "
                 "checkpointing; peak device memory {:.2f}x checkpointing, {:.2f}x keeping activations "
                 "(targets: >= 2x at <= 0.6x; the peer's base is F16, not NF4)\n",
                 nf4.tokens_per_second / recipe.tokens_per_second, nf4_ckpt.tokens_per_second / recipe.tokens_per_second,
                 double(nf4_ckpt.peak_rss) / double(recipe.peak_rss), double(nf4.peak_rss) / double(recipe.peak_rss));
      fmt::print("like for like: both checkpointing {:.2f}x (F32 base); both keeping activations {:.2f}x tokens/s\n",
                 f32_ckpt.tokens_per_second / recipe.tokens_per_second, f32.tokens_per_second / plain->first.tokens_per_second);
    } else if (ckpt && plain) {
      row(fmt::format("PyTorch {}, F32, checkpointing (the recipe)", ckpt->second), ckpt->first);
      row(fmt::format("PyTorch {}, F32, no checkpointing", plain->second), plain->first);
      const double recipe = ckpt->first.tokens_per_second;
      fmt::print("pivotmt / PyTorch (the recipe's checkpointing): {:.2f}x tokens/s (F32 base), {:.2f}x (NF4 base); peak RSS {:.2f}x\n",
                 f32.tokens_per_second / recipe, nf4.tokens_per_second / recipe, double(f32.peak_rss) / double(ckpt->first.peak_rss));
      fmt::print("like for like: both checkpointing {:.2f}x; both keeping activations {:.2f}x tokens/s\n",
                 f32_ckpt.tokens_per_second / recipe, f32.tokens_per_second / plain->first.tokens_per_second);
    }
  }
  fs::remove_all(dir);
  return 0;
}
