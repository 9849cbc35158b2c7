// pivotmt cache: the scan, prune and verify of a Hugging Face cache written with
// huggingface_hub's own helpers (tests/goldens/make_hf_cache.py), against what
// huggingface_hub's scan_cache_dir and delete_revisions say about the same folder.
#include <gtest/gtest.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "hub/cache_scan.h"
#include "test_util.h"

namespace pivotmt {
namespace {
namespace fs = std::filesystem;

const std::string kFixture = std::string(PIVOTMT_SOURCE_DIR) + "/tests/goldens/hf_cache";

// A writable copy of the fixture cache (symlinks copied as symlinks).
std::string copy_cache(const test::TempDir& dir) {
  fs::copy(kFixture + "/hub", dir.str("hub"), fs::copy_options::recursive | fs::copy_options::copy_symlinks);
  return dir.str("hub");
}

TEST(CacheScan, AgreesWithHuggingFaceHub) {
  const auto golden = nlohmann::json::parse(test::read_file(kFixture + "/scan.json"));
  const auto report = scan_cache(kFixture + "/hub");
  EXPECT_TRUE(report.warnings.empty()) << report.warnings.front();
  EXPECT_EQ(report.size, golden["size_on_disk"].get<uint64_t>());
  ASSERT_EQ(report.repos.size(), golden["repos"].size());
  for (size_t r = 0; r < report.repos.size(); ++r) {
    const auto& got = report.repos[r];
    const auto& want = golden["repos"][r];
    EXPECT_EQ(got.id, want["id"].get<std::string>());
    EXPECT_EQ(got.type, want["type"].get<std::string>());
    EXPECT_EQ(got.size, want["size_on_disk"].get<uint64_t>()) << got.id;
    EXPECT_EQ(got.files, want["nb_files"].get<size_t>()) << got.id;
    ASSERT_EQ(got.revisions.size(), want["revisions"].size());
    for (size_t v = 0; v < got.revisions.size(); ++v) {
      const auto& gv = got.revisions[v];
      const auto& wv = want["revisions"][v];
      EXPECT_EQ(gv.commit, wv["commit"].get<std::string>());
      EXPECT_EQ(gv.refs, wv["refs"].get<std::vector<std::string>>());
      EXPECT_EQ(gv.files.size(), wv["nb_files"].get<size_t>());
      EXPECT_EQ(gv.size, wv["size_on_disk"].get<uint64_t>()) << gv.commit;
    }
  }
  // The tokenizer in a subfolder keeps its path.
  const auto& model = report.repos[1];
  EXPECT_EQ(model.revisions[0].files.back().name, "tokenizer/tokenizer.json");
  EXPECT_EQ(model.unreferenced_blobs, std::vector<std::string>{golden["orphan_blob"].get<std::string>()});
}

TEST(CachePrune, DetachedRevisionsAndOrphansAsHuggingFaceHubDeletes) {
  const auto golden = nlohmann::json::parse(test::read_file(kFixture + "/scan.json"));
  test::TempDir dir;
  const std::string root = copy_cache(dir);
  const auto report = scan_cache(root);
  const auto plan = plan_prune(report);
  // delete_revisions(detached) frees its snapshot and the blobs only it links; pruning also
  // frees the blob no snapshot links.
  const auto& del = golden["delete_detached"];
  EXPECT_EQ(plan.freed, del["expected_freed_size"].get<uint64_t>() + golden["orphan_size"].get<uint64_t>());
  std::vector<std::string> names;
  for (const auto& p : plan.paths) names.push_back(fs::path(p).filename().string());
  for (const auto& b : del["blobs"]) EXPECT_NE(std::find(names.begin(), names.end(), b.get<std::string>()), names.end()) << b;
  for (const auto& s : del["snapshots"]) EXPECT_NE(std::find(names.begin(), names.end(), s.get<std::string>()), names.end()) << s;
  EXPECT_EQ(plan.paths.size(), del["blobs"].size() + del["snapshots"].size() + 1);

  EXPECT_EQ(apply_prune(report, plan), plan.freed);
  const auto after = scan_cache(root);
  EXPECT_TRUE(after.warnings.empty()) << after.warnings.front();
  EXPECT_EQ(after.size, golden["size_on_disk"].get<uint64_t>() - del["expected_freed_size"].get<uint64_t>());
  EXPECT_EQ(after.repos[1].revisions.size(), 1u);
  EXPECT_TRUE(after.repos[1].unreferenced_blobs.empty());
  EXPECT_TRUE(plan_prune(after).paths.empty());
}

TEST(CachePrune, NeverDeletesOutsideTheCache) {
  test::TempDir dir;
  const std::string root = copy_cache(dir);
  // A detached snapshot whose file links to a file outside the cache.
  test::write_file(dir.str("precious.txt"), "not the cache's");
  const std::string snap = root + "/models--pivotmt-test--tiny/snapshots/dddddddddddddddddddddddddddddddddddddddd";
  fs::create_directories(snap);
  fs::create_symlink(dir.str("precious.txt"), snap + "/notes.txt");
  const auto report = scan_cache(root);
  EXPECT_FALSE(report.warnings.empty());
  const auto plan = plan_prune(report);
  apply_prune(report, plan);
  EXPECT_EQ(test::read_file(dir.str("precious.txt")), "not the cache's");
  EXPECT_FALSE(fs::exists(snap));  // the link itself went
  PrunePlan outside;
  outside.paths = {dir.str("precious.txt")};
  EXPECT_THROW(apply_prune(report, outside), Error);
  EXPECT_TRUE(fs::exists(dir.str("precious.txt")));
}

TEST(CacheVerify, FindsADamagedBlob) {
  test::TempDir dir;
  const std::string root = copy_cache(dir);
  auto result = verify_cache(scan_cache(root));
  EXPECT_EQ(result.checked, 5u);  // every linked blob once: 2 git SHA-1 names, 3 SHA-256
  EXPECT_TRUE(result.problems.empty()) << result.problems.front();
  // Damage the weights (shared by both revisions: reported once).
  const auto report = scan_cache(root);
  std::string blob;
  for (const auto& f : report.repos[1].revisions[0].files)
    if (f.name == "model.safetensors") blob = f.blob;
  const std::string path = root + "/models--pivotmt-test--tiny/blobs/" + blob;
  fs::permissions(path, fs::perms::owner_write, fs::perm_options::add);
  test::write_file(path, "damaged");
  result = verify_cache(scan_cache(root));
  ASSERT_EQ(result.problems.size(), 1u);
  EXPECT_NE(result.problems[0].find("pivotmt-test/tiny: blobs/" + blob), std::string::npos) << result.problems[0];
}

TEST(CacheScan, MissingCacheIsEmptyAndSizesFormatAsHuggingFaceHub) {
  EXPECT_TRUE(scan_cache("/nonexistent/pivotmt-cache").repos.empty());
  EXPECT_EQ(format_cache_size(17), "17.0");
  EXPECT_EQ(format_cache_size(12336), "12.3K");
  EXPECT_EQ(format_cache_size(4'852'054), "4.9M");
  EXPECT_EQ(format_cache_size(14'000'000'000ull), "14.0G");
}

}  // namespace
}  // namespace pivotmt
