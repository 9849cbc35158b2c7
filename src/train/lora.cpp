#include "train/lora.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>

#include "backends/random_fill.h"
#include "core/error.h"
#include "io/json_fields.h"
#include "io/json_file.h"
#include "io/safetensors.h"

namespace pivotmt {

float LoraConfig::scaling() const {
  return float(rslora ? alpha / std::sqrt(double(r)) : alpha / double(r));
}

std::vector<LoraModule> llama_lora_modules(const ModelConfig& c) {
  const size_t H = size_t(c.hidden_size), F = size_t(c.intermediate_size);
  const size_t q = size_t(c.num_heads * c.head_dim), kv = size_t(c.num_kv_heads * c.head_dim);
  return {{"q_proj", "self_attn.q_proj", q, H},    {"k_proj", "self_attn.k_proj", kv, H},
          {"v_proj", "self_attn.v_proj", kv, H},   {"o_proj", "self_attn.o_proj", H, q},
          {"gate_proj", "mlp.gate_proj", F, H},    {"up_proj", "mlp.up_proj", F, H},
          {"down_proj", "mlp.down_proj", H, F}};
}

size_t lora_module_index(const std::vector<LoraModule>& modules, const std::string& name) {
  size_t i = 0;
  while (i < modules.size() && modules[i].name != name) ++i;
  return i;
}

size_t LoraAdapter::parameter_count() const {
  size_t n = 0;
  for (const auto& [key, p] : weights) n += p.A.size() + p.B.size();
  return n;
}

std::string lora_key(size_t layer, const LoraModule& m) {
  return fmt::format("base_model.model.model.layers.{}.{}", layer, m.path);
}

namespace {

const LoraModule& module_named(const std::vector<LoraModule>& modules, const std::string& name, const std::string& where) {
  for (const auto& m : modules)
    if (m.name == name) return m;
  std::string known;
  for (const auto& m : modules) known += (known.empty() ? "" : ", ") + m.name;
  throw FormatError(fmt::format("{}: target module '{}' is not a projection of this model (known: {})", where, name, known));
}

void check_config(const LoraConfig& c, const std::string& where) {
  if (c.r <= 0) throw FormatError(fmt::format("{}: r must be positive (got {})", where, c.r));
  if (!(c.dropout >= 0 && c.dropout < 1)) throw FormatError(fmt::format("{}: lora_dropout must be in [0, 1) (got {})", where, c.dropout));
  if (c.targets.empty()) throw FormatError(fmt::format("{}: no target modules", where));
}

}  // namespace

LoraAdapter init_lora(const ModelConfig& base, const LoraConfig& cfg, uint64_t seed) {
  check_config(cfg, "LoRA options");
  const auto modules = llama_lora_modules(base);
  LoraAdapter a;
  a.config = cfg;
  uint64_t stream = 0;
  for (size_t l = 0; l < size_t(base.num_layers); ++l)
    for (const auto& name : cfg.targets) {
      const auto& m = module_named(modules, name, "LoRA options");
      LoraPair p;
      p.A.resize(size_t(cfg.r) * m.in);
      p.B.assign(m.out * size_t(cfg.r), 0.0f);
      const float bound = 1.0f / std::sqrt(float(m.in));
      const uint64_t s = random_fill::splitmix64(seed ^ random_fill::splitmix64(++stream));
      for (size_t i = 0; i < p.A.size(); ++i) p.A[i] = random_fill::value(s, i, bound, 0.0f);
      a.weights[{l, name}] = std::move(p);
    }
  return a;
}

LoraAdapter load_lora(const std::string& dir, const ModelConfig& base) {
  const std::string config_path = (std::filesystem::path(dir) / "adapter_config.json").string();
  const std::string weights_path = (std::filesystem::path(dir) / "adapter_model.safetensors").string();
  if (!std::filesystem::exists(config_path))
    throw Error(fmt::format("{}: not a PEFT adapter (adapter_config.json is missing)", dir));
  const auto j = read_json_file(config_path);
  auto field = [&](const char* name) -> const nlohmann::json& { return required_field(j, name, config_path); };
  try {
    const std::string peft_type = json_string(field("peft_type"), field_name(config_path, "peft_type"));
    if (peft_type != "LORA")
      throw FormatError(fmt::format("{}: peft_type is '{}', pivotmt reads LORA adapters", config_path, peft_type));
    LoraAdapter a;
    a.config.r = json_integer(field("r"), field_name(config_path, "r"), 1);
    a.config.alpha = json_number(field("lora_alpha"), field_name(config_path, "lora_alpha"));
    a.config.dropout = field_number(j, "lora_dropout", config_path, 0.0);
    a.config.rslora = field_bool(j, "use_rslora", config_path, false);
    a.config.base_model = field_string(j, "base_model_name_or_path", config_path, "");
    if (field_bool(j, "use_dora", config_path, false))
      throw UnsupportedError(fmt::format("{}: DoRA adapters (use_dora) are not supported", config_path));
    if (field_bool(j, "fan_in_fan_out", config_path, false))
      throw UnsupportedError(fmt::format("{}: fan_in_fan_out adapters are not supported", config_path));
    if (j.contains("bias") && j["bias"] != "none")
      throw UnsupportedError(fmt::format("{}: bias '{}' is not supported (only 'none')", config_path, json_excerpt(j["bias"])));
    for (const char* pattern : {"rank_pattern", "alpha_pattern"})
      if (j.contains(pattern) && j[pattern].is_object() && !j[pattern].empty())
        throw UnsupportedError(fmt::format("{}: per-module {} is not supported", config_path, pattern));
    // PEFT options that change which weights exist or how they combine: refused rather
    // than silently misread.
    for (const char* field : {"layers_to_transform", "layer_replication", "exclude_modules", "target_parameters",
                              "trainable_token_indices", "modules_to_save"})
      if (j.contains(field) && !j[field].is_null() && !(j[field].is_array() && j[field].empty()))
        throw UnsupportedError(fmt::format("{}: {} is not supported", config_path, field));
    for (const char* flag : {"lora_bias", "use_qalora"})
      if (field_bool(j, flag, config_path, false)) throw UnsupportedError(fmt::format("{}: {} is not supported", config_path, flag));
    const auto& targets = field("target_modules");
    a.config.targets.clear();
    if (targets.is_string()) {
      if (targets == "all-linear") {
        for (const auto& m : llama_lora_modules(base)) a.config.targets.push_back(m.name);
      } else {
        throw UnsupportedError(fmt::format("{}: target_modules as a pattern ('{}') is not supported: list the modules", config_path, targets.get<std::string>()));
      }
    } else {
      if (!targets.is_array())
        throw FormatError(fmt::format("{} = {} must be a list of module names or 'all-linear'",
                                      field_name(config_path, "target_modules"), json_excerpt(targets)));
      for (const auto& t : targets) a.config.targets.push_back(json_string(t, field_name(config_path, "target_modules")));
    }
    std::sort(a.config.targets.begin(), a.config.targets.end());
    check_config(a.config, config_path);

    SafetensorsFile f(weights_path);
    const auto modules = llama_lora_modules(base);
    std::set<std::string> used;
    auto read = [&](const std::string& name, size_t rows, size_t cols) {
      const auto& t = f.at(name);
      if (t.shape.size() != 2 || size_t(t.shape[0]) != rows || size_t(t.shape[1]) != cols)
        throw FormatError(fmt::format("{}: tensor {} has shape {}, the base model needs [{}, {}]", weights_path, name,
                                      fmt::join(t.shape, "x"), rows, cols));
      std::vector<float> v(rows * cols);
      if (t.dtype == DType::F32) {
        std::memcpy(v.data(), f.data(t).data(), v.size() * 4);
      } else if (t.dtype == DType::F16 || t.dtype == DType::BF16) {
        convert_floats(t.dtype, f.data(t).data(), DType::F32, v.data(), v.size());
      } else {
        throw FormatError(fmt::format("{}: tensor {} is {}, expected a float type", weights_path, name, dtype_name(t.dtype)));
      }
      used.insert(name);
      return v;
    };
    for (size_t l = 0; l < size_t(base.num_layers); ++l)
      for (const auto& name : a.config.targets) {
        const auto& m = module_named(modules, name, config_path);
        const std::string key = lora_key(l, m);
        LoraPair p;
        p.A = read(key + ".lora_A.weight", size_t(a.config.r), m.in);
        p.B = read(key + ".lora_B.weight", m.out, size_t(a.config.r));
        a.weights[{l, name}] = std::move(p);
      }
    for (const auto& t : f.tensors())
      if (!used.count(t.name))
        throw FormatError(fmt::format("{}: tensor {} does not belong to a LoRA module of this {}-layer model", weights_path,
                                      t.name, base.num_layers));
    return a;
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(fmt::format("{}: {}", config_path, e.what()));
  }
}

void save_lora(const LoraAdapter& a, const ModelConfig& base, const std::string& dir) {
  std::filesystem::create_directories(dir);
  const auto modules = llama_lora_modules(base);
  std::vector<TensorData> tensors;
  auto add = [&](const std::string& name, const std::vector<float>& v, size_t rows, size_t cols) {
    TensorData t;
    t.spec = {name, DType::F32, {int64_t(rows), int64_t(cols)}};
    t.bytes.resize(v.size() * 4);
    std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
    tensors.push_back(std::move(t));
  };
  for (const auto& [key, p] : a.weights) {
    const auto& m = module_named(modules, key.second, "adapter");
    add(lora_key(key.first, m) + ".lora_A.weight", p.A, size_t(a.config.r), m.in);
    add(lora_key(key.first, m) + ".lora_B.weight", p.B, m.out, size_t(a.config.r));
  }
  write_safetensors((std::filesystem::path(dir) / "adapter_model.safetensors").string(), tensors, {{"format", "pt"}});
  nlohmann::json j = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"r", a.config.r},
      {"lora_alpha", a.config.alpha},
      {"lora_dropout", a.config.dropout},
      {"target_modules", a.config.targets},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"use_rslora", a.config.rslora},
      {"use_dora", false},
      {"init_lora_weights", true},
      {"inference_mode", true},
      {"modules_to_save", nullptr},
      {"layers_to_transform", nullptr},
      {"layers_pattern", nullptr},
      {"rank_pattern", nlohmann::json::object()},
      {"alpha_pattern", nlohmann::json::object()},
      {"base_model_name_or_path", a.config.base_model},
      {"revision", nullptr},
  };
  write_json_file((std::filesystem::path(dir) / "adapter_config.json").string(), j);
}

}  // namespace pivotmt
