// The LoRA goldens of tests/goldens/lora.safetensors (make_lora_golden.py: PyTorch + PEFT
// on the tiny GQA fixture) and their settings, shared by the CPU's training tests
// (test_lora_train) and the GPU's (test_gpu_train).
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "test_util.h"
#include "train/lora.h"
#include "train/lora_llama.h"
#include "train/trainer.h"

namespace pivotmt::test::lora_golden {

inline std::string golden_path() { return source_dir() + "/tests/goldens/lora.safetensors"; }
inline std::string model_dir() { return fixture("models/tiny-gqa"); }

inline LoraConfig golden_config() {
  LoraConfig c;
  c.r = 4;
  c.alpha = 8;
  c.dropout = 0;
  std::sort(c.targets.begin(), c.targets.end());
  return c;
}

inline LoraAdapter adapter_from(const SafetensorsFile& f, const std::string& prefix, const ModelConfig& mc) {
  LoraAdapter a;
  a.config = golden_config();
  for (size_t l = 0; l < size_t(mc.num_layers); ++l)
    for (const auto& m : llama_lora_modules(mc)) {
      LoraPair p;
      p.A = read_tensor<float>(f, prefix + lora_key(l, m) + ".lora_A.weight");
      p.B = read_tensor<float>(f, prefix + lora_key(l, m) + ".lora_B.weight");
      a.weights[{l, m.name}] = std::move(p);
    }
  return a;
}

inline std::vector<TrainSequence> golden_sequences(const SafetensorsFile& f) {
  std::vector<TrainSequence> out;
  for (size_t i = 0; f.find("seq" + std::to_string(i) + ".ids"); ++i) {
    TrainSequence s;
    s.tokens = read_tensor<int32_t>(f, "seq" + std::to_string(i) + ".ids");
    s.target = read_tensor<uint8_t>(f, "seq" + std::to_string(i) + ".target");
    out.push_back(std::move(s));
  }
  return out;
}

inline double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::fabs(x)));
  return m;
}

// |got - want| <= tol * max|want| elementwise (a relative tolerance on the tensor's scale).
inline ::testing::AssertionResult close(const std::vector<float>& want, const std::vector<float>& got, double tol, const std::string& what) {
  if (want.size() != got.size()) return ::testing::AssertionFailure() << what << ": size " << got.size() << " vs " << want.size();
  const double scale = std::max(max_abs(want), 1e-12);
  for (size_t i = 0; i < want.size(); ++i)
    if (std::fabs(double(got[i]) - want[i]) > tol * scale)
      return ::testing::AssertionFailure() << what << "[" << i << "]: got " << got[i] << ", want " << want[i] << " (scale " << scale << ")";
  return ::testing::AssertionSuccess();
}

inline TrainOptions golden_options() {
  TrainOptions o;
  o.steps = 10;
  o.warmup = 3;
  o.lr = 2e-3;
  o.batch_size = 2;
  o.grad_accum = 2;
  o.shuffle = false;
  o.progress = false;
  return o;
}

}  // namespace pivotmt::test::lora_golden
