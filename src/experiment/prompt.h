// The original pipeline's few-shot messages (REFERENCE §4), byte for byte:
//   user:      "Translate the following source text from {P} to {T}. Only return the {T}
//               translation and nothing else." + pivot + "\nSource: " + source + "\nTranslation: "
//   assistant: target (for each example, most similar first), then the query's user turn.
#pragma once
#include <string>
#include <vector>

#include "chat/chat_template.h"

namespace pivotmt {

struct PromptLabels {
  std::string pivot = "Hin", target = "Gom";       // {P}, {T} of the pivot prompt
  std::string source_code = "MAR", target_code = "GOM";  // {S}, {T} of the no-pivot prompt
  // The custom variant's user message: {pivot} {source} {P} {T} {S} are replaced by the
  // pivot text, the source text, and the labels above ({T}: `target`).
  std::string custom_template;
};

struct Example {
  std::string pivot, source, target;
};

enum class PromptVariant { Pivot, NoPivot, Custom };
const char* prompt_variant_name(PromptVariant v);
PromptVariant parse_prompt_variant(const std::string& name);  // throws on an unknown name

std::string pivot_user_message(const PromptLabels& labels, const std::string& pivot, const std::string& source);
std::string no_pivot_user_message(const PromptLabels& labels, const std::string& source);
// Throws when the template names an unknown {placeholder} (a literal brace is written {{ or }}).
std::string custom_user_message(const PromptLabels& labels, const std::string& pivot, const std::string& source);

std::vector<ChatMessage> build_messages(const PromptLabels& labels, const std::vector<Example>& examples,
                                        const std::string& query_pivot, const std::string& query_source,
                                        PromptVariant variant = PromptVariant::Pivot);

}  // namespace pivotmt
