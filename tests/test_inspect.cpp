// `inspect` on the Hugging Face-made fixtures: the parameter count transformers reports,
// and a clear error for the first missing or mis-shaped tensor.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/json_file.h"
#include "models/inspect.h"
#include "test_util.h"

namespace pivotmt {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

// Independent count: read every safetensors header with plain JSON parsing and sum the
// shapes (what transformers' num_parameters() gives for a fully stored checkpoint).
uint64_t count_stored_elements(const std::string& dir) {
  uint64_t total = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".safetensors" || e.path().filename() == "golden.safetensors") continue;
    std::ifstream in(e.path(), std::ios::binary);
    unsigned char len[8];
    in.read(reinterpret_cast<char*>(len), 8);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
    std::string header(n, '\0');
    in.read(header.data(), std::streamsize(n));
    const json parsed = json::parse(header);
    for (const auto& [k, v] : parsed.items()) {
      if (k == "__metadata__") continue;
      uint64_t numel = 1;
      for (const auto& d : v["shape"]) numel *= d.get<uint64_t>();
      total += numel;
    }
  }
  return total;
}

class InspectFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(InspectFixture, ParameterCountMatchesTransformers) {
  const std::string dir = test::fixture("models/" + GetParam());
  const json report = inspect_model(dir);
  uint64_t expected = count_stored_elements(dir);
  if (GetParam() == "tiny-minilm") expected += 32 * 32 + 32;  // BertModel's pooler, not stored
  EXPECT_EQ(report["parameters"].get<uint64_t>(), expected);
  // The generator's own count, where the fixture records one.
  if (fs::exists(dir + "/generator.json"))
    EXPECT_EQ(report["parameters"].get<uint64_t>(), read_json_file(dir + "/generator.json")["n_params"].get<uint64_t>());
  EXPECT_TRUE(report["verified"].get<bool>());
  EXPECT_FALSE(format_inspect_report(report).empty());
}

INSTANTIATE_TEST_SUITE_P(AllFixtures, InspectFixture,
                         ::testing::Values("tiny-tower", "tiny-gqa", "tiny-bf16-tied", "tiny-sharded", "tiny-minilm"));

TEST(Inspect, ReportsCostsOfTinyTower) {
  const json r = inspect_model(test::fixture("models/tiny-tower"));
  EXPECT_EQ(r["architecture"], "llama");
  EXPECT_EQ(r["context_length"], 4096);
  EXPECT_EQ(r["kv_cache_bytes_per_token"], 2 * 2 * 4 * 16 * 2);  // K+V x layers x heads x dim x FP16
  EXPECT_EQ(r["memory_bytes"]["fp16"], 2 * 4196032);
  // Embeddings stay FP16 in both; tiny-tower is almost all embedding and head, so the
  // quantised forms save little, but never cost more than FP16.
  EXPECT_LT(r["memory_bytes"]["nf4"].get<uint64_t>(), r["memory_bytes"]["fp16"].get<uint64_t>());
  EXPECT_LT(r["memory_bytes"]["int8"].get<uint64_t>(), r["memory_bytes"]["fp16"].get<uint64_t>());
  EXPECT_EQ(r["stored_dtypes"]["F16"], 4196032);
}

TEST(Inspect, NamesFirstBadTensor) {
  test::TempDir tmp;
  const std::string dir = tmp.str("m");
  fs::copy(test::fixture("models/tiny-gqa"), dir, fs::copy_options::recursive);
  auto cfg = read_json_file(dir + "/config.json");
  cfg["intermediate_size"] = 100;
  write_json_file(dir + "/config.json", cfg);
  try {
    inspect_model(dir);
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.0.mlp.gate_proj.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[100, 64]"), std::string::npos) << e.what();
  }
  cfg["intermediate_size"] = 128;
  cfg["num_hidden_layers"] = 3;
  write_json_file(dir + "/config.json", cfg);
  try {
    inspect_model(dir);
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("missing tensor 'model.layers.2.input_layernorm.weight'"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace pivotmt
