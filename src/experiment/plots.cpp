#include "experiment/plots.h"

#include <cairo-svg.h>
#include <cairo.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include <fmt/format.h>

#include "core/error.h"

namespace pivotmt {
namespace {

struct Rgb {
  double r, g, b;
};
const Rgb kColors[] = {{0.12, 0.47, 0.71}, {1.0, 0.50, 0.05}, {0.17, 0.63, 0.17}, {0.84, 0.15, 0.16}};

// Draws the same figure onto a PNG and an SVG surface.
void render_both(const std::string& stem, int width, int height, const std::function<void(cairo_t*)>& draw) {
  cairo_surface_t* png = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, width, height);
  cairo_surface_t* svg = cairo_svg_surface_create((stem + ".svg").c_str(), width, height);
  for (cairo_surface_t* s : {png, svg}) {
    cairo_t* cr = cairo_create(s);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    draw(cr);
    cairo_destroy(cr);
  }
  const cairo_status_t png_status = cairo_surface_write_to_png(png, (stem + ".png").c_str());
  cairo_surface_finish(svg);
  const cairo_status_t svg_status = cairo_surface_status(svg);
  cairo_surface_destroy(png);
  cairo_surface_destroy(svg);
  if (png_status != CAIRO_STATUS_SUCCESS || svg_status != CAIRO_STATUS_SUCCESS)
    throw Error(fmt::format("cannot write {}.png / {}.svg: {}", stem, stem,
                            cairo_status_to_string(png_status != CAIRO_STATUS_SUCCESS ? png_status : svg_status)));
}

void text(cairo_t* cr, double x, double y, const std::string& s, double size, double align = 0.0, bool bold = false) {
  cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, size);
  cairo_text_extents_t e;
  cairo_text_extents(cr, s.c_str(), &e);
  cairo_move_to(cr, x - align * e.x_advance, y);
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  cairo_show_text(cr, s.c_str());
}

// A "nice" upper bound and tick step for values in [0, hi].
std::pair<double, double> nice_axis(double hi) {
  if (!(hi > 0)) hi = 1;
  const double raw = hi / 5, mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  return {std::ceil(hi / step) * step, step};
}

struct Frame {
  double x0, y0, w, h;  // the plotting area (y0 at the top)
  double xmin, xmax, ymax;
  double ymin = 0;  // below zero only for metrics that go negative (COMET)
  double px(double x) const { return x0 + (xmax > xmin ? (x - xmin) / (xmax - xmin) : 0.5) * w; }
  double py(double y) const { return y0 + h - (y - ymin) / (ymax - ymin) * h; }
};

// Axes, y grid and labels; returns the frame to draw in.
Frame axes(cairo_t* cr, double x, double y, double w, double h, double xmin, double xmax, double yhi,
           const std::string& title, const std::string& ylabel, const std::vector<double>& xticks,
           const std::string& xlabel = "k (examples)", double ylo = 0) {
  // Negative values: the axis extends below zero by whole steps of the span's scale.
  const auto [ymax, step] = nice_axis(ylo < 0 ? std::max(yhi, 0.0) - ylo : yhi);
  const double ymin = ylo < 0 ? -std::ceil(-ylo / step) * step : 0.0;
  const double top = ylo < 0 ? ymin + std::ceil((std::max(yhi, 0.0) - ymin) / step) * step : ymax;
  Frame f{x + 55, y + 30, w - 75, h - 75, xmin, xmax, top, ymin};
  text(cr, x + w / 2, y + 18, title, 14, 0.5, true);
  cairo_set_line_width(cr, 1);
  for (double v = f.ymin; v <= f.ymax + step / 2; v += step) {
    cairo_set_source_rgb(cr, 0.88, 0.88, 0.88);
    cairo_move_to(cr, f.x0, f.py(v));
    cairo_line_to(cr, f.x0 + f.w, f.py(v));
    cairo_stroke(cr);
    text(cr, f.x0 - 6, f.py(v) + 4, fmt::format("{:g}", v), 10, 1.0);
  }
  for (double k : xticks) text(cr, f.px(k), f.y0 + f.h + 15, fmt::format("{:g}", k), 10, 0.5);
  text(cr, f.x0 + f.w / 2, f.y0 + f.h + 33, xlabel, 11, 0.5);
  cairo_save(cr);
  cairo_translate(cr, x + 14, f.y0 + f.h / 2);
  cairo_rotate(cr, -M_PI / 2);
  text(cr, 0, 0, ylabel, 11, 0.5);
  cairo_restore(cr);
  cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
  cairo_rectangle(cr, f.x0, f.y0, f.w, f.h);
  cairo_stroke(cr);
  return f;
}

void line_series(cairo_t* cr, const Frame& f, const MetricSeries& s, const Rgb& c, bool markers = true) {
  cairo_set_source_rgb(cr, c.r, c.g, c.b);
  cairo_set_line_width(cr, markers ? 2 : 1.5);
  for (size_t i = 0; i < s.ks.size(); ++i) {
    if (i == 0) cairo_move_to(cr, f.px(s.ks[i]), f.py(s.values[i]));
    else cairo_line_to(cr, f.px(s.ks[i]), f.py(s.values[i]));
  }
  cairo_stroke(cr);
  for (size_t i = 0; markers && i < s.ks.size(); ++i) {
    cairo_arc(cr, f.px(s.ks[i]), f.py(s.values[i]), 3.5, 0, 2 * M_PI);
    cairo_fill(cr);
  }
}

// The series' baseline (the NLLB baseline's score) as a dashed line across the frame,
// labelled at its right end.
void baseline_line(cairo_t* cr, const Frame& f, const MetricSeries& s, const Rgb& c) {
  if (!s.baseline) return;
  const double y = f.py(*s.baseline);
  cairo_save(cr);
  cairo_set_source_rgb(cr, c.r, c.g, c.b);
  cairo_set_line_width(cr, 1.5);
  const double dash[] = {6.0, 4.0};
  cairo_set_dash(cr, dash, 2, 0);
  cairo_move_to(cr, f.x0, y);
  cairo_line_to(cr, f.x0 + f.w, y);
  cairo_stroke(cr);
  cairo_restore(cr);
  text(cr, f.x0 + f.w - 4, y - 4, "baseline", 9, 1.0);
}

// The largest value of a series, its baseline included.
double series_max(const MetricSeries& s) {
  double hi = *std::max_element(s.values.begin(), s.values.end());
  return s.baseline ? std::max(hi, *s.baseline) : hi;
}

void legend(cairo_t* cr, double x, double y, const std::vector<MetricSeries>& series) {
  for (size_t i = 0; i < series.size(); ++i) {
    const Rgb& c = kColors[i % 4];
    cairo_set_source_rgb(cr, c.r, c.g, c.b);
    cairo_rectangle(cr, x, y + 16 * double(i) - 9, 12, 10);
    cairo_fill(cr);
    text(cr, x + 17, y + 16 * double(i), series[i].name, 11);
  }
}

void check(const std::vector<MetricSeries>& series) {
  if (series.empty()) throw Error("plot: no series");
  for (const auto& s : series)
    if (s.ks.size() != s.values.size() || s.ks.empty()) throw Error("plot: series " + s.name + " has mismatched or no points");
}

}  // namespace

std::vector<MetricSeries> bleu_chrf_series(const std::map<size_t, std::map<std::string, double>>& scores_by_k) {
  std::vector<MetricSeries> series;
  for (const char* metric : {"BLEU", "chrF", "chrF++"}) {
    MetricSeries m{metric, {}, {}, std::nullopt};
    for (const auto& [k, scores] : scores_by_k)
      if (const auto it = scores.find(metric); it != scores.end()) {
        m.ks.push_back(double(k));
        m.values.push_back(it->second);
      }
    series.push_back(std::move(m));
  }
  return series;
}

void plot_metrics_vs_k(const std::vector<MetricSeries>& series, const std::string& title, const std::string& path_stem) {
  check(series);
  double xmin = 1e300, xmax = -1e300, yall = 0;
  std::vector<double> xticks = series[0].ks;
  for (const auto& s : series)
    for (size_t i = 0; i < s.ks.size(); ++i) {
      xmin = std::min(xmin, s.ks[i]);
      xmax = std::max(xmax, s.ks[i]);
      yall = std::max(yall, s.values[i]);
    }
  for (const auto& s : series) yall = std::max(yall, series_max(s));
  const int W = 1000, H = 760;
  render_both(path_stem, W, H, [&](cairo_t* cr) {
    text(cr, W / 2.0, 24, title, 16, 0.5, true);
    // Panels 1-3: one metric each; panel 4: all together.
    for (size_t p = 0; p < 4; ++p) {
      const double x = (p % 2) * W / 2.0, y = 36 + (p / 2) * (H - 36) / 2.0;
      if (p < series.size() && p < 3) {
        const auto& s = series[p];
        const Frame f = axes(cr, x, y, W / 2.0, (H - 36) / 2.0, xmin, xmax, series_max(s), s.name + " vs k", s.name, xticks);
        baseline_line(cr, f, s, kColors[p % 4]);
        line_series(cr, f, s, kColors[p % 4]);
      } else if (p == 3) {
        const Frame f = axes(cr, x, y, W / 2.0, (H - 36) / 2.0, xmin, xmax, yall, "All metrics vs k", "score", xticks);
        for (size_t i = 0; i < series.size(); ++i) {
          baseline_line(cr, f, series[i], kColors[i % 4]);
          line_series(cr, f, series[i], kColors[i % 4]);
        }
        legend(cr, f.x0 + 10, f.y0 + 16, series);
      }
    }
  });
}

void plot_grouped_bars(const std::vector<MetricSeries>& series, const std::string& title, const std::string& path_stem) {
  check(series);
  const auto& ks = series[0].ks;
  double yhi = 0;
  for (const auto& s : series) {
    if (s.ks != ks) throw Error("plot: grouped bars need the same k values in every series");
    yhi = std::max(yhi, series_max(s));
  }
  const int W = 1000, H = 520;
  render_both(path_stem, W, H, [&](cairo_t* cr) {
    // Bars sit at group positions 0..n-1, labelled with their k.
    const double n = double(ks.size());
    Frame f = axes(cr, 0, 0, W - 120, H, -0.5, n - 0.5, yhi * 1.1, title, "score", {});
    const double group = f.w / n, bar = group * 0.8 / double(series.size());
    for (size_t g = 0; g < ks.size(); ++g) {
      const double gx = f.px(double(g)) - group * 0.4;
      for (size_t i = 0; i < series.size(); ++i) {
        const Rgb& c = kColors[i % 4];
        const double v = series[i].values[g];
        cairo_set_source_rgb(cr, c.r, c.g, c.b);
        cairo_rectangle(cr, gx + bar * double(i), f.py(v), bar * 0.95, f.py(0) - f.py(v));
        cairo_fill(cr);
        if (bar > 22) text(cr, gx + bar * (double(i) + 0.5), f.py(v) - 3, fmt::format("{:.1f}", v), 8, 0.5);
      }
      text(cr, f.px(double(g)), f.y0 + f.h + 15, fmt::format("{:g}", ks[g]), 10, 0.5);
    }
    for (size_t i = 0; i < series.size(); ++i) baseline_line(cr, f, series[i], kColors[i % 4]);
    legend(cr, f.x0 + f.w + 15, f.y0 + 20, series);
  });
}

}  // namespace pivotmt

namespace pivotmt {

void plot_metric_vs_k(const MetricSeries& s, const std::string& title, const std::string& path_stem) {
  check({s});
  const double lo = std::min(*std::min_element(s.values.begin(), s.values.end()), s.baseline.value_or(0.0));
  const double hi = series_max(s);
  const int W = 620, H = 420;
  render_both(path_stem, W, H, [&](cairo_t* cr) {
    const Frame f = axes(cr, 0, 0, W, H, s.ks.front(), s.ks.back(), hi, title, s.name, s.ks, "k (examples)",
                         std::min(lo, 0.0));
    baseline_line(cr, f, s, kColors[0]);
    line_series(cr, f, s, kColors[0]);
  });
}

void plot_loss_curve(const std::vector<MetricSeries>& series, const std::string& title, const std::string& path_stem) {
  check(series);
  double xmin = 1e300, xmax = -1e300, yhi = 0;
  for (const auto& s : series)
    for (size_t i = 0; i < s.ks.size(); ++i) {
      xmin = std::min(xmin, s.ks[i]);
      xmax = std::max(xmax, s.ks[i]);
      yhi = std::max(yhi, s.values[i]);
    }
  std::vector<double> xticks;  // about eight round step numbers
  const double span = std::max(1.0, xmax - xmin);
  const double tick = std::max(1.0, std::round(nice_axis(span * 5.0 / 8.0).second));  // whole steps
  for (double t = std::ceil(xmin / tick) * tick; t <= xmax; t += tick) xticks.push_back(t);
  const int W = 900, H = 520;
  render_both(path_stem, W, H, [&](cairo_t* cr) {
    const Frame f = axes(cr, 0, 0, W - 130, H, xmin, xmax, yhi * 1.05, title, "loss", xticks, "optimiser step");
    // Many points: lines without markers.
    for (size_t i = 0; i < series.size(); ++i) line_series(cr, f, series[i], kColors[i % 4], series[i].ks.size() <= 60);
    legend(cr, f.x0 + f.w + 15, f.y0 + 20, series);
  });
}

}  // namespace pivotmt
