// Chat prompts as transformers builds them: the model's own chat_template (Jinja) rendered
// with messages, add_generation_prompt, bos_token and eos_token, then tokenized.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace pivotmt {

// The model has no chat template: a property of the model, not of the data being rendered
// (callers naming a data file's line let it through unchanged).
class NoChatTemplateError : public Error {
 public:
  using Error::Error;
};

struct ChatMessage {
  std::string role, content;
};

// Renders `chat_template` (the tokenizer's when empty). Throws jinja::TemplateError with
// the template line for unsupported constructs or raise_exception().
std::string render_chat_template(const std::string& chat_template, const std::vector<ChatMessage>& messages,
                                 bool add_generation_prompt, const std::string& bos_token,
                                 const std::string& eos_token);
std::string apply_chat_template(const Tokenizer& tokenizer, const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt, const std::string& template_override = "");

// Messages from JSON: [{"role": ..., "content": ...}, ...].
std::vector<ChatMessage> messages_from_json(const nlohmann::json& j, const std::string& source);

// When a rendered prompt already starts with the BOS text (Llama-3 / Hermes templates
// write {{bos_token}}) and the tokenizer adds BOS too, the original pipeline fed the model
// two BOS tokens. `reproduce` keeps that; `avoid` drops the tokenizer's.
enum class DuplicateBos { Reproduce, Avoid };
struct EncodedPrompt {
  std::vector<TokenId> ids;
  bool duplicate_bos = false;  // true when two BOS tokens start the ids (reproduce mode)
  bool bos_dropped = false;    // true when avoid mode removed one
};
EncodedPrompt encode_rendered_prompt(const Tokenizer& tokenizer, const std::string& rendered, DuplicateBos policy);

}  // namespace pivotmt
