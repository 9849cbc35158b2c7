// Checkpoint directories: single file, sharded index, conversion on load, bad indexes.
#include <gtest/gtest.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/checkpoint.h"
#include "io/json_file.h"
#include "test_util.h"

namespace pivotmt {
namespace {
namespace fs = std::filesystem;
using test::TempDir;

TEST(Checkpoint, ShardedFixtureResolvesEveryTensorOfTheIndex) {
  const std::string dir = test::fixture("models/tiny-sharded");
  Checkpoint ckpt(dir);
  EXPECT_TRUE(ckpt.sharded());
  EXPECT_EQ(ckpt.files().size(), 3u);
  const auto index = read_json_file(dir + "/model.safetensors.index.json");
  size_t mapped = 0;
  for (const auto& [tensor, file] : index["weight_map"].items()) {
    EXPECT_EQ(fs::path(ckpt.file_of(tensor).path()).filename().string(), file.get<std::string>()) << tensor;
    ++mapped;
  }
  EXPECT_EQ(ckpt.tensor_names().size(), mapped);
  EXPECT_THROW(ckpt.at("lm_head.bias"), Error);
}

TEST(Checkpoint, ConvertsOnLoad) {
  Checkpoint ckpt(test::fixture("models/tiny-bf16-tied"));
  const auto& t = ckpt.at("model.norm.weight");
  ASSERT_EQ(t.dtype, DType::BF16);
  const auto f32 = ckpt.load_f32("model.norm.weight");
  const auto raw = ckpt.raw("model.norm.weight");
  ASSERT_EQ(f32.size(), t.numel());
  for (size_t i = 0; i < f32.size(); ++i) {
    uint16_t b;
    std::memcpy(&b, raw.data() + 2 * i, 2);
    EXPECT_EQ(f32[i], bf16_to_f32(b));
  }
  std::vector<std::byte> wrong(3);
  EXPECT_THROW(ckpt.load_into("model.norm.weight", DType::F32, wrong), Error);
}

// Copies the sharded fixture so the test can damage it.
std::string copy_sharded(const TempDir& tmp) {
  const std::string dir = tmp.str("ckpt");
  fs::copy(test::fixture("models/tiny-sharded"), dir, fs::copy_options::recursive);
  return dir;
}

TEST(Checkpoint, MissingShardIsNamed) {
  TempDir tmp;
  const std::string dir = copy_sharded(tmp);
  fs::remove(dir + "/model-00002-of-00003.safetensors");
  try {
    Checkpoint c(dir);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model-00002-of-00003.safetensors"), std::string::npos) << e.what();
  }
}

TEST(Checkpoint, IndexNamingWrongFileIsRejected) {
  TempDir tmp;
  const std::string dir = copy_sharded(tmp);
  auto index = read_json_file(dir + "/model.safetensors.index.json");
  index["weight_map"]["model.norm.weight"] = "model-00001-of-00003.safetensors";
  write_json_file(dir + "/model.safetensors.index.json", index);
  EXPECT_THROW(Checkpoint c(dir), FormatError);
  index["weight_map"]["model.norm.weight"] = "../../etc/passwd";
  write_json_file(dir + "/model.safetensors.index.json", index);
  EXPECT_THROW(Checkpoint c(dir), FormatError);
  test::write_file(dir + "/model.safetensors.index.json", "{\"weight_map\": ");
  EXPECT_THROW(Checkpoint c(dir), FormatError);
}

TEST(Checkpoint, DirectoryWithoutWeights) {
  TempDir tmp;
  EXPECT_THROW(Checkpoint c(tmp.str()), Error);
  EXPECT_THROW(Checkpoint c(tmp.str("nope")), Error);
}

}  // namespace
}  // namespace pivotmt
