// libFuzzer target: arbitrary bytes as config.json (Llama family, then M2M100), and as the
// identity files a run folder keeps (ablation_config.json, baseline/baseline_config.json),
// which `ablate` reads back on resume and `report` on every run it compares. Either a valid
// config or an Error.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "experiment/ablation.h"
#include "experiment/baseline.h"
#include "models/m2m100_model.h"
#include "models/model_config.h"
#include "models/weights.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto json = nlohmann::json::parse(std::string_view(reinterpret_cast<const char*>(data), size), nullptr, false);
  if (json.is_discarded()) return 0;
  try {
    const auto config = pivotmt::parse_model_config(json, "fuzz-config");
    // Expected-weight lists are built from the parsed numbers: keep them small enough.
    if (config.num_layers < 1000) (void)pivotmt::parameter_count(pivotmt::llama_weights(config));
    (void)pivotmt::parse_generation_config(json, config, "fuzz-generation");
  } catch (const pivotmt::Error&) {
  }
  try {  // the same bytes as an NLLB-200 (M2M100) config.json
    (void)pivotmt::parse_m2m100_config(json, "fuzz-m2m100");
  } catch (const pivotmt::Error&) {
  }
  try {  // as a run folder's identity files
    (void)pivotmt::AblationConfig::from_identity(json);
  } catch (const pivotmt::Error&) {
  }
  try {
    (void)pivotmt::baseline_from_identity(json);
  } catch (const pivotmt::Error&) {
  }
  return 0;
}
