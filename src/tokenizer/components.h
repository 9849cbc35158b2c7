// The pieces of a tokenizer.json pipeline that our models use, each built from its JSON
// description: normalizers, pre-tokenizers, decoders. Text is UTF-8 throughout; byte-level
// vocabularies are kept as raw bytes (their GPT-2 character mapping is undone at load).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace pivotmt {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string normalize(const std::string& text) const = 0;
};

// A piece of input: its text and whether it starts the whole input (Metaspace's
// prepend_scheme "first" only prepends there).
struct PreToken {
  std::string text;
  bool at_start = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void split(std::vector<PreToken>& pieces) const = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  // HF decoders work on the token list, each step possibly rewriting tokens.
  virtual void decode(std::vector<std::string>& tokens) const = 0;
};

// Throw UnsupportedError naming the component type when it is not implemented.
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j);      // null -> nullptr
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j);  // null -> nullptr
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& j);            // null -> nullptr

// Whether the pipeline is byte-level (a ByteLevel pre-tokenizer or decoder appears).
bool json_mentions_byte_level(const nlohmann::json& tokenizer_json);

// GPT-2's byte <-> printable-character mapping used by byte-level vocabularies.
std::string byte_level_decode(const std::string& mapped);  // "Ġhello" -> " hello"

// Hugging Face's clean_up_tokenization: " ." -> ".", " n't" -> "n't", ...
std::string clean_up_tokenization(std::string text);

// Splits on a PCRE2 pattern (Unicode-aware), keeping matches and gaps as pieces.
std::vector<std::string> regex_split(const std::string& pattern, const std::string& text);

}  // namespace pivotmt
