#include "core/progress.h"

#include <unistd.h>

#include <atomic>
#include <cmath>

#include <fmt/format.h>

namespace pivotmt {
namespace {
std::atomic<bool> g_quiet{false};
}

std::string format_bytes(double b) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1000.0 && u < 4) {
    b /= 1000.0;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} {}", b, units[u]) : fmt::format("{:.1f} {}", b, units[u]);
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "--:--";
  const auto t = static_cast<long long>(s + 0.5);
  if (t >= 3600) return fmt::format("{}:{:02}:{:02}", t / 3600, (t / 60) % 60, t % 60);
  return fmt::format("{:02}:{:02}", t / 60, t % 60);
}

void Progress::set_quiet(bool quiet) { g_quiet = quiet; }
bool Progress::quiet() { return g_quiet; }

Progress::Progress(std::string label, uint64_t total, ProgressUnit unit, FILE* out)
    : label_(std::move(label)), total_(total), unit_(unit), out_(out), tty_(isatty(fileno(out)) != 0) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

Progress::~Progress() {
  if (!finished_ && done_ > 0) draw(true);
}

void Progress::set(uint64_t done) {
  if (!start_set_) {  // a resumed download starts part-way: rate counts only new work
    start_done_ = done;
    start_set_ = true;
  }
  done_ = done;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_draw_).count();
  if (since >= (tty_ ? 0.1 : 5.0)) {
    last_draw_ = now;
    draw(false);
  }
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  draw(true);
}

void Progress::draw(bool final) {
  if (g_quiet) return;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = elapsed > 0 ? double(done_ - start_done_) / elapsed : 0.0;
  auto amount = [&](double v) { return unit_ == ProgressUnit::Bytes ? format_bytes(v) : fmt::format("{:.0f}", v); };
  // Slow items (a fine-tuning step of seconds) as seconds each, not "0/s".
  auto speed = [&](double r) {
    if (unit_ == ProgressUnit::Bytes) return format_bytes(r) + "/s";
    if (r >= 10) return fmt::format("{:.0f}/s", r);
    if (r >= 1) return fmt::format("{:.1f}/s", r);
    if (r > 0) return fmt::format("{:.1f} s each", 1 / r);
    return std::string("-/s");
  };
  std::string line;
  if (total_ > 0) {
    const double frac = std::min(1.0, double(done_) / double(total_));
    const double eta = rate > 0 ? double(total_ - std::min(total_, done_)) / rate : NAN;
    std::string bar;
    if (tty_) {
      const int width = 24, fill = static_cast<int>(frac * width);
      bar = "[" + std::string(fill, '#') + std::string(width - fill, '.') + "] ";
    }
    line = fmt::format("{} {}{:3.0f}% {}/{} {} ETA {}", label_, bar, frac * 100, amount(done_), amount(total_),
                       speed(rate), final ? format_duration(0) : format_duration(eta));
  } else {
    line = fmt::format("{} {} {}", label_, amount(done_), speed(rate));
  }
  if (final) line += fmt::format(" (done in {})", format_duration(elapsed));
  if (tty_) {
    fmt::print(out_, "\r\033[K{}{}", line, final ? "\n" : "");
  } else {
    fmt::print(out_, "{}\n", line);
  }
  std::fflush(out_);
}

}  // namespace pivotmt
