#include "comet_options.h"

#include <filesystem>

#include "core/error.h"
#include "hub/hub_client.h"

namespace pivotmt::cli {

void add_comet_options(CLI::App* cmd, CometArgs& a) {
  cmd->add_option("--comet-model", a.model,
                  "COMET metric: a hub id (Unbabel/wmt22-comet-da) or a directory with checkpoints/model.ckpt or "
                  "model.safetensors");
  cmd->add_option("--comet-encoder", a.encoder,
                  "COMET's encoder (config.json and tokenizer; hub id or directory); default: the metric's "
                  "hparams.yaml pretrained_model");
  cmd->add_option("--comet-weights", a.weights,
                  "COMET's encoder weights: f32 (unbabel-comet's F32 scores, within 1e-5) | f16 (half the memory; on a "
                  "GPU the tensor cores, several times faster; segment scores moved by 2-3e-5 on the test models: the signature says weights:f16)")
      ->check(CLI::IsMember({"f32", "f16"}))
      ->capture_default_str();
}

comet::Location resolve_comet(const CometArgs& a) {
  if (a.model.empty()) {
    if (!a.encoder.empty()) throw pivotmt::Error("--comet-encoder without --comet-model");
    if (a.weights != "f32") throw pivotmt::Error("--comet-weights without --comet-model");
    return {};
  }
  // The encoder's weights come from the metric's checkpoint: only its config and tokenizer.
  const auto encoder_dir = [](const std::string& id) {
    return resolve_repo_path(id, RepoType::Model,
                             {"config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                              "sentencepiece.bpe.model"});
  };
  const std::string model = resolve_repo_path(a.model, RepoType::Model,
                                              {"checkpoints/model.ckpt", "hparams.yaml", "model.safetensors", "*.json"});
  const std::string encoder = a.encoder.empty() ? "" : encoder_dir(a.encoder);
  const HubConfig hub = HubConfig::from_env();
  const std::string cache = (std::filesystem::path(hub.hf_home) / "pivotmt" / "comet").string();
  comet::Location where = comet::locate(model, encoder, cache, encoder_dir);
  where.name = a.model;
  where.weights = a.weights == "f16" ? DType::F16 : DType::F32;
  return where;
}

}  // namespace pivotmt::cli
