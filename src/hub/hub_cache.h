// The Hugging Face cache layout, as huggingface_hub reads and writes it:
//   {cache}/{models|datasets}--{org}--{name}/
//     blobs/{etag}                  file contents, named by ETag (sha256 for LFS files)
//     refs/{revision}               the commit hash a branch or tag pointed to
//     snapshots/{commit}/{path}     relative symlinks into blobs/
//     .no_exist/{commit}/{path}     empty markers for files known to be absent
//   {cache}/.locks/{repo folder}/{etag}.lock
#pragma once
#include <optional>
#include <string>

#include "hub/hub_config.h"

namespace pivotmt {

bool is_commit_hash(const std::string& s);  // 40 lower-case hex digits

class HubCache {
 public:
  explicit HubCache(std::string root) : root_(std::move(root)) {}
  const std::string& root() const { return root_; }

  std::string repo_dir(const RepoRef& repo) const;
  std::string blob_path(const RepoRef& repo, const std::string& etag) const;
  std::string snapshot_dir(const RepoRef& repo, const std::string& commit) const;
  std::string snapshot_file(const RepoRef& repo, const std::string& commit, const std::string& file) const;
  std::string lock_path(const RepoRef& repo, const std::string& etag) const;

  // The commit a revision names: itself when it is a commit hash, else refs/{revision}.
  std::optional<std::string> resolve_commit(const RepoRef& repo) const;
  void write_ref(const RepoRef& repo, const std::string& commit) const;

  // snapshots/{commit}/{file} -> ../../blobs/{etag} (one more ../ per folder in file).
  void link_snapshot_file(const RepoRef& repo, const std::string& commit, const std::string& file,
                          const std::string& etag) const;
  void mark_missing(const RepoRef& repo, const std::string& commit, const std::string& file) const;
  bool is_marked_missing(const RepoRef& repo, const std::string& commit, const std::string& file) const;

 private:
  std::string root_;
};

}  // namespace pivotmt
