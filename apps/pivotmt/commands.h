// Each subcommand lives in its own file and registers itself on the CLI11 app. Command
// callbacks may throw; main() turns exceptions into a message and an exit code.
#pragma once
#include <CLI/CLI.hpp>

namespace pivotmt::cli {

void register_inspect(CLI::App& app);
void register_download(CLI::App& app);
void register_dev(CLI::App& app);
void register_info(CLI::App& app);
void register_score(CLI::App& app);
void register_tokenize(CLI::App& app);
void register_tokens(CLI::App& app);
void register_generate(CLI::App& app);
void register_retrieval(CLI::App& app);
void register_ablate(CLI::App& app);
void register_report(CLI::App& app);
void register_translate(CLI::App& app);
void register_finetune(CLI::App& app);  // and merge
void register_cache(CLI::App& app);

}  // namespace pivotmt::cli
