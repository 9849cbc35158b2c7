#include "tokenizer/precompiled.h"

#include <unicode/ubrk.h>
#include <unicode/utext.h>

#include <cstring>
#include <memory>

#include <fmt/format.h>

#include "core/error.h"
#include "text/base64.h"

namespace pivotmt {

PrecompiledCharsmap::PrecompiledCharsmap(std::string_view blob) {
  if (blob.size() < 4) throw FormatError("precompiled_charsmap: shorter than its header");
  uint32_t trie_bytes;
  std::memcpy(&trie_bytes, blob.data(), 4);
  if (trie_bytes % 4 != 0 || trie_bytes > blob.size() - 4 || trie_bytes == 0)
    throw FormatError(fmt::format("precompiled_charsmap: a trie of {} bytes in a map of {}", trie_bytes, blob.size()));
  trie_.resize(trie_bytes / 4);
  std::memcpy(trie_.data(), blob.data() + 4, trie_bytes);
  pool_.assign(blob.substr(4 + trie_bytes));
}

PrecompiledCharsmap PrecompiledCharsmap::from_base64(std::string_view text) {
  return PrecompiledCharsmap(base64_decode(text, "precompiled_charsmap"));
}

std::optional<std::string_view> PrecompiledCharsmap::transform(std::string_view chunk) const {
  // Double-array unit layout (Darts-clone): offset = (u >> 10) << ((u & 1 << 9) >> 6),
  // label = u & (1 << 31 | 0xff), leaf flag = bit 8, value = u & ((1 << 31) - 1).
  auto offset = [](uint32_t u) { return size_t(u >> 10) << ((u & (1u << 9)) >> 6); };
  size_t node = 0;
  if (trie_.empty()) return std::nullopt;
  node ^= offset(trie_[0]);
  for (unsigned char c : chunk) {
    if (c == 0) break;
    node ^= c;
    if (node >= trie_.size()) return std::nullopt;
    const uint32_t unit = trie_[node];
    if ((unit & ((1u << 31) | 0xffu)) != c) return std::nullopt;
    node ^= offset(unit);
    if (node >= trie_.size()) return std::nullopt;
    if ((unit >> 8) & 1) {  // the first (shortest) match is the one used
      const size_t at = trie_[node] & ((1u << 31) - 1);
      if (at > pool_.size()) throw FormatError(fmt::format("precompiled_charsmap: replacement at {} beyond the pool of {}", at, pool_.size()));
      const size_t end = pool_.find('\0', at);
      return std::string_view(pool_).substr(at, (end == std::string::npos ? pool_.size() : end) - at);
    }
  }
  return std::nullopt;
}

std::string PrecompiledCharsmap::normalize(const std::string& text) const {
  std::string out;
  out.reserve(text.size());
  UErrorCode status = U_ZERO_ERROR;
  std::unique_ptr<UText, decltype(&utext_close)> ut(utext_openUTF8(nullptr, text.data(), int64_t(text.size()), &status), utext_close);
  std::unique_ptr<UBreakIterator, decltype(&ubrk_close)> it(ubrk_open(UBRK_CHARACTER, "", nullptr, 0, &status), ubrk_close);
  if (U_FAILURE(status)) throw Error(fmt::format("precompiled normalizer: ICU break iterator: {}", u_errorName(status)));
  ubrk_setUText(it.get(), ut.get(), &status);
  if (U_FAILURE(status)) throw Error(fmt::format("precompiled normalizer: ICU break iterator: {}", u_errorName(status)));
  for (int32_t b = ubrk_first(it.get()), e = ubrk_next(it.get()); e != UBRK_DONE; b = e, e = ubrk_next(it.get())) {
    const std::string_view grapheme(text.data() + b, size_t(e - b));
    if (grapheme.size() < 6) {
      if (const auto norm = transform(grapheme)) {
        out += *norm;
        continue;
      }
    }
    for (size_t i = 0; i < grapheme.size();) {
      const unsigned char lead = static_cast<unsigned char>(grapheme[i]);
      const size_t len = std::min(grapheme.size() - i, size_t(lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xe ? 3 : 4));
      const std::string_view ch = grapheme.substr(i, len);
      if (const auto norm = transform(ch)) out += *norm;
      else out += ch;
      i += len;
    }
  }
  return out;
}

}  // namespace pivotmt
