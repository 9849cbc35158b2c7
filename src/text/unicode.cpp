#include "text/unicode.h"

#include <unicode/uchar.h>
#include <unicode/ustring.h>

#include "core/error.h"

namespace pivotmt {
namespace {
// Length of the UTF-8 sequence starting with `b`, 0 for an invalid lead byte.
int sequence_length(unsigned char b) {
  if (b < 0x80) return 1;
  if (b >= 0xc2 && b <= 0xdf) return 2;
  if (b >= 0xe0 && b <= 0xef) return 3;
  if (b >= 0xf0 && b <= 0xf4) return 4;
  return 0;
}

// Decodes one code point at s[i]; returns the number of bytes consumed (>= 1) and sets
// `ok` false for an invalid sequence (consuming its maximal valid prefix, as Python).
size_t decode_one(std::string_view s, size_t i, char32_t& out, bool& ok) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  const int len = sequence_length(b0);
  ok = false;
  out = 0xfffd;
  if (len == 0) return 1;
  if (len == 1) {
    ok = true;
    out = b0;
    return 1;
  }
  char32_t cp = b0 & (0x7f >> len);
  for (int k = 1; k < len; ++k) {
    if (i + k >= s.size()) return k;
    const auto b = static_cast<unsigned char>(s[i + k]);
    // Second-byte limits exclude overlongs, surrogates and values past U+10FFFF.
    unsigned char lo = 0x80, hi = 0xbf;
    if (k == 1) {
      if (b0 == 0xe0) lo = 0xa0;
      if (b0 == 0xed) hi = 0x9f;
      if (b0 == 0xf0) lo = 0x90;
      if (b0 == 0xf4) hi = 0x8f;
    }
    if (b < lo || b > hi) return k;
    cp = (cp << 6) | (b & 0x3f);
  }
  ok = true;
  out = cp;
  return static_cast<size_t>(len);
}

std::u16string to_utf16(std::u32string_view s) {
  std::u16string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    if (c >= 0x10000) {
      c -= 0x10000;
      out.push_back(char16_t(0xd800 + (c >> 10)));
      out.push_back(char16_t(0xdc00 + (c & 0x3ff)));
    } else {
      out.push_back(char16_t(c));
    }
  }
  return out;
}

std::u32string from_utf16(std::u16string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char32_t c = s[i];
    if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.size() && s[i + 1] >= 0xdc00 && s[i + 1] < 0xe000) {
      c = 0x10000 + ((c - 0xd800) << 10) + (s[i + 1] - 0xdc00);
      ++i;
    }
    out.push_back(c);
  }
  return out;
}
}  // namespace

std::u32string utf8_to_u32(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    char32_t c;
    bool ok;
    i += decode_one(s, i, c, ok);
    out.push_back(c);
  }
  return out;
}

size_t utf8_invalid_offset(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    char32_t c;
    bool ok;
    const size_t n = decode_one(s, i, c, ok);
    if (!ok) return i;
    i += n;
  }
  return std::string_view::npos;
}

std::string u32_to_utf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    if (c < 0x80) {
      out.push_back(char(c));
    } else if (c < 0x800) {
      out.push_back(char(0xc0 | (c >> 6)));
      out.push_back(char(0x80 | (c & 0x3f)));
    } else if (c < 0x10000) {
      out.push_back(char(0xe0 | (c >> 12)));
      out.push_back(char(0x80 | ((c >> 6) & 0x3f)));
      out.push_back(char(0x80 | (c & 0x3f)));
    } else {
      out.push_back(char(0xf0 | (c >> 18)));
      out.push_back(char(0x80 | ((c >> 12) & 0x3f)));
      out.push_back(char(0x80 | ((c >> 6) & 0x3f)));
      out.push_back(char(0x80 | (c & 0x3f)));
    }
  }
  return out;
}

bool py_isspace(char32_t c) {
  switch (c) {
    case 0x09: case 0x0a: case 0x0b: case 0x0c: case 0x0d:
    case 0x1c: case 0x1d: case 0x1e: case 0x1f: case 0x20:
    case 0x85: case 0xa0: case 0x1680:
    case 0x2028: case 0x2029: case 0x202f: case 0x205f: case 0x3000:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200a;
  }
}

std::vector<std::u32string> py_split(std::u32string_view s) {
  std::vector<std::u32string> words;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && py_isspace(s[i])) ++i;
    const size_t start = i;
    while (i < s.size() && !py_isspace(s[i])) ++i;
    if (i > start) words.emplace_back(s.substr(start, i - start));
  }
  return words;
}

std::u32string py_strip(std::u32string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && py_isspace(s[b])) ++b;
  while (e > b && py_isspace(s[e - 1])) --e;
  return std::u32string(s.substr(b, e - b));
}

std::u32string py_rstrip(std::u32string_view s) {
  size_t e = s.size();
  while (e > 0 && py_isspace(s[e - 1])) --e;
  return std::u32string(s.substr(0, e));
}

std::string py_rstrip_utf8(std::string_view s) {
  // Only ASCII whitespace and the multi-byte spaces can end a line; decode the tail.
  return u32_to_utf8(py_rstrip(utf8_to_u32(s)));
}

std::string py_strip_utf8(std::string_view s) { return u32_to_utf8(py_strip(utf8_to_u32(s))); }

std::u32string py_normalize_spaces(std::u32string_view s) {
  std::u32string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && py_isspace(s[i])) ++i;
    const size_t start = i;
    while (i < s.size() && !py_isspace(s[i])) ++i;
    if (i > start) {
      if (!out.empty()) out.push_back(U' ');
      out.append(s.substr(start, i - start));
    }
  }
  return out;
}

std::u32string py_lower(std::u32string_view s) {
  bool ascii = true;
  for (char32_t c : s) ascii = ascii && c < 0x80;
  if (ascii) {  // the common case, no ICU round trip
    std::u32string out(s);
    for (auto& c : out)
      if (c >= U'A' && c <= U'Z') c += 32;
    return out;
  }
  const std::u16string in = to_utf16(s);
  std::u16string out(in.size() * 3 + 4, u'\0');
  UErrorCode status = U_ZERO_ERROR;
  const int32_t n = u_strToLower(reinterpret_cast<UChar*>(out.data()), static_cast<int32_t>(out.size()),
                                 reinterpret_cast<const UChar*>(in.data()), static_cast<int32_t>(in.size()), "", &status);
  if (U_FAILURE(status)) throw Error(std::string("lowercasing failed: ") + u_errorName(status));
  out.resize(static_cast<size_t>(n));
  return from_utf16(out);
}

bool is_number_category(char32_t c) { return (U_GET_GC_MASK(c) & U_GC_N_MASK) != 0; }
bool is_punctuation_category(char32_t c) { return (U_GET_GC_MASK(c) & U_GC_P_MASK) != 0; }
bool is_symbol_category(char32_t c) { return (U_GET_GC_MASK(c) & U_GC_S_MASK) != 0; }

}  // namespace pivotmt
