#include <fmt/format.h>

#include "commands.h"
#include "hub/hub_client.h"
#include "models/inspect.h"

namespace pivotmt::cli {

void register_inspect(CLI::App& app) {
  auto* cmd = app.add_subcommand("inspect", "Describe a checkpoint: architecture, parameters, memory, KV cache; verify its tensors");
  static std::string model;
  static bool as_json = false;
  cmd->add_option("MODEL", model, "Model directory or hub id org/name[@revision]")->required();
  cmd->add_flag("--json", as_json, "Print one JSON object");
  cmd->callback([] {
    const std::string dir = resolve_repo_path(model, RepoType::Model);
    const auto report = inspect_model(dir);
    if (as_json) fmt::print("{}\n", report.dump(2));
    else fmt::print("{}", format_inspect_report(report));
  });
}

}  // namespace pivotmt::cli
