// `pivotmt inspect`: what a checkpoint is and what it will cost to run.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace pivotmt {

// Loads config.json and the safetensors headers of `model_dir`, verifies every tensor the
// architecture needs (throws naming the first missing or mis-shaped one) and returns the
// report as JSON (keys documented in docs/CLI.md).
nlohmann::json inspect_model(const std::string& model_dir);

// The report as aligned human-readable text.
std::string format_inspect_report(const nlohmann::json& report);

}  // namespace pivotmt
