// Corpora and few-shot retrieval: the study's query semantics on a crafted pool, BM25 by
// its formula, the reconstructed pools and every original test row with each retriever,
// nested columns, and index persistence.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/table.h"
#include "retrieval/index.h"
#include "test_util.h"

namespace pivotmt {
namespace {
namespace fs = std::filesystem;

ParallelCorpus crafted() {
  ParallelCorpus c;
  const std::vector<std::string> pivots = {"the cat sat", "a dog ran", "the cat sat on the mat", "birds fly high",
                                           "the cat", "the cat", "fish swim", "rain falls", "sun shines", "wind blows",
                                           "snow melts", "the cat sat down"};
  for (size_t i = 0; i < pivots.size(); ++i) c.rows.push_back({pivots[i], "src" + std::to_string(i), "tgt" + std::to_string(i), i});
  return c;
}

TEST(Retrieval, StudySemantics) {
  const auto pool = crafted();
  const auto bm25 = make_bm25_retriever(pool, false);
  // The query equals row 2's pivot: it is among the candidates but never returned.
  auto found = retrieve(*bm25, pool, "the cat sat on the mat", 10);
  for (const auto& n : found) EXPECT_NE(pool.rows[n.index].pivot, "the cat sat on the mat");
  for (size_t i = 1; i < found.size(); ++i) EXPECT_LE(found[i - 1].distance, found[i].distance);
  // Identical pivots (rows 4 and 5) tie: row order decides.
  found = retrieve(*bm25, pool, "cat", 12, 12);
  std::vector<size_t> rows;
  for (const auto& n : found) rows.push_back(pool.rows[n.index].row);
  const auto pos4 = std::find(rows.begin(), rows.end(), 4u), pos5 = std::find(rows.begin(), rows.end(), 5u);
  ASSERT_NE(pos4, rows.end());
  EXPECT_EQ(pos5, pos4 + 1);
  // Candidates are the 10 nearest *before* the filter: asking for 10 can give fewer.
  EXPECT_EQ(retrieve(*bm25, pool, "the cat sat on the mat", 10, 10).size(), 9u);
  EXPECT_EQ(retrieve(*bm25, pool, "the cat sat on the mat", 3).size(), 3u);
}

TEST(Retrieval, Bm25Formula) {
  ParallelCorpus c;
  c.rows = {{"a b", "", "", 0}, {"a a c", "", "", 1}, {"d", "", "", 2}};
  const auto d = make_bm25_retriever(c, false)->distances("a");
  // idf(a) = ln(1 + (3 - 2 + 0.5) / (2 + 0.5)); avgdl = 2; k1 = 1.5, b = 0.75.
  const double idf = std::log(1 + 1.5 / 2.5), avg = 2.0;
  auto term = [&](double f, double len) { return idf * f * 2.5 / (f + 1.5 * (1 - 0.75 + 0.75 * len / avg)); };
  EXPECT_NEAR(d[0], -term(1, 2), 1e-12);
  EXPECT_NEAR(d[1], -term(2, 3), 1e-12);
  EXPECT_EQ(d[2], 0.0);
}

// The reconstructed pools as CSV (RFC 4180 quoting written here) load to the same rows.
TEST(Retrieval, PoolsFromCsv) {
  for (const auto& [file, cols] : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {"konkani_train_pool_reconstructed.jsonl", {"hin", "mar", "gom"}},
           {"arabic_train_pool_reconstructed.jsonl", {"msa", "en", "tn"}}}) {
    const Table jsonl = read_table(test::fixture("original/" + file));
    std::string csv = cols[0] + "," + cols[1] + "," + cols[2] + "\r\n";
    auto quote = [](const std::string& v) {
      std::string q = "\"";
      for (char c : v) q += c == '"' ? std::string("\"\"") : std::string(1, c);
      return q + "\"";
    };
    for (const auto& r : jsonl.rows)
      csv += quote(*r[jsonl.column(cols[0])]) + "," + quote(*r[jsonl.column(cols[1])]) + "," + quote(*r[jsonl.column(cols[2])]) + "\r\n";
    test::TempDir tmp;
    test::write_file(tmp.str("pool.csv"), csv);
    const auto a = load_parallel(jsonl, cols[0], cols[1], cols[2]);
    const auto b = load_parallel(read_table(tmp.str("pool.csv")), cols[0], cols[1], cols[2]);
    ASSERT_EQ(a.rows.size(), b.rows.size());
    for (size_t i = 0; i < a.rows.size(); ++i) {
      EXPECT_EQ(a.rows[i].pivot, b.rows[i].pivot);
      EXPECT_EQ(a.rows[i].target, b.rows[i].target);
    }
  }
}

TEST(Retrieval, NestedColumnsAndEmptyRows) {
  test::TempDir tmp;
  test::write_file(tmp.str("tn.jsonl"),
                   "{\"translation\": {\"en\": \"hello\", \"msa\": \"مرحبا\", \"tn\": \"عسلامة\"}}\n"
                   "{\"translation\": {\"en\": \"bye\", \"msa\": \"\", \"tn\": \"بسلامة\"}}\n"
                   "{\"translation\": {\"en\": \"thanks\", \"msa\": \"شكرا\", \"tn\": null}}\n");
  const auto pool = load_parallel(read_table(tmp.str("tn.jsonl")), "msa", "en", "tn");
  EXPECT_EQ(pool.rows.size(), 1u);
  EXPECT_EQ(pool.dropped, 2u);
  EXPECT_EQ(pool.rows[0].target, "عسلامة");
  const auto same = load_parallel(read_table(tmp.str("tn.jsonl")), "translation.msa", "translation.en", "translation.tn");
  EXPECT_EQ(same.rows.size(), 1u);
  EXPECT_THROW(load_parallel(read_table(tmp.str("tn.jsonl")), "xx", "en", "tn"), Error);
}

struct Study {
  const char* pool;
  const char* results;
  const char *pivot, *source, *target;
  size_t rows;
};

TEST(Retrieval, OriginalTestRowsWithEveryRetriever) {
  const Study studies[] = {{"konkani_train_pool_reconstructed.jsonl", "konkani_full/k_0/results_k0.csv", "hin", "mar", "gom", 205},
                           {"arabic_train_pool_reconstructed.jsonl", "arabic_full/k_0/results_k0.csv", "msa", "en", "tn", 100}};
  const BertEncoder encoder(test::fixture("models/tiny-minilm"));
  for (const auto& s : studies) {
    const auto pool = load_parallel(read_table(test::fixture(std::string("original/") + s.pool)), s.pivot, s.source, s.target);
    const Table tests = read_table(test::fixture(std::string("original/") + s.results));
    ASSERT_EQ(tests.rows.size(), s.rows);
    const size_t qcol = find_column(tests, s.pivot);
    std::vector<std::unique_ptr<Retriever>> retrievers;
    retrievers.push_back(make_embedding_retriever(encoder, pool));
    retrievers.push_back(make_bm25_retriever(pool, false));
    retrievers.push_back(make_bm25_retriever(pool, true));
    retrievers.push_back(make_chrf_retriever(pool));
    retrievers.push_back(make_random_retriever(pool, 42));
    for (const auto& r : retrievers) {
      size_t total = 0;
      for (const auto& row : tests.rows) {
        const std::string& q = *row[qcol];
        const auto found = retrieve(*r, pool, q, 5);
        ASSERT_LE(found.size(), 5u);
        for (size_t i = 0; i < found.size(); ++i) {
          ASSERT_NE(pool.rows[found[i].index].pivot, q) << r->name();
          if (i) ASSERT_LE(found[i - 1].distance, found[i].distance) << r->name();
        }
        total += found.size();
      }
      EXPECT_GT(total, s.rows * 4) << r->name() << " on " << s.pool;
      // Deterministic: the same query gives the same examples.
      const std::string& q0 = *tests.rows[0][qcol];
      const auto a = retrieve(*r, pool, q0, 5), b = retrieve(*r, pool, q0, 5);
      ASSERT_EQ(a.size(), b.size());
      for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].index, b[i].index);
    }
  }
}

TEST(RetrievalIndex, BuildReuseRebuildAndDamage) {
  test::TempDir tmp;
  IndexSpec spec;
  spec.data = test::fixture("original/arabic_train_pool_reconstructed.jsonl");
  spec.pivot = "msa";
  spec.source = "en";
  spec.target = "tn";
  spec.model = test::fixture("models/tiny-minilm");
  bool rebuilt = false;
  const auto first = build_index(spec, tmp.str("ix"), &rebuilt);
  EXPECT_TRUE(rebuilt);
  EXPECT_EQ(first.pool.rows.size(), 516u);
  const auto again = build_index(spec, tmp.str("ix"), &rebuilt);
  EXPECT_FALSE(rebuilt);
  const std::string q = first.pool.rows[7].pivot;
  const auto a = retrieve(*first.retriever, first.pool, q, 5), b = retrieve(*again.retriever, again.pool, q, 5);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].index, b[i].index);
  spec.retriever = "bm25";
  build_index(spec, tmp.str("ix"), &rebuilt);
  EXPECT_TRUE(rebuilt);
  spec.retriever = "minilm";
  build_index(spec, tmp.str("ix"), &rebuilt);
  fs::resize_file(tmp.str("ix/vectors.f32"), 100);
  EXPECT_THROW(load_index(tmp.str("ix")), FormatError);
  spec.model.clear();
  EXPECT_THROW(build_index(spec, tmp.str("ix2"), &rebuilt), Error);
}

}  // namespace
}  // namespace pivotmt

namespace pivotmt {
namespace {

// HNSW (FAISS) returns what the exact scan returns on a pool of this size.
TEST(Retrieval, HnswAgreesWithExactSearch) {
  const BertEncoder encoder(test::fixture("models/tiny-minilm"));
  const auto pool = load_parallel(read_table(test::fixture("original/arabic_train_pool_reconstructed.jsonl")), "msa", "en", "tn");
  std::vector<std::string> texts;
  for (const auto& r : pool.rows) texts.push_back(r.pivot);
  const auto vectors = encoder.embed(texts);
  const auto exact = make_embedding_retriever(encoder, vectors);
  const auto hnsw = make_hnsw_retriever(encoder, vectors);
  size_t same = 0, total = 0;
  for (size_t q = 0; q < 40; ++q) {
    const auto a = exact->nearest(pool.rows[q * 7].pivot, 5), b = hnsw->nearest(pool.rows[q * 7].pivot, 5);
    for (const auto& x : a) {
      ++total;
      for (const auto& y : b) same += std::fabs(x.distance - y.distance) < 1e-5;
    }
  }
  EXPECT_GE(double(same) / double(total), 0.95);
}

}  // namespace
}  // namespace pivotmt
