// CSV / TSV / JSONL readers: the original pipeline's real result files (pandas-written,
// quoted newlines, Devanagari and Arabic), the reconstructed pools, and malformed input.
#include <gtest/gtest.h>

#include "core/error.h"
#include "io/json_file.h"
#include "io/table.h"
#include "test_util.h"

namespace pivotmt {
namespace {

void expect_format_error(const std::string& text, char delimiter, const std::string& needle) {
  try {
    parse_delimited(text, delimiter, "t.csv");
    FAIL() << "accepted: " << text;
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("t.csv"), std::string::npos) << e.what();
  }
}

TEST(Table, Rfc4180) {
  const Table t = parse_delimited("a,b,c\r\n1,\"x, \"\"quoted\"\"\ny\",3\r\n\"\",,\"last\"\n", ',', "t.csv");
  ASSERT_EQ(t.columns, (std::vector<std::string>{"a", "b", "c"}));
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(*t.rows[0][1], "x, \"quoted\"\ny");
  EXPECT_EQ(*t.rows[1][0], "");
  EXPECT_EQ(*t.rows[1][2], "last");
  EXPECT_EQ(t.row_lines, (std::vector<size_t>{2, 4}));
  EXPECT_EQ(t.column("c"), 2u);
  EXPECT_THROW(t.column("d"), Error);
  const Table tsv = parse_delimited("\xEF\xBB\xBFp\tq\nα\tβ", '\t', "t.tsv");
  EXPECT_EQ(tsv.columns[0], "p");  // BOM skipped
  EXPECT_EQ(*tsv.rows[0][1], "β");  // no final newline
}

TEST(Table, MalformedDelimitedInput) {
  expect_format_error("a,b\n1,\"open\n", ',', "never closes");
  expect_format_error("a,b\n1,2,3\n", ',', "t.csv:2: 3 fields, the header has 2");
  expect_format_error("a,b\n\"x\"y,2\n", ',', "after a closing quote");
  expect_format_error("a,a\n1,2\n", ',', "appears twice");
  expect_format_error("", ',', "empty file");
  expect_format_error("a,b\n1,\xff\n", ',', "invalid UTF-8");
}

TEST(Table, Jsonl) {
  const Table t = parse_jsonl(
      "{\"id\": 1, \"translation\": {\"en\": \"hi\", \"tn\": \"ahla\"}}\n\n{\"id\": 2, \"translation\": {\"en\": null}}\n",
      "t.jsonl");
  EXPECT_EQ(t.columns, (std::vector<std::string>{"id", "translation.en", "translation.tn"}));
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(*t.rows[0][0], "1");
  EXPECT_EQ(*t.rows[0][2], "ahla");
  EXPECT_FALSE(t.rows[1][1].has_value());
  EXPECT_FALSE(t.rows[1][2].has_value());
  EXPECT_EQ(t.row_lines, (std::vector<size_t>{1, 3}));
  try {
    parse_jsonl("{\"a\": 1}\n{\"a\": \n", "t.jsonl");
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("t.jsonl:2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_jsonl("[1,2]\n", "t.jsonl"), FormatError);
  // Found by fuzz_table: a number past double's range is nlohmann's out_of_range, not a
  // parse_error, and escaped as an uncaught exception.
  try {
    parse_jsonl("{\"a\": 1}\n{\"a\": 1e999}\n", "t.jsonl");
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("t.jsonl:2"), std::string::npos) << e.what();
  }
  // The same through read_json_file (fuzz_adapter: adapter_config.json).
  const test::TempDir dir;
  test::write_file(dir.str("c.json"), "{\"r\": 1e999}");
  try {
    read_json_file(dir.str("c.json"));
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("c.json"), std::string::npos) << e.what();
  }
}

TEST(Table, OriginalResultFiles) {
  struct Folder {
    const char* name;
    size_t rows;
    const char* target;
    const char* prompt_end;  // Tower leaves the last turn open; Hermes closes it
  };
  for (const Folder f : {Folder{"konkani_full", 205, "gom", "Translation: "},
                         Folder{"arabic_full", 100, "tn", "Translation: "},
                         Folder{"konkani_hermes_600tokens", 205, "gom", "<|im_end|>\n"},
                         Folder{"arabic_hermes_20251126", 100, "tn", "<|im_end|>\n"}}) {
    for (int k = 0; k <= 10; ++k) {
      const std::string path =
          test::fixture(std::string("original/") + f.name + "/k_" + std::to_string(k) + "/results_k" + std::to_string(k) + ".csv");
      const Table t = read_table(path);
      ASSERT_EQ(t.rows.size(), f.rows) << path;
      const size_t prompt = t.column("prompt"), target = t.column(f.target);
      t.column("response");
      for (const auto& row : t.rows) {
        ASSERT_TRUE(row[prompt].has_value());
        EXPECT_TRUE(row[prompt]->find('\n') != std::string::npos) << path;  // quoted newlines survived
        EXPECT_TRUE(row[prompt]->ends_with(f.prompt_end)) << path;
        EXPECT_TRUE(row[target].has_value());
      }
    }
  }
}

TEST(Table, ReconstructedPools) {
  const Table konkani = read_table(test::fixture("original/konkani_train_pool_reconstructed.jsonl"));
  EXPECT_EQ(konkani.rows.size(), 629u);
  for (const char* c : {"hin", "mar", "gom"}) konkani.column(c);
  const Table arabic = read_table(test::fixture("original/arabic_train_pool_reconstructed.jsonl"));
  EXPECT_EQ(arabic.rows.size(), 516u);
  for (const char* c : {"msa", "en", "tn"}) arabic.column(c);
}

}  // namespace
}  // namespace pivotmt
