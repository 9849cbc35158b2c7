// The ablation runner against the original study's own output: the prompts it writes for
// the original's test rows, and its CSV as pandas writes it.
#include <gtest/gtest.h>

#include <fstream>

#include <fmt/format.h>

#include "backends/backend.h"
#include "core/error.h"
#include "experiment/ablation.h"
#include "experiment/cross_report.h"
#include "experiment/translate.h"
#include "io/json_file.h"
#include "io/table.h"
#include "models/make_model.h"
#include "test_util.h"

namespace pivotmt {
namespace {
namespace fs = std::filesystem;

TEST(Ablation, CsvFieldsQuoteLikePandas) {
  EXPECT_EQ(csv_field("plain text"), "plain text");
  EXPECT_EQ(csv_field("a,b"), "\"a,b\"");
  EXPECT_EQ(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(csv_field("two\nlines"), "\"two\nlines\"");
  EXPECT_EQ(csv_field(""), "");
  // Our writer's output parses back to the same cells.
  const std::string row = csv_field("x,\"y\"\n") + "," + csv_field("plain") + "\n";
  const Table t = parse_delimited("a,b\n" + row, ',', "mem.csv");
  ASSERT_EQ(t.rows.size(), 1u);
  EXPECT_EQ(*t.rows[0][0], "x,\"y\"\n");
  EXPECT_EQ(*t.rows[0][1], "plain");
}

// The original's k = 0 test rows, run through the runner with TowerInstruct's template:
// the prompt column equals the original's byte for byte, and the dataset's columns are
// carried over unchanged.
TEST(Ablation, PromptsOfTheOriginalTestRowsAreReproduced) {
  const Table original = read_table(test::fixture("original/konkani_full/k_0/results_k0.csv"));
  test::TempDir dir;
  std::filesystem::create_directories(dir.path() / "data");
  // The pool: rows of the reconstructed train split.
  {
    std::ifstream in(test::fixture("original/konkani_train_pool_reconstructed.jsonl"));
    std::ofstream out(dir.str("data/train.jsonl"));
    std::string line;
    for (int i = 0; i < 30 && std::getline(in, line); ++i) out << line << "\n";
  }
  const size_t rows = 8;
  std::string test_csv = "hin,gom,mar,eng\n";
  for (size_t r = 0; r < rows; ++r) {
    for (const char* col : {"hin", "gom", "mar", "eng"})
      test_csv += csv_field(*original.rows[r][original.column(col)]) + (std::string(col) == "eng" ? "\n" : ",");
  }
  test::write_file(dir.str("data/test.csv"), test_csv);

  AblationConfig c;
  c.data = dir.str("data");
  c.model = test::fixture("models/tiny-tower");
  c.retriever = "bm25";
  c.ks = {0, 2};
  c.greedy = true;
  c.max_new_tokens = 3;
  c.out = dir.str("out");
  const auto outcome = run_ablation(c);
  EXPECT_EQ(outcome.rows_generated, 2 * rows);

  const Table ours = read_table(dir.str("out/k_0/results_k0.csv"));
  ASSERT_EQ(ours.rows.size(), rows);
  ASSERT_EQ(ours.columns, (std::vector<std::string>{"hin", "gom", "mar", "eng", "prompt", "response"}));
  for (size_t r = 0; r < rows; ++r) {
    EXPECT_EQ(*ours.rows[r][4], *original.rows[r][original.column("prompt")]) << "row " << r;
    EXPECT_EQ(*ours.rows[r][0], *original.rows[r][original.column("hin")]);
  }
  // k = 2: two example turns before the query, each closed with <|im_end|>.
  const Table k2 = read_table(dir.str("out/k_2/results_k2.csv"));
  for (size_t r = 0; r < rows; ++r) {
    const std::string& p = *k2.rows[r][4];
    size_t turns = 0;
    for (size_t at = p.find("<|im_start|>assistant\n"); at != std::string::npos; at = p.find("<|im_start|>assistant\n", at + 1))
      ++turns;
    EXPECT_EQ(turns, 2u) << "row " << r;
  }
  // The figures: a PNG (its signature) and an SVG for the panel and the bars.
  for (const char* stem : {"out/ablation_plots", "out/ablation_bars"}) {
    EXPECT_EQ(test::read_file(dir.str(std::string(stem) + ".png")).substr(0, 8), "\x89PNG\r\n\x1a\n") << stem;
    EXPECT_NE(test::read_file(dir.str(std::string(stem) + ".svg")).find("<svg"), std::string::npos) << stem;
  }
  // report.md: one scores row per k, the change over k = 0 for k = 2; manifest.json names the model's files.
  const std::string report = test::read_file(dir.str("out/report.md"));
  EXPECT_NE(report.find("## Change over k = 0"), std::string::npos) << report;
  EXPECT_NE(report.find("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n| 2 | "), std::string::npos) << report;
  const std::string manifest = test::read_file(dir.str("out/manifest.json"));
  EXPECT_NE(manifest.find("\"config.json\""), std::string::npos);
  EXPECT_NE(manifest.find("\"data_sha256\""), std::string::npos);
  // Where it ran: the device (auto is the CPU without a GPU), its description and load time.
  const auto runtime = read_json_file(dir.str("out/manifest.json"))["runtime"];
  const std::string expected_device = cuda_device_count() > 0 ? "cuda:0" : "cpu";
  EXPECT_EQ(runtime.value("device", ""), expected_device) << runtime.dump();
  EXPECT_GE(runtime.value("load_seconds", -1.0), 0.0);
  EXPECT_NE(report.find("Device: " + runtime.value("device_name", std::string("?"))), std::string::npos) << report;
  // scores: sacrebleu's bootstrap interval beside each score, named in the signature.
  const auto scores = read_json_file(dir.str("out/k_2/scores_k2.json"));
  for (const char* metric : {"BLEU", "chrF", "chrF++", "TER"}) {
    EXPECT_GE(scores["confidence_intervals"][metric]["ci"].get<double>(), 0.0) << metric;
    EXPECT_NE(scores["signatures"][metric].get<std::string>().find("bs:1000"), std::string::npos) << metric;
  }
  // A rerun finds every row done and generates nothing.
  EXPECT_EQ(run_ablation(c).rows_generated, 0u);
}

// identity() and from_identity() are inverses, for every field a merge carries over.
TEST(Ablation, IdentityRoundTrips) {
  AblationConfig c;
  c.data = "d";
  c.model = "m";
  c.encoder = "e";
  c.variant = PromptVariant::Custom;
  c.labels = {"P1", "T1", "S1", "T2", "{pivot} -> {T}"};
  c.retriever = "chrf";
  c.greedy = true;
  c.temperature = 0.3f;
  c.top_k = 7;
  c.top_p = 0.5f;
  c.max_new_tokens = 9;
  c.seed = 4;
  c.context_policy = "error";
  c.limit = 11;
  c.weights = "int8";
  c.shard_index = 2;
  c.shard_count = 3;
  EXPECT_EQ(AblationConfig::from_identity(c.identity()).identity(), c.identity());
  EXPECT_EQ(c.identity()["weights"], "int8");
  EXPECT_FALSE(AblationConfig{}.identity().contains("weights"));  // the default stays out (older folders)
  auto broken = c.identity();
  broken.erase("seed");
  EXPECT_THROW(AblationConfig::from_identity(broken), FormatError);
}

// The first `rows` test rows of an original folder as a test split beside a pool of 30
// reconstructed training rows.
void write_original_rows(const fs::path& data, const std::string& folder, size_t rows) {
  const Table original = read_table(test::fixture("original/" + folder + "/k_0/results_k0.csv"));
  fs::create_directories(data);
  {
    std::ifstream in(test::fixture("original/konkani_train_pool_reconstructed.jsonl"));
    std::ofstream out(data / "train.jsonl");
    std::string line;
    for (int i = 0; i < 30 && std::getline(in, line); ++i) out << line << "\n";
  }
  std::string test_csv = "hin,gom,mar,eng\n";
  for (size_t r = 0; r < rows; ++r)
    for (const char* col : {"hin", "gom", "mar", "eng"})
      test_csv += csv_field(*original.rows[r][original.column(col)]) + (std::string(col) == "eng" ? "\n" : ",");
  test::write_file((data / "test.csv").string(), test_csv);
}

// Hermes-2-Pro through the runner: a tiny Llama-3 model with Llama-3's tokenizer and
// Hermes' ChatML template (REFERENCE §4) writes the original Hermes run's k = 0 prompts.
TEST(Ablation, HermesPromptsOfTheOriginalTestRowsAreReproduced) {
  test::TempDir dir;
  MakeModelOptions m;
  m.arch = "llama3";
  m.out_dir = dir.str("tiny-hermes");
  m.tokenizer_dir = test::fixture("tokenizers/llama-3");
  m.seed = 5;
  make_model(m);
  auto tok_config = read_json_file(dir.str("tiny-hermes/tokenizer_config.json"));
  tok_config["chat_template"] =
      "{{bos_token}}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
      "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
  write_json_file(dir.str("tiny-hermes/tokenizer_config.json"), tok_config);

  const size_t rows = 6;
  write_original_rows(dir.path() / "data", "konkani_hermes_600tokens", rows);
  AblationConfig c;
  c.data = dir.str("data");
  c.model = dir.str("tiny-hermes");
  c.ks = {0};
  c.greedy = true;
  c.max_new_tokens = 2;
  c.out = dir.str("out");
  run_ablation(c);
  const Table original = read_table(test::fixture("original/konkani_hermes_600tokens/k_0/results_k0.csv"));
  const Table ours = read_table(dir.str("out/k_0/results_k0.csv"));
  ASSERT_EQ(ours.rows.size(), rows);
  for (size_t r = 0; r < rows; ++r)
    EXPECT_EQ(*ours.rows[r][ours.column("prompt")], *original.rows[r][original.column("prompt")]) << "row " << r;
}

// Outputs that do not depend on how the rows were scheduled (timings left out).
std::string stable_outputs(const fs::path& out, const std::vector<size_t>& ks) {
  std::string all;
  for (size_t k : ks) {
    all += test::read_file((out / fmt::format("k_{}/results_k{}.csv", k, k)).string());
    auto scores = read_json_file((out / fmt::format("k_{}/scores_k{}.json", k, k)).string());
    scores.erase("inference_time_minutes");
    all += scores.dump();
  }
  return all;
}

// `--shard i/N` runs joined by merge_ablation give the single run's outputs; `translate`
// of a test row with k examples gives that run's k response; the custom prompt variant
// puts the template's text in the prompt column.
TEST(Ablation, ShardsMergeAndTranslateAgreeWithOneRun) {
  test::TempDir dir;
  const size_t rows = 7;
  write_original_rows(dir.path() / "data", "konkani_full", rows);
  AblationConfig c;
  c.data = dir.str("data");
  c.model = test::fixture("models/tiny-tower");
  c.retriever = "bm25";
  c.ks = {0, 1, 3};
  c.greedy = true;
  c.max_new_tokens = 6;
  c.out = dir.str("single");
  const auto single = run_ablation(c);
  EXPECT_TRUE(single.outputs_written);
  EXPECT_GT(single.reused_prompt_tokens, 0u);  // the k = 1 and k = 0 prompts copy from k = 3's

  std::vector<std::string> shards;
  for (size_t i = 1; i <= 3; ++i) {
    AblationConfig s = c;
    s.shard_index = i;
    s.shard_count = 3;
    s.max_batch = i;  // batching differs per shard
    s.out = dir.str(fmt::format("shard{}", i));
    const auto outcome = run_ablation(s);
    EXPECT_FALSE(outcome.outputs_written);
    EXPECT_EQ(outcome.rows_generated, 3 * ((rows - i) / 3 + 1)) << i;
    EXPECT_FALSE(fs::exists(dir.path() / fmt::format("shard{}/ablation_summary.csv", i)));
    shards.push_back(s.out);
  }
  EXPECT_THROW(merge_ablation({shards[0], shards[2]}, dir.str("merged"), false), Error);  // shard 2/3 missing
  EXPECT_THROW(merge_ablation({shards[0], shards[0], shards[1], shards[2]}, dir.str("merged"), false), Error);
  merge_ablation(shards, dir.str("merged"), false);
  EXPECT_EQ(stable_outputs(dir.path() / "merged", c.ks), stable_outputs(dir.path() / "single", c.ks));
  EXPECT_EQ(test::read_file(dir.str("merged/ablation_config.json")), test::read_file(dir.str("single/ablation_config.json")));

  // translate: the test rows with 1 example each give the k = 1 responses.
  const ParallelCorpus test_rows = load_parallel(read_table(dir.str("data/test.csv")), "hin", "mar", "gom");
  std::vector<TranslationQuery> queries;
  for (const auto& r : test_rows.rows) queries.push_back({r.pivot, r.source});
  Translator translator(c, dir.str("translate-index"));
  const auto translations = translator.translate(queries, 1);
  const Table k1 = read_table(dir.str("single/k_1/results_k1.csv"));
  ASSERT_EQ(translations.size(), k1.rows.size());
  for (size_t r = 0; r < translations.size(); ++r) {
    EXPECT_EQ(translations[r].text, *k1.rows[r][k1.column("response")]) << "row " << r;
    EXPECT_EQ(translations[r].examples.size(), 1u);
  }

  // The custom variant: the template's text, with the placeholders filled, is the user turn.
  AblationConfig custom = c;
  custom.variant = PromptVariant::Custom;
  custom.labels.custom_template = "{P} {{literal}}: {pivot} | {S}: {source} -> {T}:";
  custom.ks = {0};
  custom.out = dir.str("custom");
  run_ablation(custom);
  const Table k0 = read_table(dir.str("custom/k_0/results_k0.csv"));
  const std::string& prompt = *k0.rows[0][k0.column("prompt")];
  EXPECT_NE(prompt.find("Hin {literal}: " + test_rows.rows[0].pivot + " | MAR: " + test_rows.rows[0].source + " -> Gom:"),
            std::string::npos)
      << prompt;
  custom.labels.custom_template = "{pivot} {unknown}";
  custom.out = dir.str("custom-bad");
  EXPECT_THROW(run_ablation(custom), Error);
}

// Known scores: a perfect k = 1 (BLEU/chrF 100, TER 0) must be the bold best of its row
// and the best k; an empty translation is left out and counted.
TEST(CrossReport, BestValuesAndBestK) {
  test::TempDir dir;
  const fs::path run = dir.path() / "my_run";
  const auto write_k = [&](size_t k, const std::vector<std::pair<std::string, std::string>>& rows) {
    fs::create_directories(run / fmt::format("k_{}", k));
    std::string csv = "hin,gom,prompt,response\n";
    for (const auto& [ref, hyp] : rows) csv += "x," + csv_field(ref) + ",p," + csv_field(hyp) + "\n";
    test::write_file((run / fmt::format("k_{}/results_k{}.csv", k, k)).string(), csv);
  };
  write_k(0, {{"the cat sat on the mat", "a dog sat on a rug"}, {"hello world again", "hello there"}, {"one", ""}});
  write_k(1, {{"the cat sat on the mat", " the cat sat on the mat\n"}, {"hello world again", "hello world again"}});
  const RunScores r = score_run_folder(run.string());
  EXPECT_EQ(r.target, "gom");
  EXPECT_EQ(r.failed.at(0), 1u);
  EXPECT_DOUBLE_EQ(r.by_k.at(1).at("BLEU"), 100.0);
  EXPECT_DOUBLE_EQ(r.by_k.at(1).at("chrF"), 100.0);
  EXPECT_DOUBLE_EQ(r.by_k.at(1).at("TER"), 0.0);
  EXPECT_LT(r.by_k.at(0).at("BLEU"), 100.0);
  const std::string md = cross_run_markdown({r});
  // The BLEU row: k = 0 plain, k = 1 bold.
  const size_t bleu_row = md.find("| my_run |", md.find("## BLEU"));
  const std::string row = md.substr(bleu_row, md.find('\n', bleu_row) - bleu_row);
  EXPECT_EQ(row.find("**"), row.find("| **100.00** |") + 2) << row;
  EXPECT_TRUE(row.ends_with("| **100.00** |")) << row;
  EXPECT_NE(md.find("| my_run | k=1 (100.00) | k=1 (100.00) | k=1 (100.00) | k=1 (0.00) |"), std::string::npos) << md;
}

}  // namespace
}  // namespace pivotmt
