// libFuzzer target for the tokenizer stack. The first byte picks the mode:
//  0: the rest is text, encoded and decoded by the real Llama-2, Llama-3 and MiniLM
//     tokenizers (from PIVOTMT_FIXTURES, default ../shared/fixtures) and the Unigram one
//     with a precompiled character map (tests/goldens/unigram, from the repository root);
//  1: the rest is a tokenizer.json, loaded and used on a fixed sentence;
//  2: the rest is a chat template, parsed and rendered with two messages.
// Every outcome must be a result or a pivotmt::Error / TemplateError.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "chat/chat_template.h"
#include "chat/jinja.h"
#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace {
std::vector<std::unique_ptr<pivotmt::Tokenizer>>& real_tokenizers() {
  static std::vector<std::unique_ptr<pivotmt::Tokenizer>> toks = [] {
    std::vector<std::unique_ptr<pivotmt::Tokenizer>> t;
    const char* env = std::getenv("PIVOTMT_FIXTURES");
    const std::string base = env ? env : "../shared/fixtures";
    for (const char* dir : {"/models/tiny-tower", "/tokenizers/llama-3", "/tokenizers/all-MiniLM-L6-v2"})
      if (std::filesystem::exists(base + dir)) t.push_back(pivotmt::load_tokenizer(base + dir));
    if (std::filesystem::exists("tests/goldens/unigram/tokenizer.json")) t.push_back(pivotmt::load_tokenizer("tests/goldens/unigram"));
    return t;
  }();
  return toks;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      for (const auto& tok : real_tokenizers()) {
        std::vector<pivotmt::TokenId> ids;
        try {
          ids = tok->encode(body, true);
        } catch (const pivotmt::FormatError&) {  // invalid UTF-8 is refused, clearly
          break;
        }
        (void)tok->decode(ids, false);
        (void)tok->decode(ids, true);
      }
      break;
    case 1:
      try {
        const auto tok = pivotmt::tokenizer_from_json_text(body, "fuzz.json");
        const auto ids = tok->encode("Hello wörld <s> 123", true);
        try {
          (void)tok->decode(ids, false);
        } catch (const pivotmt::Error&) {
        }
      } catch (const pivotmt::Error&) {
      }
      break;
    default:
      try {
        (void)pivotmt::render_chat_template(body, {{"user", "hi"}, {"assistant", "yo"}}, true, "<s>", "</s>");
      } catch (const pivotmt::jinja::TemplateError&) {
      } catch (const pivotmt::Error&) {
      }
  }
  return 0;
}
