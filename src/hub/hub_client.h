// Downloads from the Hugging Face hub into the shared cache (see hub_cache.h), with the
// hub's HEAD/redirect protocol, resumable .incomplete files, checksum verification before
// a blob is installed, a per-blob file lock, retries with backoff and progress output.
#pragma once
#include <string>
#include <vector>

#include "hub/hub_cache.h"
#include "hub/hub_config.h"

namespace pivotmt {

class HubClient {
 public:
  explicit HubClient(HubConfig config);
  const HubConfig& config() const { return config_; }
  const HubCache& cache() const { return cache_; }

  // One file of the repo at its revision; returns the path inside the snapshot.
  // Offline (HF_HUB_OFFLINE) it is served from the cache or fails naming what is missing.
  std::string download_file(const RepoRef& repo, const std::string& filename);

  // Every file of the revision matching one of `include` (fnmatch globs; all when empty).
  // Returns the snapshot directory.
  std::string download_snapshot(const RepoRef& repo, const std::vector<std::string>& include = {});

  // Lists the files of a revision and the commit it resolves to (the hub's
  // /api/{models,datasets}/{repo}/revision/{rev}).
  struct RepoInfo {
    std::string commit;
    std::vector<std::string> files;
  };
  RepoInfo repo_info(const RepoRef& repo);

 private:
  void backoff(int attempt, const std::string& why) const;
  std::string file_url(const RepoRef& repo, const std::string& revision, const std::string& filename) const;
  std::string from_cache_or_throw(const RepoRef& repo, const std::string& filename, const std::string& why) const;
  void fetch_blob(const RepoRef& repo, const std::string& url, const std::string& etag, uint64_t size,
                  const std::string& filename);
  HubConfig config_;
  HubCache cache_;
};

// The files a model needs (weights, configs, tokenizer), not alternative formats.
std::vector<std::string> default_model_patterns();

// A MODEL or DATASET argument: an existing local directory is used as it is; a hub id
// "org/name[@rev]" is downloaded (or found in the cache) and its snapshot dir returned.
std::string resolve_repo_path(const std::string& arg, RepoType type, const std::vector<std::string>& include = {});

}  // namespace pivotmt
