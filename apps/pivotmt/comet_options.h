// --comet-model / --comet-encoder, shared by score, ablate and report: hub ids downloaded
// (only the files COMET needs), a Lightning checkpoint converted once (comet_files.h).
#pragma once
#include <string>

#include <CLI/CLI.hpp>

#include "metrics/comet_files.h"

namespace pivotmt::cli {

struct CometArgs {
  std::string model, encoder;
  std::string weights = "f32";  // --comet-weights: f32 | f16
};

void add_comet_options(CLI::App* cmd, CometArgs& args);

// Local directories for comet::Model; both empty when no --comet-model was given.
comet::Location resolve_comet(const CometArgs& args);

}  // namespace pivotmt::cli
