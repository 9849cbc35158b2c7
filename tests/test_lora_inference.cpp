// Using adapters: unmerged LoRA at inference (--adapter) gives PEFT's logits; `merge`
// equals PEFT's merge_and_unload and keeps everything else of the checkpoint; NF4 weights
// at inference give the logits of PyTorch on bitsandbytes' dequantised weights.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "io/checkpoint.h"
#include "models/llama_model.h"
#include "test_util.h"
#include "train/lora_llama.h"
#include "train/merge.h"

namespace pivotmt {
namespace {

std::string golden_path() { return std::string(PIVOTMT_SOURCE_DIR) + "/tests/goldens/lora.safetensors"; }
std::string model_dir() { return test::fixture("models/tiny-gqa"); }

// The golden's random adapter (grad.adapter.*) written as a PEFT adapter directory.
void write_golden_adapter(const std::string& dir) {
  SafetensorsFile f(golden_path());
  const auto cfg = load_model_config(model_dir());
  LoraAdapter a;
  a.config.r = 4;
  a.config.alpha = 8;
  a.config.dropout = 0;
  std::sort(a.config.targets.begin(), a.config.targets.end());
  for (size_t l = 0; l < size_t(cfg.num_layers); ++l)
    for (const auto& m : llama_lora_modules(cfg))
      a.weights[{l, m.name}] = {test::read_tensor<float>(f, "grad.adapter." + lora_key(l, m) + ".lora_A.weight"),
                                test::read_tensor<float>(f, "grad.adapter." + lora_key(l, m) + ".lora_B.weight")};
  save_lora(a, cfg, dir);
}

std::vector<int32_t> sequence1() {
  SafetensorsFile f(golden_path());
  return test::read_tensor<int32_t>(f, "seq1.ids");
}

std::vector<float> all_logits(LlamaModel& model, const std::vector<int32_t>& ids) {
  KvCache cache = model.new_cache();
  std::vector<LlamaModel::Input> batch{{&cache, ids, true}};
  return model.forward(batch);
}

double max_rel_diff(const std::vector<float>& want, const std::vector<float>& got) {
  double scale = 0, worst = 0;
  for (float x : want) scale = std::max(scale, double(std::fabs(x)));
  for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::fabs(double(got.at(i)) - want[i]));
  return worst / scale;
}

class AdapterInference : public ::testing::TestWithParam<OpsImpl> {};

TEST_P(AdapterInference, UnmergedLoraGivesPeftLogits) {
  test::TempDir dir;
  write_golden_adapter(dir.str("adapter"));
  LoadOptions o;
  o.weights = DType::F32;
  o.ops = GetParam();
  o.adapter = dir.str("adapter");
  LlamaModel model(model_dir(), o);
  SafetensorsFile f(golden_path());
  EXPECT_LT(max_rel_diff(test::read_tensor<float>(f, "grad.logits"), all_logits(model, sequence1())), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Ops, AdapterInference, ::testing::Values(OpsImpl::Reference, OpsImpl::Fast),
                         [](const auto& info) { return info.param == OpsImpl::Fast ? "Fast" : "Reference"; });

// PEFT's own files (save_pretrained, tests/goldens/peft_adapter): read as they are.
TEST(AdapterInference, ReadsPeftsOwnAdapterFiles) {
  LoadOptions o;
  o.adapter = std::string(PIVOTMT_SOURCE_DIR) + "/tests/goldens/peft_adapter";
  LlamaModel model(model_dir(), o);
  SafetensorsFile f(golden_path());
  EXPECT_LT(max_rel_diff(test::read_tensor<float>(f, "grad.logits"), all_logits(model, sequence1())), 1e-5);
}

TEST(AdapterInference, AdapterForAnotherModelIsRefusedWithTheTensorNamed) {
  test::TempDir dir;
  write_golden_adapter(dir.str("adapter"));
  LoadOptions o;
  o.adapter = dir.str("adapter");
  try {
    LlamaModel model(test::fixture("models/tiny-tower"), o);
    FAIL() << "expected an error";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("adapter_model.safetensors: tensor base_model.model.model.layers.0."), std::string::npos)
        << e.what();
  }
}

TEST(Merge, EqualsPeftMergeAndUnloadAndKeepsTheRest) {
  test::TempDir dir;
  write_golden_adapter(dir.str("adapter"));
  const auto report = merge_adapter(model_dir(), dir.str("adapter"), dir.str("merged"));
  EXPECT_EQ(report.merged, 14u);  // 7 projections x 2 layers
  SafetensorsFile f(golden_path());
  Checkpoint base(model_dir()), merged(dir.str("merged"));
  EXPECT_EQ(merged.tensor_names(), base.tensor_names());
  for (const auto& name : base.tensor_names()) {
    const std::string golden = "merge." + name;
    if (f.find(golden)) {
      const auto want = test::read_tensor<float>(f, golden);
      const auto got = merged.load_f32(name);
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-6 * std::max(1.0f, std::fabs(want[i]))) << name;
    } else {
      const auto a = base.raw(name), b = merged.raw(name);
      EXPECT_TRUE(a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin())) << name << " changed";
    }
  }
  EXPECT_TRUE(std::filesystem::exists(dir.str("merged/config.json")));
  // The merged model's logits are the adapter's.
  LlamaModel model(dir.str("merged"), {DType::F32, OpsImpl::Fast});
  EXPECT_LT(max_rel_diff(test::read_tensor<float>(f, "grad.logits"), all_logits(model, sequence1())), 1e-5);
  // Nothing is overwritten.
  EXPECT_THROW(merge_adapter(model_dir(), dir.str("adapter"), dir.str("merged")), Error);
}

TEST(Nf4Inference, LogitsOfPytorchOnBitsandbytesDequantisedWeights) {
  SafetensorsFile f(golden_path());
  const auto want = test::read_tensor<float>(f, "nf4.base_logits");
  // The training model keeps the output layer in F32, as PyTorch here: close to F32 rounding.
  LoraLlama train_model(model_dir(), BaseWeights::NF4);
  LoraConfig c;
  c.r = 4;
  train_model.set_adapter(init_lora(train_model.config(), c, 1));  // B = 0: the base alone
  EXPECT_LT(max_rel_diff(want, train_model.logits(sequence1())), 1e-5);
  // Inference keeps the output layer in F16 (as bitsandbytes leaves it in the compute dtype).
  LoadOptions o;
  o.weights = DType::NF4;
  LlamaModel model(model_dir(), o);
  const auto got = all_logits(model, sequence1());
  EXPECT_LT(max_rel_diff(want, got), 2e-3);
  // And NF4 really is 4-bit: far from the F32 logits, which the fixture's model gives.
  EXPECT_GT(max_rel_diff(test::read_tensor<float>(f, "f32.base_logits"), got), 1e-3);
}

}  // namespace
}  // namespace pivotmt
