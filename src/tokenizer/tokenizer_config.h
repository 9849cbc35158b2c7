// What a tokenizer folder's configuration says (tokenizer_config.json, special_tokens_map.json,
// added_tokens.json, chat_template.jinja), read as transformers reads it: the tokenizers of
// tokenizer.cpp take their flags, added tokens and named special tokens from it. Internal to
// src/tokenizer.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/added_vocab.h"
#include "tokenizer/tokenizer.h"

namespace pivotmt {

// What tokenizer_config.json / special_tokens_map.json / added_tokens.json say.
struct TokenizerConfig {
  nlohmann::json config = nlohmann::json::object();
  std::string source = "tokenizer_config.json";  // names the config in errors
  std::vector<AddedToken> added;  // from added_tokens_decoder / added_tokens.json
  std::optional<bool> add_bos, add_eos;
  bool clean_up = false;
  bool legacy = true;

  static std::string token_text(const nlohmann::json& v) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
    return "";
  }
  std::string special(const char* key) const {
    return config.contains(key) ? token_text(config[key]) : "";
  }
};

// Reads DIR's configuration files (each optional) and settles the flags.
TokenizerConfig read_config(const std::string& dir);
// The flags transformers derives from the configuration (add_bos/eos, clean-up, legacy).
void settle_config(TokenizerConfig& c);

// The special tokens a tokenizer configuration names (bos, eos, unk, sep, pad, cls, mask,
// additional_special_tokens), as transformers makes them: special, not normalised, lstrip /
// rstrip from their dict form; a bare "<mask>" of the RoBERTa family strips on its left, as
// those classes construct it.
std::vector<AddedToken> named_special_tokens(const TokenizerConfig& cfg);

// Hugging Face's token ids are unsigned 32-bit; ours are int32 (a negative id means "none").
// `what` names the value in the error.
TokenId token_id(const nlohmann::json& v, std::string_view what);

// An id written as decimal digits (an added_tokens_decoder key, a tiktoken rank); -1 when the
// text is anything else or beyond int32 (std::stoi took "-5" and "12abc").
TokenId token_id_from_digits(const std::string& text);

}  // namespace pivotmt
