// libFuzzer target: a PEFT adapter directory from arbitrary bytes (adapter_config.json, a
// NUL byte, adapter_model.safetensors) loaded against a small Llama configuration. Either
// an adapter that fits the model or an Error naming what is wrong.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "models/model_config.h"
#include "train/lora.h"

namespace {
const pivotmt::ModelConfig& base() {
  static const auto c = pivotmt::parse_model_config(
      nlohmann::json::parse(R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
        "intermediate_size": 128, "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
        "vocab_size": 300, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5})"),
      "fuzz-base");
  return c;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("pivotmt-fuzz-adapter-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const size_t nul = bytes.find('\0');
  std::ofstream(dir / "adapter_config.json", std::ios::binary) << bytes.substr(0, nul);
  std::ofstream(dir / "adapter_model.safetensors", std::ios::binary) << (nul == std::string::npos ? "" : bytes.substr(nul + 1));
  try {
    const auto a = pivotmt::load_lora(dir.string(), base());
    for (const auto& [key, p] : a.weights)
      if (p.A.empty() || p.B.empty()) __builtin_trap();  // a loaded adapter has every matrix
  } catch (const pivotmt::Error&) {
  }
  return 0;
}
