#include "ablation_view.h"

#include <unistd.h>

#include <cmath>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/progress.h"

namespace pivotmt::cli {

ViewMode choose_view_mode(bool quiet, bool log_json, FILE* out) {
  if (log_json) return ViewMode::Json;  // asked for explicitly: wins over --quiet's bars
  if (quiet || Progress::quiet()) return ViewMode::Quiet;
  return isatty(fileno(out)) ? ViewMode::Terminal : ViewMode::Plain;
}

AblationView::AblationView(ViewMode mode, std::string name, FILE* out) : mode_(mode), name_(std::move(name)), out_(out) {}

void AblationView::update(const AblationProgress& p) {
  last_ = p;
  have_ = true;
  const auto now = std::chrono::steady_clock::now();
  const double interval = mode_ == ViewMode::Terminal ? 0.1 : 10.0;
  if (started_ && std::chrono::duration<double>(now - last_draw_).count() < interval) return;
  started_ = true;
  last_draw_ = now;
  draw(false);
}

void AblationView::finish(const AblationOutcome& outcome) {
  // The final state, unless a plain line already showed exactly it.
  if (have_ && !(mode_ == ViewMode::Plain && drawn_done_ == last_.all_done())) draw(true);
  if (mode_ == ViewMode::Json) {
    nlohmann::ordered_json j = {{"event", "done"},
                        {"run", name_},
                        {"rows_generated", outcome.rows_generated},
                        {"rows_resumed", outcome.rows_resumed},
                        {"prompt_tokens", outcome.prompt_tokens},
                        {"reused_prompt_tokens", outcome.reused_prompt_tokens},
                        {"outputs_written", outcome.outputs_written}};
    if (!outcome.runtime.is_null()) j["runtime"] = outcome.runtime;  // load time, peak memory, GPU use
    fmt::print(out_, "{}\n", j.dump());
    std::fflush(out_);
  }
}

std::string AblationView::overall_line() const {
  const auto& p = last_;
  const size_t done = p.all_done(), total = p.all_total(), new_rows = done - p.resumed;
  const double rows_rate = p.seconds > 0 ? double(new_rows) / p.seconds : 0;
  const double tok_rate = p.seconds > 0 ? double(p.generated_tokens) / p.seconds : 0;
  const double eta = rows_rate > 0 ? double(total - done) / rows_rate : NAN;
  return fmt::format("{}/{} rows, {:.2f} rows/s, {:.0f} tok/s, ETA {}", done, total, rows_rate, tok_rate,
                     done == total ? format_duration(0) : format_duration(eta));
}

void AblationView::draw(bool final) {
  const auto& p = last_;
  switch (mode_) {
    case ViewMode::Quiet: return;
    case ViewMode::Json: {
      nlohmann::ordered_json runs = nlohmann::ordered_json::array();
      for (size_t j = 0; j < p.ks.size(); ++j) runs.push_back({{"k", p.ks[j]}, {"done", p.done[j]}, {"total", p.total[j]}});
      const size_t done = p.all_done(), new_rows = done - p.resumed;
      const double rows_rate = p.seconds > 0 ? double(new_rows) / p.seconds : 0;
      nlohmann::ordered_json j = {{"event", final ? "finished" : "progress"},
                          {"run", name_},
                          {"done", done},
                          {"total", p.all_total()},
                          {"resumed", p.resumed},
                          {"runs", runs},
                          {"seconds", p.seconds},
                          {"rows_per_s", rows_rate},
                          {"tokens_per_s", p.seconds > 0 ? double(p.generated_tokens) / p.seconds : 0},
                          {"generated_tokens", p.generated_tokens},
                          {"prompt_tokens", p.prompt_tokens},
                          {"reused_prompt_tokens", p.reused_prompt_tokens}};
      if (rows_rate > 0) j["eta_s"] = double(p.all_total() - done) / rows_rate;
      fmt::print(out_, "{}\n", j.dump());
      break;
    }
    case ViewMode::Plain: {
      drawn_done_ = p.all_done();
      std::string runs;
      for (size_t j = 0; j < p.ks.size(); ++j) runs += fmt::format(" k={}:{}/{}", p.ks[j], p.done[j], p.total[j]);
      fmt::print(out_, "{}: {} |{}\n", name_, overall_line(), runs);
      break;
    }
    case ViewMode::Terminal: {
      // Back to the first line of the previous drawing, then every line anew.
      std::string text;
      if (lines_drawn_ > 0) text += fmt::format("\x1b[{}F", lines_drawn_);
      auto bar = [](size_t done, size_t total) {
        const int width = 30, fill = total ? int(double(done) / double(total) * width) : width;
        return "[" + std::string(size_t(fill), '#') + std::string(size_t(width - fill), '.') + "]";
      };
      for (size_t j = 0; j < p.ks.size(); ++j)
        text += fmt::format("\x1b[2K  k={:<3} {} {}/{}\n", p.ks[j], bar(p.done[j], p.total[j]), p.done[j], p.total[j]);
      text += fmt::format("\x1b[2K  all   {} {}\n", bar(p.all_done(), p.all_total()), overall_line());
      fmt::print(out_, "{}", text);
      lines_drawn_ = p.ks.size() + 1;
      break;
    }
  }
  std::fflush(out_);
}

}  // namespace pivotmt::cli
