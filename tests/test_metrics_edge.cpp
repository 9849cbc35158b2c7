// sacrebleu 2.6.0's own outputs on 119 edge cases (../shared/fixtures/metrics/edge_cases.json):
// tokenizers, BLEU (corpus and sentence, every smoothing, orders, lowercase, tokenizers),
// chrF/chrF++ (beta, eps smoothing, whitespace, multi-reference ties) and TER (shifts,
// normalisation, Asian support, empty sides). Scores within 1e-9 relative; statistics
// and signatures exactly.
#include <gtest/gtest.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/json_file.h"
#include "metrics/bleu.h"
#include "metrics/chrf.h"
#include "metrics/corpus.h"
#include "metrics/ter.h"
#include "metrics/tokenizers.h"
#include "test_util.h"
#include "text/unicode.h"

namespace pivotmt::metrics {
namespace {
using json = nlohmann::json;

const json& cases() {
  static const json all = read_json_file(test::fixture("metrics/edge_cases.json"))["cases"];
  return all;
}

std::unique_ptr<Metric> metric_for(const std::string& name, const json& kw) {
  if (name == "bleu") {
    BleuOptions o;
    if (kw.contains("lowercase")) o.lowercase = kw["lowercase"];
    if (kw.contains("tokenize")) o.tokenize = kw["tokenize"];
    if (kw.contains("smooth_method")) o.smooth_method = kw["smooth_method"];
    if (kw.contains("smooth_value") && !kw["smooth_value"].is_null()) o.smooth_value = kw["smooth_value"].get<double>();
    if (kw.contains("max_ngram_order")) o.max_ngram_order = kw["max_ngram_order"];
    if (kw.contains("effective_order")) o.effective_order = kw["effective_order"];
    return std::make_unique<Bleu>(o);
  }
  if (name == "chrf") {
    ChrfOptions o;
    if (kw.contains("char_order")) o.char_order = kw["char_order"];
    if (kw.contains("word_order")) o.word_order = kw["word_order"];
    if (kw.contains("beta")) o.beta = kw["beta"];
    if (kw.contains("lowercase")) o.lowercase = kw["lowercase"];
    if (kw.contains("whitespace")) o.whitespace = kw["whitespace"];
    if (kw.contains("eps_smoothing")) o.eps_smoothing = kw["eps_smoothing"];
    return std::make_unique<Chrf>(o);
  }
  TercomOptions o;
  if (kw.contains("normalized")) o.normalized = kw["normalized"];
  if (kw.contains("no_punct")) o.no_punct = kw["no_punct"];
  if (kw.contains("asian_support")) o.asian_support = kw["asian_support"];
  if (kw.contains("case_sensitive")) o.case_sensitive = kw["case_sensitive"];
  return std::make_unique<Ter>(o);
}

void expect_close(double got, double want, const std::string& what) {
  const double tol = 1e-9 * std::max(1.0, std::fabs(want));
  EXPECT_NEAR(got, want, tol) << what;
}

TEST(MetricsEdgeCases, Tokenizers) {
  size_t checked = 0;
  for (const auto& c : cases()) {
    if (c["metric"] != "tokenize") continue;
    const auto input = utf8_to_u32(c["input"].get<std::string>());
    const auto& e = c["expected"];
    const std::string id = c["id"];
    EXPECT_EQ(u32_to_utf8(tokenize_13a(input)), e["13a"].get<std::string>()) << id;
    EXPECT_EQ(u32_to_utf8(tokenize_intl(input)), e["intl"].get<std::string>()) << id;
    EXPECT_EQ(u32_to_utf8(tokenize_char(input)), e["char"].get<std::string>()) << id;
    EXPECT_EQ(u32_to_utf8(tokenize_zh(input)), e["zh"].get<std::string>()) << id;
    // The fixture gives TER's tokens joined by single spaces (TER only ever split()s).
    auto ter = [&](TercomOptions o) { return u32_to_utf8(py_normalize_spaces(tokenize_tercom(input, o))); };
    EXPECT_EQ(ter({}), e["tercom_default"].get<std::string>()) << id;
    EXPECT_EQ(ter({.normalized = true}), e["tercom_normalized"].get<std::string>()) << id;
    EXPECT_EQ(ter({.normalized = true, .no_punct = true, .asian_support = true}),
              e["tercom_norm_nopunct_asian"].get<std::string>())
        << id;
    ++checked;
  }
  EXPECT_EQ(checked, 11u);
}

TEST(MetricsEdgeCases, Scores) {
  size_t checked = 0;
  for (const auto& c : cases()) {
    if (c["metric"] == "tokenize") continue;
    const std::string id = c["id"];
    SCOPED_TRACE(id);
    const auto metric = metric_for(c["metric"], c["kwargs"]);
    std::vector<std::u32string> hyps;
    for (const auto& h : c["hyps"]) hyps.push_back(utf8_to_u32(h.get<std::string>()));
    std::vector<std::vector<std::optional<std::u32string>>> refs;
    for (const auto& stream : c["refs"]) {
      refs.emplace_back();
      for (const auto& r : stream)
        refs.back().push_back(r.is_null() ? std::nullopt : std::optional(utf8_to_u32(r.get<std::string>())));
    }
    const PreparedReferences prepared(*metric, refs);
    const auto stats = system_statistics(*metric, prepared, hyps);
    const auto& e = c["expected"];
    ASSERT_EQ(stats.size(), e["segment_stats"].size());
    for (size_t i = 0; i < stats.size(); ++i) {
      std::vector<double> want;
      for (const auto& v : e["segment_stats"][i]) want.push_back(v.get<double>());
      EXPECT_EQ(stats[i], want) << "segment " << i;
    }
    const Score s = corpus_score(*metric, stats);
    expect_close(s.score, e["score"].get<double>(), "score");
    EXPECT_EQ(format_signature(*metric, {prepared.nrefs()}, false), e["signature"].get<std::string>());
    if (c["metric"] == "bleu") {
      for (size_t n = 0; n < s.precisions.size(); ++n) {
        expect_close(s.precisions[n], e["precisions"][n].get<double>(), "precision");
        EXPECT_EQ(s.counts[n], e["counts"][n].get<double>());
        EXPECT_EQ(s.totals[n], e["totals"][n].get<double>());
      }
      expect_close(s.bp, e["bp"].get<double>(), "bp");
      EXPECT_EQ(s.sys_len, e["sys_len"].get<double>());
      EXPECT_EQ(s.ref_len, e["ref_len"].get<double>());
    }
    if (c["metric"] == "ter") {
      EXPECT_EQ(s.num_edits, e["num_edits"].get<double>());
      expect_close(s.ref_length, e["ref_length"].get<double>(), "ref_length");
    }
    if (c.contains("upstream_expected")) {  // sacrebleu's own test suite's value
      EXPECT_NEAR(s.score, c["upstream_expected"][0].get<double>(), c["upstream_expected"][1].get<double>());
    }
    ++checked;
  }
  EXPECT_EQ(checked, 108u);
}

}  // namespace
}  // namespace pivotmt::metrics

namespace pivotmt::metrics {
namespace {

// The FLORES tokenizers run any SentencePiece model; here the Llama-2 one, whose pieces
// for this sentence are known ("▁Hello", "▁world").
TEST(MetricsTokenizers, SentencePieceTokenizer) {
  const auto tok = make_bleu_tokenizer("flores200", test::fixture("tokenizers/llama-2/tokenizer.model"));
  EXPECT_EQ(tok->signature(), "flores200");
  EXPECT_EQ(u32_to_utf8((*tok)(U"Hello world")), "▁Hello ▁world");
  try {
    make_bleu_tokenizer("flores101");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--spm-model"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_bleu_tokenizer("flores101", "/nonexistent.model"), Error);
  EXPECT_THROW(make_bleu_tokenizer("moses"), Error);
}

}  // namespace
}  // namespace pivotmt::metrics
