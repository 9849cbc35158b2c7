// The ablation's figures, as PNG and SVG (cairo): the original's 2x2 panel (BLEU, chrF,
// chrF++ against k, then the three together) and a grouped bar chart (one group per k).
#pragma once
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace pivotmt {

struct MetricSeries {
  std::string name;        // "BLEU", "chrF", "chrF++"
  std::vector<double> ks;  // x values
  std::vector<double> values;
  std::optional<double> baseline;  // a reference level drawn as a dashed horizontal line (the NLLB baseline)
};

// BLEU, chrF and chrF++ against k from per-k scores (k -> metric name -> score); a k
// without a metric is left out of that series.
std::vector<MetricSeries> bleu_chrf_series(const std::map<size_t, std::map<std::string, double>>& scores_by_k);

// Writes {path_stem}.png and {path_stem}.svg.
void plot_metrics_vs_k(const std::vector<MetricSeries>& series, const std::string& title, const std::string& path_stem);
void plot_grouped_bars(const std::vector<MetricSeries>& series, const std::string& title, const std::string& path_stem);
// One metric against k in a panel of its own (COMET, on its own scale; the axis goes below
// zero when a value does).
void plot_metric_vs_k(const MetricSeries& series, const std::string& title, const std::string& path_stem);
// Training (and evaluation) loss against the optimiser step.
void plot_loss_curve(const std::vector<MetricSeries>& series, const std::string& title, const std::string& path_stem);

}  // namespace pivotmt
