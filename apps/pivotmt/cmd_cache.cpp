// `pivotmt cache list|du|prune|verify`: the Hugging Face cache (HF_HUB_CACHE, else
// $HF_HOME/hub) as huggingface_hub's scan-cache and delete-cache see it. prune is a dry run
// unless --yes; nothing outside the cache folder is touched.
#include <ctime>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/error.h"
#include "hub/cache_scan.h"
#include "hub/hub_config.h"

namespace pivotmt::cli {
namespace {

std::string when(double seconds) {
  if (seconds <= 0) return "-";
  const std::time_t t = std::time_t(seconds);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", &tm);
  return buf;
}

std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ",") + s;
  return out.empty() ? "-" : out;
}

nlohmann::json to_json(const CacheReport& r) {
  nlohmann::json repos = nlohmann::json::array();
  for (const auto& repo : r.repos) {
    nlohmann::json revs = nlohmann::json::array();
    for (const auto& v : repo.revisions)
      revs.push_back({{"commit", v.commit}, {"refs", v.refs}, {"files", v.files.size()}, {"size_on_disk", v.size},
                      {"last_modified", v.last_modified}});
    repos.push_back({{"id", repo.id}, {"type", repo.type}, {"path", repo.path}, {"size_on_disk", repo.size},
                     {"files", repo.files}, {"last_accessed", repo.last_accessed}, {"last_modified", repo.last_modified},
                     {"revisions", revs}, {"unreferenced_blobs", repo.unreferenced_blobs},
                     {"unreferenced_size", repo.unreferenced_size}});
  }
  return {{"cache", r.root}, {"size_on_disk", r.size}, {"repos", repos}, {"warnings", r.warnings}};
}

void print_warnings(const CacheReport& r) {
  for (const auto& w : r.warnings) fmt::print(stderr, "warning: {}\n", w);
}

}  // namespace

void register_cache(CLI::App& app) {
  auto* cmd = app.add_subcommand("cache", "The Hugging Face cache: list, du, prune, verify");
  cmd->require_subcommand(1);
  static std::string dir;
  static bool as_json = false, revisions = false, yes = false;
  auto root = [] { return dir.empty() ? HubConfig::from_env().cache_dir : dir; };

  auto* list = cmd->add_subcommand("list", "Repos (and with --revisions their revisions): size, files, last use, refs");
  list->add_option("--cache", dir, "Cache folder (default: HF_HUB_CACHE, else $HF_HOME/hub)");
  list->add_flag("--revisions,-v", revisions, "One line per revision");
  list->add_flag("--json", as_json, "As JSON");
  list->callback([root] {
    const auto r = scan_cache(root());
    if (as_json) {
      fmt::print("{}\n", to_json(r).dump(2));
      return;
    }
    if (!revisions) {
      fmt::print("{:<44} {:<8} {:>9} {:>6} {:<16} {:<16} {:<12} {}\n", "REPO ID", "TYPE", "SIZE", "FILES", "LAST ACCESSED",
                 "LAST MODIFIED", "REFS", "LOCAL PATH");
      for (const auto& repo : r.repos) {
        std::vector<std::string> refs;
        for (const auto& v : repo.revisions) refs.insert(refs.end(), v.refs.begin(), v.refs.end());
        std::sort(refs.begin(), refs.end());
        fmt::print("{:<44} {:<8} {:>9} {:>6} {:<16} {:<16} {:<12} {}\n", repo.id, repo.type, format_cache_size(repo.size),
                   repo.files, when(repo.last_accessed), when(repo.last_modified), joined(refs), repo.path);
      }
    } else {
      fmt::print("{:<44} {:<8} {:<40} {:>9} {:>6} {:<16} {:<12}\n", "REPO ID", "TYPE", "REVISION", "SIZE", "FILES",
                 "LAST MODIFIED", "REFS");
      for (const auto& repo : r.repos)
        for (const auto& v : repo.revisions)
          fmt::print("{:<44} {:<8} {:<40} {:>9} {:>6} {:<16} {:<12}\n", repo.id, repo.type, v.commit,
                     format_cache_size(v.size), v.files.size(), when(v.last_modified),
                     v.refs.empty() ? std::string("(detached)") : joined(v.refs));
    }
    fmt::print("\n{} repos, {} on disk in {}\n", r.repos.size(), format_cache_size(r.size), r.root);
    print_warnings(r);
  });

  auto* du = cmd->add_subcommand("du", "Disk use: the total, each repo (largest first), and what prune would free");
  du->add_option("--cache", dir, "Cache folder (default: HF_HUB_CACHE, else $HF_HOME/hub)");
  du->callback([root] {
    const auto r = scan_cache(root());
    std::vector<const CachedRepo*> repos;
    for (const auto& repo : r.repos) repos.push_back(&repo);
    std::sort(repos.begin(), repos.end(), [](const CachedRepo* a, const CachedRepo* b) { return a->size > b->size; });
    for (const auto* repo : repos) fmt::print("{:>9}  {} ({})\n", format_cache_size(repo->size), repo->id, repo->type);
    const auto plan = plan_prune(r);
    fmt::print("{:>9}  total in {}\n{:>9}  prunable: detached revisions and unreferenced blobs (pivotmt cache prune)\n",
               format_cache_size(r.size), r.root, format_cache_size(plan.freed));
    print_warnings(r);
  });

  auto* prune = cmd->add_subcommand("prune", "Delete detached revisions (no ref points to them) and unreferenced blobs; a dry run unless --yes");
  prune->add_option("--cache", dir, "Cache folder (default: HF_HUB_CACHE, else $HF_HOME/hub)");
  prune->add_flag("--yes,-y", yes, "Delete (default: only show what would go)");
  prune->callback([root] {
    const auto r = scan_cache(root());
    const auto plan = plan_prune(r);
    for (const auto& p : plan.paths) fmt::print("{} {}\n", yes ? "delete" : "would delete", p);
    if (plan.paths.empty()) {
      fmt::print("nothing to prune in {}\n", r.root);
    } else if (!yes) {
      fmt::print("dry run: {} would be freed ({} paths); rerun with --yes to delete\n", format_cache_size(plan.freed),
                 plan.paths.size());
    } else {
      fmt::print("freed {}\n", format_cache_size(apply_prune(r, plan)));
    }
    print_warnings(r);
  });

  auto* verify = cmd->add_subcommand("verify", "Re-hash every blob named by a SHA-256 (LFS) or git SHA-1 and report damaged ones");
  verify->add_option("--cache", dir, "Cache folder (default: HF_HUB_CACHE, else $HF_HOME/hub)");
  verify->callback([root] {
    const auto r = scan_cache(root());
    const auto v = verify_cache(r);
    for (const auto& p : v.problems) fmt::print("{}\n", p);
    fmt::print("{} blobs checked, {} with other names skipped, {} damaged\n", v.checked, v.skipped, v.problems.size());
    print_warnings(r);
    if (!v.problems.empty()) throw Error(fmt::format("{} damaged blobs in {} (delete them and download again)", v.problems.size(), r.root));
  });
}

}  // namespace pivotmt::cli
