// pivotmt: pivot-guided few-shot machine translation with LLMs. The only place that
// turns exceptions into messages and exit codes.
#include <cstdio>

#include <fmt/format.h>

#include "commands.h"
#include "core/error.h"
#include "chat/jinja.h"
#include "core/progress.h"
#include "workers.h"

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
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const pivotmt::jinja::TemplateError& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  } catch (const pivotmt::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 2;
  }
  return 0;
}
