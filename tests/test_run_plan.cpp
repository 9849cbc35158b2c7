// The run plan's arithmetic (experiment/run_plan.h) against hand-computed expectations, on
// a stated device so the figures do not depend on this machine.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "experiment/run_plan.h"

namespace pivotmt {
namespace {

ModelConfig tower_like() {
  ModelConfig m;  // TowerInstruct-7B's shape (Llama-2 7B)
  m.num_layers = 32;
  m.num_heads = 32;
  m.num_kv_heads = 32;
  m.head_dim = 128;
  m.hidden_size = 4096;
  m.vocab_size = 32007;
  return m;
}

TEST(RunPlan, StatedGpuRooflineAndArithmetic) {
  const DeviceCeiling h200 = gpu_ceiling("h200");
  EXPECT_FALSE(h200.measured);
  EXPECT_DOUBLE_EQ(h200.gflops, 989e3 * 0.7);
  EXPECT_DOUBLE_EQ(h200.gbps, 4.8e3 * 0.85);
  EXPECT_EQ(h200.memory, uint64_t(141e9));
  EXPECT_THROW(gpu_ceiling("a100"), Error);

  StudyWorkload w;
  w.prompt_tokens = {1000, 2000, 3000, 4000};
  w.output_tokens = {50, 50, 100, 100};
  w.rows = 4;
  w.max_new_tokens = 600;
  w.max_batch = 32;
  const uint64_t params = 6'738'000'000;
  const RunPlan p = make_run_plan(tower_like(), params, "f16", w, h200);
  EXPECT_EQ(p.weight_bytes, params * 2);
  EXPECT_EQ(p.kv_bytes_per_token, 32u * 2 * 32 * 128 * 2);  // F16 on a GPU: 512 KiB
  EXPECT_TRUE(p.fits);
  EXPECT_EQ(p.batch, 32u);  // 141 GB holds far more than 32 sequences of ~4.6k tokens
  EXPECT_DOUBLE_EQ(p.prompt_tokens, 10000);
  EXPECT_DOUBLE_EQ(p.output_tokens, 300);
  double flops = 0;
  for (double t : {1000.0, 2000.0, 3000.0, 4000.0}) flops += 2 * double(params) * t + 2 * 32 * 4096 * t * t;
  EXPECT_NEAR(p.prefill_seconds, flops / (h200.gflops * 1e9), 1e-9);
  // Decode: 300 tokens at batch 32 → 9.375 steps, each streaming the weights and the
  // batch's keys and values (memory-bound at this batch).
  const double context = (1000 + 25 + 2000 + 25 + 3000 + 50 + 4000 + 50) / 4.0;
  const double step_bytes = double(params * 2) + 32 * context * double(p.kv_bytes_per_token);
  EXPECT_NEAR(p.decode_seconds, 300.0 / 32 * step_bytes / (h200.gbps * 1e9), 1e-9);
  const std::string md = run_plan_markdown(p, 24);
  EXPECT_NE(md.find("Fits. Within 24 h it wants 1 device"), std::string::npos) << md;
  EXPECT_NE(md.find("stated roofline"), std::string::npos);
}

TEST(RunPlan, TooLargeForTheDeviceSaysSo) {
  DeviceCeiling small;
  small.device = "cpu";
  small.name = "a small machine";
  small.gflops = 100;
  small.gbps = 20;
  small.memory = uint64_t(8) << 30;  // 8 GiB: a 7B model in F32 (27 GB) does not fit
  StudyWorkload w;
  w.prompt_tokens = {500};
  w.output_tokens = {40};
  w.max_new_tokens = 600;
  const RunPlan p = make_run_plan(tower_like(), 6'738'000'000, "f32", w, small);
  EXPECT_FALSE(p.fits);
  EXPECT_EQ(p.batch, 0u);
  EXPECT_EQ(p.kv_bytes_per_token, 32u * 2 * 32 * 128 * 4);  // F32 on the CPU
  EXPECT_NE(run_plan_markdown(p, 24).find("**Does not fit**"), std::string::npos);
  // The same in NF4 fits (≈ 3.8 GB) and wants several CPUs to finish in an hour.
  const RunPlan q = make_run_plan(tower_like(), 6'738'000'000, "nf4", w, small);
  EXPECT_TRUE(q.fits);
  const std::string md = run_plan_markdown(q, q.seconds() / 3600 / 3.5);
  EXPECT_NE(md.find("it wants 4 devices"), std::string::npos) << md;
}

TEST(RunPlan, CpuCeilingIsMeasured) {
  // Figures only: how fast depends on the machine and the build (a sanitizer build is slow),
  // so nothing is asserted of the speed.
  const DeviceCeiling c = measure_cpu_ceiling();
  EXPECT_TRUE(c.measured);
  EXPECT_TRUE(std::isfinite(c.gflops) && c.gflops > 0);
  EXPECT_TRUE(std::isfinite(c.gbps) && c.gbps > 0);
  EXPECT_GT(c.memory, 0u);
}

}  // namespace
}  // namespace pivotmt
