// Generated checkpoints: complete, loadable, deterministic whatever the sharding.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "io/checkpoint.h"
#include "io/json_file.h"
#include "models/inspect.h"
#include "models/make_model.h"
#include "models/weights.h"
#include "test_util.h"

namespace pivotmt {
namespace {
namespace fs = std::filesystem;

TEST(MakeModel, EveryArchIsInspectable) {
  for (const char* arch : {"llama", "mistral", "llama3"}) {
    test::TempDir tmp;
    MakeModelOptions o;
    o.arch = arch;
    o.out_dir = tmp.str("m");
    o.vocab_size = 1000;
    const uint64_t params = make_model(o);
    const auto r = inspect_model(o.out_dir);
    EXPECT_EQ(r["parameters"].get<uint64_t>(), params) << arch;
    EXPECT_EQ(r["architecture"], std::string(arch) == "mistral" ? "mistral" : "llama");
    EXPECT_EQ(r["stored_dtypes"]["F16"].get<uint64_t>(), params);
    EXPECT_TRUE(fs::exists(o.out_dir + "/generation_config.json"));
  }
}

TEST(MakeModel, ShardingAndThreadsDoNotChangeValues) {
  test::TempDir tmp;
  MakeModelOptions o;
  o.vocab_size = 3000;
  o.seed = 5;
  o.dtype = DType::F32;
  o.out_dir = tmp.str("one");
  make_model(o);
  o.out_dir = tmp.str("three");
  o.shards = 3;
  make_model(o);
  Checkpoint a(tmp.str("one")), b(tmp.str("three"));
  EXPECT_FALSE(a.sharded());
  EXPECT_TRUE(b.sharded());
  EXPECT_EQ(b.files().size(), 3u);
  ASSERT_EQ(a.tensor_names(), b.tensor_names());
  for (const auto& name : a.tensor_names()) {
    const auto x = a.raw(name), y = b.raw(name);
    ASSERT_EQ(x.size(), y.size());
    EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size()), 0) << name;
  }
  // A different seed gives different weights.
  o.seed = 6;
  o.shards = 1;
  o.out_dir = tmp.str("other");
  make_model(o);
  Checkpoint c(tmp.str("other"));
  const auto x = a.raw("model.layers.0.self_attn.q_proj.weight"), z = c.raw("model.layers.0.self_attn.q_proj.weight");
  EXPECT_NE(std::memcmp(x.data(), z.data(), x.size()), 0);
}

TEST(MakeModel, WeightsHaveTheRequestedDistribution) {
  test::TempDir tmp;
  MakeModelOptions o;
  o.out_dir = tmp.str("m");
  o.dtype = DType::BF16;
  make_model(o);
  Checkpoint ckpt(o.out_dir);
  const auto w = ckpt.load_f32("model.embed_tokens.weight");  // 32007 x 64 values
  double sum = 0, sq = 0;
  for (float v : w) {
    sum += v;
    sq += double(v) * v;
  }
  const double mean = sum / w.size(), sd = std::sqrt(sq / w.size() - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.001);
  EXPECT_NEAR(sd, 0.02, 0.0005);
  double norm_mean = 0;
  for (float v : ckpt.load_f32("model.norm.weight")) norm_mean += v / 64.0;
  EXPECT_NEAR(norm_mean, 1.0, 0.02);
}

TEST(MakeModel, CopiesTokenizerAndRejectsBadOptions) {
  test::TempDir tmp;
  MakeModelOptions o;
  o.out_dir = tmp.str("m");
  o.vocab_size = 300;
  o.tokenizer_dir = test::fixture("models/tiny-tower");
  make_model(o);
  EXPECT_TRUE(fs::exists(o.out_dir + "/tokenizer.json"));
  EXPECT_TRUE(fs::exists(o.out_dir + "/tokenizer_config.json"));
  EXPECT_TRUE(fs::exists(o.out_dir + "/special_tokens_map.json"));
  o.tokenizer_dir = tmp.str("nowhere");
  EXPECT_THROW(make_model(o), Error);
  o.tokenizer_dir.clear();
  o.preset = "huge";
  EXPECT_THROW(make_model(o), Error);
  o.preset = "tiny";
  o.vocab_size = 2;  // no room for bos and eos
  EXPECT_THROW(make_model(o), Error);
}

TEST(MakeModel, PresetSizes) {
  MakeModelOptions o;
  o.preset = "small";
  const auto small = parse_model_config(make_model_config_json(o), "small");
  const uint64_t n = parameter_count(llama_weights(small));
  EXPECT_GT(n, 100'000'000u);
  EXPECT_LT(n, 120'000'000u);
  o.preset = "7b-shape";
  const auto big = parse_model_config(make_model_config_json(o), "7b");
  EXPECT_EQ(parameter_count(llama_weights(big)), 6738415616ull + 2ull * 7 * 4096);  // TowerInstruct-7B
}

}  // namespace
}  // namespace pivotmt
