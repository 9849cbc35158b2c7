// The typed JSON readers every parser of an outside file uses: each wrong type or
// out-of-range number is a FormatError naming the field (never nlohmann's type_error, never
// a cast out of range), and crafted tokenizer.json / adapter_config.json files that were
// undefined behaviour before (found by the fuzzers with fuzz/json.dict) are refused so.
#include <gtest/gtest.h>

#include <limits>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/json_fields.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace pivotmt {
namespace {
using json = nlohmann::json;

// The message of the FormatError `f` throws ("" if it throws nothing or something else).
template <typename F>
std::string format_error(F&& f) {
  try {
    f();
  } catch (const FormatError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("not a FormatError: ") + e.what();
  }
  return "no error";
}

TEST(JsonFields, IntegersOnlyInRange) {
  const json j = json::parse(R"({"a": 7, "neg": -3, "float": 1e300, "half": 1.5, "big": 18446744073709551615,
                                 "str": "7", "null": null, "whole_float": 3.0})");
  EXPECT_EQ(field_integer(j, "a", "f.json", 0), 7);
  EXPECT_EQ(field_integer(j, "missing", "f.json", 42), 42);
  EXPECT_EQ(field_integer(j, "null", "f.json", 42), 42);  // null is absent, as in transformers
  EXPECT_EQ(field_integer(j, "neg", "f.json", 0), -3);
  EXPECT_EQ(format_error([&] { field_integer(j, "neg", "f.json", 0, 0); }), "f.json: field 'neg' = -3 must be an integer >= 0");
  EXPECT_EQ(format_error([&] { field_integer(j, "float", "f.json", 0); }), "f.json: field 'float' = 1e+300 must be an integer");
  EXPECT_EQ(format_error([&] { field_integer(j, "half", "f.json", 0); }), "f.json: field 'half' = 1.5 must be an integer");
  EXPECT_EQ(format_error([&] { field_integer(j, "whole_float", "f.json", 0); }), "f.json: field 'whole_float' = 3.0 must be an integer");
  EXPECT_EQ(format_error([&] { field_integer(j, "str", "f.json", 0); }), "f.json: field 'str' = \"7\" must be an integer");
  // Above INT64_MAX (stored unsigned): refused, not wrapped to -1.
  EXPECT_EQ(format_error([&] { field_integer(j, "big", "f.json", 0); }),
            "f.json: field 'big' = 18446744073709551615 must be an integer");
  EXPECT_EQ(format_error([&] { json_integer(j["a"], "x", 0, 5); }), "x = 7 must be an integer in [0, 5]");
  // Non-negative numbers are stored unsigned by the parser: the lower bound holds for them too
  // (a zero head count passed a first version and divided by zero; found by fuzz_model_config).
  EXPECT_EQ(format_error([&] { json_integer(json::parse("0"), "x", 1); }), "x = 0 must be an integer >= 1");
  EXPECT_EQ(format_error([&] { json_integer(json::parse("3"), "x", -10, -1); }), "x = 3 must be an integer in [-10, -1]");
  EXPECT_EQ(json_integer(json::parse("3"), "x", 3, 3), 3);
  // Seeds take the whole uint64 range.
  EXPECT_EQ(json_unsigned(json::parse("18446744073709551615"), "seed"), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(format_error([&] { json_unsigned(json::parse("-1"), "seed"); }), "seed = -1 must be an integer >= 0");
  EXPECT_EQ(format_error([&] { json_unsigned(json::parse("1e19"), "seed"); }), "seed = 1e+19 must be an integer >= 0");
  EXPECT_EQ(json_integer(json(std::numeric_limits<int64_t>::max()), "x"), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(json_integer(json(std::numeric_limits<int64_t>::min()), "x"), std::numeric_limits<int64_t>::min());
}

TEST(JsonFields, StringsBooleansNumbersAndRequiredFields) {
  const json j = json::parse(R"({"s": "x", "b": true, "n": 2, "f": 0.25, "arr": [1, 2], "null": null})");
  EXPECT_EQ(field_string(j, "s", "f.json", ""), "x");
  EXPECT_EQ(field_string(j, "null", "f.json", "fallback"), "fallback");
  EXPECT_EQ(format_error([&] { field_string(j, "n", "f.json", ""); }), "f.json: field 'n' = 2 must be a string");
  EXPECT_TRUE(field_bool(j, "b", "f.json", false));
  EXPECT_EQ(format_error([&] { field_bool(j, "s", "f.json", false); }), "f.json: field 's' = \"x\" must be true or false");
  EXPECT_EQ(field_number(j, "n", "f.json", 0), 2.0);
  EXPECT_EQ(field_number(j, "f", "f.json", 0), 0.25);
  EXPECT_EQ(format_error([&] { field_number(j, "arr", "f.json", 0); }), "f.json: field 'arr' = [1,2] must be a number");
  EXPECT_EQ(&required_field(j, "s", "f.json"), &j["s"]);
  EXPECT_EQ(format_error([&] { required_field(j, "null", "f.json"); }), "f.json: missing required field 'null'");
  EXPECT_EQ(format_error([&] { required_field(json::array(), "s", "f.json"); }), "f.json = [] must be a JSON object");
  // A field of a value that is not an object is absent, not an exception of the library.
  EXPECT_EQ(field_integer(json(3), "a", "f.json", 9), 9);
  // Long values are shortened in messages.
  const std::string message = format_error([&] { json_bool(json(std::string(500, 'x')), "x"); });
  EXPECT_LT(message.size(), 100u) << message;
}

// tokenizer.json files whose ids were a float or negative: undefined behaviour (a double
// cast to int) or a negative id; now errors naming the file and the entry.
TEST(JsonFields, CraftedTokenizerJsonIsRefusedNamingTheEntry) {
  const std::string bpe_float = R"({"model":{"type":"BPE","vocab":{"a":1e300},"merges":[]}})";
  EXPECT_EQ(format_error([&] { tokenizer_from_json_text(bpe_float, "t.json"); }),
            "t.json: model.vocab['a'] = 1e+300 must be an integer in [0, 2147483647]");
  const std::string bpe_negative = R"({"model":{"type":"BPE","vocab":{"a":-5},"merges":[]}})";
  EXPECT_NE(format_error([&] { tokenizer_from_json_text(bpe_negative, "t.json"); }).find("model.vocab['a'] = -5"), std::string::npos);
  const std::string added = R"({"added_tokens":[{"id":2.5,"content":"x"}],"model":{"type":"BPE","vocab":{"a":0},"merges":[]}})";
  EXPECT_EQ(format_error([&] { tokenizer_from_json_text(added, "t.json"); }),
            "t.json: added_tokens[0]: field 'id' = 2.5 must be an integer in [0, 2147483647]");
  const std::string wordpiece =
      R"({"model":{"type":"WordPiece","vocab":{"a":0},"unk_token":"a","max_input_chars_per_word":1e300}})";
  EXPECT_EQ(format_error([&] { tokenizer_from_json_text(wordpiece, "t.json"); }),
            "t.json: model: field 'max_input_chars_per_word' = 1e+300 must be an integer in [0, 2147483647]");
  const std::string type = R"({"model":{"type":5}})";
  EXPECT_EQ(format_error([&] { tokenizer_from_json_text(type, "t.json"); }), "t.json: model: field 'type' = 5 must be a string");
  const std::string merge = R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[["a", 3]]}})";
  EXPECT_EQ(format_error([&] { tokenizer_from_json_text(merge, "t.json"); }), "t.json: model.merges[0] = 3 must be a string");
  const std::string post = R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},
                                "post_processor":{"type":"BertProcessing","cls":["[CLS]",1e300],"sep":["[SEP]",1]}})";
  EXPECT_EQ(format_error([&] { tokenizer_from_json_text(post, "t.json"); }),
            "t.json: post_processor.cls = 1e+300 must be an integer in [0, 2147483647]");
  const std::string unigram = R"({"model":{"type":"Unigram","vocab":[["a",-1.5]],"unk_id":-1}})";
  EXPECT_EQ(format_error([&] { tokenizer_from_json_text(unigram, "t.json"); }),
            "t.json: model: field 'unk_id' = -1 must be an integer in [0, 2147483647]");
  // A well-formed one still loads.
  EXPECT_NO_THROW(tokenizer_from_json_text(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]}})", "t.json"));
}

// A tokenizer directory: tokenizer_config.json and added_tokens.json fields.
TEST(JsonFields, CraftedTokenizerConfigIsRefusedNamingTheField) {
  test::TempDir dir;
  test::write_file(dir.str("tokenizer.json"), R"({"model":{"type":"BPE","vocab":{"a":0,"b":1},"merges":[]}})");
  test::write_file(dir.str("tokenizer_config.json"), R"({"clean_up_tokenization_spaces": "yes"})");
  EXPECT_EQ(format_error([&] { load_tokenizer(dir.str()); }),
            dir.str("tokenizer_config.json") + ": field 'clean_up_tokenization_spaces' = \"yes\" must be true or false");
  test::write_file(dir.str("tokenizer_config.json"), R"({"added_tokens_decoder": {"-4": {"content": "x"}}})");
  EXPECT_EQ(format_error([&] { load_tokenizer(dir.str()); }),
            dir.str("tokenizer_config.json") + ": added_tokens_decoder['-4']: the key is not a token id");
  test::write_file(dir.str("tokenizer_config.json"), R"({"model_max_length": -5})");
  EXPECT_NE(format_error([&] { load_tokenizer(dir.str()); }).find("'model_max_length' = -5 must be >= 0"), std::string::npos);
  test::write_file(dir.str("tokenizer_config.json"), R"({"chat_template": [{"name": "default", "template": 3}]})");
  EXPECT_NE(format_error([&] { load_tokenizer(dir.str()); }).find("field 'template' = 3 must be a string"), std::string::npos);
  test::write_file(dir.str("tokenizer_config.json"), R"({"chat_template": [{"name": "default", "template": "{{ 1 }}"}],
                                                         "model_max_length": 1e30})");
  const auto tok = load_tokenizer(dir.str());
  EXPECT_EQ(tok->chat_template, "{{ 1 }}");  // the list form's "default" entry
  EXPECT_EQ(tok->model_max_length, 0u);      // transformers' "no limit"
  test::write_file(dir.str("tokenizer_config.json"), "{}");
  test::write_file(dir.str("added_tokens.json"), R"({"<x>": 1e300})");
  EXPECT_EQ(format_error([&] { load_tokenizer(dir.str()); }),
            dir.str("added_tokens.json") + ": field '<x>' = 1e+300 must be an integer in [0, 2147483647]");
}

}  // namespace
}  // namespace pivotmt
