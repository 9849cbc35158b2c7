// tokenize / detokenize / prompt: the tokenizer and chat template from the command line.
#include <fstream>
#include <iostream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "chat/chat_template.h"
#include "commands.h"
#include "core/error.h"
#include "hub/hub_client.h"
#include "io/json_file.h"
#include "tokenizer/tokenizer.h"

namespace pivotmt::cli {
namespace {

std::vector<std::string> input_lines(const std::string& text, const std::string& file, bool text_given) {
  if (text_given) return {text};
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: cannot open", file));
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

std::unique_ptr<Tokenizer> tokenizer_for(const std::string& model) {
  return load_tokenizer(resolve_repo_path(model, RepoType::Model));
}
}  // namespace

void register_tokenize(CLI::App& app) {
  {
    auto* cmd = app.add_subcommand("tokenize", "Token ids of text, one JSON array per input line");
    static std::string model, text, file;
    static bool no_special = false;
    cmd->add_option("--model,-m", model, "Model directory or hub id")->required();
    auto* t = cmd->add_option("--text", text, "The text");
    auto* f = cmd->add_option("--file", file, "A file: one line per input");
    t->excludes(f);
    cmd->add_flag("--no-special", no_special, "Do not add BOS/EOS");
    cmd->callback([] {
      if (text.empty() && file.empty()) throw Error("give --text or --file");
      const auto tok = tokenizer_for(model);
      for (const auto& line : input_lines(text, file, !text.empty()))
        fmt::print("{}\n", nlohmann::json(tok->encode(line, !no_special)).dump());
    });
  }
  {
    auto* cmd = app.add_subcommand("detokenize", "Text of token ids (a JSON array per line)");
    static std::string model, ids, file;
    static bool skip_special = false;
    cmd->add_option("--model,-m", model, "Model directory or hub id")->required();
    auto* i = cmd->add_option("--ids", ids, "A JSON array of ids");
    auto* f = cmd->add_option("--file", file, "A file: one JSON array per line");
    i->excludes(f);
    cmd->add_flag("--skip-special", skip_special, "Drop special tokens");
    cmd->callback([] {
      if (ids.empty() && file.empty()) throw Error("give --ids or --file");
      const auto tok = tokenizer_for(model);
      size_t n = 0;
      for (const auto& line : input_lines(ids, file, !ids.empty())) {
        ++n;
        if (line.empty()) continue;
        nlohmann::json j;
        try {
          j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception& e) {
          throw FormatError(fmt::format("{}:{}: not a JSON array of ids ({})", file.empty() ? "--ids" : file, n, e.what()));
        }
        if (!j.is_array()) throw FormatError(fmt::format("{}:{}: expected a JSON array", file.empty() ? "--ids" : file, n));
        fmt::print("{}\n", tok->decode(j.get<std::vector<TokenId>>(), skip_special));
      }
    });
  }
  {
    auto* cmd = app.add_subcommand("prompt", "Render a chat with the model's chat template (printed exactly, no newline added)");
    static std::string model, messages, template_file;
    static bool generation = false, show_ids = false, avoid_double_bos = false;
    cmd->add_option("--model,-m", model, "Model directory or hub id")->required();
    cmd->add_option("--messages", messages, "JSON file: [{\"role\", \"content\"}, ...]")->required();
    cmd->add_flag("--add-generation-prompt", generation, "Open the assistant turn");
    cmd->add_option("--template", template_file, "Use this Jinja template file instead of the model's");
    cmd->add_flag("--ids", show_ids, "Print the token ids (JSON) instead of the text");
    cmd->add_flag("--avoid-double-bos", avoid_double_bos, "With --ids: drop the tokenizer's BOS when the template wrote one");
    cmd->callback([] {
      const auto tok = tokenizer_for(model);
      std::string tpl;
      if (!template_file.empty()) {
        std::ifstream in(template_file, std::ios::binary);
        if (!in) throw Error(fmt::format("{}: cannot open", template_file));
        std::stringstream ss;
        ss << in.rdbuf();
        tpl = ss.str();
      }
      const auto m = messages_from_json(read_json_file(messages), messages);
      const std::string rendered = apply_chat_template(*tok, m, generation, tpl);
      if (!show_ids) {
        fmt::print("{}", rendered);
        return;
      }
      const auto p = encode_rendered_prompt(*tok, rendered, avoid_double_bos ? DuplicateBos::Avoid : DuplicateBos::Reproduce);
      if (p.duplicate_bos)
        fmt::print(stderr, "warning: the template already writes the BOS token and the tokenizer adds another: the ids "
                           "start with two BOS tokens (as the original pipeline sent them); --avoid-double-bos drops one\n");
      fmt::print("{}\n", nlohmann::json(p.ids).dump());
    });
  }
}

}  // namespace pivotmt::cli
