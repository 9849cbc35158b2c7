// The hub client against a real HTTP server on 127.0.0.1 that behaves like the Hugging
// Face hub: HEAD with X-Repo-Commit / X-Linked-Etag / X-Linked-Size, redirects of LFS files
// to a second host name and port (the CDN), Range, gated repos, cut connections and wrong
// checksums. The resulting cache tree is checked against huggingface_hub's layout.
#include <gtest/gtest.h>
#include <httplib.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <mutex>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/progress.h"
#include "hub/file_hash.h"
#include "hub/hub_client.h"
#include "hub/cache_scan.h"
#include "hub/http.h"
#include "test_util.h"

namespace pivotmt {
namespace {
namespace fs = std::filesystem;
using test::TempDir;

const std::string kCommit = "0123456789abcdef0123456789abcdef01234567";
const std::string kToken = "hf_secret_test_token";

std::string git_sha1(const std::string& content) {
  TempDir t;
  test::write_file(t.str("f"), content);
  return git_blob_sha1_file_hex(t.str("f"));
}

std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = char(rng() & 0xff);
  return s;
}

struct FakeFile {
  std::string content;
  bool lfs = false;
};

class FakeHub {
 public:
  FakeHub() {
    repos_["org/model"] = {{"config.json", {R"({"model_type": "llama"})", false}},
                           {"model.safetensors", {random_bytes(300000, 1), true}},
                           {"sub/dir/notes.txt", {"nested file\n", false}},
                           {"weights.bin", {random_bytes(5000, 2), true}}};
    repos_["org/gated"] = {{"config.json", {"{\"gated\": true}", false}},
                           {"model.safetensors", {random_bytes(4000, 3), true}}};
    repos_["datasets/org/corpus"] = {{"data/train-00000-of-00001.parquet", {random_bytes(7000, 4), true}}};
    for (const auto& [repo, files] : repos_)
      for (const auto& [path, f] : files)
        if (f.lfs) by_sha_[sha256_hex(f.content)] = f.content;

    hub_.Get(R"(/api/(models|datasets)/([^/]+/[^/]+)/revision/(.+))", [this](const auto& req, auto& res) {
      const std::string key = (req.matches[1] == "datasets" ? "datasets/" : "") + std::string(req.matches[2]);
      if (!authorized(key, req, res)) return;
      nlohmann::json j = {{"sha", kCommit}, {"siblings", nlohmann::json::array()}};
      for (const auto& [path, f] : repos_.at(key)) j["siblings"].push_back({{"rfilename", path}});
      res.set_content(j.dump(), "application/json");
    });
    hub_.Get(R"(/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+))", [this](const auto& req, auto& res) {
      ++hub_requests;
      const std::string key = std::string(req.matches[1]) + std::string(req.matches[2]);
      const std::string path = req.matches[4];
      if (!authorized(key, req, res)) return;
      if (fail_heads > 0) {
        --fail_heads;
        res.status = 503;
        return;
      }
      if (req.matches[3] != "main" && req.matches[3] != kCommit) {
        res.status = 404;
        res.set_header("X-Error-Code", "RevisionNotFound");
        return;
      }
      res.set_header("X-Repo-Commit", kCommit);
      auto& files = repos_.at(key);
      auto it = files.find(path);
      if (it == files.end()) {
        res.status = 404;
        res.set_header("X-Error-Code", "EntryNotFound");
        return;
      }
      if (it->second.lfs) {
        const std::string sha = sha256_hex(it->second.content);
        res.status = 302;
        res.set_header("Location", cdn_base() + "/lfs/" + sha + "?file=" + path);
        res.set_header("X-Linked-Etag", "\"" + sha + "\"");
        res.set_header("X-Linked-Size", std::to_string(it->second.content.size()));
        return;
      }
      res.set_header("ETag", "\"" + git_sha1(it->second.content) + "\"");
      res.set_content(it->second.content, "application/octet-stream");
    });
    cdn_.Get(R"(/lfs/([0-9a-f]+))", [this](const auto& req, auto& res) {
      std::lock_guard lock(mutex_);
      ++cdn_gets;
      if (req.has_header("Authorization")) cdn_saw_authorization = true;
      ranges.push_back(req.get_header_value("Range"));
      auto it = by_sha_.find(req.matches[1]);
      if (it == by_sha_.end()) {
        res.status = 404;
        return;
      }
      std::string content = it->second;
      if (corrupt) content[content.size() / 2] ^= 0x55;
      if (cuts > 0 && !req.has_header("Range")) {
        // Send half the announced bytes, then drop the connection.
        --cuts;
        const auto shared = std::make_shared<std::string>(content);
        res.status = 200;
        res.set_content_provider(content.size(), "application/octet-stream",
                                 [shared](size_t offset, size_t, httplib::DataSink& sink) {
                                   if (offset > 0) return false;
                                   sink.write(shared->data(), shared->size() / 2);
                                   return false;
                                 });
        return;
      }
      res.set_content(content, "application/octet-stream");  // httplib answers Range with 206
    });
    hub_port_ = hub_.bind_to_any_port("127.0.0.1");
    cdn_port_ = cdn_.bind_to_any_port("127.0.0.1");
    hub_thread_ = std::thread([this] { hub_.listen_after_bind(); });
    cdn_thread_ = std::thread([this] { cdn_.listen_after_bind(); });
    while (!hub_.is_running() || !cdn_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~FakeHub() { stop(); }
  void stop() {
    hub_.stop();
    cdn_.stop();
    if (hub_thread_.joinable()) hub_thread_.join();
    if (cdn_thread_.joinable()) cdn_thread_.join();
  }

  std::string endpoint() const { return fmt::format("http://127.0.0.1:{}", hub_port_); }
  // The CDN: another host name and another port, so the token must not travel there.
  std::string cdn_base() const { return fmt::format("http://localhost:{}", cdn_port_); }
  const std::string& content(const std::string& repo, const std::string& path) { return repos_.at(repo).at(path).content; }

  std::atomic<int> cuts{0}, cdn_gets{0}, hub_requests{0}, fail_heads{0};
  std::atomic<bool> corrupt{false}, cdn_saw_authorization{false}, hub_saw_token{false};
  std::vector<std::string> ranges;

 private:
  bool authorized(const std::string& key, const httplib::Request& req, httplib::Response& res) {
    if (req.get_header_value("Authorization") == "Bearer " + kToken) hub_saw_token = true;
    if (!repos_.count(key)) {
      res.status = 404;
      res.set_header("X-Error-Code", "RepoNotFound");
      return false;
    }
    if (key == "org/gated" && req.get_header_value("Authorization") != "Bearer " + kToken) {
      res.status = 401;
      res.set_header("X-Error-Code", "GatedRepo");
      res.set_header("X-Error-Message", "Access to model org/gated is restricted.");
      return false;
    }
    return true;
  }

  std::map<std::string, std::map<std::string, FakeFile>> repos_;
  std::map<std::string, std::string> by_sha_;
  httplib::Server hub_, cdn_;
  int hub_port_ = 0, cdn_port_ = 0;
  std::thread hub_thread_, cdn_thread_;
  std::mutex mutex_;
};

class Hub : public ::testing::Test {
 protected:
  void SetUp() override { Progress::set_quiet(true); }
  HubConfig config(bool with_token = false) const {
    HubConfig c;
    c.endpoint = server.endpoint();
    c.cache_dir = tmp.str("hub");
    c.max_retries = 3;
    c.retry_base_ms = 5;
    if (with_token) c.token = kToken;
    return c;
  }
  std::string repo_dir(const std::string& folder) const { return tmp.str("hub/" + folder); }

  TempDir tmp;
  FakeHub server;
};

TEST_F(Hub, SnapshotHasHuggingFaceHubLayout) {
  HubClient client(config(true));
  const std::string snap = client.download_snapshot(RepoRef::parse("org/model"));
  const std::string repo = repo_dir("models--org--model");
  EXPECT_EQ(snap, repo + "/snapshots/" + kCommit);
  EXPECT_EQ(test::read_file(repo + "/refs/main"), kCommit);  // no trailing newline, as huggingface_hub

  const std::string model_sha = sha256_hex(server.content("org/model", "model.safetensors"));
  const std::string config_sha1 = git_sha1(server.content("org/model", "config.json"));
  // Relative symlinks into blobs/, one ../ per folder level.
  EXPECT_EQ(fs::read_symlink(snap + "/model.safetensors").string(), "../../blobs/" + model_sha);
  EXPECT_EQ(fs::read_symlink(snap + "/config.json").string(), "../../blobs/" + config_sha1);
  EXPECT_EQ(fs::read_symlink(snap + "/sub/dir/notes.txt").string(),
            "../../../../blobs/" + git_sha1(server.content("org/model", "sub/dir/notes.txt")));
  for (const char* f : {"model.safetensors", "config.json", "sub/dir/notes.txt", "weights.bin"})
    EXPECT_EQ(test::read_file(snap + "/" + f), server.content("org/model", f)) << f;
  for (const auto& e : fs::recursive_directory_iterator(repo))
    EXPECT_EQ(e.path().string().find(".incomplete"), std::string::npos) << e.path();
  EXPECT_TRUE(fs::exists(tmp.str("hub/.locks/models--org--model/" + model_sha + ".lock")));
  // The token went to the hub and never to the CDN host.
  EXPECT_TRUE(server.hub_saw_token);
  EXPECT_FALSE(server.cdn_saw_authorization);
}

TEST_F(Hub, ScanOfOwnDownloadsCountsEveryBlobAndVerifies) {
  // pivotmt cache list / verify over what pivotmt itself downloaded.
  HubClient client(config(true));
  client.download_snapshot(RepoRef::parse("org/model"));
  const auto report = scan_cache(tmp.str("hub"));
  ASSERT_EQ(report.repos.size(), 1u) << (report.warnings.empty() ? "" : report.warnings.front());
  const auto& repo = report.repos[0];
  EXPECT_EQ(repo.id, "org/model");
  EXPECT_EQ(repo.type, "model");
  ASSERT_EQ(repo.revisions.size(), 1u);
  EXPECT_EQ(repo.revisions[0].commit, kCommit);
  EXPECT_EQ(repo.revisions[0].refs, std::vector<std::string>{"main"});
  uint64_t expected = 0;
  for (const char* f : {"model.safetensors", "config.json", "sub/dir/notes.txt", "weights.bin"})
    expected += server.content("org/model", f).size();
  EXPECT_EQ(repo.size, expected);
  EXPECT_EQ(repo.files, 4u);
  const auto verified = verify_cache(report);
  EXPECT_EQ(verified.checked, 4u);
  EXPECT_TRUE(verified.problems.empty());
  EXPECT_TRUE(plan_prune(report).paths.empty());  // nothing detached, nothing orphaned
}

TEST_F(Hub, SecondDownloadComesFromTheCache) {
  HubClient client(config());
  const auto path = client.download_file(RepoRef::parse("org/model"), "model.safetensors");
  const int gets = server.cdn_gets;
  EXPECT_EQ(client.download_file(RepoRef::parse("org/model"), "model.safetensors"), path);
  EXPECT_EQ(server.cdn_gets, gets);
}

TEST_F(Hub, ResumesAfterAConnectionCut) {
  server.cuts = 1;
  HubClient client(config());
  const auto path = client.download_file(RepoRef::parse("org/model"), "model.safetensors");
  const auto& content = server.content("org/model", "model.safetensors");
  EXPECT_EQ(test::read_file(path), content);
  ASSERT_EQ(server.ranges.size(), 2u);
  EXPECT_EQ(server.ranges[0], "");
  EXPECT_EQ(server.ranges[1], fmt::format("bytes={}-", content.size() / 2));
}

TEST_F(Hub, ResumesAnIncompleteFileLeftByAnotherProcess) {
  const auto& content = server.content("org/model", "weights.bin");
  const std::string sha = sha256_hex(content);
  test::write_file(repo_dir("models--org--model/blobs/" + sha + ".incomplete"), content.substr(0, 1000));
  HubClient client(config());
  const auto path = client.download_file(RepoRef::parse("org/model"), "weights.bin");
  EXPECT_EQ(test::read_file(path), content);
  ASSERT_EQ(server.ranges.size(), 1u);
  EXPECT_EQ(server.ranges[0], "bytes=1000-");
}

TEST_F(Hub, GivesUpAfterRetriesAndKeepsPartialData) {
  server.cuts = 100;
  HubClient client(config());
  try {
    client.download_file(RepoRef::parse("org/model"), "weights.bin");
  } catch (const HubError&) {
  }
  // Every retry resumed (no Range header only on the first try), and the retries stop.
  EXPECT_LE(server.cdn_gets, 4);
}

TEST_F(Hub, RefusesToInstallACorruptBlob) {
  server.corrupt = true;
  HubClient client(config());
  const std::string sha = sha256_hex(server.content("org/model", "weights.bin"));
  try {
    client.download_file(RepoRef::parse("org/model"), "weights.bin");
    FAIL() << "installed a corrupt file";
  } catch (const HubError& e) {
    EXPECT_NE(std::string(e.what()).find("checksum"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("weights.bin"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(repo_dir("models--org--model/blobs/" + sha)));
  EXPECT_FALSE(fs::exists(repo_dir("models--org--model/blobs/" + sha + ".incomplete")));
  EXPECT_FALSE(fs::exists(repo_dir("models--org--model/snapshots/" + kCommit + "/weights.bin")));
  server.corrupt = false;  // a later good download installs it
  EXPECT_EQ(test::read_file(client.download_file(RepoRef::parse("org/model"), "weights.bin")),
            server.content("org/model", "weights.bin"));
}

TEST_F(Hub, GatedRepoNeedsTheToken) {
  HubClient anonymous(config(false));
  try {
    anonymous.download_file(RepoRef::parse("org/gated"), "config.json");
    FAIL();
  } catch (const HubError& e) {
    EXPECT_EQ(e.http_status(), 401);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("gated"), std::string::npos) << msg;
    EXPECT_NE(msg.find("HF_TOKEN"), std::string::npos) << msg;
    EXPECT_EQ(msg.find(kToken), std::string::npos);
  }
  HubClient authorized(config(true));
  const std::string snap = authorized.download_snapshot(RepoRef::parse("org/gated"));
  EXPECT_EQ(test::read_file(snap + "/model.safetensors"), server.content("org/gated", "model.safetensors"));
  EXPECT_FALSE(server.cdn_saw_authorization);
}

TEST_F(Hub, MissingFileIsRememberedAndNamed) {
  HubClient client(config());
  try {
    client.download_file(RepoRef::parse("org/model"), "tokenizer.model");
    FAIL();
  } catch (const HubError& e) {
    EXPECT_EQ(e.http_status(), 404);
    EXPECT_NE(std::string(e.what()).find("tokenizer.model not found"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::exists(repo_dir("models--org--model/.no_exist/" + kCommit + "/tokenizer.model")));
  auto offline = config();
  offline.offline = true;
  try {
    HubClient(offline).download_file(RepoRef::parse("org/model"), "tokenizer.model");
    FAIL();
  } catch (const HubError& e) {
    EXPECT_NE(std::string(e.what()).find("does not exist in the repository"), std::string::npos) << e.what();
  }
  EXPECT_THROW(client.download_file(RepoRef::parse("org/nothing"), "config.json"), HubError);
  EXPECT_THROW(client.download_file(RepoRef::parse("org/model@v9"), "config.json"), HubError);
}

TEST_F(Hub, OfflineModeReadsTheCacheAndFailsClearly) {
  const std::string snap = HubClient(config()).download_snapshot(RepoRef::parse("org/model"), {"*.json"});
  EXPECT_TRUE(fs::exists(snap + "/config.json"));
  EXPECT_FALSE(fs::exists(snap + "/model.safetensors"));  // not included
  const int before = server.hub_requests;
  auto offline = config();
  offline.offline = true;
  HubClient client(offline);
  EXPECT_EQ(client.download_file(RepoRef::parse("org/model"), "config.json"), snap + "/config.json");
  EXPECT_EQ(client.download_snapshot(RepoRef::parse("org/model")), snap);
  EXPECT_EQ(server.hub_requests, before);  // no network at all
  try {
    client.download_file(RepoRef::parse("org/model"), "model.safetensors");
    FAIL();
  } catch (const HubError& e) {
    EXPECT_NE(std::string(e.what()).find("HF_HUB_OFFLINE"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("model.safetensors"), std::string::npos) << e.what();
  }
  EXPECT_THROW(client.download_file(RepoRef::parse("org/other"), "config.json"), HubError);
}

TEST_F(Hub, UnreachableHubFallsBackToTheCache) {
  const std::string path = HubClient(config()).download_file(RepoRef::parse("org/model"), "config.json");
  auto cfg = config();
  server.stop();
  HubClient client(cfg);
  EXPECT_EQ(client.download_file(RepoRef::parse("org/model"), "config.json"), path);
  EXPECT_THROW(client.download_file(RepoRef::parse("org/model"), "weights.bin"), HubError);
}

TEST_F(Hub, RetriesServerErrors) {
  server.fail_heads = 2;
  HubClient client(config());
  const auto path = client.download_file(RepoRef::parse("org/model"), "config.json");
  EXPECT_EQ(test::read_file(path), server.content("org/model", "config.json"));
}

TEST_F(Hub, DatasetsUseTheirOwnPrefix) {
  HubClient client(config());
  const std::string snap = client.download_snapshot(RepoRef::parse("org/corpus", RepoType::Dataset));
  EXPECT_EQ(snap, repo_dir("datasets--org--corpus/snapshots/" + kCommit));
  EXPECT_EQ(test::read_file(snap + "/data/train-00000-of-00001.parquet"),
            server.content("datasets/org/corpus", "data/train-00000-of-00001.parquet"));
}

TEST_F(Hub, ConcurrentDownloadsOfOneBlobAgree) {
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&] {
      try {
        HubClient client(config());
        const auto path = client.download_file(RepoRef::parse("org/model"), "model.safetensors");
        if (test::read_file(path) == server.content("org/model", "model.safetensors")) ++ok;
      } catch (const std::exception& e) {
        ADD_FAILURE() << e.what();
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok, 4);
}

TEST_F(Hub, RefusesPathsOutsideTheSnapshot) {
  HubClient client(config());
  EXPECT_THROW(client.download_file(RepoRef::parse("org/model"), "../../etc/passwd"), HubError);
  EXPECT_THROW(client.download_file(RepoRef::parse("org/model"), "/etc/passwd"), HubError);
}

// A cache tree laid out by hand exactly as huggingface_hub writes it is read as it is.
TEST(HubCacheInterop, ReadsACacheWrittenByHuggingFaceHub) {
  TempDir tmp;
  const std::string repo = tmp.str("cache/models--Unbabel--TowerInstruct-7B-v0.1");
  const std::string commit = "1111111111111111111111111111111111111111";
  test::write_file(repo + "/refs/main", commit);
  const std::string fixture = test::fixture("models/tiny-gqa");
  for (const char* f : {"config.json", "model.safetensors"}) {
    const std::string content = test::read_file(fixture + "/" + f);
    const std::string etag = std::string(f) == "config.json" ? git_sha1(content) : sha256_hex(content);
    test::write_file(repo + "/blobs/" + etag, content);
    fs::create_directories(repo + "/snapshots/" + commit);
    fs::create_symlink("../../blobs/" + etag, repo + "/snapshots/" + commit + "/" + f);
  }
  setenv("HF_HUB_CACHE", tmp.str("cache").c_str(), 1);
  setenv("HF_HUB_OFFLINE", "1", 1);
  const std::string dir = resolve_repo_path("Unbabel/TowerInstruct-7B-v0.1", RepoType::Model);
  EXPECT_EQ(dir, repo + "/snapshots/" + commit);
  EXPECT_EQ(test::read_file(dir + "/config.json"), test::read_file(fixture + "/config.json"));
  EXPECT_THROW(resolve_repo_path("Unbabel/Other", RepoType::Model), HubError);
  EXPECT_THROW(resolve_repo_path("not a path or id", RepoType::Model), Error);
  unsetenv("HF_HUB_CACHE");
  unsetenv("HF_HUB_OFFLINE");
}

TEST(HubConfigEnv, FollowsHuggingFaceHub) {
  TempDir tmp;
  test::write_file(tmp.str("hf/token"), "hf_from_file\n");
  setenv("HF_HOME", tmp.str("hf").c_str(), 1);
  unsetenv("HF_HUB_CACHE");
  unsetenv("HUGGINGFACE_HUB_CACHE");
  unsetenv("HF_TOKEN");
  unsetenv("HUGGING_FACE_HUB_TOKEN");
  unsetenv("HF_TOKEN_PATH");
  setenv("HF_ENDPOINT", "http://mirror.example:8080/", 1);
  setenv("HF_HUB_OFFLINE", "yes", 1);
  auto c = HubConfig::from_env();
  EXPECT_EQ(c.cache_dir, tmp.str("hf/hub"));
  EXPECT_EQ(c.token, "hf_from_file");
  EXPECT_EQ(c.endpoint, "http://mirror.example:8080");
  EXPECT_TRUE(c.offline);
  setenv("HF_TOKEN", "hf_env", 1);
  setenv("HF_HUB_CACHE", tmp.str("elsewhere").c_str(), 1);
  setenv("HF_HUB_OFFLINE", "0", 1);
  c = HubConfig::from_env();
  EXPECT_EQ(c.token, "hf_env");
  EXPECT_EQ(c.cache_dir, tmp.str("elsewhere"));
  EXPECT_FALSE(c.offline);
  for (const char* v : {"HF_HOME", "HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_TOKEN", "HF_HUB_CACHE"}) unsetenv(v);
}

TEST(HubIds, ParseAndFolders) {
  const auto r = RepoRef::parse("Unbabel/TowerInstruct-7B-v0.1@v1.0");
  EXPECT_EQ(r.id, "Unbabel/TowerInstruct-7B-v0.1");
  EXPECT_EQ(r.revision, "v1.0");
  EXPECT_EQ(r.cache_folder(), "models--Unbabel--TowerInstruct-7B-v0.1");
  EXPECT_EQ(RepoRef::parse("predictionguard/arabic_acl_corpus", RepoType::Dataset).cache_folder(),
            "datasets--predictionguard--arabic_acl_corpus");
  EXPECT_FALSE(RepoRef::looks_like_repo_id("./models/x"));
  EXPECT_FALSE(RepoRef::looks_like_repo_id("/abs/path"));
  EXPECT_FALSE(RepoRef::looks_like_repo_id("a/b/c"));
  EXPECT_FALSE(RepoRef::looks_like_repo_id("org/name@"));
  EXPECT_FALSE(RepoRef::looks_like_repo_id("../x"));
  EXPECT_THROW(RepoRef::parse("just-a-name"), Error);
}

TEST(HttpHelpers, OriginsAndLocations) {
  EXPECT_EQ(url_origin("https://huggingface.co/a/b"), "https://huggingface.co:443");
  EXPECT_EQ(url_origin("http://127.0.0.1:8080/x"), "http://127.0.0.1:8080");
  EXPECT_NE(url_origin("http://localhost:8080/x"), url_origin("http://127.0.0.1:8080/x"));
  EXPECT_EQ(url_origin("https://user@cdn.example/x"), "https://cdn.example:443");
  EXPECT_EQ(resolve_location("https://h.co/a/b/c?x=1", "/new/p"), "https://h.co/new/p");
  EXPECT_EQ(resolve_location("https://h.co/a/b/c", "d"), "https://h.co/a/b/d");
  EXPECT_EQ(resolve_location("https://h.co/a", "https://cdn/x"), "https://cdn/x");
  EXPECT_EQ(url_encode_path("sub dir/ä.json"), "sub%20dir/%C3%A4.json");
  EXPECT_EQ(url_encode_component("refs/pr/1"), "refs%2Fpr%2F1");
}

}  // namespace
}  // namespace pivotmt
