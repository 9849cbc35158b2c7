// Where comet::Model's two directories come from, given what a user names: the metric
// (a directory holding model.safetensors, or a download of its hub repo: checkpoints/
// model.ckpt and hparams.yaml) and its encoder (config.json and tokenizer; when not given,
// hparams.yaml's pretrained_model names it). A Lightning checkpoint is converted once to
// safetensors in a cache folder (TorchCheckpoint: its pickle is never executed) and reused.
#pragma once
#include <functional>
#include <string>

#include "core/dtype.h"

namespace pivotmt::comet {

struct Location {
  std::string model_dir;    // holds model.safetensors (the state dict, COMET's names)
  std::string encoder_dir;  // holds config.json and the tokenizer
  std::string name;         // the model as the user named it (a hub id, a folder), for signatures
  DType weights = DType::F32;  // how the encoder stores its weights (comet::Model)
};

// `model`: a directory as above. `encoder`: a directory, or empty to take hparams.yaml's
// pretrained_model, which `resolve_hub_id` turns into a directory (the CLI downloads it).
// `cache_dir`: where converted checkpoints go, one folder per checkpoint (named by its
// SHA-256 when the Hugging Face cache names its blob so, else by its path, size and time).
// Throws naming what is missing.
Location locate(const std::string& model, const std::string& encoder, const std::string& cache_dir,
                const std::function<std::string(const std::string& hub_id)>& resolve_hub_id);

// hparams.yaml's top-level `pretrained_model:` value ("" when absent); the hub's legacy
// short names of XLM-R (xlm-roberta-large, -base) given with their organisation.
std::string pretrained_model_from_hparams(const std::string& hparams_path);

}  // namespace pivotmt::comet
