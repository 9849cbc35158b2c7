#include "metrics/tokenizers.h"

#include <sentencepiece_processor.h>

#include <filesystem>

#include <fmt/format.h>

#include "core/error.h"
#include "text/unicode.h"

namespace pivotmt::metrics {
namespace {

// Python's re.sub for the two-character patterns "(A)(B)" the tokenizers use: matches
// are found left to right and never overlap (scanning resumes after a match), which is
// why "a.." separates only the first period in one pass. `before`/`after` place the
// spaces of the replacement: r'\1 \2 ' is (false, true), r' \1 \2' is (true, false).
template <typename A, typename B>
std::u32string sub_pair(const std::u32string& s, A first, B second, bool space_before, bool space_after) {
  std::u32string out;
  out.reserve(s.size() + 16);
  for (size_t i = 0; i < s.size();) {
    if (i + 1 < s.size() && first(s[i]) && second(s[i + 1])) {
      if (space_before) out.push_back(U' ');
      out.push_back(s[i]);
      out.push_back(U' ');
      out.push_back(s[i + 1]);
      if (space_after) out.push_back(U' ');
      i += 2;
    } else {
      out.push_back(s[i]);
      ++i;
    }
  }
  return out;
}

// re.sub(r'(X)', r' \1 ') for a one-character class.
template <typename X>
std::u32string pad_chars(const std::u32string& s, X matches) {
  std::u32string out;
  out.reserve(s.size() + 16);
  for (char32_t c : s) {
    if (matches(c)) {
      out.push_back(U' ');
      out.push_back(c);
      out.push_back(U' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

void replace_all(std::u32string& s, std::u32string_view from, std::u32string_view to) {
  if (from.empty()) return;
  std::u32string out;
  size_t pos = 0;
  while (true) {
    const size_t hit = s.find(from, pos);
    if (hit == std::u32string::npos) break;
    out.append(s, pos, hit - pos);
    out.append(to);
    pos = hit + from.size();
  }
  if (pos == 0) return;
  out.append(s, pos, std::u32string::npos);
  s = std::move(out);
}

bool is_digit(char32_t c) { return c >= U'0' && c <= U'9'; }
bool is_period_comma(char32_t c) { return c == U'.' || c == U','; }

// [\{-\~\[-\` -\&\(-\+\:-\@\/]: ASCII punctuation and symbols but not ' , - . (and space).
bool is_13a_punct(char32_t c) {
  return (c >= 0x7b && c <= 0x7e) || (c >= 0x5b && c <= 0x60) || (c >= 0x20 && c <= 0x26) ||
         (c >= 0x28 && c <= 0x2b) || (c >= 0x3a && c <= 0x40) || c == 0x2f;
}

// mteval-v13a's language-dependent regexes (sacrebleu's TokenizerRegexp), without the
// final whitespace normalisation.
std::u32string regexp_rules(const std::u32string& line) {
  std::u32string s = pad_chars(line, is_13a_punct);
  s = sub_pair(s, [](char32_t c) { return !is_digit(c); }, is_period_comma, false, true);
  s = sub_pair(s, is_period_comma, [](char32_t c) { return !is_digit(c); }, true, false);
  s = sub_pair(s, is_digit, [](char32_t c) { return c == U'-'; }, false, true);
  return s;
}

// sacrebleu lists its Chinese ranges as Python string pairs and compares characters
// with <=; two of the pairs ('\u20000', '\u2a6d6' and '\u2f800', '\u2fa1d') were meant
// as supplementary-plane code points but are five-character strings, so they really
// cover U+2001..U+2A6D and U+2F81..U+2FA1 (general punctuation, currency, arrows, ...).
// Reproduced as it behaves.
bool is_zh_char(char32_t c) {
  static constexpr std::pair<char32_t, char32_t> kRanges[] = {
      {0x3400, 0x4db5}, {0x4e00, 0x9fa5}, {0x9fa6, 0x9fbb}, {0xf900, 0xfa2d}, {0xfa30, 0xfa6a}, {0xfa70, 0xfad9},
      {0x2001, 0x2a6d}, {0x2f81, 0x2fa1}, {0xff00, 0xffef}, {0x2e80, 0x2eff}, {0x3000, 0x303f}, {0x31c0, 0x31ef},
      {0x2f00, 0x2fdf}, {0x2ff0, 0x2fff}, {0x3100, 0x312f}, {0x31a0, 0x31bf}, {0xfe10, 0xfe1f}, {0xfe30, 0xfe4f},
      {0x2600, 0x26ff}, {0x2700, 0x27bf}, {0x3200, 0x32ff}, {0x3300, 0x33ff}};
  for (const auto& [lo, hi] : kRanges)
    if (c >= lo && c <= hi) return true;
  return false;
}

class Tokenizer13a : public BleuTokenizer {
 public:
  std::u32string operator()(const std::u32string& line) const override { return tokenize_13a(line); }
  std::string signature() const override { return "13a"; }
};
class TokenizerIntl : public BleuTokenizer {
 public:
  std::u32string operator()(const std::u32string& line) const override { return tokenize_intl(line); }
  std::string signature() const override { return "intl"; }
};
class TokenizerChar : public BleuTokenizer {
 public:
  std::u32string operator()(const std::u32string& line) const override { return tokenize_char(line); }
  std::string signature() const override { return "char"; }
};
class TokenizerZh : public BleuTokenizer {
 public:
  std::u32string operator()(const std::u32string& line) const override { return tokenize_zh(line); }
  std::string signature() const override { return "zh"; }
};
class TokenizerNone : public BleuTokenizer {
 public:
  std::u32string operator()(const std::u32string& line) const override { return line; }
  std::string signature() const override { return "none"; }
};

// FLORES SentencePiece tokenizers: ' '.join(EncodeAsPieces(line)).
class TokenizerSpm : public BleuTokenizer {
 public:
  TokenizerSpm(const std::string& name, const std::string& model) : name_(name) {
    if (model.empty())
      throw Error(fmt::format("tokenizer {} needs its SentencePiece model file (--spm-model PATH); pivotmt does not "
                              "download it: fetch it once where you have network access",
                              name));
    if (!std::filesystem::exists(model)) throw Error(fmt::format("{}: SentencePiece model not found", model));
    const auto status = sp_.Load(model);
    if (!status.ok()) throw Error(fmt::format("{}: cannot load SentencePiece model: {}", model, status.ToString()));
  }
  std::u32string operator()(const std::u32string& line) const override {
    std::vector<std::string> pieces;
    const auto status = sp_.Encode(u32_to_utf8(line), &pieces);
    if (!status.ok()) throw Error("SentencePiece encoding failed: " + status.ToString());
    std::string joined;
    for (size_t i = 0; i < pieces.size(); ++i) joined += (i ? " " : "") + pieces[i];
    return utf8_to_u32(joined);
  }
  std::string signature() const override { return name_; }

 private:
  std::string name_;
  sentencepiece::SentencePieceProcessor sp_;
};
}  // namespace

std::u32string tokenize_13a(const std::u32string& input) {
  std::u32string line = input;
  replace_all(line, U"<skipped>", U"");
  replace_all(line, U"-\n", U"");
  replace_all(line, U"\n", U" ");
  if (line.find(U'&') != std::u32string::npos) {
    replace_all(line, U"&quot;", U"\"");
    replace_all(line, U"&amp;", U"&");
    replace_all(line, U"&lt;", U"<");
    replace_all(line, U"&gt;", U">");
  }
  return py_normalize_spaces(regexp_rules(U" " + line + U" "));
}

std::u32string tokenize_intl(const std::u32string& line) {
  auto not_number = [](char32_t c) { return !is_number_category(c); };
  std::u32string s = sub_pair(line, not_number, is_punctuation_category, false, true);
  s = sub_pair(s, is_punctuation_category, not_number, true, false);
  s = pad_chars(s, is_symbol_category);
  return py_normalize_spaces(s);
}

std::u32string tokenize_char(const std::u32string& line) {
  std::u32string out;
  out.reserve(line.size() * 2);
  for (size_t i = 0; i < line.size(); ++i) {
    if (i) out.push_back(U' ');
    out.push_back(line[i]);
  }
  return out;
}

std::u32string tokenize_zh(const std::u32string& input) {
  const std::u32string line = py_strip(input);
  std::u32string spaced = pad_chars(line, is_zh_char);
  return py_normalize_spaces(regexp_rules(spaced));
}

std::unique_ptr<BleuTokenizer> make_bleu_tokenizer(const std::string& name, const std::string& spm_model) {
  if (name == "13a") return std::make_unique<Tokenizer13a>();
  if (name == "intl") return std::make_unique<TokenizerIntl>();
  if (name == "char") return std::make_unique<TokenizerChar>();
  if (name == "zh") return std::make_unique<TokenizerZh>();
  if (name == "none") return std::make_unique<TokenizerNone>();
  if (name == "flores101" || name == "flores200") return std::make_unique<TokenizerSpm>(name, spm_model);
  if (name == "spm") return std::make_unique<TokenizerSpm>("flores101", spm_model);
  throw Error(fmt::format("unknown BLEU tokenizer '{}' (expected 13a, intl, char, zh, none, flores101, flores200)", name));
}

namespace {
// Tercom's Asian punctuation: 、。〈-】〔-〟｡-･・ and full-width .,?:;!"()
bool is_asian_punct(char32_t c) {
  return c == 0x3001 || c == 0x3002 || (c >= 0x3008 && c <= 0x3011) || (c >= 0x3014 && c <= 0x301f) ||
         (c >= 0xff61 && c <= 0xff65) || c == 0x30fb;
}
bool is_full_width_punct(char32_t c) {
  return c == 0xff0e || c == 0xff0c || c == 0xff1f || c == 0xff1a || c == 0xff1b || c == 0xff01 || c == 0xff02 ||
         c == 0xff08 || c == 0xff09;
}

std::u32string tercom_normalize_western(std::u32string s) {
  replace_all(s, U"\n-", U"");  // (sic: Tercom strips "\n-", where 13a strips "-\n")
  replace_all(s, U"\n", U" ");
  replace_all(s, U"&quot;", U"\"");
  replace_all(s, U"&amp;", U"&");
  replace_all(s, U"&lt;", U"<");
  replace_all(s, U"&gt;", U">");
  s = pad_chars(U" " + s + U" ", is_13a_punct);
  replace_all(s, U"'s ", U" 's ");
  // r"'s$" cannot match: the string now ends with the space added above.
  s = sub_pair(s, [](char32_t c) { return !is_digit(c); }, is_period_comma, false, true);
  s = sub_pair(s, is_period_comma, [](char32_t c) { return !is_digit(c); }, true, false);
  s = sub_pair(s, is_digit, [](char32_t c) { return c == U'-'; }, false, true);
  return s;
}

std::u32string tercom_normalize_asian(std::u32string s) {
  s = pad_chars(s, [](char32_t c) { return (c >= 0x4e00 && c <= 0x9fff) || (c >= 0x3400 && c <= 0x4dbf); });
  s = pad_chars(s, [](char32_t c) { return (c >= 0x31c0 && c <= 0x31ef) || (c >= 0x2e80 && c <= 0x2eff); });
  s = pad_chars(s, [](char32_t c) {
    return (c >= 0x3300 && c <= 0x33ff) || (c >= 0xf900 && c <= 0xfaff) || (c >= 0xfe30 && c <= 0xfe4f);
  });
  s = pad_chars(s, [](char32_t c) { return c >= 0x3200 && c <= 0x3f22; });
  // The three kana rules are anchored with '^' inside their groups; after the Western
  // step the string always starts with a space, so they never match. Nothing to do.
  s = pad_chars(s, is_asian_punct);
  s = pad_chars(s, is_full_width_punct);
  return s;
}
}  // namespace

std::u32string tokenize_tercom(const std::u32string& line, const TercomOptions& o) {
  if (line.empty()) return line;
  std::u32string s = o.case_sensitive ? line : py_lower(line);
  if (o.normalized) {
    s = tercom_normalize_western(std::move(s));
    if (o.asian_support) s = tercom_normalize_asian(std::move(s));
    s = py_normalize_spaces(s);  // \s+ -> ' ', then strip both ends
  }
  if (o.no_punct) {
    std::u32string kept;
    for (char32_t c : s) {
      const bool western = c == U'.' || c == U',' || c == U'?' || c == U':' || c == U';' || c == U'!' || c == U'"' ||
                           c == U'(' || c == U')';
      const bool asian = o.asian_support && (is_asian_punct(c) || is_full_width_punct(c));
      if (!western && !asian) kept.push_back(c);
    }
    s = std::move(kept);
  }
  return s;
}

}  // namespace pivotmt::metrics
