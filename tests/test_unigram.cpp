// The Unigram tokenizer with sentencepiece's precompiled character map (the shape of
// XLM-R's, which COMET uses) against Hugging Face tokenizers: a vocabulary trained with the
// sentencepiece trainer on the original study's Hindi, Marathi, Konkani, MSA, Tunisian and
// English rows; ids of those rows and of edge cases (NFKC compatibility characters,
// characters the vocabulary lacks, combining marks, whitespace runs) identical, and the
// normalizer's output identical (tests/goldens/make_unigram_golden.py).
#include <gtest/gtest.h>

#include "core/error.h"
#include "io/json_file.h"
#include "test_util.h"
#include "text/base64.h"
#include "tokenizer/components.h"
#include "tokenizer/precompiled.h"
#include "tokenizer/tokenizer.h"

namespace pivotmt {
namespace {

std::string dir() { return std::string(PIVOTMT_SOURCE_DIR) + "/tests/goldens/unigram"; }

TEST(Unigram, NormalizerMatchesHuggingFace) {
  const auto t = read_json_file(dir() + "/tokenizer.json");
  const auto normalizer = make_normalizer(t.at("normalizer"));
  const auto golden = read_json_file(dir() + "/golden.json");
  size_t n = 0;
  for (const auto& c : golden.at("cases")) {
    EXPECT_EQ(normalizer->normalize(c.at("text").get<std::string>()), c.at("normalized").get<std::string>())
        << c.at("text").get<std::string>();
    ++n;
  }
  EXPECT_GT(n, 100u);
}

TEST(Unigram, IdsMatchHuggingFace) {
  const auto tok = load_tokenizer(dir());
  EXPECT_EQ(tok->kind(), TokenizerKind::Unigram);
  const auto golden = read_json_file(dir() + "/golden.json");
  size_t mismatches = 0;
  for (const auto& c : golden.at("cases")) {
    const std::string text = c.at("text").get<std::string>();
    const auto want = c.at("ids").get<std::vector<TokenId>>();
    const auto got = tok->encode(text, true);
    if (got != want && ++mismatches <= 5) ADD_FAILURE() << "text: " << text;
  }
  EXPECT_EQ(mismatches, 0u);
}

// XLM-R's layout: tokenizer.json's added_tokens list only <s> and </s>; <pad>, <unk> and
// <mask> (lstrip) are named by tokenizer_config.json / special_tokens_map.json, and
// transformers treats them as special all the same (tests/goldens/special_tokens, made by
// make_special_tokens_golden.py with transformers 5.25). pivotmt split "<mask>" as text.
TEST(Unigram, SpecialTokensNamedOnlyByTheConfigAreSpecial) {
  test::TempDir d;
  const std::string golden = std::string(PIVOTMT_SOURCE_DIR) + "/tests/goldens/special_tokens";
  for (const char* f : {"tokenizer_config.json", "special_tokens_map.json"})
    test::write_file(d.str(f), test::read_file(golden + "/" + f));
  test::write_file(d.str("tokenizer.json"), test::read_file(dir() + "/tokenizer.json"));
  const auto tok = load_tokenizer(d.str());
  const auto cases = read_json_file(golden + "/golden.json").at("cases");
  ASSERT_GE(cases.size(), 10u);
  for (const auto& c : cases)
    EXPECT_EQ(tok->encode(c.at("text").get<std::string>(), true), c.at("ids").get<std::vector<TokenId>>())
        << c.at("text").get<std::string>();
  EXPECT_TRUE(tok->is_special(2001));  // <mask>
  EXPECT_TRUE(tok->is_special(1));     // <pad>
}

TEST(Unigram, UnknownCharactersFuseIntoOneUnk) {
  const auto tok = load_tokenizer(dir());
  const auto ids = tok->encode("漢字かな", false);  // four characters the vocabulary lacks
  const auto unk = tok->token_to_id("<unk>");
  ASSERT_TRUE(unk);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.back(), *unk);
  EXPECT_LE(std::count(ids.begin(), ids.end(), *unk), 1);
}

TEST(Unigram, Base64AndMalformedCharsmaps) {
  EXPECT_EQ(base64_decode("aGVsbG8=", "t"), "hello");
  EXPECT_EQ(base64_decode("aGVsbG8", "t"), "hello");
  EXPECT_THROW(base64_decode("a*b", "t"), FormatError);
  EXPECT_THROW(PrecompiledCharsmap(std::string("\x01\x00", 2)), FormatError);
  EXPECT_THROW(PrecompiledCharsmap(std::string{'\x10', '\0', '\0', '\0', 'a', 'b', 'c', 'd'}), FormatError);  // trie longer than the map
}

}  // namespace
}  // namespace pivotmt
