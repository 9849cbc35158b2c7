// The run plan's arithmetic (experiment/run_plan.h) against hand-computed expectations, on
// a stated device so the figures do not depend on this machine.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "experiment/finetune_plan.h"
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
  // A GGUF file's blocks kept in place: the bytes the file says (a Q4_K_M 7B: ~4.1 GB),
  // not a byte a weight; on a GPU the model is F16 whatever the file holds.
  const uint64_t q4_k_m = 4'080'000'000;
  EXPECT_EQ(make_run_plan(tower_like(), 6'738'000'000, "gguf", w, small, q4_k_m).weight_bytes, q4_k_m);
  EXPECT_EQ(make_run_plan(tower_like(), 6'738'000'000, "gguf-q8", w, small, q4_k_m).weight_bytes, q4_k_m);
  EXPECT_EQ(make_run_plan(tower_like(), 6'738'000'000, "f16", w, small, q4_k_m).weight_bytes, 2 * 6'738'000'000ull);
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

// The stages beside generation: NLLB-200-distilled-600M's baseline and COMET with
// wmt22-comet-da's XLM-R large, their parameters (the published sizes) and FLOPs by hand.
TEST(RunPlan, BaselineAndCometStages) {
  const DeviceCeiling h100 = gpu_ceiling("h100");
  EXPECT_DOUBLE_EQ(h100.gflops_f32, 67e3 * 0.7);
  const nlohmann::json nllb600m = {{"d_model", 1024},        {"encoder_layers", 12},    {"decoder_layers", 12},
                                   {"encoder_ffn_dim", 4096}, {"decoder_ffn_dim", 4096}, {"vocab_size", 256206}};
  const StagePlan n = plan_nllb(nllb600m, 1000, 40, 4, 16, "f32", h100);
  const double d = 1024, enc = 12 * (4 * d * d + 2 * d * 4096), dec = 12 * (8 * d * d + 2 * d * 4096), head = 256206 * d;
  EXPECT_EQ(n.parameters, uint64_t(enc + dec + head));  // 615 M, as published
  EXPECT_NEAR(double(n.parameters), 615e6, 1e6);
  EXPECT_EQ(n.weight_bytes, n.parameters * 4);
  EXPECT_DOUBLE_EQ(n.flops, 1000 * 40 * 2 * enc + 1000 * 40 * 4 * 2 * (dec + head));
  // 63 batches × 40 steps, each the larger of 64 hypotheses' FLOPs and streaming the decoder.
  const double step = std::max(64 * 2 * (dec + head) / (h100.gflops_f32 * 1e9), (dec + head) * 4 / (h100.gbps * 1e9));
  EXPECT_NEAR(n.seconds, 1000 * 40 * 2 * enc / (h100.gflops_f32 * 1e9) + 63 * 40 * step, 1e-9);
  EXPECT_EQ(n.arithmetic, "F32");
  // F16 weights (translate's default) on a GPU: the tensor cores' rate, half the bytes a
  // step streams; int8 is stored as F16 there.
  for (const char* storage : {"f16", "int8"}) {
    const StagePlan h = plan_nllb(nllb600m, 1000, 40, 4, 16, storage, h100);
    EXPECT_EQ(h.storage, "F16") << storage;
    EXPECT_EQ(h.arithmetic, "F16 tensor cores") << storage;
    EXPECT_EQ(h.weight_bytes, h.parameters * 2) << storage;
    const double step16 = std::max(64 * 2 * (dec + head) / (h100.gflops * 1e9), (dec + head) * 2 / (h100.gbps * 1e9));
    EXPECT_NEAR(h.seconds, 1000 * 40 * 2 * enc / (h100.gflops * 1e9) + 63 * 40 * step16, 1e-9) << storage;
  }
  DeviceCeiling cpu;
  cpu.device = "cpu";
  cpu.gflops = cpu.gflops_f32 = 100;
  cpu.gbps = 20;
  const StagePlan on_cpu = plan_nllb(nllb600m, 10, 40, 1, 16, "int8", cpu);
  EXPECT_EQ(on_cpu.weight_bytes, on_cpu.parameters);  // the CPU keeps the storage asked
  EXPECT_EQ(on_cpu.arithmetic, "F32");
  EXPECT_EQ(plan_nllb(nllb600m, 10, 40, 1, 16, "f16", cpu).arithmetic, "F32");  // F16 weights, F32 arithmetic

  const StagePlan c = plan_comet("Unbabel/wmt22-comet-da", nullptr, 2000, 30, h100);
  EXPECT_EQ(c.parameters, uint64_t(24 * (4 * d * d + 2 * d * 4096) + 250002 * d));  // XLM-R large: 558 M
  EXPECT_DOUBLE_EQ(c.tokens, 2000 * 3 * 30);
  EXPECT_DOUBLE_EQ(c.flops, c.tokens * 2 * 24 * (4 * d * d + 2 * d * 4096) + 2000 * 3 * 4 * 24 * d * 30 * 30);
  EXPECT_DOUBLE_EQ(c.seconds, c.flops / (h100.gflops_f32 * 1e9));
  EXPECT_EQ(c.weight_bytes, c.parameters * 4);
  const StagePlan c16 = plan_comet("Unbabel/wmt22-comet-da", nullptr, 2000, 30, h100, true);
  EXPECT_DOUBLE_EQ(c16.seconds, c.flops / (h100.gflops * 1e9));
  EXPECT_EQ(c16.weight_bytes, uint64_t(24 * (4 * d * d + 2 * d * 4096) * 2 + 250002 * d * 4));  // embeddings F32
  EXPECT_EQ(c16.arithmetic, "F16 tensor cores");
  EXPECT_GT(plan_comet("Unbabel/XCOMET-XL", nullptr, 1, 30, h100).parameters, 3'000'000'000u);
  const nlohmann::json base = {{"hidden_size", 768}, {"num_hidden_layers", 12}, {"intermediate_size", 3072}, {"vocab_size", 250002}};
  EXPECT_EQ(plan_comet("a local model", &base, 1, 30, h100).parameters,
            uint64_t(12 * (4 * 768.0 * 768 + 2 * 768.0 * 3072) + 250002 * 768.0));

  // In the run plan: rows of their own, and in the total.
  StudyWorkload w;
  w.prompt_tokens = {1000};
  w.output_tokens = {40};
  w.max_new_tokens = 100;
  RunPlan p = make_run_plan(tower_like(), 6'738'000'000, "f16", w, h100);
  const double generation = p.seconds();
  p.stages = {n, c};
  EXPECT_DOUBLE_EQ(p.seconds(), generation + n.seconds + c.seconds);
  const std::string md = run_plan_markdown(p, 24);
  EXPECT_NE(md.find("| NLLB-200 baseline (1000) |"), std::string::npos) << md;
  EXPECT_NE(md.find("| COMET (2000) |"), std::string::npos) << md;
  EXPECT_EQ(p.to_json()["stages"].size(), 2u);
}

// The original QLoRA recipe on TowerInstruct-7B (r 16 on every projection, 4096-token rows,
// batch 2 × accumulation 4, NF4 base): the plan's figures by hand, and the bound —
// it fits in 16 GB of device memory with checkpointing. (Its byte-for-byte agreement with
// what LoraLlama allocates is GpuTrain.FinetunePlanCountsWhatTheDeviceHolds.)
TEST(FinetunePlan, TheRecipeOn7BFitsIn16GB) {
  ModelConfig m = tower_like();
  m.intermediate_size = 11008;
  m.tie_word_embeddings = false;
  DeviceCeiling gpu16;
  gpu16.device = "cuda:0";
  gpu16.name = "a 16 GB GPU";
  gpu16.gflops = 500e3;
  gpu16.gflops_f32 = 50e3;
  gpu16.memory = 16'000'000'000;
  FinetuneSetup s;  // NF4, r 16 on all seven projections, F16 base products, Auto checkpointing
  s.sequence_tokens = {4096, 4096, 2048, 1024};
  s.steps = 100;
  s.window = 8;
  const FinetunePlan p = make_finetune_plan(m, s, gpu16);
  const uint64_t per_layer = 4ull * 4096 * 4096 + 3ull * 4096 * 11008;  // projection weights
  EXPECT_EQ(p.memory.base, 32 * per_layer * 9 / 16 + 65ull * 4096 * 4);  // NF4: 4.5 bits a weight; norms F32
  EXPECT_EQ(p.memory.embeddings, 32007ull * 4096 * 2);  // the output layer as F16; the table stays on the host
  EXPECT_EQ(p.adapter_parameters, 32ull * 16 * (4 * 8192 + 3 * (4096 + 11008)));  // 40 M
  // Two layer inputs on the device, the other 31 offloaded to pinned host memory.
  EXPECT_EQ(p.memory.saved_inputs, 2ull * 4096 * 4096 * 4);
  EXPECT_EQ(p.memory.offloaded, 31ull * 4096 * 4096 * 4);
  EXPECT_FALSE(p.keep_all_layers);  // 32 layers' activations (34 GB) are far over a quarter of 16 GB
  // a, x1, tmp, b [H]; q, attn [32·128]; k, v [32·128]; lse per head; two 1/rms; the MLP's
  // g, u, m [F] for one block of 1024 rows; the gradients: dx1, da, db; dq, dattn; dk, dv;
  // and the MLP's for a block.
  EXPECT_EQ(p.memory.activations, (4096ull * (4 * 4096 + 2 * 4096 + 2 * 4096 + 32 + 2) + 1024ull * 3 * 11008) * 4);
  EXPECT_EQ(p.memory.gradients, (4096ull * (3 * 4096 + 2 * 4096 + 2 * 4096) + 1024ull * 3 * 11008) * 4);
  EXPECT_TRUE(p.fits);
  EXPECT_LT(p.memory.total(), 16'000'000'000u);
  EXPECT_GT(p.memory.total(), 6'500'000'000u);  // ~6.7 GB: base 3.6, output layer 0.26, a layer 1.3, scratch 0.44, ...
  EXPECT_LT(p.memory.total(), 6'900'000'000u);
  FinetuneSetup on_device = s;
  on_device.offload_inputs = false;
  const FinetunePlan kept = make_finetune_plan(m, on_device, gpu16);
  EXPECT_EQ(kept.memory.saved_inputs, 33ull * 4096 * 4096 * 4);
  EXPECT_EQ(kept.memory.offloaded, 0u);
  EXPECT_EQ(kept.memory.total() - p.memory.total(), 31ull * 4096 * 4096 * 4);
  // FLOPs: the base three times (forward, backward to the inputs, recomputation), 2 a weight
  // — down's twice: the recomputation stops before the MLP, whose blocks recompute gate and up.
  EXPECT_DOUBLE_EQ(p.tokens, 100.0 * 8 * (4096 + 4096 + 2048 + 1024) / 4);
  const double down = 4096.0 * 11008;
  EXPECT_DOUBLE_EQ(p.base_flops, p.tokens * 2 * 32 * (3 * (double(per_layer) - down) + 2 * down));
  EXPECT_DOUBLE_EQ(p.head_flops, p.tokens * 4 * 4096 * 32007.0);  // the output layer forward and backward
  // LoRA per module: 2r(in + out) forward, twice with the recomputation (down once),
  // 2r(3 in + 2 out) backward.
  EXPECT_DOUBLE_EQ(p.lora_flops, p.tokens * 32 * 2 * 16 *
                                     (4 * 8192 * 2 + 2 * 15104 * 2 + 15104 + 4 * (3 * 4096 + 2 * 4096) +
                                      2 * (3 * 4096 + 2 * 11008) + (3 * 11008 + 2 * 4096)));
  // Attention (head dim 128: the fused kernels): 4 · 32 heads · 128 dims a visible key,
  // forward, backward 3.5x (7 products: two score recomputations, dP twice, dV, dK, dQ),
  // recomputation.
  const double keys = (2 * 4096 * 4097 / 2.0 + 2048 * 2049 / 2.0 + 1024 * 1025 / 2.0) / 4;
  EXPECT_DOUBLE_EQ(p.attention_flops, 100.0 * 8 * keys * 4 * 32 * 128 * 32 * 5.5);
  // Base, output layer, attention's forward, its recomputation and the backward's scores
  // (3 of 5.5) at the F16 rate, attention's gradient products at TF32's half of it, LoRA in
  // F32; nothing quadratic through memory.
  const double forward = p.attention_flops * 3 / 5.5, backward = p.attention_flops * 2.5 / 5.5;
  EXPECT_NEAR(p.seconds,
              (p.base_flops + p.head_flops + forward) / 500e12 + backward / 250e12 + p.lora_flops / 50e12,
              1e-9 * p.seconds);
  EXPECT_EQ(p.attention_bytes, 0.0);
  // A head dim without the fused kernels: blocks of TF32 GEMMs (backward 2.5x), whose
  // probabilities pass through memory — blocks of 128 rows against the keys up to the
  // block's end (n blocks: 128² n(n + 1) / 2 per head), 4 bytes, 18 passes (the forward's 4,
  // the backward's 10, the recomputation's 4); the larger of their time and the GEMMs'.
  ModelConfig odd = m;
  odd.head_dim = 96;
  const auto blocks = [](double n) { return 128.0 * 128.0 * n * (n + 1) / 2; };
  const double block_keys = (2 * blocks(32) + blocks(16) + blocks(8)) / 4;
  const FinetunePlan po = make_finetune_plan(odd, s, gpu16);
  EXPECT_DOUBLE_EQ(po.attention_flops, 100.0 * 8 * keys * 4 * 32 * 96 * 32 * 4.5);
  EXPECT_DOUBLE_EQ(po.attention_bytes, 100.0 * 8 * 32 * 32 * block_keys * 4 * 18);
  EXPECT_GT(po.memory.scratch, p.memory.scratch);  // the blocks' buffers
  for (double gbps : {0.0, 1000.0}) {  // none given: the GEMMs; 1 TB/s: the bytes outweigh them
    DeviceCeiling device = gpu16;
    device.gbps = gbps;
    const FinetunePlan pb = make_finetune_plan(odd, s, device);
    const double gemms = pb.attention_flops / 250e12, bytes = gbps > 0 ? pb.attention_bytes / (gbps * 1e9) : 0.0;
    if (gbps > 0) EXPECT_GT(bytes, gemms);
    EXPECT_NEAR(pb.seconds,
                (pb.base_flops + pb.head_flops) / 500e12 + std::max(gemms, bytes) + pb.lora_flops / 50e12,
                1e-9 * pb.seconds);
  }
  EXPECT_NE(finetune_plan_markdown(p).find("Fits."), std::string::npos);
  // Without checkpointing every layer's activations are kept: over 16 GB, and said so.
  s.checkpointing = Checkpointing::Never;
  const FinetunePlan q = make_finetune_plan(m, s, gpu16);
  EXPECT_TRUE(q.keep_all_layers);
  EXPECT_EQ(q.memory.activations, 32ull * 4096 * (4 * 4096 + 2 * 4096 + 2 * 4096 + 3 * 11008 + 32 + 2) * 4);
  EXPECT_FALSE(q.fits);
  EXPECT_NE(finetune_plan_markdown(q).find("**Does not fit**"), std::string::npos);
  EXPECT_LT(q.base_flops, p.base_flops);  // no recomputation
}

}  // namespace
}  // namespace pivotmt
