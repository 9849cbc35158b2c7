// Tokenizers that give the same token ids as Hugging Face's, natively: tokenizer.json
// pipelines (SentencePiece-style BPE with byte fallback, byte-level BPE, WordPiece), a
// plain SentencePiece tokenizer.model, and Meta's tiktoken-format tokenizer.model (Llama-3).
// Added and special tokens are split out first, as transformers does.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/bpe.h"

namespace pivotmt {

struct AddedToken {
  std::string content;
  TokenId id = 0;
  bool special = false;
  bool lstrip = false, rstrip = false, single_word = false, normalized = false;
};

enum class TokenizerKind { Bpe, ByteLevelBpe, WordPiece, SentencePiece, Tiktoken, Unigram };
const char* tokenizer_kind_name(TokenizerKind k);

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // add_special_tokens: the post-processor's BOS/EOS/CLS/SEP, as HF's default.
  virtual std::vector<TokenId> encode(const std::string& text, bool add_special_tokens = true) const = 0;
  // skip_special_tokens drops special tokens; clean-up follows tokenizer_config.json.
  virtual std::string decode(const std::vector<TokenId>& ids, bool skip_special_tokens = false) const = 0;

  virtual TokenizerKind kind() const = 0;
  virtual size_t vocab_size() const = 0;  // including added tokens
  virtual std::optional<TokenId> token_to_id(const std::string& token) const = 0;
  virtual std::string id_to_token(TokenId id) const = 0;
  virtual bool is_special(TokenId id) const = 0;

  std::optional<TokenId> bos_id, eos_id, pad_id, unk_id;
  std::string bos_token, eos_token;
  std::string chat_template;  // from tokenizer_config.json (empty when none)
  size_t model_max_length = 0;
};

// Loads the tokenizer of a model directory (or of a GGUF file): tokenizer.json when present, else
// tokenizer.model (SentencePiece protobuf or tiktoken ranks), else vocab.txt (WordPiece);
// plus tokenizer_config.json, special_tokens_map.json and added_tokens.json.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir);
// The same with the defaults a transformers tokenizer class gives the keys the folder's
// tokenizer_config.json / special_tokens_map.json leave out (special tokens, their lstrip):
// what `XLMRobertaTokenizerFast.from_pretrained(dir)` does for a folder holding only
// tokenizer.json, as COMET's encoder loads it.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir, const nlohmann::json& class_defaults);

// A tokenizer from a tokenizer.json and a tokenizer_config.json given as JSON (the GGUF
// reader writes both from a file's metadata). `label` names the source in errors.
std::unique_ptr<Tokenizer> tokenizer_from_parts(const nlohmann::json& tokenizer_json, const nlohmann::json& config,
                                                const std::string& label);
// A SentencePiece tokenizer from a serialized ModelProto (tokenizer.model's bytes) and a
// tokenizer_config.json given as JSON.
std::unique_ptr<Tokenizer> sentencepiece_from_proto(std::string_view proto, const nlohmann::json& config,
                                                    const std::string& label);
// A GGUF file's tokenizer (tokenizer/gguf_tokenizer.cpp): tokenizer.ggml.model 'llama'
// (SentencePiece with scores and byte fallback) or 'gpt2' (byte-level BPE with merges and
// the pre-tokenizer tokenizer.ggml.pre names), its token types, special ids,
// add_bos_token / add_eos_token and tokenizer.chat_template.
std::unique_ptr<Tokenizer> load_gguf_tokenizer(const std::string& path);
// The same tokenizer as the files a Hugging Face folder would hold: tokenizer.json (gpt2)
// or tokenizer.model (llama), and tokenizer_config.json (merge writes them beside the
// merged weights of a GGUF base).
class GgufFile;
struct GgufTokenizerFiles {
  nlohmann::json tokenizer_json;    // byte-level BPE vocabularies
  std::string sentencepiece_model;  // SentencePiece vocabularies: a ModelProto's bytes
  nlohmann::json tokenizer_config;
};
GgufTokenizerFiles gguf_tokenizer_files(const GgufFile& g);
void write_gguf_tokenizer_files(const GgufFile& g, const std::string& dir);

// A tokenizer from tokenizer.json text alone (no tokenizer_config.json); for tests and
// fuzzing. `label` names the source in errors.
std::unique_ptr<Tokenizer> tokenizer_from_json_text(const std::string& text, const std::string& label);

}  // namespace pivotmt
