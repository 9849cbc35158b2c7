#include "hub/hub_cache.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "core/error.h"
#include "io/temp_path.h"

namespace pivotmt {
namespace fs = std::filesystem;

bool is_commit_hash(const std::string& s) {
  return s.size() == 40 && std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::string HubCache::repo_dir(const RepoRef& repo) const { return (fs::path(root_) / repo.cache_folder()).string(); }

std::string HubCache::blob_path(const RepoRef& repo, const std::string& etag) const {
  return (fs::path(repo_dir(repo)) / "blobs" / etag).string();
}

std::string HubCache::snapshot_dir(const RepoRef& repo, const std::string& commit) const {
  return (fs::path(repo_dir(repo)) / "snapshots" / commit).string();
}

std::string HubCache::snapshot_file(const RepoRef& repo, const std::string& commit, const std::string& file) const {
  return (fs::path(snapshot_dir(repo, commit)) / file).string();
}

std::string HubCache::lock_path(const RepoRef& repo, const std::string& etag) const {
  return (fs::path(root_) / ".locks" / repo.cache_folder() / (etag + ".lock")).string();
}

std::optional<std::string> HubCache::resolve_commit(const RepoRef& repo) const {
  if (is_commit_hash(repo.revision)) return repo.revision;
  std::ifstream in(fs::path(repo_dir(repo)) / "refs" / repo.revision);
  std::string commit;
  if (!in || !std::getline(in, commit)) return std::nullopt;
  while (!commit.empty() && std::isspace(static_cast<unsigned char>(commit.back()))) commit.pop_back();
  if (!is_commit_hash(commit)) return std::nullopt;
  return commit;
}

void HubCache::write_ref(const RepoRef& repo, const std::string& commit) const {
  if (repo.revision == commit) return;
  const fs::path ref = fs::path(repo_dir(repo)) / "refs" / repo.revision;
  fs::create_directories(ref.parent_path());
  const fs::path tmp = unique_temp_path(ref.string());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << commit;  // huggingface_hub writes the hash without a newline
    if (!out) throw Error(fmt::format("{}: cannot write", tmp.string()));
  }
  fs::rename(tmp, ref);
}

void HubCache::link_snapshot_file(const RepoRef& repo, const std::string& commit, const std::string& file,
                                  const std::string& etag) const {
  const fs::path link = snapshot_file(repo, commit, file);
  fs::create_directories(link.parent_path());
  const fs::path target = fs::relative(blob_path(repo, etag), link.parent_path());
  std::error_code ec;
  if (fs::is_symlink(link, ec) && fs::read_symlink(link, ec) == target) return;
  // Create beside and rename over any old entry (rename replaces atomically), so a
  // concurrent reader never sees a missing link.
  const fs::path tmp = unique_temp_path(link.string());
  fs::create_symlink(target, tmp);
  fs::rename(tmp, link);
}

void HubCache::mark_missing(const RepoRef& repo, const std::string& commit, const std::string& file) const {
  const fs::path marker = fs::path(repo_dir(repo)) / ".no_exist" / commit / file;
  fs::create_directories(marker.parent_path());
  std::ofstream(marker).flush();
}

bool HubCache::is_marked_missing(const RepoRef& repo, const std::string& commit, const std::string& file) const {
  return fs::exists(fs::path(repo_dir(repo)) / ".no_exist" / commit / file);
}

}  // namespace pivotmt
