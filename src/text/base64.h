// Standard base64 (RFC 4648 alphabet; decoding stops at the first '=' padding), used by
// tiktoken vocabularies and sentencepiece's precompiled character maps.
#pragma once
#include <string>
#include <string_view>

namespace pivotmt {

// Throws FormatError naming `where` and the position of a character outside the alphabet.
std::string base64_decode(std::string_view text, const std::string& where);

}  // namespace pivotmt
