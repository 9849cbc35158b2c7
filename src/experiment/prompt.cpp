#include "experiment/prompt.h"

#include <fmt/format.h>

#include "core/error.h"

namespace pivotmt {

const char* prompt_variant_name(PromptVariant v) {
  switch (v) {
    case PromptVariant::Pivot: return "pivot";
    case PromptVariant::NoPivot: return "no-pivot";
    case PromptVariant::Custom: return "custom";
  }
  return "?";
}

PromptVariant parse_prompt_variant(const std::string& name) {
  if (name == "pivot") return PromptVariant::Pivot;
  if (name == "no-pivot") return PromptVariant::NoPivot;
  if (name == "custom") return PromptVariant::Custom;
  throw Error(fmt::format("prompt variant '{}': expected pivot, no-pivot or custom", name));
}

std::string custom_user_message(const PromptLabels& l, const std::string& pivot, const std::string& source) {
  const std::string& t = l.custom_template;
  if (t.empty()) throw Error("the custom prompt variant needs a template (--prompt-template)");
  std::string out;
  for (size_t i = 0; i < t.size(); ++i) {
    if ((t[i] == '{' || t[i] == '}') && i + 1 < t.size() && t[i + 1] == t[i]) {  // {{ or }}
      out += t[i++];
      continue;
    }
    if (t[i] != '{') {
      out += t[i];
      continue;
    }
    const size_t close = t.find('}', i);
    if (close == std::string::npos) throw Error(fmt::format("prompt template: '{{' at offset {} is never closed", i));
    const std::string name = t.substr(i + 1, close - i - 1);
    if (name == "pivot") out += pivot;
    else if (name == "source") out += source;
    else if (name == "P") out += l.pivot;
    else if (name == "T") out += l.target;
    else if (name == "S") out += l.source_code;
    else throw Error(fmt::format("prompt template: unknown placeholder {{{}}} (known: {{pivot}} {{source}} {{P}} {{T}} {{S}})", name));
    i = close;
  }
  return out;
}

std::string pivot_user_message(const PromptLabels& l, const std::string& pivot, const std::string& source) {
  // No separator between the instruction and the pivot text, and a trailing space after
  // "Translation:": both exactly as the original wrote them.
  return "Translate the following source text from " + l.pivot + " to " + l.target + ". Only return the " + l.target +
         " translation and nothing else." + pivot + "\nSource: " + source + "\nTranslation: ";
}

std::string no_pivot_user_message(const PromptLabels& l, const std::string& source) {
  return "Translate the following text from " + l.source_code + " to " + l.target_code + ". Only return the " +
         l.target_code + " translation and nothing else." + "\nSource: " + source + "\nTranslation: ";
}

std::vector<ChatMessage> build_messages(const PromptLabels& labels, const std::vector<Example>& examples,
                                        const std::string& query_pivot, const std::string& query_source,
                                        PromptVariant variant) {
  std::vector<ChatMessage> messages;
  auto user = [&](const std::string& pivot, const std::string& source) {
    switch (variant) {
      case PromptVariant::Pivot: return pivot_user_message(labels, pivot, source);
      case PromptVariant::NoPivot: return no_pivot_user_message(labels, source);
      case PromptVariant::Custom: return custom_user_message(labels, pivot, source);
    }
    return std::string();
  };
  for (const auto& e : examples) {
    messages.push_back({"user", user(e.pivot, e.source)});
    messages.push_back({"assistant", e.target});
  }
  messages.push_back({"user", user(query_pivot, query_source)});
  return messages;
}

}  // namespace pivotmt
