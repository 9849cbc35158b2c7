// NLLB-200 translation speed: a model folder (an M2M100 checkpoint with NLLB's tokenizer)
// translating the lines of a file, in batches, greedy or with beams. Prints sentences/s and
// decoder tokens/s, and the floor of a decode step (every weight of the decoder and lm_head
// streamed once per step, over the device's measured memory bandwidth); writes the output
// token ids as JSON for bench/side_by_side_nllb.py, which runs transformers on the same model
// and sentences and compares.
//   bench_nllb MODEL_DIR SENTENCES.txt OUT.json --weights f32|f16|int8 --beams N --batch N
//              --max-length N --src-lang CODE --tgt-lang CODE --device cpu|cuda:N --graphs on|off
// On a GPU the weights are F32 or F16 (the tensor cores; int8 is stored as F16 there), the
// floor uses the GPU's measured copy bandwidth, and decode steps run as CUDA graphs unless
// --graphs off (each step's ~340 kernels launched one by one: the launch overhead a graph
// removes, measured).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>
#include <cstdint>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backends/backend.h"
#include "backends/cpu/ops.h"
#include "backends/cpu/thread_pool.h"
#include "experiment/nllb_translate.h"
#include "experiment/run_plan.h"

using Clock = std::chrono::steady_clock;


int main(int argc, char** argv) {
  if (argc < 4) {
    fmt::print(stderr,
               "usage: bench_nllb MODEL_DIR SENTENCES.txt OUT.json [--weights f32|f16|int8] [--beams N] [--batch N] "
               "[--max-length N] [--src-lang CODE] [--tgt-lang CODE] [--device cpu|cuda:N] [--graphs on|off]\n");
    return 2;
  }
  try {
    std::string weights = "f32", src_lang = "mar_Deva", tgt_lang = "gom_Deva", device_name = "cpu";
    size_t beams = 1, batch = 1, max_length = 64;
    bool graphs = true;
    for (int i = 4; i + 1 < argc; i += 2) {
      const std::string k = argv[i], v = argv[i + 1];
      if (k == "--weights") weights = v;
      else if (k == "--beams") beams = std::stoul(v);
      else if (k == "--batch") batch = std::stoul(v);
      else if (k == "--max-length") max_length = std::stoul(v);
      else if (k == "--src-lang") src_lang = v;
      else if (k == "--tgt-lang") tgt_lang = v;
      else if (k == "--device") device_name = v;
      else if (k == "--graphs" && (v == "on" || v == "off")) graphs = v == "on";
      else throw std::runtime_error("unknown option " + k);
    }
    std::vector<std::string> texts;
    std::ifstream in(argv[2]);
    std::string line;
    while (std::getline(in, line))
      if (!line.empty()) texts.push_back(line);
    const pivotmt::Device device = pivotmt::resolve_device(device_name);
    if (device.kind == pivotmt::DeviceKind::CUDA && weights == "int8") weights = "f16";  // stored_weights()
    const pivotmt::DType dtype = weights == "f16" ? pivotmt::DType::F16 : weights == "int8" ? pivotmt::DType::I8 : pivotmt::DType::F32;
    const auto t0 = Clock::now();
    const pivotmt::NllbTranslator translator(argv[1], "", dtype, pivotmt::OpsImpl::Fast, device);
    const double load = std::chrono::duration<double>(Clock::now() - t0).count();
    translator.model().set_cuda_graphs(graphs);
    auto s = translator.settings(tgt_lang);
    s.num_beams = beams;
    s.batch_size = batch;
    s.max_length = max_length;
    // Token ids in, token ids out (the stand-in tokenizer of the side-by-side script cannot
    // spell a random model's choices): generate_seq2seq is what translate() times.
    std::vector<std::vector<int32_t>> sources;
    for (const auto& t : texts) sources.push_back(translator.tokenizer().encode_source(t, src_lang, 1024));
    const auto t1 = Clock::now();
    const auto out = pivotmt::generate_seq2seq(translator.model(), sources, s);
    const double sec = std::chrono::duration<double>(Clock::now() - t1).count();
    size_t tokens = 0;
    nlohmann::json ids = nlohmann::json::array();
    for (const auto& t : out) {
      tokens += t.ids.size() - 1;
      ids.push_back(t.ids);
    }
    std::ofstream(argv[3]) << nlohmann::json{{"ids", ids}, {"seconds", sec}}.dump() << "\n";
    // The floor of one decode step: the decoder's weights and lm_head read once.
    const auto& c = translator.model().config();
    const double d = double(c.d_model), F = double(c.decoder_ffn), V = double(c.vocab_size);
    const double bytes_per_weight = weights == "f32" ? 4 : weights == "f16" ? 2 : 1;
    const double step_bytes = (double(c.decoder_layers) * (4 * d * d + 4 * d * d + 2 * d * F) + V * d) * bytes_per_weight;
    // The read bandwidth the run plan measures (an integer pass over 512 MiB; on a GPU, half
    // a device-to-device copy's bytes per second).
    const double bw = device.kind == pivotmt::DeviceKind::CUDA ? pivotmt::gpu_ceiling(device.to_string()).gbps
                                                                 : pivotmt::measure_cpu_ceiling().gbps;
    // Decode steps: per batch, as many as its longest output (every row of a batch steps together).
    size_t steps = 0;
    for (size_t b = 0; b < out.size(); b += batch) {
      size_t longest = 0;
      for (size_t i = b; i < std::min(out.size(), b + batch); ++i) longest = std::max(longest, out[i].ids.size() - 1);
      steps += longest;
    }
    const double floor_s = double(steps) * step_bytes / (bw * 1e9);
    fmt::print("{{\"device\": \"{}\", \"weights\": \"{}\", \"beams\": {}, \"batch\": {}, \"sentences\": {}, \"load_s\": {:.2f}, "
               "\"seconds\": {:.2f}, \"sentences_per_s\": {:.3f}, \"tokens_per_s\": {:.1f}, \"threads\": {}, "
               "\"bandwidth_gbs\": {:.1f}, \"decode_steps\": {}, \"bandwidth_floor_s\": {:.2f}, \"floor_over_time\": {:.2f}, "
               "\"graph_captures\": {}, \"graph_replays\": {}}}\n",
               translator.model().describe_device(), weights, beams, batch, texts.size(), load, sec, double(texts.size()) / sec, double(tokens) / sec,
               pivotmt::cpu::num_threads(), bw, steps, floor_s, floor_s / sec,
               translator.model().step_counters().graph_captures, translator.model().step_counters().graph_replays);
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
