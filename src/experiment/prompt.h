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
};

struct Example {
  std::string pivot, source, target;
};

enum class PromptVariant { Pivot, NoPivot };

std::string pivot_user_message(const PromptLabels& labels, const std::string& pivot, const std::string& source);
std::string no_pivot_user_message(const PromptLabels& labels, const std::string& source);

std::vector<ChatMessage> build_messages(const PromptLabels& labels, const std::vector<Example>& examples,
                                        const std::string& query_pivot, const std::string& query_source,
                                        PromptVariant variant = PromptVariant::Pivot);

}  // namespace pivotmt
