#include "experiment/prompt.h"

namespace pivotmt {

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
    return variant == PromptVariant::Pivot ? pivot_user_message(labels, pivot, source)
                                           : no_pivot_user_message(labels, source);
  };
  for (const auto& e : examples) {
    messages.push_back({"user", user(e.pivot, e.source)});
    messages.push_back({"assistant", e.target});
  }
  messages.push_back({"user", user(query_pivot, query_source)});
  return messages;
}

}  // namespace pivotmt
