// pivotmt: pivot-guided few-shot machine translation with LLMs. The only place that
// turns exceptions into messages and exit codes: 0 success, 1 a failure (bad input, a
// missing file, a device error: the message says which), 2 a usage error (the command
// line itself: unknown option, missing argument, invalid value).
#include <cstdio>

#include <fmt/format.h>

#include "commands.h"
#include "core/error.h"
#include "chat/jinja.h"
#include "core/progress.h"
#include "workers.h"

namespace {
// CLI11 2.1 (Debian 12) converts "-3" for an unsigned option by wrapping it:
// `--max-new-tokens -3` became 18446744073709551613 and generated until killed. Every option
// whose target is unsigned (CLI11 names its type UINT; vectors and optionals of one too)
// refuses a negative value as a usage error instead.
void refuse_negative_unsigned(CLI::App& app) {
  const CLI::Validator non_negative(
      [](std::string& value) -> std::string {
        const size_t first = value.find_first_not_of(" \t");
        if (first != std::string::npos && value[first] == '-') return "expected a whole number >= 0, got " + value;
        return "";
      },
      "", "non-negative");
  for (CLI::Option* option : app.get_options())
    if (option->get_type_name() == "UINT") option->check(non_negative);
  for (CLI::App* sub : app.get_subcommands({})) refuse_negative_unsigned(*sub);
}
}  // namespace

int main(int argc, char** argv) {
  pivotmt::cli::set_command_line(argc, argv);  // workers repeat it
  CLI::App app{"pivotmt: low-resource machine translation with pivot-guided few-shot prompting"};
  app.set_version_flag("--version", std::string("pivotmt ") + PIVOTMT_VERSION);
  app.require_subcommand(1);
  bool quiet = false;
  app.add_flag("-q,--quiet", quiet, "No progress output");
  app.parse_complete_callback([&] { pivotmt::Progress::set_quiet(quiet); });
  pivotmt::cli::register_inspect(app);
  pivotmt::cli::register_download(app);
  pivotmt::cli::register_dev(app);
  pivotmt::cli::register_info(app);
  pivotmt::cli::register_score(app);
  pivotmt::cli::register_tokenize(app);
  pivotmt::cli::register_tokens(app);
  pivotmt::cli::register_generate(app);
  pivotmt::cli::register_retrieval(app);
  pivotmt::cli::register_ablate(app);
  pivotmt::cli::register_report(app);
  pivotmt::cli::register_translate(app);
  pivotmt::cli::register_finetune(app);
  pivotmt::cli::register_cache(app);
  // `pivotmt plan ARGS` is `pivotmt ablate ARGS --dry-run`: the rows to run, prompt lengths and
  // the run plan (memory, batch, tokens, time), nothing generated.
  std::vector<std::string> args(argv, argv + argc);
  for (size_t i = 1; i < args.size(); ++i) {
    if (!args[i].empty() && args[i][0] == '-') continue;  // a global flag (-q)
    if (args[i] == "plan") {
      args[i] = "ablate";
      args.push_back("--dry-run");
    }
    break;
  }
  app.add_subcommand("plan", "The run plan of an ablation (its options): rows, prompt lengths, memory, batch, time "
                             "(= ablate --dry-run)");
  refuse_negative_unsigned(app);
  std::vector<char*> cargs;
  for (auto& a : args) cargs.push_back(a.data());
  try {
    app.parse(int(cargs.size()), cargs.data());
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; a usage error (unknown option, missing or bad value)
    // prints CLI11's message and exits 2, as the common convention has it.
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  } catch (const pivotmt::jinja::TemplateError& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  } catch (const pivotmt::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
