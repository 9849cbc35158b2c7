// Progress reporting for long work (downloads now; generation and ablations later).
// On a terminal: one redrawn line with a bar, amounts, rate and ETA. Otherwise: a plain
// line at most every few seconds, so logs of batch jobs stay readable.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace pivotmt {

enum class ProgressUnit { Bytes, Items };

class Progress {
 public:
  // total 0 means unknown. `out` is normally stderr.
  Progress(std::string label, uint64_t total, ProgressUnit unit, FILE* out = stderr);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void set(uint64_t done);  // absolute amount done so far
  void finish();            // prints the final line once
  static void set_quiet(bool quiet);  // process-wide: no progress output at all
  static bool quiet();

 private:
  void draw(bool final);
  std::string label_;
  uint64_t total_;
  uint64_t done_ = 0;
  uint64_t start_done_ = 0;
  bool start_set_ = false;
  ProgressUnit unit_;
  FILE* out_;
  bool tty_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

std::string format_bytes(double bytes);
std::string format_duration(double seconds);

}  // namespace pivotmt
