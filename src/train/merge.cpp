#include "train/merge.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>

#include "core/error.h"
#include "io/checkpoint.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "models/model_config.h"
#include "tokenizer/tokenizer.h"
#include "train/lora.h"

namespace pivotmt {

namespace fs = std::filesystem;

namespace {
bool is_weight_file(const fs::path& p) {
  const std::string name = p.filename().string();
  const std::string ext = p.extension().string();
  return ext == ".safetensors" || ext == ".bin" || ext == ".pt" || ext == ".pth" || ext == ".ckpt" ||
         name == "model.safetensors.index.json" || name == "pytorch_model.bin.index.json";
}
}  // namespace

MergeReport merge_adapter(const std::string& model_dir, const std::string& adapter_dir, const std::string& out_dir) {
  if (fs::exists(out_dir) && !(fs::is_directory(out_dir) && fs::is_empty(out_dir)))
    throw Error(fmt::format("{} already exists and is not empty: choose a new --out (nothing is overwritten)", out_dir));
  const ModelConfig cfg = load_decoder_config(model_dir, "merge");
  const LoraAdapter adapter = load_lora(adapter_dir, cfg);
  const Checkpoint ckpt(model_dir);
  const float scaling = adapter.config.scaling();
  const size_t r = size_t(adapter.config.r);

  // Weight name -> its adapter pair.
  std::map<std::string, const LoraPair*> by_name;
  const auto modules = llama_lora_modules(cfg);
  for (const auto& [key, pair] : adapter.weights)
    for (const auto& m : modules)
      if (m.name == key.second) by_name[fmt::format("model.layers.{}.{}.weight", key.first, m.path)] = &pair;

  std::vector<TensorSpec> specs;
  for (const auto& name : ckpt.tensor_names()) {
    const auto& info = ckpt.at(name);
    specs.push_back({name, info.dtype, info.shape});
  }
  const fs::path tmp = fs::path(out_dir).parent_path() / fmt::format(".{}.tmp-{}", fs::path(out_dir).filename().string(), getpid());
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  MergeReport report;
  try {
    write_safetensors((tmp / "model.safetensors").string(), specs, {{"format", "pt"}},
                      [&](const TensorSpec& spec, std::span<std::byte> out) {
                        ++report.tensors;
                        report.bytes += out.size();
                        const auto it = by_name.find(spec.name);
                        if (it == by_name.end()) {
                          if (ckpt.stored_as_is(spec.name)) std::memcpy(out.data(), ckpt.raw(spec.name).data(), out.size());
                          else ckpt.load_into(spec.name, spec.dtype, out);  // a GGUF tensor, dequantised
                          return;
                        }
                        // W (F32) + (B @ A) · scaling, back to the stored dtype (PEFT adds the
                        // F32 delta to the weight in place, rounding once).
                        const auto& p = *it->second;
                        const size_t rows = size_t(spec.shape.at(0)), cols = size_t(spec.shape.at(1));
                        std::vector<float> w = ckpt.load_f32(spec.name), delta(cols);
                        for (size_t o = 0; o < rows; ++o) {
                          std::fill(delta.begin(), delta.end(), 0.0f);
                          for (size_t k = 0; k < r; ++k) {
                            const float b = p.B[o * r + k];
                            const float* a = &p.A[k * cols];
                            for (size_t i = 0; i < cols; ++i) delta[i] += b * a[i];
                          }
                          for (size_t i = 0; i < cols; ++i) w[o * cols + i] += delta[i] * scaling;
                        }
                        convert_floats(DType::F32, w.data(), spec.dtype, out.data(), w.size());
                        ++report.merged;
                      });
    // An adapter that changes nothing is a mistake (another model's adapter, a wrong folder):
    // refused rather than a copy of the base under a new name.
    if (report.merged == 0)
      throw Error(fmt::format("{}: none of the adapter's {} projections (targets {}) is a weight of {}: nothing to merge",
                              adapter_dir, by_name.size(), fmt::join(adapter.config.targets, ", "), model_dir));
    if (const GgufFile* g = ckpt.gguf()) {
      // A GGUF base: its metadata as the Hugging Face files of the same model.
      nlohmann::json config = gguf_config_json(*g);
      config["torch_dtype"] = "float32";
      write_json_file((tmp / "config.json").string(), config);
      const GenerationConfig gen = load_generation_config(model_dir, cfg);
      nlohmann::json generation = {{"eos_token_id", gen.eos_token_ids}};
      if (gen.bos_token_id) generation["bos_token_id"] = *gen.bos_token_id;
      write_json_file((tmp / "generation_config.json").string(), generation);
      write_gguf_tokenizer_files(*g, tmp.string());
    } else {
      for (const auto& e : fs::directory_iterator(model_dir))
        if (e.is_regular_file() && !is_weight_file(e.path())) fs::copy_file(e.path(), tmp / e.path().filename());
    }
    fs::remove_all(out_dir);  // an empty folder at most (checked above)
    fs::rename(tmp, out_dir);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
  return report;
}

}  // namespace pivotmt
