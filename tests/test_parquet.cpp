// Parquet: files written by other implementations (the Apache parquet-testing collection:
// parquet-mr, Impala, Spark, Rust), files our own test writer produces (flat and the
// Tunisian corpus's nested struct, uncompressed and SNAPPY) and malformed input.
#include <gtest/gtest.h>

#include <span>

#include "core/error.h"
#include "io/parquet.h"
#include "io/table.h"
#include "parquet_writer.h"
#include "retrieval/corpus.h"
#include "test_util.h"

namespace pivotmt {
namespace {

Table read(const std::string& name) { return read_table(test::fixture("parquet-testing/" + name)); }

std::vector<std::string> column(const Table& t, const std::string& name) {
  std::vector<std::string> out;
  const size_t c = t.column(name);
  for (const auto& r : t.rows) out.push_back(r[c].value_or("<null>"));
  return out;
}

TEST(Parquet, ApacheTestFiles) {
  const Table plain = read("alltypes_plain.parquet");  // parquet-mr / Impala, PLAIN + dictionary
  EXPECT_EQ(column(plain, "id"), (std::vector<std::string>{"4", "5", "6", "7", "2", "3", "0", "1"}));
  EXPECT_EQ(column(plain, "bool_col"), (std::vector<std::string>{"true", "false", "true", "false", "true", "false", "true", "false"}));
  EXPECT_EQ(column(plain, "date_string_col"),
            (std::vector<std::string>{"03/01/09", "03/01/09", "04/01/09", "04/01/09", "02/01/09", "02/01/09", "01/01/09", "01/01/09"}));
  EXPECT_EQ(column(plain, "string_col"), (std::vector<std::string>{"0", "1", "0", "1", "0", "1", "0", "1"}));
  EXPECT_EQ(column(read("alltypes_plain.snappy.parquet"), "id"), (std::vector<std::string>{"6", "7"}));
  EXPECT_EQ(column(read("alltypes_dictionary.parquet"), "id"), (std::vector<std::string>{"0", "1"}));
  const Table gz = read("concatenated_gzip_members.parquet");  // GZIP with several members
  ASSERT_EQ(gz.rows.size(), 513u);
  for (size_t i = 0; i < gz.rows.size(); ++i) ASSERT_EQ(*gz.rows[i][0], std::to_string(i + 1));
  const Table nulls = read("nulls.snappy.parquet");  // optional struct, all null
  EXPECT_EQ(nulls.columns, std::vector<std::string>{"b_struct.b_c_int"});
  for (const auto& r : nulls.rows) EXPECT_FALSE(r[0].has_value());
  EXPECT_EQ(read("nested_structs.rust.parquet").columns.front(), "roll_num.min");  // Rust writer, nested groups
  EXPECT_EQ(read("rle_boolean_encoding.parquet").rows.size(), 68u);
  EXPECT_EQ(read("int32_with_null_pages.parquet").rows.size(), 1000u);
  EXPECT_EQ(read("dict-page-offset-zero.parquet").rows.size(), 39u);
  try {
    read("datapage_v2.snappy.parquet");  // DELTA_BINARY_PACKED: outside the supported set
    FAIL();
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("encoding 5"), std::string::npos) << e.what();
  }
}

TEST(Parquet, OwnWriterNestedTunisianLayout) {
  const Table pool = read_table(test::fixture("original/arabic_train_pool_reconstructed.jsonl"));
  std::vector<test::ParquetColumn> cols;
  for (const char* c : {"en", "msa", "tn"}) {
    test::ParquetColumn col{c, {}};
    const size_t idx = pool.column(c);
    for (const auto& r : pool.rows) col.values.push_back(r[idx]);
    cols.push_back(col);
  }
  cols[1].values[3].reset();  // a null inside the struct
  for (bool snappy : {false, true}) {
    test::TempDir tmp;
    test::write_file(tmp.str("train.parquet"), test::write_parquet(cols, "translation", snappy));
    const Table t = read_table(tmp.str("train.parquet"));
    EXPECT_EQ(t.columns, (std::vector<std::string>{"translation.en", "translation.msa", "translation.tn"}));
    ASSERT_EQ(t.rows.size(), pool.rows.size());
    for (size_t r = 0; r < t.rows.size(); ++r)
      for (size_t c = 0; c < 3; ++c) ASSERT_EQ(t.rows[r][c], cols[c].values[r]) << "row " << r;
    const auto corpus = load_parallel(t, "msa", "en", "tn");  // flattened names resolve
    EXPECT_EQ(corpus.rows.size(), pool.rows.size() - 1);
    EXPECT_EQ(corpus.dropped, 1u);
  }
}

TEST(Parquet, OwnWriterFlatKonkani) {
  const Table pool = read_table(test::fixture("original/konkani_train_pool_reconstructed.jsonl"));
  std::vector<test::ParquetColumn> cols;
  for (const char* c : {"hin", "mar", "gom"}) {
    test::ParquetColumn col{c, {}};
    for (const auto& r : pool.rows) col.values.push_back(r[pool.column(c)]);
    cols.push_back(col);
  }
  test::TempDir tmp;
  test::write_file(tmp.str("k.parquet"), test::write_parquet(cols, "", true));
  const auto corpus = load_parallel(read_table(tmp.str("k.parquet")), "hin", "mar", "gom");
  EXPECT_EQ(corpus.rows.size(), 629u);
  EXPECT_EQ(corpus.rows[5].target, *pool.rows[5][pool.column("gom")]);
}

TEST(Parquet, MalformedFilesAreNamed) {
  const std::string good = test::write_parquet({{"a", {std::string("x"), std::string("yz")}}}, "", false);
  auto expect_bad = [](const std::string& bytes, const std::string& needle) {
    try {
      parse_parquet(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), "bad.parquet");
      FAIL() << needle;
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find("bad.parquet"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_bad("PAR1", "PAR1");
  expect_bad(good.substr(0, good.size() - 10) + "PAR1", "");
  std::string long_footer = good;
  long_footer[long_footer.size() - 6] = '\x7f';
  expect_bad(long_footer, "footer length");
  std::string bad_page = good;
  bad_page[7] = '\x7f';  // inside the first page header
  expect_bad(bad_page, "page");
  // A few compressed bytes claiming 1 GiB (the per-page cap) are refused before the GiB is
  // allocated (it was allocated, then the codec failed); past the cap, as before.
  const std::vector<test::ParquetColumn> one = {{"a", {std::string("x"), std::string("yz")}}};
  expect_bad(test::write_parquet(one, "", true, int64_t(1) << 30), "cannot hold the 1073741824 the page header claims");
  expect_bad(test::write_parquet(one, "", true, int64_t(1) << 40), "page of 1099511627776 bytes");
  const Table ok = parse_parquet(std::span(reinterpret_cast<const uint8_t*>(good.data()), good.size()), "ok");
  EXPECT_EQ(*ok.rows[1][0], "yz");
}

}  // namespace
}  // namespace pivotmt
