// The `Precompiled` normalizer of tokenizer.json: SentencePiece's character map (for
// example nmt_nfkc) stored as base64 — a double-array trie over UTF-8 bytes whose values
// point into a pool of NUL-terminated replacement strings — applied as Hugging Face
// tokenizers applies it: grapheme by grapheme, a grapheme shorter than 6 bytes replaced
// whole when a prefix of it is in the map (the first, shortest match), otherwise each
// character replaced on its own match. Written here because no Debian library reads this
// format; checked against Hugging Face tokenizers (tests/test_unigram.cpp).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pivotmt {

class PrecompiledCharsmap {
 public:
  // The decoded bytes of precompiled_charsmap; throws FormatError when malformed.
  explicit PrecompiledCharsmap(std::string_view blob);
  static PrecompiledCharsmap from_base64(std::string_view text);
  // The replacement of the shortest prefix of `chunk` in the map, if any.
  std::optional<std::string_view> transform(std::string_view chunk) const;
  std::string normalize(const std::string& text) const;

 private:
  std::vector<uint32_t> trie_;
  std::string pool_;
};

}  // namespace pivotmt
