#include "tokenizer/nllb_tokenizer.h"

#include <algorithm>
#include <map>
#include <filesystem>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sentencepiece_processor.h>

#include "core/error.h"
#include "io/json_file.h"
#include "tokenizer/tokenizer_config.h"

namespace pivotmt {
namespace fs = std::filesystem;

namespace {
constexpr int32_t kFairseqOffset = 1;

// additional_special_tokens of special_tokens_map.json or tokenizer_config.json (entries are
// strings or AddedToken objects); transformers 5 also writes extra_special_tokens.
std::vector<std::string> listed_codes(const nlohmann::json& j, const std::string& label) {
  std::vector<std::string> out;
  for (const char* key : {"additional_special_tokens", "extra_special_tokens"}) {
    if (!j.contains(key) || !j[key].is_array()) continue;
    for (const auto& e : j[key]) {
      if (e.is_string()) out.push_back(e.get<std::string>());
      else if (e.is_object() && e.contains("content") && e["content"].is_string()) out.push_back(e["content"].get<std::string>());
      else throw FormatError(fmt::format("{}: {} holds an entry that is neither a string nor a token", label, key));
    }
    if (!out.empty()) return out;
  }
  return out;
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      const char ca = char(std::tolower(static_cast<unsigned char>(a[i - 1])));
      const char cb = char(std::tolower(static_cast<unsigned char>(b[j - 1])));
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (ca == cb ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}
}  // namespace

std::vector<std::string> closest_codes(std::string_view code, const std::vector<std::string>& known, size_t n) {
  std::vector<std::pair<size_t, std::string>> scored;
  for (const auto& k : known) {
    // A code's language part ("gom" of gom_Deva) typed alone counts as a near match.
    // The same language part ("gom" of gom_Deva; also typed alone) ranks first.
    const std::string_view lang = code.substr(0, code.find('_'));
    const bool same_language = k.compare(0, lang.size(), lang) == 0 && k.size() > lang.size() && k[lang.size()] == '_';
    const size_t d = (same_language ? 0 : 100) + edit_distance(code, k);
    scored.emplace_back(d, k);
  }
  std::sort(scored.begin(), scored.end());
  std::vector<std::string> out;
  for (size_t i = 0; i < scored.size() && i < n; ++i) out.push_back(scored[i].second);
  return out;
}

NllbTokenizer::NllbTokenizer(const std::string& dir) : dir_(dir), sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  const fs::path model = fs::path(dir) / "sentencepiece.bpe.model";
  if (!fs::exists(model))
    throw Error(fmt::format("{}: no sentencepiece.bpe.model (NLLB's tokenizer); is this an NLLB-200 model folder?", dir));
  const auto status = sp_->Load(model.string());
  if (!status.ok()) throw FormatError(fmt::format("{}: cannot load the SentencePiece model: {}", model.string(), status.ToString()));
  pieces_ = size_t(sp_->GetPieceSize());
  space_piece_ = sp_->PieceToId("\xe2\x96\x81");  // "▁"
  if (space_piece_ == sp_->unk_id()) space_piece_ = -1;
  if (pieces_ < 3) throw FormatError(fmt::format("{}: {} pieces; NLLB's model has <unk>, <s>, </s> and more", model.string(), pieces_));

  std::string mask = "<mask>";
  const fs::path config = fs::path(dir) / "tokenizer_config.json";
  nlohmann::json cfg;
  if (fs::exists(config)) {
    cfg = read_json_file(config.string());
    if (cfg.contains("model_max_length") && cfg["model_max_length"].is_number_integer()) {
      const auto m = cfg["model_max_length"].get<int64_t>();
      // transformers writes a huge sentinel (int(1e30)) when there is no limit.
      if (m > 0 && m < (int64_t(1) << 31)) model_max_length_ = size_t(m);
    }
    if (cfg.contains("mask_token")) {
      const auto& m = cfg["mask_token"];
      if (m.is_string()) mask = m.get<std::string>();
      else if (m.is_object() && m.contains("content") && m["content"].is_string()) mask = m["content"].get<std::string>();
    }
  }

  // Added tokens with the ids a file gives them (content → id): past the special four and
  // the SentencePiece pieces.
  std::map<std::string, int32_t> given;
  auto take = [&](const std::string& content, int64_t id, const std::string& where) {
    if (id <= kUnk) return;
    if (id < int64_t(pieces_) + kFairseqOffset || id >= int64_t(1) << 30)
      throw FormatError(fmt::format("{}: added token '{}' has id {}, inside the SentencePiece vocabulary ({} pieces)",
                                    where, content, id, pieces_));
    given[content] = int32_t(id);
  };
  const fs::path tokenizer_json = fs::path(dir) / "tokenizer.json";
  int32_t mask_id = -1;
  if (fs::exists(tokenizer_json)) {
    // The ids transformers uses: the added tokens after the special four.
    const auto tj = read_json_file(tokenizer_json.string());
    if (!tj.contains("added_tokens") || !tj["added_tokens"].is_array())
      throw FormatError(fmt::format("{}: no added_tokens list (the language codes)", tokenizer_json.string()));
    for (const auto& t : tj["added_tokens"]) {
      if (!t.is_object() || !t.contains("id") || !t.contains("content") || !t["id"].is_number_integer() ||
          !t["content"].is_string())
        throw FormatError(fmt::format("{}: an added token without an integer id and a content", tokenizer_json.string()));
      take(t["content"].get<std::string>(), t["id"].get<int64_t>(), tokenizer_json.string());
    }
    for (const auto& [content, id] : given) (content == mask ? mask_id : codes_[content]) = id;
  } else {
    std::vector<std::string> listed;
    const fs::path special = fs::path(dir) / "special_tokens_map.json";
    if (fs::exists(special)) listed = listed_codes(read_json_file(special.string()), special.string());
    if (listed.empty() && !cfg.is_null()) listed = listed_codes(cfg, config.string());
    // The ids transformers reads for this layout: tokenizer_config.json's added_tokens_decoder
    // and added_tokens.json (a user's added code keeps the id it was given; the list's order
    // need not be the ids' order). Codes neither file names are numbered after the pieces in
    // the list's order, <mask> after them.
    if (cfg.is_object() && cfg.contains("added_tokens_decoder") && cfg["added_tokens_decoder"].is_object())
      for (const auto& [key, t] : cfg["added_tokens_decoder"].items()) {
        const int64_t id = token_id_from_digits(key);  // the same reading as tokenizer_config.json's
        if (id < 0) throw FormatError(fmt::format("{}: added_tokens_decoder key '{}' is not a token id", config.string(), key));
        if (t.is_object() && t.contains("content") && t["content"].is_string()) take(t["content"], id, config.string());
      }
    const fs::path added = fs::path(dir) / "added_tokens.json";
    if (fs::exists(added)) {
      const auto a = read_json_file(added.string());
      if (!a.is_object()) throw FormatError(fmt::format("{}: expected an object of token: id", added.string()));
      for (const auto& [content, id] : a.items()) {
        if (!id.is_number_integer()) throw FormatError(fmt::format("{}: '{}' has no integer id", added.string(), content));
        take(content, id.get<int64_t>(), added.string());
      }
    }
    size_t position = 0;
    for (const auto& code : listed) {
      const auto it = given.find(code);
      codes_[code] = it != given.end() ? it->second : int32_t(pieces_ + kFairseqOffset + position++);
    }
    const auto m = given.find(mask);
    mask_id = m != given.end() ? m->second : int32_t(pieces_ + kFairseqOffset + position);
  }
  if (codes_.empty())
    throw FormatError(fmt::format("{}: no language codes (looked in tokenizer.json, special_tokens_map.json and "
                                  "tokenizer_config.json's additional_special_tokens)", dir));
  for (const auto& [code, id] : codes_) special_ids_.push_back(id);
  if (mask_id >= 0) special_ids_.push_back(mask_id);
  std::sort(special_ids_.begin(), special_ids_.end());
  vocab_size_ = std::max(pieces_ + kFairseqOffset, size_t(special_ids_.back()) + 1);
}

NllbTokenizer::~NllbTokenizer() = default;

int32_t NllbTokenizer::language_id(std::string_view code) const {
  const auto it = codes_.find(std::string(code));
  if (it != codes_.end()) return it->second;
  throw Error(fmt::format("unknown language code '{}' for the NLLB tokenizer of {} ({} codes); closest: {}", code, dir_,
                          codes_.size(), fmt::join(closest_codes(code, languages()), ", ")));
}

std::vector<std::string> NllbTokenizer::languages() const {
  std::vector<std::string> out;
  for (const auto& [code, id] : codes_) out.push_back(code);
  return out;
}

std::vector<int32_t> NllbTokenizer::encode_source(std::string_view text, std::string_view lang, size_t max_length,
                                                  bool* truncated) const {
  const int32_t lang_id = language_id(lang);
  std::vector<int> pieces;
  const auto status = sp_->Encode(text, &pieces);
  if (!status.ok()) throw Error(fmt::format("SentencePiece encoding failed: {}", status.ToString()));
  // transformers' NLLB tokenizer (normaliser, then Metaspace) keeps whitespace at the end
  // of the text as a piece "▁" of its own; SentencePiece's normaliser strips it.
  if (ends_with_space(text) && space_piece_ >= 0) pieces.push_back(space_piece_);
  size_t keep = pieces.size();
  if (max_length > 0) keep = std::min(keep, max_length > 2 ? max_length - 2 : size_t(0));
  if (truncated) *truncated = keep < pieces.size();
  std::vector<int32_t> ids;
  ids.reserve(keep + 2);
  ids.push_back(lang_id);
  for (size_t i = 0; i < keep; ++i) {
    const int p = pieces[i];
    // <unk> is SentencePiece's 0: fairseq's 3; every other piece moves up by the offset.
    ids.push_back(p == sp_->unk_id() ? kUnk : int32_t(p) + kFairseqOffset);
  }
  ids.push_back(kEos);
  return ids;
}

bool NllbTokenizer::ends_with_space(std::string_view text) const {
  if (text.empty()) return false;
  size_t start = text.size() - 1;  // the last code point (UTF-8: skip continuation bytes)
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  // The character is whitespace once normalised when "a<c>a" encodes as "a a" does.
  const std::string probe = "a" + std::string(text.substr(start)) + "a";
  std::vector<int> with_char, with_space;
  if (!sp_->Encode(probe, &with_char).ok() || !sp_->Encode("a a", &with_space).ok()) return false;
  return with_char == with_space;
}

bool NllbTokenizer::is_special(int32_t id) const {
  return id <= kUnk || std::binary_search(special_ids_.begin(), special_ids_.end(), id);
}

std::string NllbTokenizer::decode(std::span<const int32_t> ids) const {
  std::vector<int> pieces;
  for (const int32_t id : ids) {
    if (id < 0 || size_t(id) >= vocab_size_)
      throw Error(fmt::format("NLLB decode: token id {} is outside the vocabulary ({} ids)", id, vocab_size_));
    if (is_special(id)) continue;
    const int piece = id - kFairseqOffset;
    if (size_t(piece) >= pieces_) continue;  // an id between the pieces and the codes: nothing to show
    pieces.push_back(piece);
  }
  std::string text;
  const auto status = sp_->Decode(pieces, &text);
  if (!status.ok()) throw Error(fmt::format("SentencePiece decoding failed: {}", status.ToString()));
  return text;
}

}  // namespace pivotmt
