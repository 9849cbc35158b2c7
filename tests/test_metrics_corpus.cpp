// Whole-corpus goldens from sacrebleu 2.6.0's command line: the mini set (Arabic,
// Devanagari, empty lines, a CR inside a line, entities; every tokenizer and smoothing,
// lowercase, eps smoothing, TER normalisation, 1 and 2 references, sentence scores) and
// WMT17 en-de systems (3004 segments, 13a and intl, two references). Files are read the
// way sacrebleu's CLI reads them.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/json_file.h"
#include "metrics/corpus.h"
#include "metrics/scoring.h"
#include "test_util.h"

namespace pivotmt::metrics {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

ScoringOptions options_from(const json& o) {
  ScoringOptions s;
  s.tokenize = o["tokenize"];
  s.lowercase = o["lowercase"];
  s.smooth_method = o["smooth_method"];
  if (!o["smooth_value"].is_null()) s.smooth_value = o["smooth_value"].get<double>();
  s.max_ngram_order = o["max_ngram_order"];
  s.effective_order = o["effective_order"];
  s.chrf_eps_smoothing = o["chrf_eps_smoothing"];
  s.chrf_whitespace = o["chrf_whitespace"];
  s.chrf_beta = o["chrf_beta"];
  s.chrf_char_order = o["chrf_char_order"];
  s.ter = {o["ter_normalized"], o["ter_no_punct"], o["ter_asian_support"], o["ter_case_sensitive"]};
  return s;
}

void expect_close(double got, double want, const std::string& what) {
  EXPECT_NEAR(got, want, 1e-9 * std::max(1.0, std::fabs(want))) << what;
}

std::vector<double> flatten(const json& j) {
  std::vector<double> out;
  for (const auto& v : j) {
    if (v.is_array())
      for (const auto& x : v) out.push_back(x.get<double>());
    else
      out.push_back(v.get<double>());
  }
  return out;
}

void check_golden(const std::string& path) {
  SCOPED_TRACE(path);
  const json g = read_json_file(path);
  const fs::path dir = fs::path(path).parent_path();
  const auto o = g["options"];
  const ScoringOptions options = options_from(o);
  const auto hyps = read_text_lines((dir / o["hyp"].get<std::string>()).string());
  std::vector<std::vector<std::u32string>> refs;
  for (const auto& r : o["refs"]) refs.push_back(read_text_lines((dir / r.get<std::string>()).string()));
  ASSERT_EQ(hyps.size(), g["n_segments"].get<size_t>());
  const int width = o["width"];

  for (const std::string name : {"bleu", "chrf", "chrf++", "ter"}) {
    SCOPED_TRACE(name);
    const auto metric = make_metric(name, options);
    const PreparedReferences prepared(*metric, refs);
    const auto stats = system_statistics(*metric, prepared, hyps);
    const Score s = corpus_score(*metric, stats);
    const json& want = g["corpus"][name];
    expect_close(s.score, want["score"].get<double>(), "score");
    const std::string sig = format_signature(*metric, {prepared.nrefs()}, false);
    EXPECT_EQ(sig, want["signature"].get<std::string>());
    EXPECT_EQ(format_signature(*metric, {prepared.nrefs()}, true), want["signature_short"].get<std::string>());
    EXPECT_EQ(format_score(s, sig, width), want["formatted"].get<std::string>());
    const auto summed = sum_statistics(stats);
    if (name == "bleu") {
      EXPECT_EQ(s.counts, flatten(want["counts"]));
      EXPECT_EQ(s.totals, flatten(want["totals"]));
      EXPECT_EQ(s.sys_len, want["sys_len"].get<double>());
      EXPECT_EQ(s.ref_len, want["ref_len"].get<double>());
      expect_close(s.bp, want["bp"].get<double>(), "bp");
    } else if (name == "ter") {
      EXPECT_EQ(s.num_edits, want["num_edits"].get<double>());
      expect_close(s.ref_length, want["ref_length"].get<double>(), "ref_length");
    } else {
      EXPECT_EQ(summed, flatten(want["stats"]));
    }
    if (!g.contains("sentences") || !g["sentence_signatures"].contains(name)) continue;
    // Sentence level: each segment scored alone (BLEU with effective order).
    const auto sentence_metric = make_metric(name, options, true);
    EXPECT_EQ(format_signature(*sentence_metric, {prepared.nrefs()}, false),
              g["sentence_signatures"][name].get<std::string>());
    for (const auto& sentence : g["sentences"]) {
      const size_t i = sentence["index"];
      if (!sentence.contains(name)) continue;
      EXPECT_EQ(stats[i], flatten(sentence["stats"][name])) << "segment " << i;
      const Score ss = sentence_metric->score_from_stats(stats[i], StatsPrecision::Exact);
      expect_close(ss.score, sentence[name]["score"].get<double>(), fmt::format("sentence {}", i));
    }
  }
}

TEST(MetricsGoldens, MiniSet) {
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(test::fixture("metrics/mini")))
    if (e.path().extension() == ".json") {
      check_golden(e.path().string());
      ++n;
    }
  EXPECT_EQ(n, 10u);
}

TEST(MetricsGoldens, Wmt17Systems) {
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(test::fixture("metrics/wmt17"))) {
    const std::string name = e.path().filename().string();
    if (e.path().extension() != ".json" || name.find("ci1000") != std::string::npos ||
        name.find("paired") != std::string::npos)
      continue;
    check_golden(e.path().string());
    ++n;
  }
  EXPECT_GE(n, 17u);
}

TEST(MetricsInput, InvalidUtf8IsNamed) {
  test::TempDir tmp;
  test::write_file(tmp.str("bad.txt"), "fine\nbad \xff byte\n");
  try {
    read_text_lines(tmp.str("bad.txt"));
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("bad.txt:2"), std::string::npos) << e.what();
  }
  test::write_file(tmp.str("cr.txt"), "a\rb \nlast  ");
  const auto lines = read_text_lines(tmp.str("cr.txt"));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], U"a\rb");  // CR inside a line stays; trailing spaces go
  EXPECT_EQ(lines[1], U"last");
}

}  // namespace
}  // namespace pivotmt::metrics
