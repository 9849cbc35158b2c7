// The Hugging Face cache as a whole, with huggingface_hub's conventions (scan_cache_dir,
// delete_revisions): repos, their revisions (snapshots) and refs, sizes counted once per
// blob, last access and modification of the blobs; detached revisions (no ref points to
// them) and unreferenced blobs (no snapshot links them) pruned; blobs verified against their
// names (an LFS blob is named by its SHA-256, a git blob by its git SHA-1). Nothing outside
// the cache folder is ever deleted: a snapshot entry that leads elsewhere is reported, not
// followed.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace pivotmt {

struct CachedFile {
  std::string name;       // path inside the snapshot
  std::string blob;       // blobs/<name> it links to ("" when it is not a link into blobs/)
  uint64_t size = 0;
};

struct CachedRevision {
  std::string commit;
  std::vector<std::string> refs;  // branch / tag names pointing to it (sorted)
  std::vector<CachedFile> files;
  uint64_t size = 0;        // its distinct blobs
  double last_modified = 0;  // the snapshot folder's mtime (seconds since the epoch)
};

struct CachedRepo {
  std::string type;  // "model" | "dataset" | "space"
  std::string id;    // org/name
  std::string path;  // its folder
  uint64_t size = 0;  // every blob once
  size_t files = 0;   // distinct blobs linked by some snapshot
  double last_accessed = 0, last_modified = 0;  // over its blobs
  std::vector<CachedRevision> revisions;        // sorted by commit
  std::vector<std::string> unreferenced_blobs;  // blobs no snapshot links
  uint64_t unreferenced_size = 0;
};

struct CacheReport {
  std::string root;
  std::vector<CachedRepo> repos;  // sorted by type, then id
  std::vector<std::string> warnings;  // folders that are not repos, links leaving the cache, ...
  uint64_t size = 0;
};

// Reads the cache at `root` (a missing folder is an empty cache).
CacheReport scan_cache(const std::string& root);

// What pruning would delete: detached revisions (snapshots without a ref) and the blobs that
// only they link, plus blobs no snapshot links; and the bytes that frees.
struct PrunePlan {
  std::vector<std::string> paths;  // snapshot folders and blob files, inside the cache
  uint64_t freed = 0;
};
PrunePlan plan_prune(const CacheReport& report);
// Deletes what the plan lists (each path checked to lie inside the cache first); returns
// the bytes freed.
uint64_t apply_prune(const CacheReport& report, const PrunePlan& plan);

// Each blob whose name is a SHA-256 (LFS) or git SHA-1 re-hashed and compared; returns one
// line per mismatch or unreadable blob ("repo: blobs/<name>: ...").
struct VerifyResult {
  size_t checked = 0, skipped = 0;  // skipped: names that are neither hash (an ETag of another form)
  std::vector<std::string> problems;
};
VerifyResult verify_cache(const CacheReport& report);

// "1.2G", "340.5M", "12.0K", "17" (huggingface_hub's size format: one decimal, K = 1000).
std::string format_cache_size(uint64_t bytes);

}  // namespace pivotmt
