#include "chat/chat_template.h"

#include <fmt/format.h>

#include "chat/jinja.h"
#include "core/error.h"

namespace pivotmt {

std::string render_chat_template(const std::string& chat_template, const std::vector<ChatMessage>& messages,
                                 bool add_generation_prompt, const std::string& bos_token,
                                 const std::string& eos_token) {
  if (chat_template.empty())
    throw NoChatTemplateError(
        "the model has no chat template (neither chat_template.jinja nor tokenizer_config.json's chat_template; give "
        "one explicitly)");
  const jinja::Template t(chat_template);
  jinja::List list;
  for (const auto& m : messages) {
    jinja::Dict d;
    d.set("role", jinja::Value(m.role));
    d.set("content", jinja::Value(m.content));
    list.push_back(jinja::Value(std::move(d)));
  }
  jinja::Dict context;
  context.set("messages", jinja::Value(std::move(list)));
  context.set("add_generation_prompt", jinja::Value(add_generation_prompt));
  context.set("bos_token", jinja::Value(bos_token));
  context.set("eos_token", jinja::Value(eos_token));
  return t.render(context);
}

std::string apply_chat_template(const Tokenizer& tokenizer, const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt, const std::string& template_override) {
  return render_chat_template(template_override.empty() ? tokenizer.chat_template : template_override, messages,
                              add_generation_prompt, tokenizer.bos_token, tokenizer.eos_token);
}

std::vector<ChatMessage> messages_from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_array()) throw FormatError(fmt::format("{}: expected a JSON array of messages", source));
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < j.size(); ++i) {
    const auto& m = j[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
        !m["content"].is_string())
      throw FormatError(fmt::format("{}: message {} needs string fields \"role\" and \"content\"", source, i + 1));
    out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  }
  return out;
}

EncodedPrompt encode_rendered_prompt(const Tokenizer& tokenizer, const std::string& rendered, DuplicateBos policy) {
  EncodedPrompt p;
  p.ids = tokenizer.encode(rendered, true);
  if (tokenizer.bos_id && p.ids.size() >= 2 && p.ids[0] == *tokenizer.bos_id && p.ids[1] == *tokenizer.bos_id) {
    if (policy == DuplicateBos::Avoid) {
      p.ids.erase(p.ids.begin());
      p.bos_dropped = true;
    } else {
      p.duplicate_bos = true;
    }
  }
  return p;
}

}  // namespace pivotmt
