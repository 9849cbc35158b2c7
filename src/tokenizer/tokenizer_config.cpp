#include "tokenizer/tokenizer_config.h"

#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include <fmt/format.h>

#include "core/error.h"
#include "io/json_fields.h"
#include "io/json_file.h"

namespace pivotmt {
namespace fs = std::filesystem;
using json = nlohmann::json;

TokenId token_id(const json& v, std::string_view what) {
  return TokenId(json_integer(v, what, 0, std::numeric_limits<TokenId>::max()));
}

TokenId token_id_from_digits(const std::string& text) {
  if (text.empty() || text.size() > 10 || text.find_first_not_of("0123456789") != std::string::npos) return -1;
  const long long v = std::stoll(text);
  return v <= std::numeric_limits<TokenId>::max() ? TokenId(v) : -1;
}

TokenizerConfig read_config(const std::string& dir) {
  TokenizerConfig c;
  const fs::path cfg = fs::path(dir) / "tokenizer_config.json";
  c.source = cfg.string();
  if (fs::exists(cfg)) c.config = read_json_file(cfg.string());
  if (!c.config.is_object()) throw FormatError(fmt::format("{}: expected a JSON object", cfg.string()));
  // transformers (since 4.43) saves the chat template as chat_template.jinja beside the
  // config, and prefers it to the config's chat_template when loading.
  const fs::path jinja = fs::path(dir) / "chat_template.jinja";
  if (fs::exists(jinja)) {
    std::ifstream in(jinja, std::ios::binary);
    if (!in) throw Error(fmt::format("{}: cannot open", jinja.string()));
    std::ostringstream text;
    text << in.rdbuf();
    c.config["chat_template"] = text.str();
  }
  const fs::path map = fs::path(dir) / "special_tokens_map.json";
  if (fs::exists(map)) {
    const json m = read_json_file(map.string());
    for (const char* k : {"bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token",
                          "additional_special_tokens"}) {
      if (!m.contains(k)) continue;
      // The map's dict form (lstrip, rstrip...) wins over the config's bare string, as
      // transformers' from_pretrained lets special_tokens_map.json override.
      if (!c.config.contains(k) || (m[k].is_object() && c.config[k].is_string() && TokenizerConfig::token_text(m[k]) == c.config[k].get<std::string>()))
        c.config[k] = m[k];
    }
  }
  if (c.config.contains("added_tokens_decoder") && c.config["added_tokens_decoder"].is_object()) {
    for (const auto& [id, t] : c.config["added_tokens_decoder"].items()) {
      AddedToken a;
      const std::string where = fmt::format("{}: added_tokens_decoder['{}']", cfg.string(), id);
      a.id = token_id_from_digits(id);
      if (a.id < 0) throw FormatError(fmt::format("{}: the key is not a token id", where));
      a.content = field_string(t, "content", where, "");
      a.special = field_bool(t, "special", where, false);
      a.lstrip = field_bool(t, "lstrip", where, false);
      a.rstrip = field_bool(t, "rstrip", where, false);
      a.single_word = field_bool(t, "single_word", where, false);
      a.normalized = field_bool(t, "normalized", where, !a.special);
      c.added.push_back(a);
    }
  }
  const fs::path added_path = fs::path(dir) / "added_tokens.json";
  if (fs::exists(added_path)) {
    const json a = read_json_file(added_path.string());
    for (const auto& [content, id] : a.items()) {
      bool known = false;
      for (const auto& t : c.added) known = known || t.content == content;
      if (!known) c.added.push_back({content, token_id(id, field_name(added_path.string(), content)), true, false, false, false, false});
    }
  }
  settle_config(c);
  return c;
}

void settle_config(TokenizerConfig& c) {
  if (c.config.contains("add_bos_token") && c.config["add_bos_token"].is_boolean()) c.add_bos = c.config["add_bos_token"].get<bool>();
  if (c.config.contains("add_eos_token") && c.config["add_eos_token"].is_boolean()) c.add_eos = c.config["add_eos_token"].get<bool>();
  // transformers (up to 4.44) cleans up by default when the config does not say.
  c.clean_up = field_bool(c.config, "clean_up_tokenization_spaces", c.source, true);
  c.legacy = field_bool(c.config, "legacy", c.source, true);
}

std::vector<AddedToken> named_special_tokens(const TokenizerConfig& cfg) {
  const std::string cls = field_string(cfg.config, "tokenizer_class", cfg.source, "");
  const bool roberta_mask = cls.find("Roberta") != std::string::npos || cls.find("Camembert") != std::string::npos ||
                            cls.find("Bart") != std::string::npos;
  std::vector<AddedToken> out;
  auto add = [&](const json& v, bool is_mask) {
    AddedToken a;
    a.special = true;
    if (v.is_string()) {
      a.content = v.get<std::string>();
      a.lstrip = is_mask && roberta_mask;
    } else if (v.is_object() && v.contains("content") && v["content"].is_string()) {
      const std::string where = fmt::format("{}: '{}'", cfg.source, v["content"].get<std::string>());
      a.content = v["content"].get<std::string>();
      a.lstrip = field_bool(v, "lstrip", where, false);
      a.rstrip = field_bool(v, "rstrip", where, false);
      a.single_word = field_bool(v, "single_word", where, false);
      a.normalized = field_bool(v, "normalized", where, false);
    }
    if (!a.content.empty()) out.push_back(a);
  };
  for (const char* k : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"})
    if (cfg.config.contains(k)) add(cfg.config[k], std::string(k) == "mask_token");
  if (cfg.config.contains("additional_special_tokens") && cfg.config["additional_special_tokens"].is_array())
    for (const auto& v : cfg.config["additional_special_tokens"]) add(v, false);
  return out;
}

}  // namespace pivotmt
