// GPU speed smoke test: a model with real shapes (default TowerInstruct-7B's) and random
// weights made on the device, so nothing of 14 GB is written or read. Prints the load
// (weight generation) time, a 512-token prefill, decode tokens/s at batch 1 and 64, the
// batch-1 decode's weight traffic against a device-to-device copy ceiling (bytes read +
// written per second: what the memory system moves) and the prefill's
// TFLOP/s against a cuBLAS F16 GEMM ceiling, both measured in the same run, and the peak
// device memory.
//
//   bench_gpu [--preset 7b-shape|small|tiny] [--arch llama|mistral|llama3] [--device cuda:0]
//             [--steps N] [--context N] [--batches 1,64]
//   bench_gpu --model DIR ...   (a checkpoint on disk instead: its load time, from the page
//             cache when the files were read before — `pivotmt dev make-model --preset
//             7b-shape` writes a 7B-shaped one — then the same measurements)
//
// The original Tower study replayed (bench/replay.h): every request's exact prompt ids, its
// response length forced (EOS ignored), greedy, through the engine's scheduler (batching,
// shared prefixes: each row's k-variants run from k = 10 down, so smaller k reuse its blocks):
//
//   bench_gpu --replay bench/data/tower_study.replay.zst [--limit N] [--corpus konkani|arabic]
//             [--max-batch N] [--outputs FILE] [--preset/--arch/--device as above]
//   bench_gpu --replay FILE --export-sample OUT.json [--limit N]   (for side_by_side_replay.py)
//   bench_gpu --write-replay FILE --original ../shared/fixtures/original --tokenizer DIR
//             (DIR: TowerInstruct's tokenizer, e.g. ../shared/fixtures/models/tiny-tower)
#include <algorithm>
#include <chrono>
#include <fstream>
#include <tuple>
#include <filesystem>
#include <unistd.h>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "backends/backend.h"
#include "core/error.h"
#include "io/json_file.h"
#include "models/llama_model.h"
#include "models/make_model.h"
#include "engine/generate.h"
#include "replay.h"

namespace pivotmt {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// The replay: prints what it ran, its wall time and throughputs against the ceilings
// measured in the same run; writes each request's generated ids to `outputs` (if given) in
// replay order, one line per request.
int run_replay(LlamaModel& model, const Device& dev, double gemm_tflops, const std::string& file, size_t limit,
               const std::string& corpus, size_t max_batch, const std::string& outputs) {
  std::vector<ReplayRequest> requests = read_replay(file);
  const size_t all = requests.size();
  if (!corpus.empty()) {
    if (corpus != "konkani" && corpus != "arabic") throw Error("--corpus: konkani or arabic, not " + corpus);
    const uint8_t want = corpus == "konkani" ? 0 : 1;
    std::erase_if(requests, [&](const ReplayRequest& q) { return q.corpus != want; });
  }
  // Row by row, k = 10 first: the smaller k's prompts extend prefixes of its one.
  std::stable_sort(requests.begin(), requests.end(), [](const ReplayRequest& a, const ReplayRequest& b) {
    return std::tuple(a.corpus, a.row, -int(a.k)) < std::tuple(b.corpus, b.row, -int(b.k));
  });
  if (limit && limit < requests.size()) requests.resize(limit);
  const auto& c = model.config();
  std::vector<GenerationRequest> reqs;
  size_t prompt_tokens = 0, response_tokens = 0, longest = 0;
  for (const auto& q : requests) {
    GenerationRequest g;
    g.prompt = q.prompt;
    for (TokenId t : g.prompt)
      if (t >= c.vocab_size) throw Error(fmt::format("replay: token id {} is past the model's vocabulary of {}", t, c.vocab_size));
    g.max_new_tokens = std::max<size_t>(1, q.response_tokens);
    g.ignore_eos = true;  // the original's response length, whatever random weights pick
    prompt_tokens += g.prompt.size();
    response_tokens += g.max_new_tokens;
    longest = std::max(longest, g.prompt.size());
    reqs.push_back(std::move(g));
  }
  fmt::print("replay: {} of the {} requests ({}), {} prompt tokens (longest {}), {} response tokens forced\n",
             reqs.size(), all, corpus.empty() ? "both corpora" : corpus, prompt_tokens, longest, response_tokens);
  Engine engine(model);
  EngineOptions options;
  options.max_batch = max_batch;
  options.context = ContextPolicy::Allow;  // Konkani prompts at k >= 6 pass Tower's 4096 positions, as in the original
  model.ops().synchronize();
  const auto t0 = Clock::now();
  const auto results = engine.generate(reqs, options);
  model.ops().synchronize();
  const double wall = since(t0);
  size_t reused = 0, generated = 0;
  for (const auto& r : results) {
    reused += r.reused_prompt_tokens;
    generated += r.tokens.size();
  }
  const size_t computed = prompt_tokens - reused;
  // Work: 2 FLOPs per layer weight per computed token (the output layer once per request
  // and per generated token), plus attention's 4 d FLOPs per (query, visible key) per head.
  const double H = double(c.hidden_size), V = double(c.vocab_size);
  const double layer_params = double(model.streamed_bytes_per_token()) / 2.0 - V * H;
  double attention_flops = 0;
  for (size_t i = 0; i < reqs.size(); ++i) {
    const double from = double(results[i].reused_prompt_tokens);
    const double end = double(reqs[i].prompt.size() + results[i].tokens.size());
    attention_flops += 4.0 * double(c.head_dim) * double(c.num_heads) * double(c.num_layers) * (end * end - from * from) / 2;
  }
  const double flops = 2.0 * layer_params * double(computed + generated) + 2.0 * V * H * double(reqs.size() + generated) +
                       attention_flops;
  fmt::print("replay wall {:.2f} s: {} prompt tokens computed ({} reused from shared prefixes, {:.0f}%), {} generated; "
             "{:.0f} prompt tok/s and {:.0f} generated tok/s over the wall; {:.1f} TFLOP/s{}\n",
             wall, computed, reused, 100.0 * double(reused) / double(std::max<size_t>(1, prompt_tokens)), generated,
             double(computed) / wall, double(generated) / wall, flops / wall / 1e12,
             gemm_tflops > 0 ? fmt::format(" ({:.0f}% of the GEMM ceiling)", 100 * flops / wall / 1e12 / gemm_tflops) : "");
  if (dev.kind == DeviceKind::CUDA) {
    const PassCounters& passes = model.ops().pass_counters();
    fmt::print("forward passes: {}, of which {} replayed CUDA graphs ({} captured)\n", passes.passes, passes.graph_replays,
               passes.graph_captures);
    fmt::print("peak device memory held by pivotmt: {:.2f} GiB\n", double(cuda::peak_allocated_bytes(dev.index)) / (1 << 30));
  }
  if (!outputs.empty()) {
    std::ofstream f(outputs);
    for (size_t i = 0; i < results.size(); ++i) {
      f << int(requests[i].corpus) << ' ' << requests[i].row << ' ' << int(requests[i].k) << ':';
      for (TokenId t : results[i].tokens) f << ' ' << t;
      f << '\n';
    }
    if (!f) throw Error(outputs + ": cannot write");
  }
  return 0;
}

int run(int argc, char** argv) {
  MakeModelOptions shape;
  shape.preset = "7b-shape";
  std::string device = "cuda:0";
  size_t steps = 32, context = 512;
  std::vector<size_t> batches = {1, 64};
  std::string replay, write_replay_to, original, tokenizer_dir, corpus, outputs, export_sample, model_dir;
  size_t limit = 0, max_batch = 64;
  bool ceilings = true;  // --no-ceilings: on the CUDA emulator, which times nothing
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw Error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--preset") shape.preset = next();
    else if (a == "--arch") shape.arch = next();
    else if (a == "--device") device = next();
    else if (a == "--steps") steps = std::stoul(next());
    else if (a == "--context") context = std::stoul(next());
    else if (a == "--batches") {  // comma-separated
      batches.clear();
      const std::string list = next();
      for (size_t p = 0; p < list.size();) {
        const size_t q = std::min(list.find(',', p), list.size());
        batches.push_back(std::stoul(list.substr(p, q - p)));
        p = q + 1;
      }
    }
    else if (a == "--replay") replay = next();
    else if (a == "--write-replay") write_replay_to = next();
    else if (a == "--original") original = next();
    else if (a == "--tokenizer") tokenizer_dir = next();
    else if (a == "--limit") limit = std::stoul(next());
    else if (a == "--corpus") corpus = next();
    else if (a == "--max-batch") max_batch = std::stoul(next());
    else if (a == "--outputs") outputs = next();
    else if (a == "--no-ceilings") ceilings = false;
    else if (a == "--model") model_dir = next();
    else if (a == "--export-sample") export_sample = next();  // with --replay FILE [--limit N]
    else throw Error("unknown argument " + a);
  }
  if (!export_sample.empty()) {
    // A fixed sample for bench/side_by_side_replay.py: every (count / n)-th request of the
    // file, with the whole replay's totals for its extrapolation.
    const auto requests = read_replay(replay);
    const size_t n = std::max<size_t>(1, std::min(limit ? limit : 64, requests.size())), stride = requests.size() / n;
    nlohmann::json j;
    size_t prompt = 0, response = 0;
    for (const auto& q : requests) prompt += q.prompt.size(), response += q.response_tokens;
    j["replay"] = {{"file", replay}, {"requests", requests.size()}, {"prompt_tokens", prompt}, {"response_tokens", response}};
    j["sample"] = nlohmann::json::array();
    for (size_t i = 0; i < n; ++i) {
      const auto& q = requests[i * stride];
      j["sample"].push_back({{"index", i * stride}, {"prompt", q.prompt}, {"response_tokens", q.response_tokens}});
    }
    write_json_file(export_sample, j);
    fmt::print("{}: {} of {} requests (every {}th)\n", export_sample, n, requests.size(), stride);
    return 0;
  }
  if (!write_replay_to.empty()) {
    if (original.empty() || tokenizer_dir.empty()) throw Error("--write-replay needs --original DIR and --tokenizer DIR");
    const auto tokenizer = load_tokenizer(tokenizer_dir);
    const auto t0 = Clock::now();
    const auto requests = make_replay(original, *tokenizer);
    size_t prompt = 0, response = 0;
    for (const auto& q : requests) prompt += q.prompt.size(), response += q.response_tokens;
    write_replay(write_replay_to, requests);
    fmt::print("{}: {} requests, {} prompt tokens, {} response tokens ({:.1f} s), {} bytes\n", write_replay_to,
               requests.size(), prompt, response, since(t0), std::filesystem::file_size(write_replay_to));
    return 0;
  }
  const Device dev = Device::parse(device);
  if (dev.kind == DeviceKind::CUDA && (!cuda_compiled() || dev.index >= cuda_device_count())) {
    std::cout << "SKIP: no device " << device << "\n";
    return 77;
  }
  // The ceilings first, while the device's memory is free (the model's KV pool takes most
  // of what its weights leave).
  double copy_gbps = 0, gemm_tflops = 0;
  if (dev.kind == DeviceKind::CUDA && ceilings) {
    copy_gbps = cuda::measure_copy_gbps(dev.index, size_t(1) << 30);
    gemm_tflops = cuda::measure_gemm_tflops(dev.index, 8192);
    fmt::print("ceilings: device-to-device copy {:.0f} GB/s (read + write), F16 GEMM 8192^3 {:.0f} TFLOP/s\n", copy_gbps,
               gemm_tflops);
  }
  LoadOptions load{.weights = DType::F16, .ops = OpsImpl::Fast, .device = dev};
  std::unique_ptr<LlamaModel> loaded;
  if (!model_dir.empty()) {
    loaded = std::make_unique<LlamaModel>(model_dir, load);
  } else {
    // config.json alone: the weights are made on the device.
    const auto dir = std::filesystem::temp_directory_path() / fmt::format("pivotmt-bench-gpu-{}", ::getpid());
    std::filesystem::create_directories(dir);
    write_json_file((dir / "config.json").string(), make_model_config_json(shape));
    load.random_weights_seed = 1;
    loaded = std::make_unique<LlamaModel>(dir.string(), load);
    std::filesystem::remove_all(dir);
  }
  LlamaModel& model = *loaded;
  const auto& c = model.config();
  const size_t V = size_t(c.vocab_size);
  fmt::print("model: {} ({} layers, hidden {}, {} / {} heads, vocab {}), {:.2f} GB of F16 weights on {}\n",
             model_dir.empty() ? shape.arch + " " + shape.preset : model_dir, c.num_layers, c.hidden_size, c.num_heads,
             c.num_kv_heads, V, model.weight_bytes() / 1e9, model.describe_device());
  if (model_dir.empty())
    fmt::print("weights made on the device in {:.2f} s\n", model.load_seconds());
  else
    fmt::print("weights loaded from {} in {:.2f} s ({:.1f} GB/s of F16 weights)\n", model_dir, model.load_seconds(),
               model.weight_bytes() / 1e9 / model.load_seconds());
  if (!replay.empty()) return run_replay(model, dev, gemm_tflops, replay, limit, corpus, max_batch, outputs);


  auto prompt = [&](size_t n, size_t salt) {
    std::vector<TokenId> p(n);
    for (size_t i = 0; i < n; ++i) p[i] = TokenId(1 + (i * 7919 + salt * 104729) % (V - 1));
    return p;
  };
  // Prefill: one prompt of `context` tokens (best of 3).
  double prefill_s = 1e9;
  for (int rep = 0; rep < 3; ++rep) {
    KvCache cache = model.new_cache();
    std::vector<LlamaModel::Input> b = {{&cache, prompt(context, 0), false}};
    model.ops().synchronize();
    const auto t0 = Clock::now();
    model.forward_greedy(b);
    prefill_s = std::min(prefill_s, since(t0));
  }
  // 2 FLOPs per weight of the layers for every token, the output layer for the last one
  // (attention's own FLOPs left out: a lower bound on the work done).
  const double H = double(c.hidden_size), layer_params = double(model.streamed_bytes_per_token()) / 2.0 - double(V) * H;
  const double prefill_tflops = (2.0 * layer_params * double(context) + 2.0 * double(V) * H) / prefill_s / 1e12;
  fmt::print("prefill {} tokens: {:.1f} ms, {:.0f} tok/s, {:.1f} TFLOP/s{}\n", context, prefill_s * 1e3, context / prefill_s,
             prefill_tflops, gemm_tflops > 0 ? fmt::format(" ({:.0f}% of the GEMM ceiling)", 100 * prefill_tflops / gemm_tflops) : "");

  // Decode: `steps` greedy steps after a `context`-token prompt, at batch 1 and 64.
  for (size_t batch : batches) {
    std::vector<KvCache> caches;
    std::vector<LlamaModel::Input> pre;
    for (size_t b = 0; b < batch; ++b) caches.push_back(model.new_cache());
    for (size_t b = 0; b < batch; ++b) pre.push_back({&caches[b], prompt(context, b + 1), false});
    // Prefill in groups that fit the activation room.
    std::vector<TokenId> next;
    for (size_t b0 = 0; b0 < batch; b0 += 4) {
      std::vector<LlamaModel::Input> group(pre.begin() + long(b0), pre.begin() + long(std::min(batch, b0 + 4)));
      const auto ids = model.forward_greedy(group);
      next.insert(next.end(), ids.begin(), ids.end());
    }
    // `steps` timed steps after an untimed one (a row count's first step captures its CUDA
    // graph); batch 1 also without graphs, every kernel launched, for the difference.
    auto run_steps = [&](size_t n) {
      for (size_t s = 0; s < n; ++s) {
        std::vector<LlamaModel::Input> step;
        for (size_t b = 0; b < batch; ++b) step.push_back({&caches[b], {next[b]}, false});
        next = model.forward_greedy(step);
      }
    };
    for (const bool graphs : batch == 1 && dev.kind == DeviceKind::CUDA ? std::vector<bool>{true, false} : std::vector<bool>{true}) {
      model.ops().set_cuda_graphs(graphs);
      run_steps(1);
      model.ops().synchronize();
      const PassCounters before = model.ops().pass_counters();
      const auto t0 = Clock::now();
      run_steps(steps);
      const double sec = since(t0);
      const size_t replays = model.ops().pass_counters().graph_replays - before.graph_replays;
      const double tps = double(steps * batch) / sec;
      const double weight_gbps = double(model.streamed_bytes_per_token()) * double(steps) / sec / 1e9;
      fmt::print("decode batch {:>2} after {} tokens{}: {:.1f} tok/s ({:.2f} ms/step); weights streamed {:.0f} GB/s{}\n",
                 batch, context,
                 dev.kind != DeviceKind::CUDA ? ""
                 : replays == steps           ? " (CUDA graphs)"
                 : graphs                     ? fmt::format(" ({} of {} steps from CUDA graphs)", replays, steps)
                                              : " (no graphs)",
                 tps, sec / double(steps) * 1e3, weight_gbps,
                 copy_gbps > 0 ? fmt::format(" = {:.0f}% of the copy ceiling", 100 * weight_gbps / copy_gbps) : "");
    }
    model.ops().set_cuda_graphs(true);
  }
  if (dev.kind == DeviceKind::CUDA)
    fmt::print("peak device memory held by pivotmt: {:.2f} GiB\n", double(cuda::peak_allocated_bytes(dev.index)) / (1 << 30));
  return 0;
}

}  // namespace
}  // namespace pivotmt

int main(int argc, char** argv) {
  try {
    return pivotmt::run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "bench_gpu: " << e.what() << "\n";
    return 2;
  }
}
