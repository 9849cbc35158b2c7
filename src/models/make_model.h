// `pivotmt dev make-model`: complete Hugging Face-format checkpoints with random weights,
// for tests, demos and GPU benchmarks (real code paths without the real 14 GB weights).
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "core/dtype.h"
#include "models/model_config.h"

namespace pivotmt {

struct MakeModelOptions {
  std::string arch = "llama";   // llama | mistral | llama3
  std::string preset = "tiny";  // tiny | small | 7b-shape
  std::string out_dir;
  DType dtype = DType::F16;  // F32 | BF16 | F16
  int shards = 1;
  uint64_t seed = 0;
  std::optional<int64_t> vocab_size;  // overrides the preset's
  std::optional<int64_t> layers;      // overrides the preset's (a 7B-shaped model of 4 layers: the real
                                      // matrix shapes at a fraction of the bytes, for benchmarks)
  std::string tokenizer_dir;          // tokenizer files copied from here when set
  // Writes a Llama-2-style tokenizer whose vocabulary is only the 256 byte tokens (plus
  // <unk> <s> </s> ▁ <|im_end|> <|im_start|>, 262 in all) with TowerInstruct's chat
  // template, and sizes the model to it: a self-contained demo model that needs no
  // downloaded tokenizer. Every text is encoded through byte fallback.
  bool byte_tokenizer = false;
  float std = 0.02f;                  // weights ~ N(0, std); norms ~ 1 + N(0, std)
};

// The config.json object a preset describes (also used by tests and the demo).
nlohmann::json make_model_config_json(const MakeModelOptions& o);

// Writes the checkpoint; returns its parameter count. Values depend only on (seed, tensor
// name), never on sharding or thread count.
uint64_t make_model(const MakeModelOptions& o);

}  // namespace pivotmt
