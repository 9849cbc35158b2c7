// A GGUF file's tokenizer, built from its metadata as the tokenizer files the same model
// ships on the Hugging Face hub would be:
//   - tokenizer.ggml.model "gpt2": byte-level BPE (tokens are stored byte-level mapped, as in
//     tokenizer.json; merges as "a b" lines), the pre-tokenizer named by tokenizer.ggml.pre
//     (llama.cpp's list: the regexes it applies for each name, written as the tokenizer.json
//     pre-tokenizers that split the same way) — a tokenizer.json given to the same pipeline
//     code as one read from a folder;
//   - tokenizer.ggml.model "llama": SentencePiece BPE over scored pieces with byte fallback
//     (llama.cpp's SPM tokenizer) — a SentencePiece ModelProto written from the pieces,
//     scores and types, loaded by libsentencepiece like a tokenizer.model.
// Token types: CONTROL tokens become special added tokens, USER_DEFINED ones added tokens
// matched whole (llama.cpp splits both out of the text before the model sees it).
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/gguf.h"
#include "io/json_file.h"
#include "tokenizer/tokenizer.h"

namespace pivotmt {
namespace fs = std::filesystem;
namespace {
using json = nlohmann::json;

// llama.cpp's token types (llama_token_type / gguf-py TokenType).
enum TokenType : int64_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

// The GPT-2 pre-tokenizer regex, as HF's ByteLevel(use_regex=true) applies it.
json byte_level(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

// tokenizer.ggml.pre → the pre-tokenizer. llama.cpp (llama-vocab.cpp) gives each name a
// list of regexes; these are the tokenizer.json pre-tokenizers of the models those names
// were made for, which split text the same way.
json pre_tokenizer_for(const std::string& pre, bool& ignore_merges, const std::string& label) {
  static const std::vector<std::string> digits_then_gpt2 = {"smollm", "starcoder", "refact", "command-r", "codeshell",
                                                            "exaone", "minerva-7b"};
  if (pre.empty() || pre == "default" || pre == "gpt2" || pre == "gpt-2") return byte_level(true);
  if (std::find(digits_then_gpt2.begin(), digits_then_gpt2.end(), pre) != digits_then_gpt2.end())
    return {{"type", "Sequence"},
            {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, byte_level(true)}}};
  if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") {
    ignore_merges = true;  // Llama-3: a word that is itself a token is taken whole
    const std::string regex =
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
        "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    return {{"type", "Sequence"},
            {"pretokenizers",
             {{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}},
              byte_level(false)}}};
  }
  throw UnsupportedError(fmt::format("{}: tokenizer.ggml.pre '{}' is not supported (pivotmt knows default, gpt2, "
                                     "smollm, starcoder, refact, command-r, codeshell, exaone, minerva-7b, llama-bpe)",
                                     label, pre));
}

// --- A minimal protobuf writer: the fields of sentencepiece_model.proto we set.
void varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += char(uint8_t(v) | 0x80);
    v >>= 7;
  }
  out += char(uint8_t(v));
}
void tag(std::string& out, uint32_t field, uint32_t wire) { varint(out, (uint64_t(field) << 3) | wire); }
void field_varint(std::string& out, uint32_t field, uint64_t v) {
  tag(out, field, 0);
  varint(out, v);
}
void field_bytes(std::string& out, uint32_t field, std::string_view bytes) {
  tag(out, field, 2);
  varint(out, bytes.size());
  out.append(bytes);
}
void field_float(std::string& out, uint32_t field, float f) {
  tag(out, field, 5);
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  for (int i = 0; i < 4; ++i) out += char((bits >> (8 * i)) & 0xFF);
}

// ModelProto {1: pieces {1: piece, 2: score, 3: type}, 2: trainer_spec {3: model_type
// (BPE = 2), 35: byte_fallback, 40..43: unk/bos/eos/pad ids}, 3: normalizer_spec {1: name,
// 2: precompiled_charsmap, 3: add_dummy_prefix, 4: remove_extra_whitespaces,
// 5: escape_whitespaces}}.
std::string sentencepiece_proto(const std::vector<std::string>& tokens, const std::vector<double>& scores,
                                const std::vector<int64_t>& types, const GgufFile& g) {
  std::string proto;
  bool byte_fallback = false;
  for (size_t i = 0; i < tokens.size(); ++i) {
    std::string piece;
    field_bytes(piece, 1, tokens[i]);
    field_float(piece, 2, float(scores[i]));
    int64_t type = types.empty() ? kNormal : types[i];
    if (type < kNormal || type > kByte) type = kNormal;
    if (type == kByte) byte_fallback = true;
    field_varint(piece, 3, uint64_t(type));
    field_bytes(proto, 1, piece);
  }
  auto id_or = [&](const char* key, int64_t fallback) {
    const auto v = g.get_uint(key);
    return v ? int64_t(*v) : fallback;
  };
  std::string trainer;
  field_varint(trainer, 3, 2);  // BPE
  field_varint(trainer, 35, byte_fallback);
  field_varint(trainer, 40, uint64_t(id_or("tokenizer.ggml.unknown_token_id", 0)));
  field_varint(trainer, 41, uint64_t(id_or("tokenizer.ggml.bos_token_id", 1)));
  field_varint(trainer, 42, uint64_t(id_or("tokenizer.ggml.eos_token_id", 2)));
  field_varint(trainer, 43, uint64_t(int64_t(-1)));  // pad: none (int32 -1 as protobuf writes it)
  field_bytes(proto, 2, trainer);
  std::string normalizer;
  field_bytes(normalizer, 1, "identity");
  if (const auto* cm = g.find("tokenizer.ggml.precompiled_charsmap"); cm && !cm->array.empty()) {
    std::string map;
    for (const auto& b : cm->array) map += char(uint8_t(b.u | uint64_t(b.i)));
    field_bytes(normalizer, 2, map);
  }
  field_varint(normalizer, 3, g.get_bool("tokenizer.ggml.add_space_prefix").value_or(true));
  field_varint(normalizer, 4, g.get_bool("tokenizer.ggml.remove_extra_whitespaces").value_or(false));
  field_varint(normalizer, 5, 1);
  field_bytes(proto, 3, normalizer);
  return proto;
}

}  // namespace

GgufTokenizerFiles gguf_tokenizer_files(const GgufFile& g) {
  const std::string& path = g.path();
  return naming_file(path, [&]() -> GgufTokenizerFiles {
    GgufTokenizerFiles files;
    const std::string model = g.get_string("tokenizer.ggml.model").value_or("");
    const std::vector<std::string> tokens = g.get_strings("tokenizer.ggml.tokens");
    if (model.empty() || tokens.empty())
      throw FormatError(fmt::format("{}: no tokenizer (tokenizer.ggml.model and tokenizer.ggml.tokens)", path));
    const std::vector<int64_t> types = g.get_integers("tokenizer.ggml.token_type");
    if (!types.empty() && types.size() != tokens.size())
      throw FormatError(fmt::format("{}: tokenizer.ggml.token_type has {} entries for {} tokens", path, types.size(),
                                    tokens.size()));
    auto token_of = [&](const char* key) -> std::optional<std::string> {
      const auto id = g.get_uint(key);
      if (!id) return std::nullopt;
      if (*id >= tokens.size())
        throw FormatError(fmt::format("{}: {} = {} is outside the {} tokens", path, key, *id, tokens.size()));
      return tokens[*id];
    };
    // tokenizer_config.json as the hub's would say it.
    json config = {{"clean_up_tokenization_spaces", false}};
    if (auto t = token_of("tokenizer.ggml.bos_token_id")) config["bos_token"] = *t;
    if (auto t = token_of("tokenizer.ggml.eos_token_id")) config["eos_token"] = *t;
    if (auto t = token_of("tokenizer.ggml.unknown_token_id")) config["unk_token"] = *t;
    if (auto t = token_of("tokenizer.ggml.padding_token_id")) config["pad_token"] = *t;
    // llama.cpp's defaults: SentencePiece vocabularies add BOS, BPE ones do not (except
    // Llama-3's); the file's flags win.
    const std::string pre = g.get_string("tokenizer.ggml.pre").value_or("default");
    const bool llama3 = pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3";
    config["add_bos_token"] = g.get_bool("tokenizer.ggml.add_bos_token").value_or(model == "llama" || llama3);
    config["add_eos_token"] = g.get_bool("tokenizer.ggml.add_eos_token").value_or(false);
    if (auto tpl = g.get_string("tokenizer.chat_template")) config["chat_template"] = *tpl;
    if (auto n = g.get_uint("llama.context_length")) config["model_max_length"] = *n;

    if (model == "llama") {
      const std::vector<double> scores = g.get_numbers("tokenizer.ggml.scores");
      if (scores.size() != tokens.size())
        throw FormatError(fmt::format("{}: tokenizer.ggml.scores has {} entries for {} tokens", path, scores.size(),
                                      tokens.size()));
      // User-defined pieces are matched whole by SentencePiece itself; control pieces are
      // special tokens (SentencePieceTokenizer registers them).
      config["legacy"] = true;
      files.sentencepiece_model = sentencepiece_proto(tokens, scores, types, g);
      files.tokenizer_config = std::move(config);
      return files;
    }
    if (model != "gpt2")
      throw UnsupportedError(fmt::format("{}: tokenizer.ggml.model '{}' is not supported (llama: SentencePiece; gpt2: "
                                         "byte-level BPE)", path, model));
    bool ignore_merges = false;
    json t = json::object();
    t["pre_tokenizer"] = pre_tokenizer_for(pre, ignore_merges, path);
    t["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
    t["normalizer"] = nullptr;
    t["post_processor"] = nullptr;
    json vocab = json::object();
    json added = json::array();
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (!vocab.contains(tokens[i])) vocab[tokens[i]] = i;  // a duplicate keeps its first id, as tokenizers does
      const int64_t type = types.empty() ? kNormal : types[i];
      if (type == kControl || type == kUserDefined)
        added.push_back({{"id", i}, {"content", tokens[i]}, {"single_word", false}, {"lstrip", false},
                         {"rstrip", false}, {"normalized", false}, {"special", type == kControl}});
    }
    t["added_tokens"] = added;
    const std::vector<std::string> merges = g.get_strings("tokenizer.ggml.merges");
    if (merges.empty()) throw FormatError(fmt::format("{}: a gpt2 tokenizer without tokenizer.ggml.merges", path));
    t["model"] = {{"type", "BPE"},          {"vocab", std::move(vocab)}, {"merges", merges},
                  {"byte_fallback", false}, {"fuse_unk", false},         {"ignore_merges", ignore_merges},
                  {"dropout", nullptr},     {"unk_token", nullptr},      {"continuing_subword_prefix", nullptr},
                  {"end_of_word_suffix", nullptr}};
    files.tokenizer_json = std::move(t);
    files.tokenizer_config = std::move(config);
    return files;
  });
}

std::unique_ptr<Tokenizer> load_gguf_tokenizer(const std::string& path) {
  const GgufFile g(path);
  const GgufTokenizerFiles files = gguf_tokenizer_files(g);
  if (!files.sentencepiece_model.empty()) return sentencepiece_from_proto(files.sentencepiece_model, files.tokenizer_config, path);
  return naming_file(path, [&] { return tokenizer_from_parts(files.tokenizer_json, files.tokenizer_config, path); });
}

void write_gguf_tokenizer_files(const GgufFile& g, const std::string& dir) {
  const GgufTokenizerFiles files = gguf_tokenizer_files(g);
  const fs::path d(dir);
  if (!files.sentencepiece_model.empty()) {
    std::ofstream out(d / "tokenizer.model", std::ios::binary);
    out.write(files.sentencepiece_model.data(), std::streamsize(files.sentencepiece_model.size()));
    if (!out) throw Error(fmt::format("{}: cannot write", (d / "tokenizer.model").string()));
  } else {
    write_json_file((d / "tokenizer.json").string(), files.tokenizer_json);
  }
  write_json_file((d / "tokenizer_config.json").string(), files.tokenizer_config);
}

}  // namespace pivotmt
