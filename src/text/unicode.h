// Unicode text as Python sees it: code points (not bytes, not graphemes), str.split()'s
// whitespace set, full lowercasing, general categories. The metrics and tokenizers work
// on std::u32string so that "character" means what it means in sacrebleu.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace pivotmt {

// UTF-8 -> code points. Invalid sequences become U+FFFD (one per maximal invalid
// subpart, as Python's errors="replace"); use utf8_invalid_offset() first to reject them.
std::u32string utf8_to_u32(std::string_view s);
std::string u32_to_utf8(std::u32string_view s);
// Byte offset of the first invalid UTF-8 sequence, or npos when the text is valid.
size_t utf8_invalid_offset(std::string_view s);

// The 29 code points for which Python's str.isspace() is true (str.split(), strip()).
bool py_isspace(char32_t c);
std::vector<std::u32string> py_split(std::u32string_view s);  // str.split()
std::u32string py_strip(std::u32string_view s);
std::u32string py_rstrip(std::u32string_view s);
std::string py_rstrip_utf8(std::string_view s);
std::string py_strip_utf8(std::string_view s);  // str.strip() on UTF-8 text
// ' '.join(s.split()): whitespace runs to one space, no leading or trailing space.
std::u32string py_normalize_spaces(std::u32string_view s);

// str.lower(): full case mapping (SpecialCasing, final sigma), via ICU.
std::u32string py_lower(std::u32string_view s);

// Unicode general category tests, as the `regex` module's \p{N}, \p{P}, \p{S}.
bool is_number_category(char32_t c);       // Nd, Nl, No
bool is_punctuation_category(char32_t c);  // Pc, Pd, Ps, Pe, Pi, Pf, Po
bool is_symbol_category(char32_t c);       // Sm, Sc, Sk, So

}  // namespace pivotmt
