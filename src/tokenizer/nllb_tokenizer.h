// NLLB-200's tokenizer: its SentencePiece BPE model (sentencepiece.bpe.model, through
// libsentencepiece) with fairseq's id layout, as transformers' NllbTokenizer encodes:
//   <s> 0, <pad> 1, </s> 2, <unk> 3; SentencePiece piece i (i ≥ 3) is id i + 1 (the fairseq
//   offset); the language codes follow the vocabulary in their listed order (eng_Latn is
//   256047 in the real model), then <mask>.
// The codes and their ids come from tokenizer.json's added tokens when the folder has one
// (what transformers reads), else from special_tokens_map.json / tokenizer_config.json's
// additional_special_tokens (the layout above). A source sentence is
// `[src_lang] tokens </s>` (the non-legacy behaviour).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace pivotmt {

class NllbTokenizer {
 public:
  explicit NllbTokenizer(const std::string& dir);
  ~NllbTokenizer();
  NllbTokenizer(const NllbTokenizer&) = delete;
  NllbTokenizer& operator=(const NllbTokenizer&) = delete;

  static constexpr int32_t kBos = 0, kPad = 1, kEos = 2, kUnk = 3;

  // `[lang] tokens </s>`. max_length > 0: the tokens are cut from the end so the whole fits
  // (transformers' truncation=True); *truncated tells whether anything was cut.
  std::vector<int32_t> encode_source(std::string_view text, std::string_view lang, size_t max_length = 0,
                                     bool* truncated = nullptr) const;
  // The pieces' text only: special tokens, language codes and <unk> are skipped (decode
  // with skip_special_tokens=True).
  std::string decode(std::span<const int32_t> ids) const;

  // The id of a language code; throws naming the closest codes the tokenizer knows.
  int32_t language_id(std::string_view code) const;
  bool has_language(std::string_view code) const { return codes_.count(std::string(code)) > 0; }
  std::vector<std::string> languages() const;  // sorted
  size_t vocab_size() const { return vocab_size_; }
  // tokenizer_config.json's model_max_length (1024 for NLLB-200), 0 when absent.
  size_t model_max_length() const { return model_max_length_; }

 private:
  bool is_special(int32_t id) const;
  bool ends_with_space(std::string_view text) const;
  std::string dir_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::map<std::string, int32_t> codes_;  // language code -> id
  std::vector<int32_t> special_ids_;      // codes and <mask>, sorted
  int space_piece_ = -1;  // SentencePiece's id of "▁", −1 when the model has none
  size_t pieces_ = 0, vocab_size_ = 0, model_max_length_ = 0;
};

// Codes of `known` closest to `code` (edit distance, then name), at most `n`: the
// suggestions of an unknown-language error.
std::vector<std::string> closest_codes(std::string_view code, const std::vector<std::string>& known, size_t n = 5);

}  // namespace pivotmt
