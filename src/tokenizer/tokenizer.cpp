#include "tokenizer/tokenizer.h"

#include <sentencepiece_processor.h>

#include <filesystem>
#include <fstream>
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/gguf.h"
#include "io/json_fields.h"
#include "io/json_file.h"
#include "text/unicode.h"
#include "tokenizer/added_vocab.h"
#include "tokenizer/components.h"
#include "tokenizer/tokenizer_config.h"
#include "text/base64.h"
#include "tokenizer/unigram.h"
#include "tokenizer/wordpiece.h"

namespace pivotmt {
namespace fs = std::filesystem;
using json = nlohmann::json;

const char* tokenizer_kind_name(TokenizerKind k) {
  switch (k) {
    case TokenizerKind::Bpe: return "bpe";
    case TokenizerKind::ByteLevelBpe: return "byte-level-bpe";
    case TokenizerKind::WordPiece: return "wordpiece";
    case TokenizerKind::SentencePiece: return "sentencepiece";
    case TokenizerKind::Tiktoken: return "tiktoken";
    case TokenizerKind::Unigram: return "unigram";
  }
  return "?";
}

namespace {

// The common part: added tokens, special ids, post-processing, configuration.
class BaseTokenizer : public Tokenizer {
 public:
  bool is_special(TokenId id) const override {
    const AddedToken* t = added_ ? added_->find(id) : nullptr;
    return t && t->special;
  }

 protected:
  void finish(const TokenizerConfig& cfg, std::vector<AddedToken> added) {
    added_ = std::make_unique<AddedVocabulary>(std::move(added));
    clean_up_ = cfg.clean_up;
    if (cfg.config.contains("chat_template") && cfg.config["chat_template"].is_array()) {
      // A list of named templates: use "default".
      const std::string what = field_name(cfg.source, "chat_template");
      for (const auto& t : cfg.config["chat_template"])
        if (field_string(t, "name", what, "") == "default") chat_template = field_string(t, "template", what, "");
    } else {
      chat_template = field_string(cfg.config, "chat_template", cfg.source, "");
    }
    if (cfg.config.contains("model_max_length") && cfg.config["model_max_length"].is_number()) {
      // transformers writes a huge float (1e30) for "no limit"; a negative one is no length.
      const double m = json_number(cfg.config["model_max_length"], field_name(cfg.source, "model_max_length"));
      if (m < 0) throw FormatError(fmt::format("{}: field 'model_max_length' = {} must be >= 0", cfg.source, m));
      model_max_length = m > 1e15 ? 0 : size_t(m);
    }
    bos_token = cfg.special("bos_token");
    eos_token = cfg.special("eos_token");
    if (!bos_token.empty()) bos_id = token_to_id(bos_token);
    if (!eos_token.empty()) eos_id = token_to_id(eos_token);
    if (auto unk = cfg.special("unk_token"); !unk.empty()) unk_id = token_to_id(unk);
    if (auto pad = cfg.special("pad_token"); !pad.empty()) pad_id = token_to_id(pad);
    // Llama-family configs say whether to add BOS/EOS; they override the JSON template.
    if (cfg.add_bos || cfg.add_eos) {
      prefix_.clear();
      suffix_.clear();
      if (cfg.add_bos.value_or(false) && bos_id) prefix_.push_back(*bos_id);
      if (cfg.add_eos.value_or(false) && eos_id) suffix_.push_back(*eos_id);
    }
  }

  std::vector<TokenId> with_specials(std::vector<TokenId> ids, bool add) const {
    if (!add) return ids;
    std::vector<TokenId> out = prefix_;
    out.insert(out.end(), ids.begin(), ids.end());
    out.insert(out.end(), suffix_.begin(), suffix_.end());
    return out;
  }

  // Text must be UTF-8 (Hugging Face's tokenizers only ever see valid strings).
  static void check_utf8(const std::string& text) {
    if (const size_t bad = utf8_invalid_offset(text); bad != std::string::npos)
      throw FormatError(fmt::format("cannot tokenize: the text is not valid UTF-8 (byte {})", bad));
  }

  // The shared outer loop of encode: added tokens become their ids, text between them
  // goes to `encode_text(segment, ids)`.
  template <typename F>
  std::vector<TokenId> encode_segments(const std::string& text, bool add_special_tokens, F&& encode_text) const {
    check_utf8(text);
    std::vector<TokenId> ids;
    for (const auto& seg : added_->split(text, false)) {
      if (seg.id >= 0) ids.push_back(seg.id);
      else encode_text(seg, ids);
    }
    return with_specials(std::move(ids), add_special_tokens);
  }

  std::string finish_decode(std::string text) const { return clean_up_ ? clean_up_tokenization(std::move(text)) : text; }

  std::unique_ptr<AddedVocabulary> added_;
  std::vector<TokenId> prefix_, suffix_;
  bool clean_up_ = false;
};

// tokenizer.json pipelines (and tiktoken, built as one).
class PipelineTokenizer : public BaseTokenizer {
 public:
  PipelineTokenizer(TokenizerKind kind, std::unique_ptr<Normalizer> normalizer, std::unique_ptr<PreTokenizer> pre,
                    std::unique_ptr<BpeModel> bpe, std::unique_ptr<WordPieceModel> wordpiece,
                    std::unique_ptr<Decoder> decoder)
      : kind_(kind),
        normalizer_(std::move(normalizer)),
        pre_(std::move(pre)),
        bpe_(std::move(bpe)),
        wordpiece_(std::move(wordpiece)),
        decoder_(std::move(decoder)) {}

  void set_unigram(std::unique_ptr<UnigramModel> unigram) { unigram_ = std::move(unigram); }
  void set_post(std::vector<TokenId> prefix, std::vector<TokenId> suffix) {
    prefix_ = std::move(prefix);
    suffix_ = std::move(suffix);
  }
  void configure(const TokenizerConfig& cfg, std::vector<AddedToken> added) { finish(cfg, std::move(added)); }

  std::vector<TokenId> encode(const std::string& text, bool add_special_tokens) const override {
    return encode_segments(text, add_special_tokens, [&](const Segment& seg, std::vector<TokenId>& ids) {
      const std::string normalized = normalizer_ ? normalizer_->normalize(seg.text) : seg.text;
      for (const auto& part : added_->split(normalized, true)) {
        if (part.id >= 0) {
          ids.push_back(part.id);
          continue;
        }
        std::vector<PreToken> pieces = {{part.text, seg.offset == 0 && part.offset == 0}};
        if (pre_) pre_->split(pieces);
        for (const auto& p : pieces) {
          if (bpe_) bpe_->encode_word(p.text, ids);
          else if (unigram_) unigram_->encode_word(p.text, ids);
          else wordpiece_->encode_word(p.text, ids);
        }
      }
    });
  }

  std::string decode(const std::vector<TokenId>& ids, bool skip_special_tokens) const override {
    std::vector<std::string> tokens;
    for (TokenId id : ids) {
      if (const AddedToken* t = added_->find(id)) {
        if (!(skip_special_tokens && t->special)) tokens.push_back(t->content);
        continue;
      }
      const std::string& t = bpe_ ? bpe_->id_to_token(id) : unigram_ ? unigram_->id_to_token(id) : wordpiece_->id_to_token(id);
      if (t.empty()) throw Error(fmt::format("decode: token id {} is outside the vocabulary ({} tokens)", id, vocab_size()));
      tokens.push_back(t);
    }
    if (!decoder_) {
      std::string joined;
      for (size_t i = 0; i < tokens.size(); ++i) joined += (i ? " " : "") + tokens[i];
      return finish_decode(joined);
    }
    decoder_->decode(tokens);
    std::string out;
    for (const auto& t : tokens) out += t;
    return finish_decode(out);
  }

  TokenizerKind kind() const override { return kind_; }
  size_t vocab_size() const override {
    TokenId max_id = bpe_ ? bpe_->max_id() : unigram_ ? unigram_->max_id() : wordpiece_->max_id();
    for (const auto& t : added_->tokens()) max_id = std::max(max_id, t.id);
    return size_t(max_id + 1);
  }
  std::optional<TokenId> token_to_id(const std::string& token) const override {
    if (const AddedToken* t = added_ ? added_->find(token) : nullptr) return t->id;
    return bpe_ ? bpe_->token_to_id(token) : unigram_ ? unigram_->token_to_id(token) : wordpiece_->token_to_id(token);
  }
  std::string id_to_token(TokenId id) const override {
    if (const AddedToken* t = added_->find(id)) return t->content;
    return bpe_ ? bpe_->id_to_token(id) : unigram_ ? unigram_->id_to_token(id) : wordpiece_->id_to_token(id);
  }

 private:
  TokenizerKind kind_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_;
  std::unique_ptr<BpeModel> bpe_;
  std::unique_ptr<WordPieceModel> wordpiece_;
  std::unique_ptr<UnigramModel> unigram_;
  std::unique_ptr<Decoder> decoder_;
};

std::vector<AddedToken> added_from_json(const json& t, const std::string& path) {
  std::vector<AddedToken> out;
  if (!t.contains("added_tokens") || !t["added_tokens"].is_array()) return out;
  for (const auto& a : t["added_tokens"]) {
    const std::string where = fmt::format("{}: added_tokens[{}]", path, out.size());
    AddedToken x;
    x.id = token_id(required_field(a, "id", where), field_name(where, "id"));
    x.content = json_string(required_field(a, "content", where), field_name(where, "content"));
    x.special = field_bool(a, "special", where, false);
    x.lstrip = field_bool(a, "lstrip", where, false);
    x.rstrip = field_bool(a, "rstrip", where, false);
    x.single_word = field_bool(a, "single_word", where, false);
    x.normalized = field_bool(a, "normalized", where, !x.special);
    out.push_back(x);
  }
  return out;
}

// Ids a TemplateProcessing / BertProcessing post-processor puts around a single sequence.
void post_processor_ids(const json& pp, const std::string& where, std::vector<TokenId>& prefix,
                        std::vector<TokenId>& suffix) {
  if (pp.is_null()) return;
  const std::string type = field_string(pp, "type", where, "");
  if (type == "Sequence") {
    for (const auto& p : pp.at("processors")) post_processor_ids(p, where + ".processors", prefix, suffix);
  } else if (type == "TemplateProcessing") {
    bool after = false;
    for (const auto& item : pp.at("single")) {
      if (item.contains("Sequence")) {
        after = true;
        continue;
      }
      const std::string name = json_string(item.at("SpecialToken").at("id"), where + ".single: SpecialToken id");
      const std::string ids_where = fmt::format("{}.special_tokens['{}'].ids", where, name);
      for (const auto& id : pp.at("special_tokens").at(name).at("ids")) (after ? suffix : prefix).push_back(token_id(id, ids_where));
    }
  } else if (type == "BertProcessing" || type == "RobertaProcessing") {
    prefix.push_back(token_id(pp.at("cls").at(1), where + ".cls"));
    suffix.push_back(token_id(pp.at("sep").at(1), where + ".sep"));
  } else if (type != "ByteLevel") {
    throw UnsupportedError(fmt::format("{}: post-processor type '{}' is not supported", where, type));
  }
}

std::unique_ptr<Tokenizer> build_pipeline(const json& t, const std::string& path, const TokenizerConfig& cfg) {
  try {
    const json& model = t.at("model");
    const std::string model_where = path + ": model";
    const std::string type = field_string(model, "type", model_where, "");
    const bool byte_level = json_mentions_byte_level(t);
    std::unique_ptr<BpeModel> bpe;
    std::unique_ptr<WordPieceModel> wordpiece;
    std::unique_ptr<UnigramModel> unigram;
    TokenizerKind kind;
    if (type == "BPE") {
      std::unordered_map<std::string, TokenId> vocab;
      for (const auto& [tok, id] : model.at("vocab").items())
        vocab.emplace(byte_level ? byte_level_decode(tok) : tok, token_id(id, fmt::format("{}.vocab['{}']", model_where, tok)));
      std::vector<std::pair<std::string, std::string>> merges;
      for (const auto& m : model.at("merges")) {
        std::string a, b;
        const std::string merge_where = fmt::format("{}.merges[{}]", model_where, merges.size());
        if (m.is_array()) {
          a = json_string(m.at(0), merge_where);
          b = json_string(m.at(1), merge_where);
        } else {
          const std::string line = json_string(m, merge_where);
          const size_t sp = line.find(' ', 1);
          if (sp == std::string::npos) throw FormatError(fmt::format("{}: merge '{}' has no space", path, line));
          a = line.substr(0, sp);
          b = line.substr(sp + 1);
        }
        if (byte_level) {
          a = byte_level_decode(a);
          b = byte_level_decode(b);
        }
        merges.emplace_back(std::move(a), std::move(b));
      }
      BpeOptions o;
      o.byte_level = byte_level;
      o.byte_fallback = field_bool(model, "byte_fallback", model_where, false);
      o.fuse_unk = field_bool(model, "fuse_unk", model_where, false);
      o.ignore_merges = field_bool(model, "ignore_merges", model_where, false);
      if (model.contains("unk_token") && model["unk_token"].is_string()) {
        auto it = vocab.find(model["unk_token"].get<std::string>());
        if (it != vocab.end()) o.unk = it->second;
      }
      if (model.contains("continuing_subword_prefix") && !model["continuing_subword_prefix"].is_null())
        throw UnsupportedError(fmt::format("{}: BPE continuing_subword_prefix is not supported", path));
      bpe = std::make_unique<BpeModel>(std::move(vocab), merges, o);
      kind = byte_level ? TokenizerKind::ByteLevelBpe : TokenizerKind::Bpe;
    } else if (type == "WordPiece") {
      std::unordered_map<std::string, TokenId> vocab;
      for (const auto& [tok, id] : model.at("vocab").items())
        vocab.emplace(tok, token_id(id, fmt::format("{}.vocab['{}']", model_where, tok)));
      wordpiece = std::make_unique<WordPieceModel>(
          std::move(vocab), field_string(model, "unk_token", model_where, "[UNK]"),
          field_string(model, "continuing_subword_prefix", model_where, "##"),
          int(field_integer(model, "max_input_chars_per_word", model_where, 100, 0, std::numeric_limits<int>::max())));
      kind = TokenizerKind::WordPiece;
    } else if (type == "Unigram") {
      std::vector<std::pair<std::string, double>> vocab;
      for (const auto& item : model.at("vocab")) {
        const std::string what = fmt::format("{}.vocab[{}]", model_where, vocab.size());
        vocab.emplace_back(json_string(item.at(0), what), json_number(item.at(1), what));
      }
      std::optional<TokenId> unk;
      if (model.contains("unk_id") && !model["unk_id"].is_null()) unk = token_id(model["unk_id"], field_name(model_where, "unk_id"));
      unigram = std::make_unique<UnigramModel>(std::move(vocab), unk, field_bool(model, "byte_fallback", model_where, false));
      kind = TokenizerKind::Unigram;
    } else {
      throw UnsupportedError(fmt::format("{}: tokenizer model type '{}' is not supported (BPE, WordPiece, Unigram)", path, type));
    }
    auto tok = std::make_unique<PipelineTokenizer>(kind, make_normalizer(t.value("normalizer", json())),
                                                   make_pre_tokenizer(t.value("pre_tokenizer", json())), std::move(bpe),
                                                   std::move(wordpiece), make_decoder(t.value("decoder", json())));
    if (unigram) tok->set_unigram(std::move(unigram));
    std::vector<TokenId> prefix, suffix;
    post_processor_ids(t.value("post_processor", json()), path + ": post_processor", prefix, suffix);
    tok->set_post(prefix, suffix);
    auto added = added_from_json(t, path);
    for (const auto& a : cfg.added) {
      bool known = false;
      for (const auto& b : added) known = known || b.id == a.id;
      if (!known) added.push_back(a);
    }
    // transformers registers every special token the configuration names as a special
    // added token, also when tokenizer.json's added_tokens lists only some (XLM-R's lists
    // <s> and </s>; its <pad>, <unk>, <mask> come from special_tokens_map.json): such a
    // token is matched whole, before normalisation, and never split by the model. A token
    // the vocabulary lacks would get a new id there; it is left out here.
    for (const auto& named : named_special_tokens(cfg)) {
      bool known = false;
      for (const auto& b : added) known = known || b.content == named.content;
      if (known) continue;
      if (const auto id = tok->token_to_id(named.content)) {
        AddedToken a = named;
        a.id = *id;
        added.push_back(a);
      }
    }
    tok->configure(cfg, std::move(added));
    return tok;
  } catch (const json::exception& e) {
    throw FormatError(fmt::format("{}: unexpected structure: {}", path, e.what()));
  }
}

std::unique_ptr<Tokenizer> load_tokenizer_json(const std::string& path, const TokenizerConfig& cfg) {
  return naming_file(path, [&] { return build_pipeline(read_json_file(path), path, cfg); });
}

// A BERT vocab.txt alone: the pipeline BertTokenizerFast builds from it.
std::unique_ptr<Tokenizer> load_vocab_txt(const std::string& path, const TokenizerConfig& cfg) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: cannot open", path));
  json vocab = json::object();
  std::string line;
  TokenId id = 0;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    vocab[line] = id++;
  }
  const bool lower = field_bool(cfg.config, "do_lower_case", cfg.source, true);
  auto special = [&](const char* key, const char* fallback) {
    const std::string t = cfg.special(key);
    return t.empty() ? std::string(fallback) : t;
  };
  const std::string cls = special("cls_token", "[CLS]"), sep = special("sep_token", "[SEP]");
  if (!vocab.contains(cls) || !vocab.contains(sep)) throw FormatError(fmt::format("{}: no {} / {} token", path, cls, sep));
  json t = {{"model", {{"type", "WordPiece"}, {"vocab", vocab}, {"unk_token", special("unk_token", "[UNK]")},
                       {"continuing_subword_prefix", "##"}, {"max_input_chars_per_word", 100}}},
            {"normalizer", {{"type", "BertNormalizer"}, {"clean_text", true}, {"handle_chinese_chars", field_bool(cfg.config, "tokenize_chinese_chars", cfg.source, true)},
                            {"strip_accents", cfg.config.value("strip_accents", json())}, {"lowercase", lower}}},
            {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
            {"post_processor", {{"type", "BertProcessing"}, {"cls", {cls, vocab[cls]}}, {"sep", {sep, vocab[sep]}}}},
            {"decoder", {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}}},
            {"added_tokens", json::array()}};
  for (const char* key : {"pad_token", "unk_token", "cls_token", "sep_token", "mask_token"}) {
    const std::string tok = cfg.special(key);
    if (!tok.empty() && vocab.contains(tok))
      t["added_tokens"].push_back({{"id", vocab[tok]}, {"content", tok}, {"special", true}, {"normalized", false}});
  }
  return build_pipeline(t, path, cfg);
}

// Meta's tiktoken files: "base64(token bytes) rank" per line.
bool looks_like_tiktoken(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string line;
  if (!std::getline(in, line)) return false;
  const size_t sp = line.find(' ');
  if (sp == std::string::npos || sp == 0) return false;
  for (size_t i = 0; i < sp; ++i) {
    const char c = line[i];
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/' || c == '=')) return false;
  }
  return line.find_first_not_of("0123456789", sp + 1) == std::string::npos;
}

// Llama-3's pre-tokenizer pattern (Meta's tiktoken pat_str).
const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::unique_ptr<Tokenizer> load_tiktoken(const std::string& path, TokenizerConfig cfg) {
  std::ifstream in(path, std::ios::binary);
  std::unordered_map<std::string, TokenId> ranks;
  std::string line;
  size_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const size_t sp = line.find(' ');
    const std::string where = fmt::format("{}:{}", path, n);
    if (sp == std::string::npos) throw FormatError(fmt::format("{}: expected 'base64 rank'", where));
    const std::string bytes = base64_decode(std::string_view(line).substr(0, sp), where);
    const std::string digits = line.substr(sp + 1);
    const TokenId rank = token_id_from_digits(digits);
    if (rank < 0) throw FormatError(fmt::format("{}: invalid rank '{}' (expected an integer in [0, 2^31))", where, digits));
    if (!ranks.emplace(bytes, rank).second) throw FormatError(fmt::format("{}: token listed twice", where));
  }
  BpeOptions o;
  o.byte_level = true;
  o.ignore_merges = true;
  auto bpe = std::make_unique<BpeModel>(BpeModel::from_ranks(std::move(ranks), o));
  const json split = {{"type", "Split"}, {"pattern", {{"Regex", kLlama3Pattern}}}, {"behavior", "Isolated"}, {"invert", false}};
  auto tok = std::make_unique<PipelineTokenizer>(TokenizerKind::Tiktoken, nullptr, make_pre_tokenizer(split),
                                                 std::move(bpe), nullptr, make_decoder(json{{"type", "ByteLevel"}}));
  if (cfg.added.empty()) {  // Meta's special tokens, when no tokenizer_config lists them
    const TokenId base = 128000;
    const char* named[] = {"<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                           "<|reserved_special_token_1|>", "<|reserved_special_token_2|>",
                           "<|reserved_special_token_3|>", "<|start_header_id|>", "<|end_header_id|>",
                           "<|reserved_special_token_4|>", "<|eot_id|>"};
    for (TokenId i = 0; i < 256; ++i) {
      const std::string content = i < 10 ? named[i] : fmt::format("<|reserved_special_token_{}|>", i - 5);
      cfg.added.push_back({content, base + i, true, false, false, false, false});
    }
    if (!cfg.config.contains("bos_token")) cfg.config["bos_token"] = "<|begin_of_text|>";
    if (!cfg.config.contains("eos_token")) cfg.config["eos_token"] = "<|end_of_text|>";
  }
  tok->configure(cfg, cfg.added);
  // The Llama-3 post-processor adds BOS only.
  if (tok->bos_id) tok->set_post({*tok->bos_id}, {});
  return tok;
}

// A SentencePiece model through libsentencepiece: the slow (legacy) Llama tokenizer.
class SentencePieceTokenizer : public BaseTokenizer {
 public:
  SentencePieceTokenizer(const std::string& path, const TokenizerConfig& cfg) {
    const auto status = sp_.Load(path);
    if (!status.ok()) throw FormatError(fmt::format("{}: cannot load SentencePiece model: {}", path, status.ToString()));
    init(cfg);
  }
  // A ModelProto's bytes (a tokenizer.model's content, or one written from a GGUF file).
  SentencePieceTokenizer(std::string_view proto, const TokenizerConfig& cfg, const std::string& label) {
    const auto status = sp_.LoadFromSerializedProto(proto);
    if (!status.ok()) throw FormatError(fmt::format("{}: cannot load the SentencePiece model: {}", label, status.ToString()));
    init(cfg);
  }
  void init(const TokenizerConfig& cfg) {
    std::vector<AddedToken> added = cfg.added;
    for (int i = 0; i < sp_.GetPieceSize(); ++i)
      if (sp_.IsControl(i))  // <s>, </s>: special
        added.push_back({sp_.IdToPiece(i), TokenId(i), true, false, false, false, false});
    finish(cfg, std::move(added));
    if (!cfg.add_bos && !cfg.add_eos && bos_id) prefix_ = {*bos_id};  // LlamaTokenizer's default
  }
  std::vector<TokenId> encode(const std::string& text, bool add_special_tokens) const override {
    return encode_segments(text, add_special_tokens, [&](const Segment& seg, std::vector<TokenId>& ids) {
      std::vector<int> piece_ids;
      const auto status = sp_.Encode(seg.text, &piece_ids);
      if (!status.ok()) throw Error("SentencePiece encoding failed: " + status.ToString());
      ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
    });
  }
  std::string decode(const std::vector<TokenId>& ids, bool skip_special_tokens) const override {
    std::string out;
    std::vector<int> run;
    auto flush = [&] {
      if (run.empty()) return;
      std::string text;
      sp_.Decode(run, &text);
      out += text;
      run.clear();
    };
    for (TokenId id : ids) {
      if (id < 0 || size_t(id) >= vocab_size())
        throw Error(fmt::format("decode: token id {} is outside the vocabulary ({} tokens)", id, vocab_size()));
      if (const AddedToken* t = added_->find(id)) {
        flush();
        if (!(skip_special_tokens && t->special)) out += t->content;
      } else {
        run.push_back(id);
      }
    }
    flush();
    return finish_decode(out);
  }
  TokenizerKind kind() const override { return TokenizerKind::SentencePiece; }
  size_t vocab_size() const override {
    TokenId max_id = TokenId(sp_.GetPieceSize()) - 1;
    for (const auto& t : added_->tokens()) max_id = std::max(max_id, t.id);
    return size_t(max_id + 1);
  }
  std::optional<TokenId> token_to_id(const std::string& token) const override {
    if (added_)
      if (const AddedToken* t = added_->find(token)) return t->id;
    const int id = sp_.PieceToId(token);
    if (id == sp_.unk_id() && token != sp_.IdToPiece(id)) return std::nullopt;
    return id;
  }
  std::string id_to_token(TokenId id) const override {
    if (const AddedToken* t = added_->find(id)) return t->content;
    return id >= 0 && id < sp_.GetPieceSize() ? sp_.IdToPiece(id) : "";
  }

 private:
  sentencepiece::SentencePieceProcessor sp_;
};
}  // namespace

std::unique_ptr<Tokenizer> tokenizer_from_json_text(const std::string& text, const std::string& label) {
  json t;
  try {
    t = json::parse(text);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number like 1e999
    throw FormatError(fmt::format("{}: invalid JSON ({})", label, e.what()));
  }
  if (!t.is_object()) throw FormatError(fmt::format("{}: expected a JSON object", label));
  return build_pipeline(t, label, TokenizerConfig{});
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir) { return load_tokenizer(dir, nlohmann::json::object()); }

std::unique_ptr<Tokenizer> tokenizer_from_parts(const nlohmann::json& tokenizer_json, const nlohmann::json& config,
                                                const std::string& label) {
  TokenizerConfig cfg;
  cfg.config = config;
  cfg.source = label;
  settle_config(cfg);
  return build_pipeline(tokenizer_json, label, cfg);
}

std::unique_ptr<Tokenizer> sentencepiece_from_proto(std::string_view proto, const nlohmann::json& config,
                                                    const std::string& label) {
  TokenizerConfig cfg;
  cfg.config = config;
  cfg.source = label;
  settle_config(cfg);
  return std::make_unique<SentencePieceTokenizer>(proto, cfg, label);
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir, const nlohmann::json& class_defaults) {
  if (is_gguf_path(dir)) return load_gguf_tokenizer(dir);
  if (!fs::is_directory(dir)) throw Error(fmt::format("{}: not a directory or GGUF file", dir));
  TokenizerConfig cfg = read_config(dir);
  for (const auto& [key, value] : class_defaults.items())
    if (!cfg.config.contains(key)) cfg.config[key] = value;
  const fs::path json_path = fs::path(dir) / "tokenizer.json";
  if (fs::exists(json_path)) return load_tokenizer_json(json_path.string(), cfg);
  const fs::path model = fs::path(dir) / "tokenizer.model";
  if (fs::exists(model)) {
    if (looks_like_tiktoken(model.string())) return load_tiktoken(model.string(), cfg);
    return std::make_unique<SentencePieceTokenizer>(model.string(), cfg);
  }
  const fs::path vocab = fs::path(dir) / "vocab.txt";
  if (fs::exists(vocab)) return load_vocab_txt(vocab.string(), cfg);
  throw Error(fmt::format("{}: no tokenizer.json, tokenizer.model or vocab.txt", dir));
}

}  // namespace pivotmt
