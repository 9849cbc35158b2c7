#include <fmt/format.h>

#include "commands.h"
#include "core/error.h"
#include "hub/hub_client.h"

namespace pivotmt::cli {

void register_download(CLI::App& app) {
  auto* cmd = app.add_subcommand("download", "Download a hub repository snapshot into the Hugging Face cache");
  static std::string repo, repo_type = "model", revision;
  static std::vector<std::string> include;
  cmd->add_option("REPO", repo, "org/name[@revision]")->required();
  cmd->add_option("--repo-type", repo_type, "model or dataset")->check(CLI::IsMember({"model", "dataset"}));
  cmd->add_option("--revision", revision, "Branch, tag or commit (default main)");
  cmd->add_option("--include", include, "Only files matching this glob (repeatable)");
  cmd->callback([] {
    auto ref = RepoRef::parse(repo, *parse_repo_type(repo_type));
    if (!revision.empty()) ref.revision = revision;
    HubClient client(HubConfig::from_env());
    const std::string dir = client.download_snapshot(ref, include);
    fmt::print("{}\n", dir);
  });
}

}  // namespace pivotmt::cli
