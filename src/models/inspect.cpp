#include "models/inspect.h"

#include <filesystem>
#include <map>

#include <fmt/format.h>

#include "core/progress.h"
#include "io/checkpoint.h"
#include "models/model_config.h"
#include "models/weights.h"
#include "quant/ggml_quants.h"

namespace pivotmt {
namespace {
// Bytes of the weights when linear layers are quantised as the engine (INT8) and
// bitsandbytes (NF4 with double quantisation) store them; everything else stays FP16.
struct MemoryEstimate {
  uint64_t fp16 = 0, int8 = 0, nf4 = 0;
};

MemoryEstimate estimate_memory(const std::vector<WeightSpec>& weights) {
  MemoryEstimate m;
  for (const auto& w : weights) {
    const uint64_t n = w.numel();
    m.fp16 += 2 * n;
    const bool linear = w.role == WeightRole::Linear;
    // INT8 weight-only, per output channel: 1 byte a weight + one F32 scale per row.
    m.int8 += (linear || w.role == WeightRole::Output) ? n + 4 * uint64_t(w.shape[0]) : 2 * n;
    // NF4: half a byte a weight; absmax per 64 weights quantised to 8 bits, with one F32
    // scale per 256 absmax values plus their F32 mean (bitsandbytes' double quantisation).
    if (linear) {
      const uint64_t blocks = (n + 63) / 64;
      m.nf4 += (n + 1) / 2 + blocks + 4 * ((blocks + 255) / 256) + 4;
    } else {
      m.nf4 += 2 * n;
    }
  }
  return m;
}
}  // namespace

nlohmann::json inspect_model(const std::string& model_dir) {
  const ModelConfig cfg = load_model_config(model_dir);
  const Checkpoint ckpt(model_dir);
  verify_weights(cfg, ckpt);
  const auto weights = expected_weights(cfg, ckpt);

  std::map<std::string, uint64_t> stored;  // dtype -> elements stored
  uint64_t stored_bytes = 0, stored_params = 0;
  for (const auto& name : ckpt.tensor_names()) {
    const auto& t = ckpt.at(name);
    const auto view = ckpt.ggml_view(name);  // a GGUF tensor: its ggml type (Q4_1, Q8_0, F32...)
    stored[view ? std::string(ggml_type_name(view->type)) : std::string(dtype_name(t.dtype))] += t.numel();
    stored_bytes += t.nbytes();
    stored_params += t.numel();
  }
  std::vector<std::string> absent_optional;
  for (const auto& w : weights)
    if (w.optional && !ckpt.find(w.name)) absent_optional.push_back(w.name);

  const auto mem = estimate_memory(weights);
  nlohmann::json r;
  r["model_dir"] = model_dir;
  r["architecture"] = architecture_name(cfg.arch);
  r["architecture_class"] = cfg.architecture_class;
  r["description"] = cfg.describe();
  r["parameters"] = parameter_count(weights);
  r["stored_parameters"] = stored_params;
  r["stored_dtypes"] = stored;
  r["stored_bytes"] = stored_bytes;
  r["config_torch_dtype"] = cfg.torch_dtype;
  r["files"] = ckpt.files();
  r["layers"] = cfg.num_layers;
  r["hidden_size"] = cfg.hidden_size;
  r["attention_heads"] = cfg.num_heads;
  r["kv_heads"] = cfg.num_kv_heads;
  r["head_dim"] = cfg.head_dim;
  r["intermediate_size"] = cfg.intermediate_size;
  r["vocab_size"] = cfg.vocab_size;
  r["tied_embeddings"] = cfg.tie_word_embeddings;
  r["context_length"] = cfg.max_position_embeddings;
  r["rope_theta"] = cfg.is_decoder() ? nlohmann::json(cfg.rope_theta) : nlohmann::json(nullptr);
  r["sliding_window"] = cfg.sliding_window ? nlohmann::json(*cfg.sliding_window) : nlohmann::json(nullptr);
  r["memory_bytes"] = {{"fp16", mem.fp16}, {"int8", mem.int8}, {"nf4", mem.nf4}};
  if (const uint64_t in_place = gguf_in_place_weight_bytes(weights, ckpt)) r["memory_bytes"]["gguf"] = in_place;
  // K and V, every layer, FP16.
  r["kv_cache_bytes_per_token"] = cfg.is_decoder() ? 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * 2 : 0;
  r["absent_optional_tensors"] = absent_optional;
  r["verified"] = true;
  return r;
}

std::string format_inspect_report(const nlohmann::json& r) {
  std::string out;
  auto row = [&](const std::string& k, const std::string& v) { out += fmt::format("{:<26}{}\n", k, v); };
  row("model", r["model_dir"].get<std::string>());
  row("architecture", r["description"].get<std::string>());
  if (!r["architecture_class"].get<std::string>().empty()) row("class", r["architecture_class"].get<std::string>());
  row("parameters", fmt::format("{} ({:.3f} B)", r["parameters"].get<uint64_t>(), r["parameters"].get<uint64_t>() / 1e9));
  std::string dtypes;
  for (const auto& [k, v] : r["stored_dtypes"].items())
    dtypes += fmt::format("{}{} x {}", dtypes.empty() ? "" : ", ", v.get<uint64_t>(), k);
  row("stored", fmt::format("{} in {} file(s), {}", format_bytes(r["stored_bytes"].get<double>()), r["files"].size(), dtypes));
  row("layers / hidden / ffn", fmt::format("{} / {} / {}", r["layers"].get<int64_t>(), r["hidden_size"].get<int64_t>(),
                                           r["intermediate_size"].get<int64_t>()));
  row("heads / kv heads / dim", fmt::format("{} / {} / {}", r["attention_heads"].get<int64_t>(),
                                            r["kv_heads"].get<int64_t>(), r["head_dim"].get<int64_t>()));
  row("vocabulary", std::to_string(r["vocab_size"].get<int64_t>()));
  row("context length", std::to_string(r["context_length"].get<int64_t>()));
  const auto& m = r["memory_bytes"];
  row("weights in FP16", format_bytes(m["fp16"].get<double>()));
  row("weights in INT8", format_bytes(m["int8"].get<double>()));
  row("weights in NF4", format_bytes(m["nf4"].get<double>()));
  if (m.contains("gguf")) row("weights as stored", format_bytes(m["gguf"].get<double>()) + " (--weights gguf, CPU)");
  if (r["kv_cache_bytes_per_token"].get<int64_t>() > 0)
    row("KV cache (FP16)", fmt::format("{} per token, {} at full context",
                                       format_bytes(r["kv_cache_bytes_per_token"].get<double>()),
                                       format_bytes(r["kv_cache_bytes_per_token"].get<double>() *
                                                    r["context_length"].get<double>())));
  for (const auto& name : r["absent_optional_tensors"])
    row("note", fmt::format("{} absent (counted, as transformers initialises it)", name.get<std::string>()));
  row("tensors", "all present with the expected shapes");
  return out;
}

}  // namespace pivotmt
