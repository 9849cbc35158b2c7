#include "metrics/comet_files.h"

#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "core/error.h"
#include "io/torch_checkpoint.h"

namespace pivotmt::comet {
namespace fs = std::filesystem;

std::string pretrained_model_from_hparams(const std::string& hparams_path) {
  std::ifstream in(hparams_path);
  if (!in) throw Error(fmt::format("{}: cannot read", hparams_path));
  std::string line;
  const std::string key = "pretrained_model:";
  while (std::getline(in, line)) {
    if (!line.starts_with(key)) continue;  // top level only (no indentation)
    std::string v = line.substr(key.size());
    const auto b = v.find_first_not_of(" \t"), e = v.find_last_not_of(" \t\r");
    v = b == std::string::npos ? "" : v.substr(b, e - b + 1);
    if (v.size() >= 2 && (v.front() == '\'' || v.front() == '"') && v.back() == v.front()) v = v.substr(1, v.size() - 2);
    // The hub moved the original XLM-R repos under their organisation.
    if (v == "xlm-roberta-large" || v == "xlm-roberta-base") v = "FacebookAI/" + v;
    return v;
  }
  return "";
}


Location locate(const std::string& model, const std::string& encoder, const std::string& cache_dir,
                const std::function<std::string(const std::string&)>& resolve_hub_id) {
  if (!fs::is_directory(model)) throw Error(fmt::format("COMET model {}: not a directory", model));
  Location loc;
  const fs::path dir(model);
  const fs::path ckpt = dir / "checkpoints" / "model.ckpt";
  if (fs::exists(dir / "model.safetensors")) {
    loc.model_dir = dir.string();
  } else if (fs::exists(ckpt)) {
    if (cache_dir.empty()) throw Error(fmt::format("{}: no folder to convert it into", ckpt.string()));
    const fs::path target = fs::path(cache_dir) / converted_checkpoint_key(ckpt.string());
    convert_checkpoint_once(ckpt.string(), target.string(), "COMET");
    loc.model_dir = target.string();
  } else {
    throw Error(fmt::format("COMET model {}: neither model.safetensors nor checkpoints/model.ckpt", model));
  }
  if (!encoder.empty()) {
    loc.encoder_dir = encoder;
  } else {
    const fs::path hparams = dir / "hparams.yaml";
    const std::string id = fs::exists(hparams) ? pretrained_model_from_hparams(hparams.string()) : "";
    if (id.empty())
      throw Error(fmt::format("COMET model {}: give its encoder (no hparams.yaml naming pretrained_model)", model));
    loc.encoder_dir = fs::is_directory(id) ? id : resolve_hub_id(id);
  }
  if (!fs::exists(fs::path(loc.encoder_dir) / "config.json"))
    throw Error(fmt::format("COMET encoder {}: no config.json", loc.encoder_dir));
  return loc;
}

}  // namespace pivotmt::comet
