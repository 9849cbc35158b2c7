#include "text/base64.h"

#include <fmt/format.h>

#include <cstdint>

#include "core/error.h"

namespace pivotmt {

std::string base64_decode(std::string_view text, const std::string& where) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < text.size() && text[i] != '='; ++i) {
    const int v = value(text[i]);
    if (v < 0)
      throw FormatError(fmt::format("{}: invalid base64: character 0x{:02x} at position {}", where,
                                    static_cast<unsigned char>(text[i]), i));
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(char((acc >> bits) & 0xff));
    }
  }
  return out;
}

}  // namespace pivotmt
