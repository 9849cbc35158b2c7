// LoRA training against PyTorch + PEFT (tests/goldens/lora.safetensors, made by
// tests/goldens/make_lora_golden.py on the tiny GQA fixture): one sequence's loss, logits
// and every LoRA gradient; a 10-step run of the original recipe with an F32 base and with
// an NF4 base; and a run interrupted and resumed from its checkpoint, identical to an
// uninterrupted one.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "lora_golden.h"
#include "test_util.h"
#include "train/lora_llama.h"
#include "train/trainer.h"

namespace pivotmt {
namespace {

using namespace test::lora_golden;

// The kernels, and the MLP's rows a block (the default, longer than the golden sequences:
// one block; 4: several, the last one short).
class LoraGradients : public ::testing::TestWithParam<std::tuple<train::Kernels, size_t>> {};

TEST_P(LoraGradients, LossLogitsAndEveryGradientMatchPytorch) {
  SafetensorsFile f(golden_path());
  LoraLlama model(model_dir(), BaseWeights::F32, std::get<0>(GetParam()));
  model.set_mlp_block_rows(std::get<1>(GetParam()));
  model.set_adapter(adapter_from(f, "grad.adapter.", model.config()));
  const auto seqs = golden_sequences(f);
  const double want_loss = test::read_tensor<double>(f, "grad.loss").at(0);
  EXPECT_TRUE(close(test::read_tensor<float>(f, "grad.logits"), model.logits(seqs[1].tokens), 1e-5, "logits"));
  const double loss = model.forward_backward(seqs[1], 1.0f, 0);
  EXPECT_NEAR(loss, want_loss, 1e-5 * want_loss);
  const auto modules = llama_lora_modules(model.config());
  for (size_t l = 0; l < size_t(model.config().num_layers); ++l)
    for (const auto& m : modules) {
      const auto& g = model.grads().weights.at({l, m.name});
      const std::string k = lora_key(l, m);
      EXPECT_TRUE(close(test::read_tensor<float>(f, "grad.d." + k + ".lora_A.weight"), g.A, 2e-5, k + " dA"));
      EXPECT_TRUE(close(test::read_tensor<float>(f, "grad.d." + k + ".lora_B.weight"), g.B, 2e-5, k + " dB"));
    }
}

INSTANTIATE_TEST_SUITE_P(Kernels, LoraGradients,
                         ::testing::Combine(::testing::Values(train::Kernels::Reference, train::Kernels::Fast),
                                            ::testing::Values(kMlpBlockRows, size_t(4))),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) == train::Kernels::Fast ? "Fast" : "Reference") +
                                  "_MlpBlocksOf" + std::to_string(std::get<1>(info.param));
                         });

// Gradients with dropout (0.1) of a long and then a short sequence (buffers sized for a
// longer sequence reused by a shorter one) for a checkpointing mode and MLP block rows.
std::vector<LoraAdapter> gradients_with_dropout(Checkpointing mode, size_t mlp_block_rows) {
  SafetensorsFile f(golden_path());
  const auto seqs = golden_sequences(f);
  LoraLlama model(model_dir(), BaseWeights::NF4);
  model.set_checkpointing(mode);
  model.set_mlp_block_rows(mlp_block_rows);
  model.set_adapter(adapter_from(f, "grad.adapter.", model.config()));
  model.adapter().config.dropout = 0.1;
  model.set_adapter(model.adapter());
  size_t longest = 0, shortest = 0;
  for (size_t i = 1; i < seqs.size(); ++i) {
    if (seqs[i].tokens.size() > seqs[longest].tokens.size()) longest = i;
    if (seqs[i].tokens.size() < seqs[shortest].tokens.size()) shortest = i;
  }
  std::vector<LoraAdapter> grads;
  model.forward_backward(seqs[longest], 0.5f, 1);
  grads.push_back(model.grads());
  model.forward_backward(seqs[shortest], 0.5f, 2);
  grads.push_back(model.grads());
  return grads;
}

// Recomputing each layer in backward (checkpointing) and keeping every layer's activations
// give the same gradients bit for bit — in one MLP block or several.
TEST(LoraGradients, CheckpointingChangesNoBit) {
  for (size_t rows : {kMlpBlockRows, size_t(8)}) {
    const auto recomputed = gradients_with_dropout(Checkpointing::Always, rows);
    const auto kept = gradients_with_dropout(Checkpointing::Never, rows);
    for (size_t i = 0; i < kept.size(); ++i)
      for (const auto& [key, g] : kept[i].weights) {
        EXPECT_EQ(g.A, recomputed[i].weights.at(key).A) << key.second << ", MLP blocks of " << rows;
        EXPECT_EQ(g.B, recomputed[i].weights.at(key).B) << key.second << ", MLP blocks of " << rows;
      }
  }
}

// The MLP in blocks of rows gives the gradients of one block up to the order of their sums
// — with dropout too: each block draws its rows' part of the module's mask (a block's mask
// drawn from the start of the stream would move every gradient by ~10%).
TEST(LoraGradients, MlpBlocksDrawTheWholeSequencesDropoutMasks) {
  const auto whole = gradients_with_dropout(Checkpointing::Always, kMlpBlockRows);
  for (size_t rows : {size_t(4), size_t(12)}) {
    const auto blocked = gradients_with_dropout(Checkpointing::Always, rows);
    for (size_t i = 0; i < whole.size(); ++i)
      for (const auto& [key, g] : whole[i].weights) {
        const std::string what = key.second + " (layer " + std::to_string(key.first) + "), blocks of " + std::to_string(rows);
        EXPECT_TRUE(close(g.A, blocked[i].weights.at(key).A, 1e-5, what + " dA"));
        EXPECT_TRUE(close(g.B, blocked[i].weights.at(key).B, 1e-5, what + " dB"));
      }
  }
  LoraLlama model(model_dir(), BaseWeights::F32);
  EXPECT_THROW(model.set_mlp_block_rows(6), Error);  // masks are drawn four elements a value
  EXPECT_THROW(model.set_mlp_block_rows(0), Error);
}

// adapter_tol: the final adapter's tolerance, relative to its largest value (Adam divides by
// √v, so where a gradient is near zero a tiny difference in it moves a parameter visibly).
void expect_trajectory(const std::string& prefix, BaseWeights base, double adapter_tol) {
  SafetensorsFile f(golden_path());
  LoraLlama model(model_dir(), base);
  model.set_adapter(adapter_from(f, prefix + ".init.", model.config()));
  Trainer trainer(model, golden_sequences(f), {}, golden_options());
  const auto records = trainer.run();
  const auto loss = test::read_tensor<double>(f, prefix + ".loss");
  const auto lr = test::read_tensor<double>(f, prefix + ".lr");
  const auto norm = test::read_tensor<double>(f, prefix + ".grad_norm");
  ASSERT_EQ(records.size(), loss.size());
  for (size_t i = 0; i < loss.size(); ++i) {
    EXPECT_NEAR(records[i].loss, loss[i], 1e-4 * loss[i]) << prefix << " step " << i + 1;
    EXPECT_NEAR(records[i].lr, lr[i], 1e-12) << prefix << " step " << i + 1;
    EXPECT_NEAR(records[i].grad_norm, norm[i], 1e-3 * norm[i]) << prefix << " step " << i + 1;
  }
  const auto want = adapter_from(f, prefix + ".final.", model.config());
  for (const auto& [key, p] : want.weights) {
    EXPECT_TRUE(close(p.A, model.adapter().weights.at(key).A, adapter_tol, prefix + " final A " + key.second));
    EXPECT_TRUE(close(p.B, model.adapter().weights.at(key).B, adapter_tol, prefix + " final B " + key.second));
  }
}

TEST(LoraTrajectory, F32BaseMatchesPytorchPeft) { expect_trajectory("f32", BaseWeights::F32, 1e-3); }

// transformers' Trainer up to 4.57 (the original pipeline) divided the window's summed loss
// by its target tokens plus each sequence's first token when it is a target: the first
// step's loss (same initial adapter) scales by exactly predicted / (predicted + those).
TEST(LoraTrajectory, FirstTokenCountedNormalisationIsTheOriginalsDenominator) {
  SafetensorsFile f(golden_path());
  const auto data = golden_sequences(f);
  TrainOptions o = golden_options();
  o.steps = 1;
  auto first_loss = [&](TrainOptions::LossNormalization n) {
    LoraLlama model(model_dir(), BaseWeights::F32);
    model.set_adapter(adapter_from(f, "f32.init.", model.config()));
    o.loss_normalization = n;
    Trainer trainer(model, data, {}, o);
    const auto r = trainer.run();
    return std::pair(r.at(0).loss, r.at(0).target_tokens);
  };
  const auto [predicted, n_predicted] = first_loss(TrainOptions::LossNormalization::Predicted);
  const auto [original, n_original] = first_loss(TrainOptions::LossNormalization::FirstTokenCounted);
  size_t firsts = 0, targets = 0;
  for (size_t i = 0; i < size_t(o.batch_size * o.grad_accum); ++i) {  // the first window (no shuffle)
    firsts += data[i].target.at(0) ? 1 : 0;
    targets += data[i].target_count();
  }
  ASSERT_GT(firsts, 0u) << "the golden's sequences all train on their first token (--loss-on all)";
  EXPECT_EQ(n_predicted, targets);
  EXPECT_EQ(n_original, targets + firsts);
  EXPECT_NEAR(original, predicted * double(targets) / double(targets + firsts), 1e-9 * predicted);
}
TEST(LoraTrajectory, Nf4BaseMatchesPytorchOnDequantisedWeights) { expect_trajectory("nf4", BaseWeights::NF4, 1e-3); }

// Killed after step 3 (an exception out of the step hook stands in for the kill: nothing
// after the step is written), then rerun on the same directory: it resumes from the step-2
// checkpoint and every loss and the final adapter are bit-identical to one run through.
TEST(LoraTrajectory, ResumedRunIsIdenticalToUninterrupted) {
  SafetensorsFile f(golden_path());
  auto options = golden_options();
  options.steps = 7;
  options.save_every = 2;
  options.shuffle = true;
  options.identity = {{"test", "resume"}};
  LoraConfig c = golden_config();
  c.dropout = 0.1;  // dropout masks must replay too

  test::TempDir straight_dir, resumed_dir;
  LoraLlama model(model_dir(), BaseWeights::NF4);
  model.set_adapter(init_lora(model.config(), c, 7));
  options.out_dir = straight_dir.str();
  const auto straight = Trainer(model, golden_sequences(f), {}, options).run();

  model.set_adapter(init_lora(model.config(), c, 7));
  options.out_dir = resumed_dir.str();
  EXPECT_THROW(Trainer(model, golden_sequences(f), {}, options).run([](const StepRecord& r) {
    if (r.step == 3) throw Error("killed");
  }), Error);
  model.set_adapter(init_lora(model.config(), c, 99));  // a fresh process knows nothing
  Trainer again(model, golden_sequences(f), {}, options);
  const auto resumed = again.run();
  EXPECT_EQ(again.resumed_from(), 2);
  ASSERT_EQ(resumed.size(), straight.size());
  for (size_t i = 0; i < straight.size(); ++i) {
    EXPECT_EQ(resumed[i].loss, straight[i].loss) << "step " << i + 1;
    EXPECT_EQ(resumed[i].grad_norm, straight[i].grad_norm) << "step " << i + 1;
  }
  EXPECT_EQ(test::read_file(straight_dir.str("adapter_model.safetensors")), test::read_file(resumed_dir.str("adapter_model.safetensors")));
  // Rerunning a finished run changes nothing; other settings on the same directory are refused.
  EXPECT_EQ(Trainer(model, golden_sequences(f), {}, options).run().size(), straight.size());
  options.identity = {{"test", "other"}};
  EXPECT_THROW(Trainer(model, golden_sequences(f), {}, options).run(), Error);
  // Settings that would train silently wrong are refused when the trainer is made.
  for (double lr : {-1e-4, 0.0, std::nan("")}) {
    auto bad = options;
    bad.lr = lr;
    EXPECT_THROW(Trainer(model, golden_sequences(f), {}, bad), Error) << lr;
  }
  auto bad = options;
  bad.save_every = -1;
  EXPECT_THROW(Trainer(model, golden_sequences(f), {}, bad), Error);
}

// A damaged checkpoint stops the resume with an error naming the file; nothing is deleted.
TEST(LoraTrajectory, CorruptCheckpointIsNamedAndKept) {
  SafetensorsFile f(golden_path());
  auto options = golden_options();
  options.steps = 4;
  options.save_every = 2;
  test::TempDir dir;
  options.out_dir = dir.str();
  LoraLlama model(model_dir(), BaseWeights::F32);
  model.set_adapter(init_lora(model.config(), golden_config(), 7));
  EXPECT_THROW(Trainer(model, golden_sequences(f), {}, options).run([](const StepRecord& r) {
    if (r.step == 3) throw Error("killed");
  }), Error);
  const std::string opt = dir.str("checkpoints/step-000002/optimizer.safetensors");
  ASSERT_TRUE(std::filesystem::exists(opt));
  test::write_file(opt, "not a safetensors file");
  try {
    Trainer(model, golden_sequences(f), {}, options).run();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("step-000002/optimizer.safetensors"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(std::filesystem::exists(opt));
  EXPECT_FALSE(std::filesystem::exists(dir.str("adapter_model.safetensors")));
}

TEST(LoraAdapterFiles, SaveLoadRoundTripAndMismatchesNamed) {
  LoraLlama model(model_dir(), BaseWeights::F32);
  const auto a = init_lora(model.config(), golden_config(), 3);
  test::TempDir dir;
  save_lora(a, model.config(), dir.str());
  const auto b = load_lora(dir.str(), model.config());
  EXPECT_EQ(b.config.r, 4);
  EXPECT_EQ(b.weights.size(), a.weights.size());
  for (const auto& [k, p] : a.weights) EXPECT_EQ(b.weights.at(k).A, p.A);
  // Another base (different hidden size): the tensor and the file are named.
  auto other = model.config();
  other.hidden_size = 32;
  try {
    load_lora(dir.str(), other);
    FAIL() << "expected a shape error";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("adapter_model.safetensors"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("down_proj.lora_B.weight has shape 64x4, the base model needs [32, 4]"), std::string::npos) << e.what();
  }
  test::write_file(dir.str("adapter_config.json"), "{\"peft_type\": \"LORA\", \"r\": 4}");
  EXPECT_THROW(load_lora(dir.str(), model.config()), FormatError);
  // A rank written as a float beyond int64 (found by fuzz_adapter with fuzz/json.dict): it
  // was a cast out of range, undefined behaviour; now an error naming the field.
  test::write_file(dir.str("adapter_config.json"),
                   "{\"peft_type\": \"LORA\", \"r\": 9223372036854775808.0, \"lora_alpha\": 8, \"target_modules\": [\"q_proj\"]}");
  try {
    load_lora(dir.str(), model.config());
    FAIL() << "expected an error";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("adapter_config.json: field 'r' = 9.223372036854776e+18 must be an integer >= 1"),
              std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace pivotmt
