#include "hub/hub_client.h"

#include "io/gguf.h"

#include <fnmatch.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/progress.h"
#include "hub/file_hash.h"
#include "hub/file_lock.h"
#include "hub/http.h"
#include "io/gguf.h"

namespace pivotmt {
namespace fs = std::filesystem;

namespace {
// ETag header values come as "abc", W/"abc" or abc.
std::string normalize_etag(std::string e) {
  if (e.starts_with("W/")) e = e.substr(2);
  if (e.size() >= 2 && e.front() == '"' && e.back() == '"') e = e.substr(1, e.size() - 2);
  return e;
}

bool is_hex(const std::string& s, size_t n) {
  return s.size() == n && std::all_of(s.begin(), s.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
}

// A repo path must stay inside the snapshot: relative, no "." or ".." parts.
void check_repo_path(const RepoRef& repo, const std::string& filename) {
  const fs::path p(filename);
  bool ok = !filename.empty() && !p.is_absolute() && filename.find('\\') == std::string::npos;
  for (const auto& part : p) ok = ok && part != ".." && part != "." && !part.empty();
  if (!ok) throw HubError(fmt::format("{}: refusing file name '{}' (it would leave the snapshot folder)", repo.id, filename));
}

[[noreturn]] void throw_status(const RepoRef& repo, const std::string& what, const HttpResponse& r, bool has_token) {
  const std::string code = r.header("x-error-code").value_or("");
  const std::string message = r.header("x-error-message").value_or("");
  std::string text;
  if (r.status == 401 || r.status == 403) {
    text = fmt::format("{} {} ({}): access denied: {}{}", repo_type_name(repo.type), repo.id, r.status,
                       code == "GatedRepo" ? "the repository is gated; accept its terms on the hub, then " : "the repository is gated, private or does not exist; ",
                       has_token ? "the token in use does not grant access" : "set HF_TOKEN (or run `huggingface-cli login`)");
  } else if (code == "RepoNotFound") {
    text = fmt::format("{} {}: repository not found on the hub", repo_type_name(repo.type), repo.id);
  } else if (code == "RevisionNotFound") {
    text = fmt::format("{} {}: revision '{}' not found", repo_type_name(repo.type), repo.id, repo.revision);
  } else if (code == "EntryNotFound" || r.status == 404) {
    text = fmt::format("{} {}@{}: {} not found", repo_type_name(repo.type), repo.id, repo.revision, what);
  } else {
    text = fmt::format("{} {}: HTTP {} for {}", repo_type_name(repo.type), repo.id, r.status, what);
  }
  if (!message.empty()) text += fmt::format(" (hub says: {})", message);
  throw HubError(text, static_cast<int>(r.status));
}

void note_lock_wait(const std::string& path) {
  fmt::print(stderr, "waiting for another process downloading the same file (lock {})\n", path);
}
}  // namespace

std::vector<std::string> default_model_patterns() {
  return {"*.json", "*.safetensors", "tokenizer.model", "sentencepiece.bpe.model", "*.txt", "*.jinja", "*.py"};
}

HubClient::HubClient(HubConfig config) : config_(std::move(config)), cache_(config_.cache_dir) {}

void HubClient::backoff(int attempt, const std::string& why) const {
  const int delay_ms = config_.retry_base_ms * (1 << std::min(attempt, 5));
  fmt::print(stderr, "{}; retrying in {:.1f} s (attempt {} of {})\n", why, delay_ms / 1000.0, attempt + 2,
             config_.max_retries + 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
}

std::string HubClient::file_url(const RepoRef& repo, const std::string& revision, const std::string& filename) const {
  return fmt::format("{}/{}{}/resolve/{}/{}", config_.endpoint, repo.type == RepoType::Dataset ? "datasets/" : "",
                     repo.id, url_encode_component(revision), url_encode_path(filename));
}

std::string HubClient::from_cache_or_throw(const RepoRef& repo, const std::string& filename,
                                           const std::string& why) const {
  const auto commit = cache_.resolve_commit(repo);
  if (!commit)
    throw HubError(fmt::format("{}: {}@{} is not in the cache ({}) and {}", filename, repo.id, repo.revision,
                               cache_.repo_dir(repo), why));
  const std::string path = cache_.snapshot_file(repo, *commit, filename);
  if (fs::exists(path)) return path;
  if (cache_.is_marked_missing(repo, *commit, filename))
    throw HubError(fmt::format("{}@{}: {} does not exist in the repository (known from the cache)", repo.id,
                               repo.revision, filename), 404);
  throw HubError(fmt::format("{}@{}: {} is not in the cache (looked for {}) and {}", repo.id, repo.revision, filename,
                             path, why));
}

std::string HubClient::download_file(const RepoRef& repo, const std::string& filename) {
  check_repo_path(repo, filename);
  if (config_.offline) return from_cache_or_throw(repo, filename, "HF_HUB_OFFLINE is set");

  const HttpClient http(config_.endpoint, config_.token);
  const std::string url = file_url(repo, repo.revision, filename);
  HttpResponse head;
  try {
    for (int attempt = 0;; ++attempt) {
      try {
        head = http.head(url);
        if ((head.status == 429 || head.status >= 500) && attempt < config_.max_retries) {
          backoff(attempt, fmt::format("{}: HTTP {}", filename, head.status));
          continue;
        }
        break;
      } catch (const HttpTransportError& e) {
        if (!e.retryable || attempt >= config_.max_retries) throw;
        backoff(attempt, fmt::format("{}: {}", filename, e.what()));
      }
    }
  } catch (const HttpTransportError& e) {
    // Like huggingface_hub: with no connection, fall back to what the cache has.
    try {
      const std::string path = from_cache_or_throw(repo, filename, "the hub cannot be reached");
      fmt::print(stderr, "warning: hub unreachable ({}); using the cached {}\n", e.what(), filename);
      return path;
    } catch (const HubError&) {
      throw HubError(fmt::format("{}@{}: cannot reach the hub for {}: {}", repo.id, repo.revision, filename, e.what()));
    }
  }
  if (head.status >= 400) {
    if (head.status == 404 && head.header("x-error-code").value_or("") == "EntryNotFound") {
      if (auto commit = head.header("x-repo-commit"); commit && is_commit_hash(*commit)) {
        cache_.write_ref(repo, *commit);
        cache_.mark_missing(repo, *commit, filename);
      }
    }
    throw_status(repo, filename, head, config_.token.has_value());
  }
  const auto commit = head.header("x-repo-commit");
  if (!commit || !is_commit_hash(*commit))
    throw HubError(fmt::format("{}: the hub's answer for {} has no valid X-Repo-Commit header (is HF_ENDPOINT a hub?)",
                               repo.id, filename));
  const auto etag_raw = head.header("x-linked-etag") ? head.header("x-linked-etag") : head.header("etag");
  if (!etag_raw) throw HubError(fmt::format("{}: the hub's answer for {} has no ETag", repo.id, filename));
  const std::string etag = normalize_etag(*etag_raw);
  if (etag.empty() || etag.find('/') != std::string::npos || etag.find("..") != std::string::npos)
    throw HubError(fmt::format("{}: invalid ETag '{}' for {}", repo.id, etag, filename));
  const auto size_text = head.header("x-linked-size") ? head.header("x-linked-size") : head.header("content-length");
  uint64_t size = 0;
  bool size_known = false;
  if (size_text) {
    try {
      size = std::stoull(*size_text);
      size_known = true;
    } catch (const std::exception&) {
      throw HubError(fmt::format("{}: invalid size header '{}' for {}", repo.id, *size_text, filename));
    }
  }
  std::string download_url = url;
  if (head.status >= 300 && head.status < 400) {
    const auto location = head.header("location");
    if (!location) throw HubError(fmt::format("{}: redirect without Location for {}", repo.id, filename));
    download_url = resolve_location(url, *location);
  }

  cache_.write_ref(repo, *commit);
  const std::string pointer = cache_.snapshot_file(repo, *commit, filename);
  const std::string blob = cache_.blob_path(repo, etag);
  if (fs::exists(pointer) && fs::exists(blob)) return pointer;
  if (!fs::exists(blob)) {
    FileLock lock(cache_.lock_path(repo, etag), note_lock_wait);
    if (!fs::exists(blob)) fetch_blob(repo, download_url, etag, size_known ? size : UINT64_MAX, filename);
  }
  cache_.link_snapshot_file(repo, *commit, filename, etag);
  return pointer;
}

void HubClient::fetch_blob(const RepoRef& repo, const std::string& url, const std::string& etag, uint64_t size,
                           const std::string& filename) {
  const HttpClient http(config_.endpoint, config_.token);
  const std::string blob = cache_.blob_path(repo, etag);
  const std::string incomplete = blob + ".incomplete";
  fs::create_directories(fs::path(blob).parent_path());
  const bool size_known = size != UINT64_MAX;
  Progress progress(filename, size_known ? size : 0, ProgressUnit::Bytes);

  for (int attempt = 0;; ++attempt) {
    if (!fs::exists(incomplete)) std::ofstream(incomplete, std::ios::binary).flush();
    uint64_t have = fs::file_size(incomplete);
    if (size_known && have > size) {  // stale or foreign partial file: start over
      fs::resize_file(incomplete, 0);
      have = 0;
    }
    if (size_known && have == size) break;
    std::string failure;
    bool retryable = true;
    try {
      const HttpResponse r = http.get_to_file(url, incomplete, have, [&](uint64_t done) { progress.set(done); });
      if (r.status == 416) {
        fs::resize_file(incomplete, 0);
        failure = "server refused the resume range";
      } else if (r.status == 429 || r.status >= 500) {
        failure = fmt::format("HTTP {}", r.status);
      } else if (r.status != 200 && r.status != 206) {
        throw_status(repo, filename, r, config_.token.has_value());
      } else if (size_known && fs::file_size(incomplete) < size) {
        failure = fmt::format("connection ended after {} of {} bytes", fs::file_size(incomplete), size);
      } else {
        break;  // complete
      }
    } catch (const HttpTransportError& e) {
      failure = e.what();
      retryable = e.retryable;
    }
    if (!retryable || attempt >= config_.max_retries)
      throw HubError(fmt::format("{}: download of {} failed after {} attempt(s): {} (partial data kept in {}; rerun "
                                 "to resume)",
                                 repo.id, filename, attempt + 1, failure, incomplete));
    backoff(attempt, fmt::format("{}: {}", filename, failure));
  }
  progress.set(fs::file_size(incomplete));
  progress.finish();

  // Verify before installing: LFS ETags are the sha256 of the content, small files' the
  // git blob sha1. A mismatch never reaches blobs/.
  std::string actual;
  if (is_hex(etag, 64)) actual = sha256_file_hex(incomplete);
  else if (is_hex(etag, 40)) actual = git_blob_sha1_file_hex(incomplete);
  if (!actual.empty() && actual != etag) {
    fs::remove(incomplete);
    throw HubError(fmt::format("{}: {} is corrupt: checksum {} but the hub announced {}; not installed", repo.id,
                               filename, actual, etag));
  }
  if (const uint64_t got = fs::file_size(incomplete); size_known && got != size) {
    fs::remove(incomplete);
    throw HubError(fmt::format("{}: {} has {} bytes but the hub announced {}; not installed", repo.id, filename, got,
                               size));
  }
  fs::rename(incomplete, blob);
}

HubClient::RepoInfo HubClient::repo_info(const RepoRef& repo) {
  const HttpClient http(config_.endpoint, config_.token);
  const std::string url = fmt::format("{}/api/{}/{}/revision/{}", config_.endpoint,
                                      repo.type == RepoType::Dataset ? "datasets" : "models", repo.id,
                                      url_encode_component(repo.revision));
  HttpResponse r;
  for (int attempt = 0;; ++attempt) {
    try {
      r = http.get_string(url);
      if ((r.status == 429 || r.status >= 500) && attempt < config_.max_retries) {
        backoff(attempt, fmt::format("{}: HTTP {}", url, r.status));
        continue;
      }
      break;
    } catch (const HttpTransportError& e) {
      if (!e.retryable || attempt >= config_.max_retries) throw HubError(fmt::format("{}: {}", repo.id, e.what()));
      backoff(attempt, e.what());
    }
  }
  if (r.status != 200) throw_status(repo, "repository information", r, config_.token.has_value());
  RepoInfo info;
  try {
    const auto j = nlohmann::json::parse(r.body);
    info.commit = j.at("sha").get<std::string>();
    for (const auto& s : j.at("siblings")) info.files.push_back(s.at("rfilename").get<std::string>());
  } catch (const nlohmann::json::exception& e) {
    throw HubError(fmt::format("{}: unexpected answer from {}: {}", repo.id, url, e.what()));
  }
  if (!is_commit_hash(info.commit)) throw HubError(fmt::format("{}: the hub returned an invalid commit '{}'", repo.id, info.commit));
  return info;
}

std::string HubClient::download_snapshot(const RepoRef& repo, const std::vector<std::string>& include) {
  if (config_.offline) {
    const auto commit = cache_.resolve_commit(repo);
    if (!commit || !fs::is_directory(cache_.snapshot_dir(repo, *commit)))
      throw HubError(fmt::format("{}@{} is not in the cache ({}) and HF_HUB_OFFLINE is set", repo.id, repo.revision,
                                 cache_.repo_dir(repo)));
    return cache_.snapshot_dir(repo, *commit);
  }
  RepoInfo info;
  try {
    info = repo_info(repo);
  } catch (const HubError& e) {
    if (e.http_status() != 0) throw;
    const auto commit = cache_.resolve_commit(repo);  // unreachable hub: use the cache
    if (commit && fs::is_directory(cache_.snapshot_dir(repo, *commit))) {
      fmt::print(stderr, "warning: {}; using the cached snapshot\n", e.what());
      return cache_.snapshot_dir(repo, *commit);
    }
    throw;
  }
  cache_.write_ref(repo, info.commit);
  RepoRef pinned = repo;
  pinned.revision = info.commit;  // every file from the same commit, even if the branch moves
  size_t selected = 0;
  for (const auto& file : info.files) {
    bool wanted = include.empty();
    for (const auto& pattern : include) wanted = wanted || fnmatch(pattern.c_str(), file.c_str(), 0) == 0;
    if (!wanted) continue;
    ++selected;
    download_file(pinned, file);
  }
  if (selected == 0)
    throw HubError(fmt::format("{}@{}: no file matches the include patterns ({} files in the repository)", repo.id,
                               repo.revision, info.files.size()));
  return cache_.snapshot_dir(repo, info.commit);
}

std::string resolve_repo_path(const std::string& arg, RepoType type, const std::vector<std::string>& include) {
  if (fs::is_directory(arg)) return arg;
  if (type == RepoType::Model && is_gguf_path(arg)) return arg;  // a GGUF file holds a whole model
  if (!RepoRef::looks_like_repo_id(arg))
    throw Error(fmt::format("'{}' is neither a directory{} nor a hub id (org/name[@revision])", arg,
                            type == RepoType::Model ? ", a GGUF file" : ""));
  HubClient client(HubConfig::from_env());
  return client.download_snapshot(RepoRef::parse(arg, type),
                                  include.empty() && type == RepoType::Model ? default_model_patterns() : include);
}

}  // namespace pivotmt
