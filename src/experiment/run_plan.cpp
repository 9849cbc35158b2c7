#include "experiment/run_plan.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include <fmt/format.h>

#include "backends/backend.h"
#include "backends/cpu/ops.h"
#include "backends/cpu/thread_pool.h"
#include "core/error.h"

namespace pivotmt {

namespace {
using Clock = std::chrono::steady_clock;

// Datasheet figures (SXM parts): dense F16 tensor-core throughput and HBM bandwidth, and the
// share of them a well-tuned GEMM / a streaming read reaches (stated, not measured).
struct Datasheet {
  const char* key;
  const char* name;
  double tflops, tflops_f32, tbps, memory_gb;
};
constexpr Datasheet kGpus[] = {{"h100", "NVIDIA H100 SXM (datasheet)", 989.0, 67.0, 3.35, 80.0},
                               {"h200", "NVIDIA H200 SXM (datasheet)", 989.0, 67.0, 4.8, 141.0}};
constexpr double kGemmEfficiency = 0.7, kBandwidthEfficiency = 0.85;

size_t percentile(std::vector<size_t> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, size_t(std::ceil(p / 100.0 * double(v.size()))) - (p > 0 ? 1 : 0))];
}
}  // namespace

DeviceCeiling measure_cpu_ceiling() {
  DeviceCeiling c;
  c.device = "cpu";
  c.measured = true;
  c.name = fmt::format("CPU ({} threads)", cpu::num_threads());
  // GEMM: 256 rows through an F16 1024 × 1024 matrix (the default storage), best of 5.
  const size_t T = 256, n = 1024;
  std::vector<float> w(n * n), x(T * n), y(T * n);
  for (size_t i = 0; i < w.size(); ++i) w[i] = float((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
  for (size_t i = 0; i < x.size(); ++i) x[i] = float((i * 40503u) % 1000) * 1e-3f - 0.5f;
  cpu::Matrix m;
  m.dtype = DType::F16;
  m.out = m.in = n;
  m.f16.resize(n * n);
  convert_floats(DType::F32, w.data(), DType::F16, m.f16.data(), w.size());
  double best = 1e30;
  for (int rep = 0; rep < 6; ++rep) {
    const auto t0 = Clock::now();
    cpu::fast::linear(x.data(), T, m, y.data());
    if (rep > 0) best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  c.gflops = 2.0 * double(T * n * n) / best / 1e9;
  c.gflops_f32 = c.gflops;  // F16 weights, F32 arithmetic
  // Bandwidth: integer sums over 512 MiB (they vectorise; a float sum would not).
  const size_t words = size_t(1) << 27;
  std::vector<uint32_t> a(words, 1);
  double best_bw = 0;
  for (int rep = 0; rep < 3; ++rep) {
    std::vector<uint64_t> sums(64, 0);
    const auto t0 = Clock::now();
    cpu::parallel_for(64, [&](size_t b0, size_t b1) {
      for (size_t b = b0; b < b1; ++b) {
        uint64_t s = 0;
        const uint32_t* p = a.data() + b * (words / 64);
        for (size_t i = 0; i < words / 64; ++i) s += p[i];
        sums[b] = s;
      }
    });
    const double sec = std::chrono::duration<double>(Clock::now() - t0).count();
    if (std::accumulate(sums.begin(), sums.end(), uint64_t(0)) != words) throw Error("bandwidth pass: wrong sum");
    best_bw = std::max(best_bw, double(words) * 4 / sec / 1e9);
  }
  c.gbps = best_bw;
  c.memory = host_memory().available;
  return c;
}

DeviceCeiling gpu_ceiling(const std::string& device) {
  DeviceCeiling c;
  c.device = device;
  if (device.rfind("cuda", 0) == 0) {
    const int index = device == "cuda" ? 0 : std::stoi(device.substr(5));
    if (index < cuda_device_count()) {
      const auto info = cuda_device_info(index);
      c.name = info.name;
      c.gflops = cuda::measure_gemm_tflops(index, 4096) * 1e3;
      c.gflops_f32 = cuda::measure_gemm_tflops(index, 4096, true) * 1e3;
      c.gbps = cuda::measure_copy_gbps(index, size_t(1) << 30) / 2;  // the copy counts read + write
      c.memory = info.free_memory;
      c.measured = true;
      return c;
    }
    throw Error(fmt::format("{}: not visible on this machine; name a GPU model to plan for (h100, h200)", device));
  }
  for (const auto& g : kGpus)
    if (device == g.key) {
      c.name = g.name;
      c.gflops = g.tflops * 1e3 * kGemmEfficiency;
      c.gflops_f32 = g.tflops_f32 * 1e3 * kGemmEfficiency;
      c.gbps = g.tbps * 1e3 * kBandwidthEfficiency;
      c.memory = uint64_t(g.memory_gb * 1e9);
      return c;
    }
  throw Error(fmt::format("plan device '{}': expected cpu, cuda:N (present), h100 or h200", device));
}

RunPlan make_run_plan(const ModelConfig& m, uint64_t parameters, const std::string& weights, const StudyWorkload& w,
                      const DeviceCeiling& device, uint64_t stored_weight_bytes) {
  RunPlan p;
  p.device = device;
  const bool gpu = device.device != "cpu";
  p.weights = gpu ? "f16" : weights;
  const double bytes_per_weight = p.weights == "f32" ? 4 : p.weights == "f16" ? 2 : p.weights == "nf4" ? 0.5625 : 1.0;
  p.parameters = parameters;
  p.weight_bytes = uint64_t(double(parameters) * bytes_per_weight);
  if (!gpu && stored_weight_bytes && (weights == "gguf" || weights == "gguf-q8")) p.weight_bytes = stored_weight_bytes;
  const uint64_t act_bytes = gpu ? 2 : 4;  // F16 activations and cache on a GPU, F32 on the CPU
  p.kv_bytes_per_token = uint64_t(m.num_layers) * 2 * uint64_t(m.num_kv_heads) * uint64_t(m.head_dim) * act_bytes;
  const size_t prompt_p90 = percentile(w.prompt_tokens, 90);
  const size_t prompt_max = w.prompt_tokens.empty() ? 0 : *std::max_element(w.prompt_tokens.begin(), w.prompt_tokens.end());
  // What the GPU ops keep (cuBLAS workspace, staging, safety margin), then 10% of the rest and
  // ~350 MiB for activations; the CPU keeps 10% and 1 GiB for the rest of the process.
  const double reserve = 0.1 * double(device.memory) + (gpu ? double(cuda::kReservedBytes + (size_t(352) << 20)) : double(1ull << 30));
  const double kv_room = double(device.memory) - double(p.weight_bytes) - reserve;
  p.fits = kv_room >= double(p.kv_bytes_per_token) * double(prompt_max + w.max_new_tokens);
  const double per_sequence = double(p.kv_bytes_per_token) * double(prompt_p90 + w.max_new_tokens);
  p.max_batch = w.max_batch;
  p.batch = kv_room > 0 && per_sequence > 0 ? std::min(w.max_batch, size_t(kv_room / per_sequence)) : 0;

  const double params = double(parameters), layers = double(m.num_layers), d = double(m.hidden_size);
  double prefill_flops = 0;
  for (size_t t : w.prompt_tokens) {
    p.prompt_tokens += double(t);
    prefill_flops += 2 * params * double(t) + 2 * layers * d * double(t) * double(t);
  }
  p.prefill_seconds = prefill_flops / (device.gflops * 1e9);
  double context = 0;
  for (size_t i = 0; i < w.output_tokens.size(); ++i) {
    p.output_tokens += double(w.output_tokens[i]);
    context += double(w.prompt_tokens[i]) + double(w.output_tokens[i]) / 2;
  }
  const size_t batch = std::max<size_t>(1, p.batch);
  const double mean_context = w.output_tokens.empty() ? 0 : context / double(w.output_tokens.size());
  const double steps = p.output_tokens / double(batch);
  const double step_bytes = double(p.weight_bytes) + double(batch) * mean_context * double(p.kv_bytes_per_token);
  const double step_seconds = std::max(step_bytes / (device.gbps * 1e9), 2 * params * double(batch) / (device.gflops * 1e9));
  p.decode_seconds = steps * step_seconds;
  return p;
}

namespace {

// NLLB's weights as a device stores them (experiment/nllb_translate.h's stored_weights: a
// GPU keeps int8 as F16).
std::string stored_storage(const std::string& storage, bool gpu) {
  if (storage == "f32") return "F32";
  return gpu || storage == "f16" ? "F16" : "INT8";
}
double storage_bytes(const std::string& stored) { return stored == "F32" ? 4 : stored == "F16" ? 2 : 1; }

std::string millions(double n) { return n >= 10e6 ? fmt::format("{:.0f} M", n / 1e6) : fmt::format("{:.2f} M", n / 1e6); }

template <class T>
T field(const nlohmann::json& j, const char* key, T fallback) {
  return j.contains(key) && j[key].is_number() ? j[key].get<T>() : fallback;
}

}  // namespace

StagePlan plan_nllb(const nlohmann::json& c, double sentences, double tokens, size_t beams, size_t batch,
                    const std::string& storage, const DeviceCeiling& device) {
  const double d = field<double>(c, "d_model", 1024), V = field<double>(c, "vocab_size", 256206);
  const double enc_layers = field<double>(c, "encoder_layers", 12), dec_layers = field<double>(c, "decoder_layers", 12);
  const double enc_ffn = field<double>(c, "encoder_ffn_dim", 4096), dec_ffn = field<double>(c, "decoder_ffn_dim", 4096);
  const double encoder = enc_layers * (4 * d * d + 2 * d * enc_ffn);      // self-attention, feed-forward
  const double decoder = dec_layers * (8 * d * d + 2 * d * dec_ffn);      // self- and cross-attention, feed-forward
  const double head = V * d;                                              // the shared embedding as the output layer
  const bool gpu = device.device != "cpu";
  StagePlan p;
  p.name = "NLLB-200 baseline";
  p.storage = stored_storage(storage, gpu);
  // A GPU multiplies F16 weights on the tensor cores; the CPU computes every storage in F32.
  p.arithmetic = gpu && p.storage == "F16" ? "F16 tensor cores" : "F32";
  p.gflops_rate = gpu && p.storage == "F16" ? device.gflops : device.gflops_f32;
  p.parameters = uint64_t(encoder + decoder + head);
  p.weight_bytes = uint64_t(double(p.parameters) * storage_bytes(p.storage));
  beams = std::max<size_t>(1, beams);
  batch = std::max<size_t>(1, batch);
  p.items = sentences;
  p.tokens = sentences * tokens * (1 + double(beams));
  const double encode_flops = sentences * tokens * 2 * encoder;
  const double step_flops_per_hypothesis = 2 * (decoder + head);
  p.flops = encode_flops + sentences * tokens * double(beams) * step_flops_per_hypothesis;
  // Decoding: a step per output token for each batch of sentences, at the larger of its
  // FLOPs and streaming the decoder and output layer once.
  const double steps = std::ceil(sentences / double(batch)) * tokens;
  const double hypotheses = double(std::min<size_t>(batch, size_t(std::max(1.0, sentences)))) * double(beams);
  const double step_seconds = std::max(hypotheses * step_flops_per_hypothesis / (p.gflops_rate * 1e9),
                                       (decoder + head) * storage_bytes(p.storage) / (device.gbps * 1e9));
  p.seconds = encode_flops / (p.gflops_rate * 1e9) + steps * step_seconds;
  p.detail = fmt::format("{} parameters ({} + {} layers, d {:.0f}, vocabulary {:.0f}); {:.0f} sentences of ~{:.0f} "
                         "tokens, {} beam{}, {} sentences a batch",
                         millions(double(p.parameters)), enc_layers, dec_layers, d, V, sentences, tokens, beams,
                         beams == 1 ? "" : "s", batch);
  return p;
}

StagePlan plan_comet(const std::string& name, const nlohmann::json* encoder_config, double segments, double tokens,
                     const DeviceCeiling& device, bool f16_weights) {
  // The encoders of unbabel-comet's models (their hparams' pretrained_model).
  struct Encoder {
    const char* label;
    double hidden, layers, ffn, vocab;
  };
  const Encoder large{"XLM-R large", 1024, 24, 4096, 250002}, xl{"XLM-R XL", 2560, 36, 10240, 250880},
      xxl{"XLM-R XXL", 4096, 48, 16384, 250880};
  Encoder e = name.find("XXL") != std::string::npos ? xxl : name.find("XCOMET-XL") != std::string::npos ? xl : large;
  std::string source = fmt::format("{} (the encoder of {})", e.label, name.empty() ? "wmt22-comet-da" : name);
  if (encoder_config) {
    e.hidden = field<double>(*encoder_config, "hidden_size", e.hidden);
    e.layers = field<double>(*encoder_config, "num_hidden_layers", e.layers);
    e.ffn = field<double>(*encoder_config, "intermediate_size", e.ffn);
    e.vocab = field<double>(*encoder_config, "vocab_size", e.vocab);
    source = "the encoder's config.json";
  }
  const double per_layer = 4 * e.hidden * e.hidden + 2 * e.hidden * e.ffn;
  StagePlan p;
  p.name = "COMET";
  p.storage = f16_weights ? "F16" : "F32";
  p.arithmetic = f16_weights && device.device != "cpu" ? "F16 tensor cores" : "F32";
  p.gflops_rate = p.arithmetic == "F32" ? device.gflops_f32 : device.gflops;
  p.parameters = uint64_t(e.layers * per_layer + e.vocab * e.hidden);
  p.weight_bytes = uint64_t(e.layers * per_layer * (f16_weights ? 2 : 4) + e.vocab * e.hidden * 4);
  p.items = segments;
  p.tokens = segments * 3 * tokens;
  // Per sequence of T tokens: 2 · the layers' weights per token, attention 4 · layers · hidden · T².
  p.flops = p.tokens * 2 * e.layers * per_layer + segments * 3 * 4 * e.layers * e.hidden * tokens * tokens;
  p.seconds = p.flops / (p.gflops_rate * 1e9);
  p.detail = fmt::format("{}: {} parameters; {:.0f} segments, three sequences of ~{:.0f} tokens each", source,
                         millions(double(p.parameters)), segments, tokens);
  return p;
}

nlohmann::json StagePlan::to_json() const {
  return {{"name", name},          {"detail", detail},           {"storage", storage},
          {"arithmetic", arithmetic}, {"gflops_rate", gflops_rate}, {"parameters", parameters},
          {"weight_bytes", weight_bytes}, {"items", items},       {"tokens", tokens},
          {"flops", flops},          {"seconds", seconds}};
}

nlohmann::json RunPlan::to_json() const {
  nlohmann::json stage_list = nlohmann::json::array();
  for (const auto& s : stages) stage_list.push_back(s.to_json());
  return {{"stages", stage_list},
          {"generation_seconds", generation_seconds()},{"device", device.device},
          {"device_name", device.name},
          {"measured", device.measured},
          {"gflops", device.gflops},
          {"gflops_f32", device.gflops_f32},
          {"gbps", device.gbps},
          {"memory_bytes", device.memory},
          {"weights", weights},
          {"parameters", parameters},
          {"weight_bytes", weight_bytes},
          {"kv_bytes_per_token", kv_bytes_per_token},
          {"batch", batch},
          {"fits", fits},
          {"prompt_tokens", prompt_tokens},
          {"output_tokens", output_tokens},
          {"prefill_seconds", prefill_seconds},
          {"decode_seconds", decode_seconds},
          {"seconds", seconds()}};
}

std::string run_plan_markdown(const RunPlan& p, double within_hours) {
  auto gib = [](double b) { return fmt::format("{:.2f} GiB", b / double(1ull << 30)); };
  auto hours = [](double s) {
    return s < 60 ? fmt::format("{:.1f} s", s) : s < 3600 ? fmt::format("{:.1f} min", s / 60) : fmt::format("{:.1f} h", s / 3600);
  };
  auto count = [](double n) {
    return n >= 1e9 ? fmt::format("{:.2f} B", n / 1e9) : n >= 1e6 ? fmt::format("{:.1f} M", n / 1e6) : fmt::format("{:.0f}", n);
  };
  auto bytes = [](double b) { return b >= 1024 ? fmt::format("{:.0f} KiB", b / 1024) : fmt::format("{:.0f} B", b); };
  std::string stage_rows;
  for (const auto& s : p.stages) stage_rows += fmt::format("| {} ({:.0f}) | {} |\n", s.name, s.items, hours(s.seconds));
  std::string md = fmt::format(
      "## Run plan on {} ({})\n\n"
      "| | |\n|---|---:|\n"
      "| parameters | {} |\n| weights ({}) | {} |\n| keys and values per token | {} |\n"
      "| device memory for the run | {} |\n| sequences at once (max-batch {}) | {} |\n"
      "| prompt tokens to prefill | {:.0f} |\n| output tokens (estimated) | {:.0f} |\n"
      "| {} | {:.0f} GFLOP/s, {:.0f} GB/s |\n| prefill | {} |\n| decode | {} |\n{}| **total on one device** | **{}** |\n\n",
      p.device.device, p.device.name, count(double(p.parameters)), p.weights, gib(double(p.weight_bytes)),
      bytes(double(p.kv_bytes_per_token)), gib(double(p.device.memory)), p.max_batch, p.batch, p.prompt_tokens, p.output_tokens,
      p.device.measured ? "measured here" : "stated roofline", p.device.gflops, p.device.gbps, hours(p.prefill_seconds),
      hours(p.decode_seconds), stage_rows, hours(p.seconds()));
  for (const auto& s : p.stages)
    md += fmt::format("{}: {}; weights {} ({}), {:.1f} TFLOP at {:.0f} GFLOP/s ({}).\n", s.name, s.detail,
                      gib(double(s.weight_bytes)), s.storage, s.flops / 1e12, s.gflops_rate, s.arithmetic);
  if (!p.stages.empty()) md += "\n";
  if (!p.fits) {
    md += fmt::format("**Does not fit**: the weights ({}) and one longest sequence need more than the {} this device "
                      "offers. Use smaller weights (--weights int8 / q8 / nf4 on the CPU) or a larger device.\n",
                      gib(double(p.weight_bytes)), gib(double(p.device.memory)));
    return md;
  }
  const size_t devices = std::max<size_t>(1, size_t(std::ceil(p.seconds() / (within_hours * 3600))));
  md += fmt::format("Fits. Within {:g} h it wants {} device{} (shards: --workers / --devices, or --emit-sbatch "
                    "--sbatch-tasks {}), about {} each.\n",
                    within_hours, devices, devices == 1 ? "" : "s", devices, hours(p.seconds() / double(devices)));
  md += "Prefill counts shared prompt prefixes in full (the engine computes them once): an upper bound.\n";
  return md;
}

}  // namespace pivotmt
