// How `pivotmt ablate` shows its progress: on a terminal, a live bar per k run and one
// overall (rows/s, generated tokens/s, ETA), redrawn in place; otherwise a plain log line
// every few seconds; with --log-json, one JSON object per line (for cluster log
// collectors); nothing with --quiet.
#pragma once
#include <chrono>
#include <cstdio>
#include <string>

#include "experiment/ablation.h"

namespace pivotmt::cli {

enum class ViewMode { Quiet, Terminal, Plain, Json };

class AblationView {
 public:
  AblationView(ViewMode mode, std::string name, FILE* out = stderr);
  void update(const AblationProgress& p);  // throttled
  // The last state, drawn once more, and (JSON) a "done" event with the outcome.
  void finish(const AblationOutcome& outcome);

 private:
  void draw(bool final);
  std::string overall_line() const;
  ViewMode mode_;
  std::string name_;
  FILE* out_;
  AblationProgress last_;
  bool have_ = false, started_ = false;
  size_t lines_drawn_ = 0;
  size_t drawn_done_ = size_t(-1);  // rows done at the last plain line
  std::chrono::steady_clock::time_point last_draw_{};
};

// Terminal when `out` is one, else plain; Json or Quiet when asked.
ViewMode choose_view_mode(bool quiet, bool log_json, FILE* out = stderr);

}  // namespace pivotmt::cli
