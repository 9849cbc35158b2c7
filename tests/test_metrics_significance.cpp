// numpy's generator reproduced bit for bit (../shared/fixtures/metrics/golden_rng_vectors.json,
// numpy 1.24), and sacrebleu 2.6.0's bootstrap interval and paired tests on WMT17.
#include <gtest/gtest.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "io/json_file.h"
#include "metrics/corpus.h"
#include "metrics/numpy_random.h"
#include "metrics/scoring.h"
#include "metrics/significance.h"
#include "test_util.h"

namespace pivotmt::metrics {
namespace {
using json = nlohmann::json;

std::string u128_to_string(unsigned __int128 v) {
  std::string s;
  do {
    s.insert(s.begin(), char('0' + int(v % 10)));
    v /= 10;
  } while (v != 0);
  return s;
}

const json& rng_golden() {
  static const json g = read_json_file(test::fixture("metrics/golden_rng_vectors.json"));
  return g;
}

TEST(NumpyRandom, SeedSequenceAndPcg64State) {
  const auto& g = rng_golden();
  const auto state = seed_sequence_state(g["seed"].get<uint64_t>(), 4);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(state[i], g["seedsequence_generate_state_uint64x4"][i].get<uint64_t>());
  Pcg64 rng(g["seed"].get<uint64_t>());
  EXPECT_EQ(u128_to_string(rng.state()), g["pcg64_state"].get<std::string>());
  EXPECT_EQ(u128_to_string(rng.increment()), g["pcg64_inc"].get<std::string>());
  for (const auto& want : g["pcg64_first_raw_uint64"]) EXPECT_EQ(std::to_string(rng.next_uint64()), want.get<std::string>());
}

TEST(NumpyRandom, ChoiceRows) {
  for (const auto& [n_text, rows] : rng_golden()["choice"].items()) {
    const int64_t n = std::stoll(n_text);
    const size_t n_rows = 2;
    const auto draws = Pcg64(12345).choice(n, n_rows * size_t(n));
    const auto& row0 = rows["row0_first_32"];
    const auto& row1 = rows["row1_first_8"];
    for (size_t i = 0; i < row0.size(); ++i) EXPECT_EQ(draws[i], row0[i].get<int64_t>()) << "N=" << n << " i=" << i;
    for (size_t i = 0; i < row1.size(); ++i)
      EXPECT_EQ(draws[size_t(n) + i], row1[i].get<int64_t>()) << "N=" << n << " row 1 i=" << i;
  }
}

TEST(NumpyRandom, BoolMasks) {
  for (const auto& [n_text, row] : rng_golden()["ar_bool_mask_first_row_first_64"].items()) {
    const size_t n = std::stoul(n_text);
    const auto bits = Pcg64(12345).random_bools(2 * n);
    for (size_t i = 0; i < row.size(); ++i) EXPECT_EQ(int(bits[i]), row[i].get<int>()) << "N=" << n << " i=" << i;
  }
}

TEST(NumpyRandom, PairwiseSumMatchesDefinition) {
  std::vector<double> x(1000);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 1.0 / double(i + 3);
  double plain = 0;
  for (double v : x) plain += v;
  EXPECT_NEAR(numpy_sum(x.data(), x.size()), plain, 1e-12);
  EXPECT_EQ(numpy_sum(x.data(), 5), x[0] + (((0.0 + x[1]) + x[2]) + x[3]) + x[4]);
}

struct Wmt17 {
  std::vector<std::u32string> ref;
  std::vector<std::vector<std::u32string>> systems;  // online-B (baseline), uedin-nmt, xmu
};
const Wmt17& wmt17() {
  static const Wmt17 data = [] {
    const std::string dir = test::fixture("metrics/wmt17/");
    Wmt17 d;
    d.ref = read_text_lines(dir + "ref.txt");
    for (const char* f : {"online-B.0.en-de.txt", "uedin-nmt.4722.en-de.txt", "xmu.4910.en-de.txt"})
      d.systems.push_back(read_text_lines(dir + f));
    return d;
  }();
  return data;
}

// "Within float32 rounding": the resampled statistics are float32 sums, so means and
// intervals can differ from sacrebleu's in the last float32 digits of a score.
void expect_f32_close(double got, double want, const std::string& what) {
  EXPECT_NEAR(got, want, 1e-6 * std::max(1.0, std::fabs(want))) << what;
}

TEST(Significance, BootstrapConfidenceInterval) {
  const json g = read_json_file(test::fixture("metrics/wmt17/wmt17.online-B.0.en-de.13a.ci1000.json"));
  for (const std::string name : {"bleu", "chrf", "chrf++", "ter"}) {
    SCOPED_TRACE(name);
    const auto metric = make_metric(name, ScoringOptions{});
    const PreparedReferences refs(*metric, std::vector<std::vector<std::u32string>>{wmt17().ref});
    const auto stats = system_statistics(*metric, refs, wmt17().systems[0]);
    const Interval iv = bootstrap_interval(*metric, stats, 1000, kDefaultSeed, true);
    const auto& want = g["corpus"][name];
    expect_f32_close(iv.mean, want["bootstrap_mean"].get<double>(), "mean");
    expect_f32_close(iv.ci, want["bootstrap_ci95_halfwidth"].get<double>(), "ci");
    Score s = corpus_score(*metric, stats);
    s.mean = iv.mean;
    s.ci = iv.ci;
    const std::string sig = format_signature(*metric, {refs.nrefs(), 1000, std::nullopt, "12345"}, false);
    EXPECT_EQ(sig, want["signature"].get<std::string>());
    EXPECT_EQ(format_signature(*metric, {refs.nrefs(), 1000, std::nullopt, "12345"}, true),
              want["signature_short"].get<std::string>());
    EXPECT_EQ(format_score(s, sig, 4), want["formatted"].get<std::string>());
  }
}

void check_paired(const std::string& file, bool bootstrap) {
  const json g = read_json_file(test::fixture("metrics/wmt17/" + file));
  const std::map<std::string, std::string> metrics = {{"BLEU", "bleu"}, {"chrF2", "chrf"}, {"TER", "ter"}};
  for (const auto& [key, name] : metrics) {
    if (!g[0].contains(key)) continue;
    SCOPED_TRACE(key);
    const auto metric = make_metric(name, ScoringOptions{});
    const PreparedReferences refs(*metric, std::vector<std::vector<std::u32string>>{wmt17().ref});
    std::vector<SegmentStats> systems;
    for (const auto& hyps : wmt17().systems) systems.push_back(system_statistics(*metric, refs, hyps));
    const auto results = bootstrap ? paired_bootstrap(*metric, systems, 1000, kDefaultSeed)
                                   : paired_randomization(*metric, systems, 10000, kDefaultSeed);
    ASSERT_EQ(results.size(), g.size());
    for (size_t i = 0; i < results.size(); ++i) {
      const auto& want = g[i][key];
      EXPECT_NEAR(results[i].score, want["score"].get<double>(), 1e-9 * want["score"].get<double>());
      if (want["p_value"].is_null()) {
        EXPECT_FALSE(results[i].p_value.has_value());
      } else {
        ASSERT_TRUE(results[i].p_value.has_value());
        EXPECT_NEAR(*results[i].p_value, want["p_value"].get<double>(), 1e-12) << "system " << i;
      }
      if (want["mean"].is_null()) continue;
      expect_f32_close(*results[i].mean, want["mean"].get<double>(), "mean");
      expect_f32_close(*results[i].ci, want["ci"].get<double>(), "ci");
    }
  }
}

TEST(Significance, PairedBootstrap) { check_paired("wmt17.paired_bs.3sys.json", true); }
TEST(Significance, PairedApproximateRandomization) { check_paired("wmt17.paired_ar.3sys.json", false); }

}  // namespace
}  // namespace pivotmt::metrics
