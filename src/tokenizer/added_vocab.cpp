#include "tokenizer/added_vocab.h"

#include <algorithm>
#include <cwctype>

#include "text/unicode.h"

namespace pivotmt {
namespace {
bool is_word_char(char32_t c) { return c == U'_' || std::iswalnum(wint_t(c)) || c > 0x7f; }

// Decodes the code point ending just before / starting at a byte offset.
char32_t char_before(const std::string& s, size_t pos) {
  if (pos == 0) return 0;
  size_t b = pos - 1;
  while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xc0) == 0x80) --b;
  const auto u = utf8_to_u32(std::string_view(s).substr(b, pos - b));
  return u.empty() ? 0 : u[0];
}
char32_t char_at(const std::string& s, size_t pos) {
  if (pos >= s.size()) return 0;
  size_t e = pos + 1;
  while (e < s.size() && (static_cast<unsigned char>(s[e]) & 0xc0) == 0x80) ++e;
  const auto u = utf8_to_u32(std::string_view(s).substr(pos, e - pos));
  return u.empty() ? 0 : u[0];
}
}  // namespace

AddedVocabulary::AddedVocabulary(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
  // Longest first, so the first match at a position is the leftmost-longest one.
  std::stable_sort(tokens_.begin(), tokens_.end(),
                   [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
  for (size_t i = 0; i < tokens_.size(); ++i)
    if (!tokens_[i].content.empty()) by_first_byte_[static_cast<unsigned char>(tokens_[i].content[0])].push_back(i);
}

const AddedToken* AddedVocabulary::find(TokenId id) const {
  for (const auto& t : tokens_)
    if (t.id == id) return &t;
  return nullptr;
}

const AddedToken* AddedVocabulary::find(const std::string& content) const {
  for (const auto& t : tokens_)
    if (t.content == content) return &t;
  return nullptr;
}

std::vector<Segment> AddedVocabulary::split(const std::string& text, bool normalized) const {
  std::vector<Segment> out;
  size_t emitted = 0;  // text before this offset is already in `out`
  size_t pos = 0;
  while (pos < text.size()) {
    const AddedToken* hit = nullptr;
    for (size_t index : by_first_byte_[static_cast<unsigned char>(text[pos])]) {
      const AddedToken& t = tokens_[index];
      if (t.normalized != normalized) continue;
      if (text.compare(pos, t.content.size(), t.content) != 0) continue;
      if (t.single_word && (is_word_char(char_before(text, pos)) || is_word_char(char_at(text, pos + t.content.size()))))
        continue;
      hit = &t;
      break;
    }
    if (!hit) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = pos + hit->content.size();
    if (hit->lstrip)
      while (start > emitted && py_isspace(char_before(text, start))) start -= std::string(u32_to_utf8(std::u32string(1, char_before(text, start)))).size();
    if (hit->rstrip)
      while (stop < text.size() && py_isspace(char_at(text, stop))) stop += u32_to_utf8(std::u32string(1, char_at(text, stop))).size();
    if (start > emitted) out.push_back({text.substr(emitted, start - emitted), -1, emitted});
    out.push_back({hit->content, hit->id, start});
    emitted = pos = stop;
  }
  if (emitted < text.size()) out.push_back({text.substr(emitted), -1, emitted});
  return out;
}

}  // namespace pivotmt
