#include "tokenizer/components.h"
#include "tokenizer/precompiled.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/ustring.h>

#include <limits>

#include <fmt/format.h>

#include "core/error.h"
#include "io/json_fields.h"
#include "text/unicode.h"

namespace pivotmt {
namespace {
using json = nlohmann::json;

std::string str(const json& j, const char* key, const std::string& fallback = "") {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : fallback;
}
bool flag(const json& j, const char* key, bool fallback) {
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() ? it->get<bool>() : fallback;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  std::string out;
  size_t pos = 0, hit;
  while ((hit = s.find(from, pos)) != std::string::npos) {
    out.append(s, pos, hit - pos);
    out += to;
    pos = hit + from.size();
  }
  if (pos == 0) return;
  out.append(s, pos);
  s = std::move(out);
}

// A compiled PCRE2 pattern (UTF + Unicode properties, JIT when available).
class Regex {
 public:
  explicit Regex(const std::string& pattern) : pattern_(pattern) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP, &error,
                          &offset, nullptr);
    if (!code_) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      throw UnsupportedError(fmt::format("tokenizer regex '{}' does not compile at offset {}: {}", pattern, offset,
                                         reinterpret_cast<char*>(message)));
    }
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // optional speed-up; falls back silently
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Non-overlapping matches left to right: (start, end) byte ranges.
  std::vector<std::pair<size_t, size_t>> find_all(const std::string& text) const {
    std::vector<std::pair<size_t, size_t>> out;
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    size_t start = 0;
    while (start <= text.size()) {
      const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), start,
                                 PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc < 0) break;
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      if (ov[1] == ov[0]) {  // empty match: step over one character
        size_t step = 1;
        while (ov[0] + step < text.size() && (static_cast<unsigned char>(text[ov[0] + step]) & 0xc0) == 0x80) ++step;
        start = ov[0] + step;
        continue;
      }
      out.emplace_back(ov[0], ov[1]);
      start = ov[1];
    }
    pcre2_match_data_free(md);
    return out;
  }

 private:
  std::string pattern_;
  pcre2_code* code_ = nullptr;
};

std::string pattern_of(const json& p, bool& is_regex) {
  if (p.contains("Regex")) {
    is_regex = true;
    return p["Regex"].get<std::string>();
  }
  if (p.contains("String")) {
    is_regex = false;
    return p["String"].get<std::string>();
  }
  throw UnsupportedError("tokenizer pattern is neither String nor Regex: " + p.dump());
}

// ---- normalizers ----
class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(const json& j) {
    for (const auto& n : j.at("normalizers"))
      if (auto made = make_normalizer(n)) parts_.push_back(std::move(made));
  }
  std::string normalize(const std::string& t) const override {
    std::string s = t;
    for (const auto& p : parts_) s = p->normalize(s);
    return s;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(const json& j) : prefix_(str(j, "prepend")) {}
  std::string normalize(const std::string& t) const override { return t.empty() ? t : prefix_ + t; }

 private:
  std::string prefix_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  explicit ReplaceNormalizer(const json& j) : content_(str(j, "content")) {
    bool is_regex = false;
    pattern_ = pattern_of(j.at("pattern"), is_regex);
    if (is_regex) regex_ = std::make_unique<Regex>(pattern_);
  }
  std::string normalize(const std::string& t) const override {
    if (!regex_) {
      std::string s = t;
      replace_all(s, pattern_, content_);
      return s;
    }
    std::string out;
    size_t pos = 0;
    for (auto [b, e] : regex_->find_all(t)) {
      out.append(t, pos, b - pos);
      out += content_;
      pos = e;
    }
    out.append(t, pos);
    return out;
  }

 private:
  std::string pattern_, content_;
  std::unique_ptr<Regex> regex_;
};

std::u32string icu_normalize(const std::u32string& s, const char* form, UNormalization2Mode mode) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = icu::Normalizer2::getInstance(nullptr, form, mode, status);
  if (U_FAILURE(status)) throw Error("ICU normalizer unavailable");
  const std::string utf8 = u32_to_utf8(s);
  icu::UnicodeString in = icu::UnicodeString::fromUTF8(utf8);
  icu::UnicodeString out = n->normalize(in, status);
  if (U_FAILURE(status)) throw Error("ICU normalization failed");
  std::string result;
  out.toUTF8String(result);
  return utf8_to_u32(result);
}

class UnicodeNormalizer : public Normalizer {
 public:
  UnicodeNormalizer(const char* form, UNormalization2Mode mode) : form_(form), mode_(mode) {}
  std::string normalize(const std::string& t) const override {
    return u32_to_utf8(icu_normalize(utf8_to_u32(t), form_, mode_));
  }

 private:
  const char* form_;
  UNormalization2Mode mode_;
};

// Rust's char::to_lowercase, one character at a time (no final-sigma context).
std::u32string lowercase_chars(const std::u32string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    if (c < 0x80) {
      out.push_back(c >= U'A' && c <= U'Z' ? c + 32 : c);
      continue;
    }
    const std::u32string one(1, c);
    out += py_lower(one);  // full mapping of a lone character: no context to apply
  }
  return out;
}

class LowercaseNormalizer : public Normalizer {
 public:
  std::string normalize(const std::string& t) const override { return u32_to_utf8(lowercase_chars(utf8_to_u32(t))); }
};

bool is_rust_whitespace(char32_t c) { return u_isUWhiteSpace(UChar32(c)); }

bool is_cjk(char32_t c) {
  return (c >= 0x4e00 && c <= 0x9fff) || (c >= 0x3400 && c <= 0x4dbf) || (c >= 0x20000 && c <= 0x2a6df) ||
         (c >= 0x2a700 && c <= 0x2b73f) || (c >= 0x2b740 && c <= 0x2b81f) || (c >= 0x2b820 && c <= 0x2ceaf) ||
         (c >= 0xf900 && c <= 0xfaff) || (c >= 0x2f800 && c <= 0x2fa1f);
}

class BertNormalizer : public Normalizer {
 public:
  explicit BertNormalizer(const json& j)
      : clean_text_(flag(j, "clean_text", true)),
        chinese_(flag(j, "handle_chinese_chars", true)),
        lowercase_(flag(j, "lowercase", true)) {
    strip_accents_ = j.contains("strip_accents") && j["strip_accents"].is_boolean() ? j["strip_accents"].get<bool>()
                                                                                  : lowercase_;
  }
  std::string normalize(const std::string& t) const override {
    std::u32string s = utf8_to_u32(t), out;
    if (clean_text_) {
      for (char32_t c : s) {
        if (c == 0 || c == 0xfffd) continue;
        const bool whitespace = c == U'\t' || c == U'\n' || c == U'\r' || is_rust_whitespace(c);
        if (!whitespace) {
          const int8_t type = u_charType(UChar32(c));
          // Rust tokenizers' is_control: Unicode "Other" (Cc, Cf, Cn, Co, Cs).
          if (type == U_CONTROL_CHAR || type == U_FORMAT_CHAR || type == U_UNASSIGNED || type == U_PRIVATE_USE_CHAR ||
              type == U_SURROGATE)
            continue;
        }
        out.push_back(whitespace ? U' ' : c);
      }
      s.swap(out);
      out.clear();
    }
    if (chinese_) {
      for (char32_t c : s) {
        if (is_cjk(c)) {
          out.push_back(U' ');
          out.push_back(c);
          out.push_back(U' ');
        } else {
          out.push_back(c);
        }
      }
      s.swap(out);
      out.clear();
    }
    if (strip_accents_) {
      s = icu_normalize(s, "nfc", UNORM2_DECOMPOSE);
      for (char32_t c : s)
        if (u_charType(UChar32(c)) != U_NON_SPACING_MARK) out.push_back(c);
      s.swap(out);
    }
    if (lowercase_) s = lowercase_chars(s);
    return u32_to_utf8(s);
  }

 private:
  bool clean_text_, chinese_, lowercase_, strip_accents_;
};

class PrecompiledNormalizer : public Normalizer {
 public:
  explicit PrecompiledNormalizer(const json& j) : map_(PrecompiledCharsmap::from_base64(str(j, "precompiled_charsmap"))) {}
  std::string normalize(const std::string& t) const override { return map_.normalize(t); }

 private:
  PrecompiledCharsmap map_;
};

class StripNormalizer : public Normalizer {
 public:
  explicit StripNormalizer(const json& j) : left_(flag(j, "strip_left", true)), right_(flag(j, "strip_right", true)) {}
  std::string normalize(const std::string& t) const override {
    std::u32string s = utf8_to_u32(t);
    size_t b = 0, e = s.size();
    if (left_)
      while (b < e && is_rust_whitespace(s[b])) ++b;
    if (right_)
      while (e > b && is_rust_whitespace(s[e - 1])) --e;
    return u32_to_utf8(s.substr(b, e - b));
  }

 private:
  bool left_, right_;
};

// ---- pre-tokenizers ----
class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(const json& j) {
    for (const auto& p : j.at("pretokenizers"))
      if (auto made = make_pre_tokenizer(p)) parts_.push_back(std::move(made));
  }
  void split(std::vector<PreToken>& pieces) const override {
    for (const auto& p : parts_) p->split(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  explicit MetaspacePreTokenizer(const json& j) : replacement_(str(j, "replacement", "\u2581")) {
    scheme_ = str(j, "prepend_scheme", flag(j, "add_prefix_space", true) ? "always" : "never");
    split_ = flag(j, "split", true);
  }
  void split(std::vector<PreToken>& pieces) const override {
    std::vector<PreToken> out;
    for (auto& p : pieces) {
      std::string s = p.text;
      replace_all(s, " ", replacement_);
      if (!s.empty() && !s.starts_with(replacement_) && (scheme_ == "always" || (scheme_ == "first" && p.at_start)))
        s = replacement_ + s;
      if (!split_) {
        out.push_back({s, p.at_start});
        continue;
      }
      // Split before each replacement character (it starts the next piece).
      size_t start = 0;
      bool first = true;
      while (start < s.size()) {
        size_t next = s.find(replacement_, start + (s.compare(start, replacement_.size(), replacement_) == 0 ? replacement_.size() : 0));
        if (next == std::string::npos) next = s.size();
        out.push_back({s.substr(start, next - start), p.at_start && first});
        first = false;
        start = next;
      }
    }
    pieces.swap(out);
  }

 private:
  std::string replacement_, scheme_;
  bool split_;
};

const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class RegexSplitPreTokenizer : public PreTokenizer {
 public:
  RegexSplitPreTokenizer(const std::string& pattern, bool is_regex, std::string behavior, bool invert)
      : literal_(pattern), behavior_(std::move(behavior)), invert_(invert) {
    if (is_regex) regex_ = std::make_unique<Regex>(pattern);
    if (behavior_ != "Isolated" && behavior_ != "Removed")
      throw UnsupportedError(fmt::format("Split pre-tokenizer behavior '{}' is not supported", behavior_));
    if (invert_) throw UnsupportedError("Split pre-tokenizer with invert=true is not supported");
  }
  void split(std::vector<PreToken>& pieces) const override {
    std::vector<PreToken> out;
    for (const auto& p : pieces) {
      std::vector<std::pair<size_t, size_t>> matches;
      if (regex_) {
        matches = regex_->find_all(p.text);
      } else if (!literal_.empty()) {
        for (size_t pos = 0; (pos = p.text.find(literal_, pos)) != std::string::npos; pos += literal_.size())
          matches.emplace_back(pos, pos + literal_.size());
      }
      size_t pos = 0;
      bool first = true;
      auto emit = [&](size_t b, size_t e) {
        if (e > b) out.push_back({p.text.substr(b, e - b), p.at_start && first && b == 0});
        first = false;
      };
      for (auto [b, e] : matches) {
        emit(pos, b);
        if (behavior_ == "Isolated") emit(b, e);
        pos = e;
      }
      emit(pos, p.text.size());
    }
    pieces.swap(out);
  }

 private:
  std::string literal_, behavior_;
  bool invert_;
  std::unique_ptr<Regex> regex_;
};

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  explicit ByteLevelPreTokenizer(const json& j)
      : add_prefix_space_(flag(j, "add_prefix_space", true)), regex_(flag(j, "use_regex", true) ? new Regex(kGpt2Pattern) : nullptr) {}
  void split(std::vector<PreToken>& pieces) const override {
    std::vector<PreToken> out;
    for (auto& p : pieces) {
      std::string s = p.text;
      if (add_prefix_space_ && !s.starts_with(' ')) s = " " + s;
      if (!regex_) {
        out.push_back({s, p.at_start});
        continue;
      }
      for (auto [b, e] : regex_->find_all(s)) out.push_back({s.substr(b, e - b), p.at_start && b == 0});
    }
    pieces.swap(out);
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;
};

bool is_bert_punct(char32_t c) {
  return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126) ||
         is_punctuation_category(c);
}

class BertPreTokenizer : public PreTokenizer {
 public:
  void split(std::vector<PreToken>& pieces) const override {
    std::vector<PreToken> out;
    for (const auto& p : pieces) {
      const std::u32string s = utf8_to_u32(p.text);
      std::u32string word;
      auto flush = [&] {
        if (!word.empty()) out.push_back({u32_to_utf8(word), false});
        word.clear();
      };
      for (char32_t c : s) {
        if (is_rust_whitespace(c)) {
          flush();
        } else if (is_bert_punct(c)) {
          flush();
          out.push_back({u32_to_utf8(std::u32string(1, c)), false});
        } else {
          word.push_back(c);
        }
      }
      flush();
    }
    pieces.swap(out);
  }
};

// ---- decoders ----
class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(const json& j) {
    for (const auto& d : j.at("decoders"))
      if (auto made = make_decoder(d)) parts_.push_back(std::move(made));
  }
  void decode(std::vector<std::string>& tokens) const override {
    for (const auto& p : parts_) p->decode(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

class ReplaceDecoder : public Decoder {
 public:
  explicit ReplaceDecoder(const json& j) : content_(str(j, "content")) {
    bool is_regex = false;
    pattern_ = pattern_of(j.at("pattern"), is_regex);
    if (is_regex) throw UnsupportedError("Replace decoder with a regex pattern is not supported");
  }
  void decode(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) replace_all(t, pattern_, content_);
  }

 private:
  std::string pattern_, content_;
};

std::optional<uint8_t> parse_byte_token(const std::string& t) {
  if (t.size() != 6 || !t.starts_with("<0x") || t[5] != '>') return std::nullopt;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(t[3]), lo = hex(t[4]);
  if (hi < 0 || lo < 0) return std::nullopt;
  return uint8_t(hi * 16 + lo);
}

class ByteFallbackDecoder : public Decoder {
 public:
  void decode(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    size_t n_bytes = 0;
    auto flush = [&] {
      if (n_bytes == 0) return;
      if (utf8_invalid_offset(bytes) == std::string::npos) {
        out.push_back(bytes);
      } else {
        for (size_t i = 0; i < n_bytes; ++i) out.push_back("\xEF\xBF\xBD");  // one U+FFFD per byte
      }
      bytes.clear();
      n_bytes = 0;
    };
    for (auto& t : tokens) {
      if (auto b = parse_byte_token(t)) {
        bytes.push_back(char(*b));
        ++n_bytes;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens.swap(out);
  }
};

class FuseDecoder : public Decoder {
 public:
  void decode(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, all);
  }
};

class StripDecoder : public Decoder {
 public:
  explicit StripDecoder(const json& j)
      : content_(str(j, "content", " ")),
        start_(int(field_integer(j, "start", "tokenizer.json: Strip decoder", 0, 0, std::numeric_limits<int>::max()))),
        stop_(int(field_integer(j, "stop", "tokenizer.json: Strip decoder", 0, 0, std::numeric_limits<int>::max()))) {}
  void decode(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::u32string s = utf8_to_u32(t);
      const std::u32string c = utf8_to_u32(content_);
      size_t b = 0, e = s.size();
      for (int i = 0; i < start_ && b < e && c.size() == 1 && s[b] == c[0]; ++i) ++b;
      for (int i = 0; i < stop_ && e > b && c.size() == 1 && s[e - 1] == c[0]; ++i) --e;
      t = u32_to_utf8(s.substr(b, e - b));
    }
  }

 private:
  std::string content_;
  int start_, stop_;
};

// Byte-level tokens are kept as raw bytes, so decoding is concatenation followed by
// lossy UTF-8 (one U+FFFD per maximal invalid sequence, as Rust's from_utf8_lossy).
class ByteLevelDecoder : public Decoder {
 public:
  void decode(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, u32_to_utf8(utf8_to_u32(all)));
  }
};

class WordPieceDecoder : public Decoder {
 public:
  explicit WordPieceDecoder(const json& j) : prefix_(str(j, "prefix", "##")), cleanup_(flag(j, "cleanup", true)) {}
  void decode(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      auto& t = tokens[i];
      if (i != 0) {
        if (t.starts_with(prefix_)) t = t.substr(prefix_.size());
        else t = " " + t;
      }
      if (cleanup_) t = clean_up_tokenization(t);
    }
  }

 private:
  std::string prefix_;
  bool cleanup_;
};

class MetaspaceDecoder : public Decoder {
 public:
  explicit MetaspaceDecoder(const json& j) : replacement_(str(j, "replacement", "\u2581")) {
    scheme_ = str(j, "prepend_scheme", flag(j, "add_prefix_space", true) ? "always" : "never");
  }
  void decode(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      replace_all(tokens[i], replacement_, " ");
      if (i == 0 && scheme_ != "never" && tokens[i].starts_with(' ')) tokens[i].erase(0, 1);
    }
  }

 private:
  std::string replacement_, scheme_;
};
}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const json& j) {
  if (j.is_null()) return nullptr;
  const std::string type = str(j, "type");
  if (type == "Sequence") return std::make_unique<SequenceNormalizer>(j);
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(j);
  if (type == "Replace") return std::make_unique<ReplaceNormalizer>(j);
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>("nfc", UNORM2_COMPOSE);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>("nfc", UNORM2_DECOMPOSE);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>("nfkc", UNORM2_COMPOSE);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>("nfkc", UNORM2_DECOMPOSE);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "BertNormalizer") return std::make_unique<BertNormalizer>(j);
  if (type == "Strip") return std::make_unique<StripNormalizer>(j);
  if (type == "Precompiled") return std::make_unique<PrecompiledNormalizer>(j);
  throw UnsupportedError(fmt::format("tokenizer.json: normalizer type '{}' is not supported", type));
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j) {
  if (j.is_null()) return nullptr;
  const std::string type = str(j, "type");
  if (type == "Sequence") return std::make_unique<SequencePreTokenizer>(j);
  if (type == "Metaspace") return std::make_unique<MetaspacePreTokenizer>(j);
  if (type == "ByteLevel") return std::make_unique<ByteLevelPreTokenizer>(j);
  if (type == "BertPreTokenizer") return std::make_unique<BertPreTokenizer>();
  if (type == "Digits")  // each digit (\p{N}: Rust's char::is_numeric) or each run of them, isolated
    return std::make_unique<RegexSplitPreTokenizer>(flag(j, "individual_digits", false) ? "\\p{N}" : "\\p{N}+", true,
                                                    "Isolated", false);
  if (type == "Split") {
    bool is_regex = false;
    const std::string pattern = pattern_of(j.at("pattern"), is_regex);
    return std::make_unique<RegexSplitPreTokenizer>(pattern, is_regex, str(j, "behavior", "Isolated"),
                                                    flag(j, "invert", false));
  }
  throw UnsupportedError(fmt::format("tokenizer.json: pre-tokenizer type '{}' is not supported", type));
}

std::unique_ptr<Decoder> make_decoder(const json& j) {
  if (j.is_null()) return nullptr;
  const std::string type = str(j, "type");
  if (type == "Sequence") return std::make_unique<SequenceDecoder>(j);
  if (type == "Replace") return std::make_unique<ReplaceDecoder>(j);
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") return std::make_unique<StripDecoder>(j);
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "WordPiece") return std::make_unique<WordPieceDecoder>(j);
  if (type == "Metaspace") return std::make_unique<MetaspaceDecoder>(j);
  throw UnsupportedError(fmt::format("tokenizer.json: decoder type '{}' is not supported", type));
}

bool json_mentions_byte_level(const json& t) {
  return t.dump().find("\"ByteLevel\"") != std::string::npos;
}

std::string byte_level_decode(const std::string& mapped) {
  // bytes_to_unicode: printable bytes map to themselves, the other 68 to U+0100.. in order.
  static const auto table = [] {
    std::unordered_map<char32_t, uint8_t> t;
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
      t[printable ? char32_t(b) : char32_t(256 + n++)] = uint8_t(b);
    }
    return t;
  }();
  std::string out;
  for (char32_t c : utf8_to_u32(mapped)) {
    auto it = table.find(c);
    if (it == table.end()) throw FormatError(fmt::format("byte-level token '{}' holds a character outside the byte map", mapped));
    out.push_back(char(it->second));
  }
  return out;
}

std::string clean_up_tokenization(std::string s) {
  for (const auto& [from, to] : std::initializer_list<std::pair<const char*, const char*>>{
           {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"}, {" 'm", "'m"},
           {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}})
    replace_all(s, from, to);
  return s;
}

std::vector<std::string> regex_split(const std::string& pattern, const std::string& text) {
  const Regex re(pattern);
  std::vector<std::string> out;
  size_t pos = 0;
  for (auto [b, e] : re.find_all(text)) {
    if (b > pos) out.push_back(text.substr(pos, b - pos));
    out.push_back(text.substr(b, e - b));
    pos = e;
  }
  if (pos < text.size()) out.push_back(text.substr(pos));
  return out;
}

}  // namespace pivotmt
