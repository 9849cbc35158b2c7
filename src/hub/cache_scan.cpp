#include "hub/cache_scan.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "core/error.h"
#include "hub/file_hash.h"

namespace pivotmt {
namespace fs = std::filesystem;

namespace {

double seconds_of(const struct timespec& t) { return double(t.tv_sec) + double(t.tv_nsec) * 1e-9; }

bool is_hex(const std::string& s, size_t n) {
  return s.size() == n && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// `p` lies inside `root` (both made absolute and normal, symlinks of `p` itself not followed).
bool inside(const fs::path& root, const fs::path& p) {
  const auto r = fs::absolute(root).lexically_normal();
  const auto q = fs::absolute(p).lexically_normal();
  auto ri = r.begin(), qi = q.begin();
  for (; ri != r.end() && !ri->empty(); ++ri, ++qi)
    if (qi == q.end() || *ri != *qi) return false;
  return qi != q.end();
}

CachedRepo scan_repo(const fs::path& dir, std::vector<std::string>& warnings) {
  CachedRepo repo;
  const std::string name = dir.filename().string();
  const auto sep = name.find("--");
  const std::string prefix = name.substr(0, sep);
  repo.type = prefix == "models" ? "model" : prefix == "datasets" ? "dataset" : "space";
  std::string id = name.substr(sep + 2);
  for (size_t p; (p = id.find("--")) != std::string::npos;) id.replace(p, 2, "/");
  repo.id = id;
  repo.path = dir.string();
  const fs::path snapshots = dir / "snapshots", refs = dir / "refs", blobs_dir = dir / "blobs";
  if (!fs::is_directory(snapshots)) throw Error(fmt::format("{}: no snapshots folder", dir.string()));

  std::map<std::string, std::set<std::string>> refs_by_commit;
  if (fs::is_directory(refs))
    for (const auto& e : fs::recursive_directory_iterator(refs)) {
      if (!e.is_regular_file()) continue;
      std::ifstream in(e.path());
      std::stringstream ss;
      ss << in.rdbuf();
      refs_by_commit[ss.str()].insert(fs::relative(e.path(), refs).generic_string());
    }

  struct Blob {
    uint64_t size = 0;
    double atime = 0, mtime = 0;
  };
  std::map<std::string, Blob> blobs;  // absolute path -> stat
  for (const auto& rev : fs::directory_iterator(snapshots)) {
    if (!rev.is_directory()) throw Error(fmt::format("{}: a file among the snapshots", rev.path().string()));
    CachedRevision r;
    r.commit = rev.path().filename().string();
    std::set<std::string> mine;
    double newest = -1;
    for (const auto& f : fs::recursive_directory_iterator(rev.path())) {
      if (f.is_directory()) continue;
      fs::path blob_path = f.path();
      if (f.is_symlink()) blob_path = (f.path().parent_path() / fs::read_symlink(f.path())).lexically_normal();
      if (!fs::exists(blob_path)) throw Error(fmt::format("{}: broken link (blob missing)", f.path().string()));
      if (!inside(dir, blob_path))
        warnings.push_back(fmt::format("{}: links outside the repo's folder ({}); counted, never deleted",
                                       f.path().string(), blob_path.string()));
      const std::string key = fs::absolute(blob_path).lexically_normal().string();
      if (!blobs.count(key)) {
        struct stat st;
        if (::stat(key.c_str(), &st) != 0) throw Error(fmt::format("{}: cannot stat", key));
        blobs[key] = {uint64_t(st.st_size), seconds_of(st.st_atim), seconds_of(st.st_mtim)};
      }
      CachedFile cf;
      cf.name = f.path().lexically_relative(rev.path()).generic_string();  // (relative() would follow the link)
      cf.size = blobs[key].size;
      if (inside(blobs_dir, blob_path)) cf.blob = blob_path.filename().string();
      r.files.push_back(cf);
      newest = std::max(newest, blobs[key].mtime);
      if (mine.insert(key).second) r.size += blobs[key].size;
    }
    std::sort(r.files.begin(), r.files.end(), [](const CachedFile& a, const CachedFile& b) { return a.name < b.name; });
    if (newest < 0) {
      struct stat st;
      if (::stat(rev.path().c_str(), &st) == 0) newest = seconds_of(st.st_mtim);
    }
    r.last_modified = newest;
    if (const auto it = refs_by_commit.find(r.commit); it != refs_by_commit.end()) {
      r.refs.assign(it->second.begin(), it->second.end());
      refs_by_commit.erase(it);
    }
    repo.revisions.push_back(std::move(r));
  }
  if (!refs_by_commit.empty())
    throw Error(fmt::format("{}: refs {} point to commits that have no snapshot", dir.string(),
                            refs_by_commit.begin()->first));
  std::sort(repo.revisions.begin(), repo.revisions.end(),
            [](const CachedRevision& a, const CachedRevision& b) { return a.commit < b.commit; });
  for (const auto& [path, b] : blobs) {
    repo.size += b.size;
    repo.last_accessed = std::max(repo.last_accessed, b.atime);
    repo.last_modified = std::max(repo.last_modified, b.mtime);
  }
  repo.files = blobs.size();
  // Blobs that no snapshot links (an interrupted download's .incomplete files excepted: a
  // download may be running).
  if (fs::is_directory(blobs_dir))
    for (const auto& e : fs::directory_iterator(blobs_dir)) {
      const std::string key = fs::absolute(e.path()).lexically_normal().string();
      if (!e.is_regular_file() || e.path().extension() == ".incomplete" || blobs.count(key)) continue;
      repo.unreferenced_blobs.push_back(e.path().filename().string());
      repo.unreferenced_size += e.file_size();
    }
  std::sort(repo.unreferenced_blobs.begin(), repo.unreferenced_blobs.end());
  return repo;
}

}  // namespace

std::string format_cache_size(uint64_t bytes) {
  double v = double(bytes);
  for (const char* unit : {"", "K", "M", "G", "T", "P", "E", "Z"}) {
    if (std::abs(v) < 1000.0) return fmt::format("{:3.1f}{}", v, unit);
    v /= 1000.0;
  }
  return fmt::format("{:.1f}Y", v);
}

CacheReport scan_cache(const std::string& root) {
  CacheReport report;
  report.root = root;
  if (!fs::exists(root)) return report;
  if (!fs::is_directory(root)) throw Error(fmt::format("{}: the cache path is not a folder", root));
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    if (name == ".locks" || name == "CACHEDIR.TAG" || name == "version.txt" || name.front() == '.') continue;
    const auto sep = name.find("--");
    const std::string prefix = sep == std::string::npos ? "" : name.substr(0, sep);
    if (!e.is_directory() || (prefix != "models" && prefix != "datasets" && prefix != "spaces")) {
      report.warnings.push_back(fmt::format("{}: not a repo folder (skipped)", e.path().string()));
      continue;
    }
    try {
      report.repos.push_back(scan_repo(e.path(), report.warnings));
      report.size += report.repos.back().size;
    } catch (const Error& err) {  // huggingface_hub's CorruptedCacheException: reported, skipped
      report.warnings.push_back(fmt::format("{} (repo skipped)", err.what()));
    }
  }
  std::sort(report.repos.begin(), report.repos.end(),
            [](const CachedRepo& a, const CachedRepo& b) { return std::tie(a.type, a.id) < std::tie(b.type, b.id); });
  return report;
}

PrunePlan plan_prune(const CacheReport& report) {
  PrunePlan plan;
  for (const auto& repo : report.repos) {
    // Blobs kept: those a revision with a ref links.
    std::set<std::string> kept;
    for (const auto& r : repo.revisions)
      if (!r.refs.empty())
        for (const auto& f : r.files)
          if (!f.blob.empty()) kept.insert(f.blob);
    std::map<std::string, uint64_t> drop;  // blob -> size
    for (const auto& r : repo.revisions) {
      if (!r.refs.empty()) continue;
      plan.paths.push_back((fs::path(repo.path) / "snapshots" / r.commit).string());
      for (const auto& f : r.files)
        if (!f.blob.empty() && !kept.count(f.blob)) drop[f.blob] = f.size;
    }
    for (size_t i = 0; i < repo.unreferenced_blobs.size(); ++i) {
      const auto path = fs::path(repo.path) / "blobs" / repo.unreferenced_blobs[i];
      drop[repo.unreferenced_blobs[i]] = fs::exists(path) ? fs::file_size(path) : 0;
    }
    for (const auto& [blob, size] : drop) {
      plan.paths.push_back((fs::path(repo.path) / "blobs" / blob).string());
      plan.freed += size;
    }
  }
  return plan;
}

uint64_t apply_prune(const CacheReport& report, const PrunePlan& plan) {
  uint64_t freed = 0;
  for (const auto& p : plan.paths) {
    // Only what lies inside the cache, and never by following a link out of it.
    if (!inside(report.root, p)) throw Error(fmt::format("{}: outside the cache {}; refusing to delete it", p, report.root));
    const fs::path path(p);
    if (fs::is_symlink(path) || !fs::exists(path)) {
      fs::remove(path);
      continue;
    }
    if (fs::is_directory(path)) {
      fs::remove_all(path);  // a snapshot: links only (remove_all does not follow them)
    } else {
      freed += fs::file_size(path);
      fs::remove(path);
    }
  }
  return freed;
}

VerifyResult verify_cache(const CacheReport& report) {
  VerifyResult result;
  for (const auto& repo : report.repos) {
    std::set<std::string> seen;
    for (const auto& r : repo.revisions)
      for (const auto& f : r.files) {
        if (f.blob.empty() || !seen.insert(f.blob).second) continue;
        const std::string path = (fs::path(repo.path) / "blobs" / f.blob).string();
        try {
          if (is_hex(f.blob, 64)) {
            ++result.checked;
            const std::string got = sha256_file_hex(path);
            if (got != f.blob)
              result.problems.push_back(fmt::format("{}: blobs/{}: SHA-256 is {} ({}): the file is damaged", repo.id,
                                                    f.blob, got, f.name));
          } else if (is_hex(f.blob, 40)) {
            ++result.checked;
            const std::string got = git_blob_sha1_file_hex(path);
            if (got != f.blob)
              result.problems.push_back(fmt::format("{}: blobs/{}: git SHA-1 is {} ({}): the file is damaged", repo.id,
                                                    f.blob, got, f.name));
          } else {
            ++result.skipped;
          }
        } catch (const Error& e) {
          result.problems.push_back(fmt::format("{}: blobs/{}: {}", repo.id, f.blob, e.what()));
        }
      }
  }
  return result;
}

}  // namespace pivotmt
