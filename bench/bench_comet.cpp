// COMET speed: a model (metric weights + encoder directory, as `pivotmt score --comet-model
// --comet-encoder` takes them) scoring the triples of a JSON-lines file ({"src", "mt",
// "ref"} per line). Prints load and scoring time, segments/s, tokens/s and the encoder's
// GFLOP/s; writes the segment scores as JSON for bench/side_by_side_comet.py, which runs
// unbabel-comet on the same model and triples and compares.
//   bench_comet MODEL_DIR ENCODER_DIR TRIPLES.jsonl SCORES_OUT.json [DEVICE [WEIGHTS]]
// DEVICE: where the encoder runs (cpu, the default; cuda[:N]); WEIGHTS: f32 (the default) or
// f16 (`--comet-weights f16`: on a GPU the tensor cores).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backends/backend.h"
#include "backends/cpu/ops.h"
#include "metrics/comet.h"

using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  if (argc < 5 || argc > 7 || (argc == 7 && std::string(argv[6]) != "f32" && std::string(argv[6]) != "f16")) {
    fmt::print(stderr, "usage: bench_comet MODEL_DIR ENCODER_DIR TRIPLES.jsonl SCORES_OUT.json [DEVICE [f32|f16]]\n");
    return 2;
  }
  try {
    std::vector<std::string> src, mt, ref;
    std::ifstream in(argv[3]);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      const auto j = nlohmann::json::parse(line);
      src.push_back(j.at("src"));
      mt.push_back(j.at("mt"));
      ref.push_back(j.at("ref"));
    }
    const auto t0 = Clock::now();
    const pivotmt::DType weights = argc == 7 && std::string(argv[6]) == "f16" ? pivotmt::DType::F16 : pivotmt::DType::F32;
    const pivotmt::comet::Model model(argv[1], argv[2], "", argc >= 6 ? pivotmt::resolve_device(argv[5]) : pivotmt::Device{},
                                      weights);
    const double load = std::chrono::duration<double>(Clock::now() - t0).count();
    // Tokens the encoder runs over (each distinct text once, as embed does).
    size_t tokens = 0;
    {
      std::vector<std::string> all(src);
      all.insert(all.end(), mt.begin(), mt.end());
      all.insert(all.end(), ref.begin(), ref.end());
      std::sort(all.begin(), all.end());
      all.erase(std::unique(all.begin(), all.end()), all.end());
      for (const auto& t : all) tokens += model.tokenize(t).size();
    }
    const auto t1 = Clock::now();
    const auto scores = model.score(src, mt, ref);
    const double seconds = std::chrono::duration<double>(Clock::now() - t1).count();
    // Per token and layer: 2 · (4 H² + 2 H F) for the projections (attention's products
    // are a few percent for sentences and left out).
    const auto& w = model.layer_weights();
    size_t layers = 0;
    for (size_t k = 0; k < w.size(); ++k)
      if (w[k] != 0.0f) layers = k;
    const double H = double(model.hidden_size()), F = double(model.intermediate_size());
    const double gflop = double(tokens) * double(layers) * 2.0 * (4 * H * H + 2 * H * F) / 1e9;
    fmt::print("{}  weights {}  threads {}  segments {}  distinct-text tokens {}  encoder layers run {}\n", model.describe_device(),
               weights == pivotmt::DType::F16 ? "f16" : "f32", pivotmt::cpu::num_threads(), mt.size(), tokens, layers);
    fmt::print("load {:.2f} s  score {:.2f} s  {:.1f} segments/s  {:.0f} tokens/s  {:.1f} GFLOP/s  system {:.6f}  truncated {}\n",
               load, seconds, double(mt.size()) / seconds, double(tokens) / seconds, gflop / seconds, scores.system,
               scores.truncated);
    std::ofstream(argv[4]) << nlohmann::json{{"scores", scores.segments}, {"system_score", scores.system},
                                             {"seconds", seconds}, {"load_seconds", load}, {"tokens", tokens}}
                                  .dump();
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_comet: {}\n", e.what());
    return 1;
  }
}
