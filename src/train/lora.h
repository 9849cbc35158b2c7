// LoRA adapters in PEFT's format (REFERENCE.md §10, §11): adapter_config.json and
// adapter_model.safetensors with keys base_model.model.model.layers.{l}.{module}.lora_A.weight
// [r, in] and .lora_B.weight [out, r], F32. y = W x + scaling · B (A (dropout(x))), scaling
// = alpha / r (alpha / √r with rsLoRA). Loading checks the adapter against the base model
// (target modules, layers, shapes) and names the file and tensor on any mismatch.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "models/model_config.h"

namespace pivotmt {

struct LoraConfig {
  int64_t r = 16;
  double alpha = 16;
  double dropout = 0.05;
  bool rslora = false;
  // The original's targets: every linear projection of the decoder layers.
  std::vector<std::string> targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  std::string base_model;  // base_model_name_or_path, informational
  float scaling() const;
};

// A projection of a Llama-family layer that LoRA can target.
struct LoraModule {
  std::string name;  // "q_proj"
  std::string path;  // "self_attn.q_proj"
  size_t out = 0, in = 0;
};
// The seven projections with their shapes for this model, in layer order.
std::vector<LoraModule> llama_lora_modules(const ModelConfig& c);
// The index of the module called `name` in `modules`; modules.size() when there is none.
size_t lora_module_index(const std::vector<LoraModule>& modules, const std::string& name);

struct LoraPair {
  std::vector<float> A;  // [r, in]
  std::vector<float> B;  // [out, r]
};

struct LoraAdapter {
  LoraConfig config;
  // Key: (layer, module name), for every layer and every target.
  std::map<std::pair<size_t, std::string>, LoraPair> weights;
  size_t parameter_count() const;
};

// PEFT's tensor-name prefix of a module: base_model.model.model.layers.{l}.self_attn.q_proj
std::string lora_key(size_t layer, const LoraModule& m);

// A fresh adapter as PEFT initialises one: A ~ U(-1/√in, 1/√in) (kaiming_uniform with
// a = √5), B = 0; A drawn from `seed` (the same adapter for the same seed everywhere).
LoraAdapter init_lora(const ModelConfig& base, const LoraConfig& cfg, uint64_t seed);

// Reads DIR/adapter_config.json and DIR/adapter_model.safetensors; throws FormatError
// naming the file and field or tensor when the adapter does not fit `base` or uses a
// PEFT feature pivotmt does not implement (DoRA, biases, rank or alpha patterns).
LoraAdapter load_lora(const std::string& dir, const ModelConfig& base);
// Writes both files into DIR (created when missing), each atomically.
void save_lora(const LoraAdapter& adapter, const ModelConfig& base, const std::string& dir);

}  // namespace pivotmt
