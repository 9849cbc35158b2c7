#include "models/model_config.h"

#include <algorithm>
#include <filesystem>
#include <map>

#include <fmt/format.h>

#include "core/error.h"
#include "io/gguf.h"
#include "io/json_fields.h"
#include "io/json_file.h"

namespace pivotmt {
namespace {
using json = nlohmann::json;

[[noreturn]] void unsupported(const std::string& label, const std::string& field, const json& value,
                              const std::string& expected) {
  throw UnsupportedError(fmt::format("{}: unsupported {} = {} (supported: {})", label, field, json_excerpt(value), expected));
}

// Reads a positive integer field; `fallback` when absent (nullopt: required).
int64_t get_positive(const json& j, const char* field, const std::string& label,
                     std::optional<int64_t> fallback = std::nullopt) {
  if (!fallback) required_field(j, field, label);
  return field_integer(j, field, label, fallback.value_or(1), 1);
}

std::optional<int64_t> get_optional_id(const json& j, const char* field, const std::string& label) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return std::nullopt;
  return json_integer(*it, field_name(label, field));
}

// eos_token_id may be an integer or a list of integers.
std::vector<int64_t> get_id_list(const json& j, const char* field, const std::string& label) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return {};
  if (it->is_number_integer()) return {json_integer(*it, field_name(label, field))};
  std::vector<int64_t> ids;
  if (it->is_array()) {
    for (const auto& v : *it) {
      if (!v.is_number_integer()) break;
      ids.push_back(json_integer(v, field_name(label, field)));
    }
    if (ids.size() == it->size()) return ids;
  }
  throw FormatError(fmt::format("{}: field '{}' = {} must be an integer or a list of integers", label, field, json_excerpt(*it)));
}

void require_false(const json& j, const char* field, const std::string& label) {
  if (field_bool(j, field, label, false)) unsupported(label, field, j[field], "false");
}

void parse_rope_scaling(const json& j, ModelConfig& c, const std::string& label) {
  auto it = j.find("rope_scaling");
  if (it == j.end() || it->is_null()) return;
  if (!it->is_object()) unsupported(label, "rope_scaling", *it, "null or an object of type llama3");
  // transformers renamed "type" to "rope_type"; checkpoints carry either.
  std::string type;
  if (it->contains("rope_type") && (*it)["rope_type"].is_string()) type = (*it)["rope_type"];
  else if (it->contains("type") && (*it)["type"].is_string()) type = (*it)["type"];
  if (type == "default") return;
  if (type != "llama3") unsupported(label, "rope_scaling.type", json(type), "\"llama3\", \"default\"");
  RopeScaling r;
  r.type = type;
  const std::string sub = label + " rope_scaling";
  r.factor = field_number(*it, "factor", sub, 8.0);
  r.low_freq_factor = field_number(*it, "low_freq_factor", sub, 1.0);
  r.high_freq_factor = field_number(*it, "high_freq_factor", sub, 4.0);
  r.original_max_position_embeddings = get_positive(*it, "original_max_position_embeddings", sub, 8192);
  if (r.factor <= 0 || r.low_freq_factor <= 0 || r.high_freq_factor <= r.low_freq_factor)
    unsupported(label, "rope_scaling", *it, "factor > 0 and high_freq_factor > low_freq_factor > 0");
  c.rope_scaling = r;
}

void parse_decoder(const json& j, ModelConfig& c, const std::string& label) {
  c.vocab_size = get_positive(j, "vocab_size", label);
  c.hidden_size = get_positive(j, "hidden_size", label);
  c.num_layers = get_positive(j, "num_hidden_layers", label);
  c.num_heads = get_positive(j, "num_attention_heads", label);
  c.num_kv_heads = get_positive(j, "num_key_value_heads", label, c.num_heads);
  if (c.hidden_size % c.num_heads != 0 && !j.contains("head_dim"))
    throw FormatError(fmt::format("{}: hidden_size {} is not divisible by num_attention_heads {}", label,
                                  c.hidden_size, c.num_heads));
  c.head_dim = get_positive(j, "head_dim", label, c.hidden_size / c.num_heads);
  if (c.num_heads % c.num_kv_heads != 0)
    throw FormatError(fmt::format("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", label,
                                  c.num_heads, c.num_kv_heads));
  c.intermediate_size = get_positive(j, "intermediate_size", label);
  c.max_position_embeddings = get_positive(j, "max_position_embeddings", label, 2048);
  c.norm_eps = field_number(j, "rms_norm_eps", label, 1e-6);
  c.rope_theta = field_number(j, "rope_theta", label, 10000.0);
  if (c.rope_theta <= 0) unsupported(label, "rope_theta", j["rope_theta"], "a positive number");
  c.hidden_act = field_string(j, "hidden_act", label, "silu");
  if (c.hidden_act != "silu") unsupported(label, "hidden_act", json(c.hidden_act), "\"silu\"");
  require_false(j, "attention_bias", label);
  require_false(j, "mlp_bias", label);
  c.tie_word_embeddings = field_bool(j, "tie_word_embeddings", label, false);
  parse_rope_scaling(j, c, label);
  if (c.arch == Architecture::Mistral) {
    if (auto sw = get_optional_id(j, "sliding_window", label)) {
      if (*sw <= 0) unsupported(label, "sliding_window", j["sliding_window"], "null or a positive integer");
      c.sliding_window = *sw;
    }
  }
  c.bos_token_id = get_optional_id(j, "bos_token_id", label);
  c.eos_token_ids = get_id_list(j, "eos_token_id", label);
  c.pad_token_id = get_optional_id(j, "pad_token_id", label);
}

void parse_bert(const json& j, ModelConfig& c, const std::string& label) {
  c.vocab_size = get_positive(j, "vocab_size", label);
  c.hidden_size = get_positive(j, "hidden_size", label);
  c.num_layers = get_positive(j, "num_hidden_layers", label);
  c.num_heads = get_positive(j, "num_attention_heads", label);
  c.num_kv_heads = c.num_heads;
  if (c.hidden_size % c.num_heads != 0)
    throw FormatError(fmt::format("{}: hidden_size {} is not divisible by num_attention_heads {}", label,
                                  c.hidden_size, c.num_heads));
  c.head_dim = c.hidden_size / c.num_heads;
  c.intermediate_size = get_positive(j, "intermediate_size", label);
  c.max_position_embeddings = get_positive(j, "max_position_embeddings", label, 512);
  c.type_vocab_size = get_positive(j, "type_vocab_size", label, 2);
  c.norm_eps = field_number(j, "layer_norm_eps", label, 1e-12);
  c.hidden_act = field_string(j, "hidden_act", label, "gelu");
  if (c.hidden_act != "gelu") unsupported(label, "hidden_act", json(c.hidden_act), "\"gelu\"");
  const std::string pos = field_string(j, "position_embedding_type", label, "absolute");
  if (pos != "absolute") unsupported(label, "position_embedding_type", json(pos), "\"absolute\"");
  c.pad_token_id = get_optional_id(j, "pad_token_id", label);
  c.tie_word_embeddings = false;  // no output layer in an encoder
  if (c.model_type == "roberta" || c.model_type == "xlm-roberta") {
    // RoBERTa numbers positions from pad + 1 (its position ids skip the padding index).
    if (!c.pad_token_id) throw FormatError(fmt::format("{}: a {} config needs pad_token_id", label, c.model_type));
    c.position_offset = *c.pad_token_id + 1;
    if (c.position_offset >= c.max_position_embeddings)
      throw FormatError(fmt::format("{}: pad_token_id {} leaves no positions of {}", label, *c.pad_token_id,
                                    c.max_position_embeddings));
  }
}
}  // namespace

const char* architecture_name(Architecture a) {
  switch (a) {
    case Architecture::Llama: return "llama";
    case Architecture::Mistral: return "mistral";
    case Architecture::Bert: return "bert";
  }
  return "?";
}

std::string ModelConfig::describe() const {
  if (arch == Architecture::Bert)
    return fmt::format("{} encoder ({} layers, hidden {}, {} heads)", model_type, num_layers, hidden_size, num_heads);
  std::string s = fmt::format("{} ({} {}/{}, rope {}", architecture_name(arch), is_gqa() ? "GQA" : "MHA", num_heads,
                              num_kv_heads, rope_theta);
  if (rope_scaling) s += fmt::format(", rope_scaling llama3 x{}", rope_scaling->factor);
  if (sliding_window) s += fmt::format(", sliding window {}", *sliding_window);
  if (tie_word_embeddings) s += ", tied embeddings";
  return s + ")";
}

ModelConfig parse_model_config(const json& j, const std::string& label) {
  if (!j.is_object()) throw FormatError(fmt::format("{}: expected a JSON object", label));
  ModelConfig c;
  auto mt = j.find("model_type");
  if (mt == j.end() || !mt->is_string()) throw FormatError(fmt::format("{}: missing string field 'model_type'", label));
  c.model_type = mt->get<std::string>();
  if (auto a = j.find("architectures"); a != j.end() && a->is_array() && !a->empty() && (*a)[0].is_string())
    c.architecture_class = (*a)[0].get<std::string>();
  // transformers 4.56+ writes "dtype" where earlier versions wrote "torch_dtype".
  for (const char* key : {"torch_dtype", "dtype"})
    if (auto d = j.find(key); d != j.end() && d->is_string() && c.torch_dtype.empty()) c.torch_dtype = d->get<std::string>();

  if (c.model_type == "llama") {
    c.arch = Architecture::Llama;
    parse_decoder(j, c, label);
  } else if (c.model_type == "mistral") {
    c.arch = Architecture::Mistral;
    parse_decoder(j, c, label);
  } else if (c.model_type == "bert" || c.model_type == "roberta" || c.model_type == "xlm-roberta") {
    c.arch = Architecture::Bert;
    parse_bert(j, c, label);
  } else {
    unsupported(label, "model_type", *mt, "\"llama\", \"mistral\", \"bert\", \"roberta\", \"xlm-roberta\"");
  }
  return c;
}

json gguf_config_json(const GgufFile& g) {
  const std::string& label = g.path();
  const std::string arch = g.get_string("general.architecture").value_or("");
  if (arch != "llama")
    throw UnsupportedError(fmt::format("{}: general.architecture is '{}'; pivotmt runs the Llama family (GGUF "
                                       "architecture 'llama': Llama-2/3, Mistral, SmolLM2, TowerInstruct)", label, arch));
  auto required = [&](const std::string& key) -> uint64_t {
    const auto v = g.get_uint(key);
    if (!v) throw FormatError(fmt::format("{}: no metadata '{}'", label, key));
    return *v;
  };
  json j = {{"model_type", "llama"}, {"architectures", {"LlamaForCausalLM"}}, {"hidden_act", "silu"}};
  j["hidden_size"] = required("llama.embedding_length");
  j["num_hidden_layers"] = required("llama.block_count");
  j["num_attention_heads"] = required("llama.attention.head_count");
  j["num_key_value_heads"] = g.get_uint("llama.attention.head_count_kv").value_or(j["num_attention_heads"].get<uint64_t>());
  j["intermediate_size"] = required("llama.feed_forward_length");
  j["max_position_embeddings"] = required("llama.context_length");
  j["rms_norm_eps"] = g.get_float("llama.attention.layer_norm_rms_epsilon").value_or(1e-5);
  j["rope_theta"] = g.get_float("llama.rope.freq_base").value_or(10000.0);
  const auto tokens = g.find("tokenizer.ggml.tokens");
  const auto* embed = g.find_tensor("token_embd.weight");
  if (auto v = g.get_uint("llama.vocab_size")) j["vocab_size"] = *v;
  else if (embed && embed->dims.size() == 2) j["vocab_size"] = embed->dims[1];
  else if (tokens) j["vocab_size"] = tokens->array.size();
  const uint64_t heads = j["num_attention_heads"].get<uint64_t>();
  if (heads == 0) throw FormatError(fmt::format("{}: llama.attention.head_count is 0", label));
  const uint64_t head_dim = g.get_uint("llama.attention.key_length").value_or(j["hidden_size"].get<uint64_t>() / heads);
  if (const auto v = g.get_uint("llama.attention.value_length"); v && *v != head_dim)
    throw UnsupportedError(fmt::format("{}: llama.attention.value_length {} differs from key_length {}", label, *v, head_dim));
  j["head_dim"] = head_dim;
  if (const auto rot = g.get_uint("llama.rope.dimension_count"); rot && *rot != head_dim)
    throw UnsupportedError(fmt::format("{}: llama.rope.dimension_count {} rotates part of a {}-wide head; pivotmt "
                                       "rotates whole heads", label, *rot, head_dim));
  const std::string scaling = g.get_string("llama.rope.scaling.type").value_or("none");
  if (scaling != "none")
    throw UnsupportedError(fmt::format("{}: llama.rope.scaling.type '{}' is not supported (only 'none')", label, scaling));
  if (g.find_tensor("rope_freqs.weight"))
    throw UnsupportedError(fmt::format("{}: rope_freqs.weight (Llama-3.1's rope frequency factors) is not supported yet",
                                       label));
  if (g.find_tensor("blk.0.attn_q.bias") || g.find_tensor("blk.0.attn_k.bias")) j["attention_bias"] = true;
  j["tie_word_embeddings"] = g.find_tensor("output.weight") == nullptr;
  if (auto v = g.get_uint("tokenizer.ggml.bos_token_id")) j["bos_token_id"] = *v;
  if (auto v = g.get_uint("tokenizer.ggml.eos_token_id")) j["eos_token_id"] = *v;
  if (auto v = g.get_uint("tokenizer.ggml.padding_token_id")) j["pad_token_id"] = *v;
  // Informational, as config.json's torch_dtype: the type most of its weights are stored in.
  std::map<std::string, uint64_t> by_type;
  for (const auto& t : g.tensors()) by_type[ggml_type_name(t.type)] += t.numel();
  if (!by_type.empty())
    j["torch_dtype"] = "gguf " + std::max_element(by_type.begin(), by_type.end(), [](auto& a, auto& b) {
                         return a.second < b.second;
                       })->first;
  return j;
}

ModelConfig load_model_config(const std::string& model_dir) {
  if (is_gguf_path(model_dir)) {
    const GgufFile g(model_dir);
    return parse_model_config(gguf_config_json(g), model_dir);
  }
  const std::string path = (std::filesystem::path(model_dir) / "config.json").string();
  if (!std::filesystem::exists(path)) throw Error(fmt::format("{}: no config.json (is this a model directory?)", model_dir));
  return parse_model_config(read_json_file(path), path);
}

ModelConfig load_decoder_config(const std::string& model_dir, const std::string& purpose) {
  if (is_gguf_path(model_dir)) return load_model_config(model_dir);  // GGUF: the Llama family or an error saying so
  const std::string path = (std::filesystem::path(model_dir) / "config.json").string();
  if (!std::filesystem::exists(path)) throw Error(fmt::format("{}: no config.json (is this a model directory?)", model_dir));
  const json j = read_json_file(path);
  const auto mt = j.is_object() ? j.find("model_type") : j.end();
  if (j.is_object() && mt != j.end() && mt->is_string() && *mt != "llama" && *mt != "mistral")
    throw UnsupportedError(fmt::format("{}: model_type {}: {} needs a Llama-family decoder (model_type llama or mistral)",
                                       path, mt->dump(), purpose));
  return parse_model_config(j, path);
}

GenerationConfig parse_generation_config(const json& j, const ModelConfig& model, const std::string& label) {
  if (!j.is_object()) throw FormatError(fmt::format("{}: expected a JSON object", label));
  GenerationConfig g;
  g.bos_token_id = j.contains("bos_token_id") ? get_optional_id(j, "bos_token_id", label) : model.bos_token_id;
  g.eos_token_ids = j.contains("eos_token_id") ? get_id_list(j, "eos_token_id", label) : model.eos_token_ids;
  g.pad_token_id = j.contains("pad_token_id") ? get_optional_id(j, "pad_token_id", label) : model.pad_token_id;
  g.do_sample = field_bool(j, "do_sample", label, false);
  g.temperature = field_number(j, "temperature", label, 1.0);
  g.top_p = field_number(j, "top_p", label, 1.0);
  const double top_k = field_number(j, "top_k", label, 50);
  // Range first: casting a double beyond int64's range to an integer is undefined.
  if (g.temperature < 0 || g.top_p < 0 || g.top_p > 1 || !(top_k >= 0 && top_k < 0x1p62))
    throw FormatError(fmt::format("{}: temperature {} / top_p {} / top_k {} out of range", label, g.temperature, g.top_p,
                                  top_k));
  g.top_k = static_cast<int64_t>(top_k);
  if (j.contains("max_new_tokens") && !j["max_new_tokens"].is_null()) g.max_new_tokens = get_positive(j, "max_new_tokens", label);
  if (j.contains("max_length") && !j["max_length"].is_null()) g.max_length = get_positive(j, "max_length", label);
  return g;
}

GenerationConfig load_generation_config(const std::string& model_dir, const ModelConfig& model) {
  if (is_gguf_path(model_dir)) {
    // A GGUF file has no generation_config.json: the model's ids, generation stopping at
    // every end-of-generation token llama.cpp knows (EOS, end of turn, end of message), and
    // the sampling defaults a converter may have stored (general.sampling.*).
    const GgufFile g(model_dir);
    json j = json::object();
    std::vector<int64_t> eos(model.eos_token_ids.begin(), model.eos_token_ids.end());
    for (const char* key : {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"})
      if (const auto id = g.get_uint(key); id && std::find(eos.begin(), eos.end(), int64_t(*id)) == eos.end())
        eos.push_back(int64_t(*id));
    j["eos_token_id"] = eos;
    if (const auto t = g.get_float("general.sampling.temp")) {
      j["temperature"] = *t;
      j["do_sample"] = *t > 0;
    }
    if (const auto k = g.get_uint("general.sampling.top_k")) j["top_k"] = *k;
    if (const auto p = g.get_float("general.sampling.top_p")) j["top_p"] = *p;
    return parse_generation_config(j, model, model_dir);
  }
  const std::string path = (std::filesystem::path(model_dir) / "generation_config.json").string();
  if (!std::filesystem::exists(path)) return parse_generation_config(json::object(), model, path);
  return parse_generation_config(read_json_file(path), model, path);
}

}  // namespace pivotmt
