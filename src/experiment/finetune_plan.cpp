#include "experiment/finetune_plan.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "core/error.h"
#include "core/progress.h"

namespace pivotmt {

namespace {

// A frozen matrix of n weights in device memory (train_device's DeviceFrozen::bytes): NF4
// packs two codes a byte plus an F32 absmax per 64 weights.
uint64_t frozen_bytes(uint64_t n, BaseWeights storage) {
  switch (storage) {
    case BaseWeights::F32: return 4 * n;
    case BaseWeights::F16: return 2 * n;
    case BaseWeights::NF4: return (n + 1) / 2 + (n + 63) / 64 * 4;
  }
  return 4 * n;
}

bool targeted(const LoraConfig& lora, const std::string& name) {
  return std::find(lora.targets.begin(), lora.targets.end(), name) != lora.targets.end();
}

constexpr uint64_t kCublasWorkspace = uint64_t(32) << 20;  // cuda/blas_stream.h
constexpr uint64_t kLogitsBlockBytes = uint64_t(64) << 20;  // lora_llama.cpp's block of logits rows
constexpr uint64_t kAttentionBlockRows = 128;                // cuda/train_attention.h's kBlockRows
// Head dims whose attention (forward and backward) a GPU's F16 mode runs as fused kernels:
// no score matrix in memory, no buffers of their own (cuda/train_attention.cu).
bool fused_attention(uint64_t head_dim) { return head_dim == 64 || head_dim == 128; }

}  // namespace

FinetuneMemory finetune_memory(const ModelConfig& c, const FinetuneSetup& s, size_t T, bool gpu, bool keep_all) {
  const uint64_t H = uint64_t(c.hidden_size), F = uint64_t(c.intermediate_size), V = uint64_t(c.vocab_size);
  const uint64_t L = uint64_t(c.num_layers), nh = uint64_t(c.num_heads), d = uint64_t(c.head_dim);
  const uint64_t qd = nh * d, kvd = uint64_t(c.num_kv_heads) * d, r = uint64_t(s.lora.r), t = T;
  FinetuneMemory m;
  // LoraLlama's MLP runs a block of rows at a time; the attention's projections all T rows.
  const uint64_t block = std::min<uint64_t>(t, s.mlp_block_rows);
  const bool tied = c.tie_word_embeddings, f16_products = gpu && s.compute == train::BaseCompute::F16;
  // A matrix is converted into a scratch for its products unless its storage is what they
  // read: F16 products (a GPU's F16 mode) read F16, the others F32.
  const bool converted = f16_products ? s.base != BaseWeights::F16 : s.base != BaseWeights::F32;
  uint64_t lora_params = 0, max_lora_input = 0, max_gemm_input = 0, weight_scratch[3] = {0, 0, 0};
  for (const auto& mod : llama_lora_modules(c)) {
    const uint64_t numel = uint64_t(mod.out) * mod.in;
    m.base += L * frozen_bytes(numel, s.base);
    const bool mlp = mod.name == "gate_proj" || mod.name == "up_proj" || mod.name == "down_proj";
    const uint64_t rows = mlp ? block : t;
    // The base GEMM's input rounded to F16: forward x [rows, in], backward dy [rows, out].
    max_gemm_input = std::max(max_gemm_input, rows * std::max<uint64_t>(mod.in, mod.out));
    // LoraLlama::weights_: [1] up's, [2] down's, [0] every other matrix's.
    const size_t w = mod.name == "up_proj" ? 1 : mod.name == "down_proj" ? 2 : 0;
    if (converted) weight_scratch[w] = std::max(weight_scratch[w], numel);
    if (targeted(s.lora, mod.name)) {
      lora_params += L * r * (uint64_t(mod.in) + mod.out);
      max_lora_input = std::max(max_lora_input, rows * mod.in);
    }
  }
  m.base += (2 * L + 1) * H * 4;  // the layers' two RMSNorm weights and the final one, F32
  // The CPU: table and output layer in F32 (one when tied). A GPU: the output layer only (an
  // untied table stays in host memory), F16 in F16 mode when untied.
  m.embeddings = !gpu ? V * H * 4 * (tied ? 1 : 2) : V * H * (f16_products && !tied ? 2 : 4);
  m.adapter = 4 * 4 * std::max<uint64_t>(lora_params, 1);  // parameters, gradients, two moments
  // Offloading (a GPU with checkpointing): two inputs on the device, L - 1 in host memory.
  const bool offload = gpu && !keep_all && s.offload_inputs && L >= 2;
  m.saved_inputs = (offload ? 2 : L + 1) * t * H * 4;
  m.offloaded = offload ? (L - 1) * t * H * 4 : 0;
  // LoraLlama::Activations: the MLP's gate, up and product [F] for every row when every
  // layer's are kept, for one block of rows otherwise; LoraLlama::Grads: theirs for a block.
  const uint64_t per_token = 4 * H + 2 * qd + 2 * kvd + 3 * F + nh + 2;
  m.activations = (keep_all ? L * t * per_token : t * (per_token - 3 * F) + block * 3 * F) * 4;
  m.gradients = (t * (3 * H + 2 * qd + 2 * kvd) + block * 3 * F) * 4;
  const uint64_t chunk = std::max<uint64_t>(1, std::min<uint64_t>(t, kLogitsBlockBytes / (V * 4)));
  // hn, rinv, dhn, dx, a block of logits rows and (a GPU) their row losses in double.
  m.head = (t * H + t + t * H + t * H) * 4 + chunk * V * 4 + (gpu ? 2 * chunk * 4 : 0);
  if (lora_params > 0) {
    // The LoRA branch: the dropped input (with dropout), h and dh [T, r], dx of the branch.
    m.scratch += ((s.lora.dropout > 0 ? max_lora_input : 0) + 2 * t * r + max_lora_input) * 4;
  }
  // The matrices converted (a tied output layer too in F16 mode: it is the F32 embedding
  // table), as F16 halves of an F32 buffer for F16 products.
  if (f16_products && tied) weight_scratch[0] = std::max(weight_scratch[0], V * H);
  for (uint64_t n : weight_scratch) m.scratch += f16_products ? (n + 1) / 2 * 4 : n * 4;
  if (f16_products) {
    // The activations as F16: a layer's inputs or output gradients, or a block of the
    // logits' gradients.
    m.scratch += (std::max(max_gemm_input, chunk * V) + 1) / 2 * 4;
    m.scratch += 4 * 4;  // the F16 scale, alpha and beta on the device (cuda/train_device.cpp)
    // Attention on the tensor cores as blocks of GEMMs (head dims without the fused kernels):
    // the keys and values rounded to TF32, a block of rows' rounded queries and output
    // gradients, and its scores and their gradients per head.
    const uint64_t rows = std::min(t, kAttentionBlockRows);
    if (!fused_attention(d))
      m.scratch += (2 * t * kvd + 2 * rows * qd + 2 * nh * rows * ((t + 7) / 8 * 8)) * 4;  // score rows 8-float aligned
  }
  if (gpu) {
    // Attention backward's dO·O per (head, row), token ids, the sequence's RoPE tables, the
    // reductions' per-block partials (264 doubles: cuda/train_device.cpp), NF4's code values.
    m.scratch += (nh * t + std::max<uint64_t>(2 * t, 64) + 2 * t * (d / 2) + 2 * 264 + 16) * 4;
    m.workspace = kCublasWorkspace;
  }
  return m;
}

FinetunePlan make_finetune_plan(const ModelConfig& c, const FinetuneSetup& s, const DeviceCeiling& device) {
  if (s.sequence_tokens.empty()) throw Error("fine-tuning plan: no training sequences");
  FinetunePlan p;
  p.device = device;
  p.gpu = device.device != "cpu";
  p.longest = *std::max_element(s.sequence_tokens.begin(), s.sequence_tokens.end());
  const uint64_t L = uint64_t(c.num_layers), H = uint64_t(c.hidden_size), V = uint64_t(c.vocab_size);
  const uint64_t nh = uint64_t(c.num_heads), d = uint64_t(c.head_dim);
  const uint64_t per_token = 4 * H + 2 * nh * d + 2 * uint64_t(c.num_kv_heads) * d + 3 * uint64_t(c.intermediate_size) + nh + 2;
  // LoraLlama's Auto rule: all layers' activations while they take at most a quarter of the
  // memory left once the model is loaded.
  const FinetuneMemory one = finetune_memory(c, s, p.longest, p.gpu, false);
  const double left = double(device.memory) - double(one.base + one.embeddings);
  const double all_layers = double(L * p.longest * per_token * 4);
  p.keep_all_layers = s.checkpointing == Checkpointing::Never || (s.checkpointing == Checkpointing::Auto && all_layers <= left / 4);
  p.memory = p.keep_all_layers ? finetune_memory(c, s, p.longest, p.gpu, true) : one;
  p.fits = double(p.memory.total()) <= double(device.memory);

  // FLOPs of one token of a sequence of T tokens: the base's products and everything else.
  // Each product runs forward, backward to its input and, in a checkpointed layer, once more
  // forward to recompute — except down's: its output is not needed by backward, so the
  // recomputation stops before the MLP and each block recomputes only gate and up.
  double base_per_token = 0, lora_per_token = 0;
  for (const auto& mod : llama_lora_modules(c)) {
    const double passes = p.keep_all_layers || mod.name == "down_proj" ? 2 : 3;
    const double in = double(mod.in), out = double(mod.out);
    base_per_token += passes * 2 * in * out * double(L);
    if (targeted(s.lora, mod.name)) {
      const double r = double(s.lora.r);
      // forward 2r(in + out) a pass; backward 2r(3 in + 2 out) (h = x Aᵀ again, dB, dh, dA, dx)
      lora_per_token += double(L) * (2 * r * (in + out) * (passes - 1) + 2 * r * (3 * in + 2 * out));
    }
  }
  const double head_per_token = 2 * 2 * double(H) * double(V);
  // Causal attention: QKᵀ and PV over the keys each row sees, 4 · heads · d a key forward.
  // Backward: a GPU in F16 mode with the fused kernels recomputes the scores in each of its
  // two kernels beside dP twice, dV, dK and dQ (7 products: 3.5x forward); as blocks of
  // GEMMs it recomputes them once and multiplies dP, dQ, dK, dV (2.5x,
  // cuda/train_attention.cpp); the F32 kernels and the CPU recompute the probabilities
  // twice (3.5x). Once more forward to recompute a checkpointed layer.
  const bool f16_products = p.gpu && s.compute == train::BaseCompute::F16;
  const bool fused = f16_products && fused_attention(d);
  const double window = c.sliding_window ? double(*c.sliding_window) : 0;
  const double backward_factor = f16_products && !fused ? 2.5 : 3.5;
  const double attention_factor = 1 + backward_factor + (p.keep_all_layers ? 0 : 1);
  const double windows_per_step = double(s.window);
  double mean_tokens = 0, mean_keys = 0, mean_block_keys = 0;  // per sequence
  for (size_t T : s.sequence_tokens) {
    mean_tokens += double(T);
    double keys = 0;
    const double Td = double(T);
    if (window > 0 && window < Td) keys = window * (window + 1) / 2 + (Td - window) * window;
    else keys = Td * (Td + 1) / 2;
    mean_keys += keys;
    // The tensor-core path's score blocks: each block of rows against every key any of its
    // rows sees (cuda/train_attention.cpp).
    for (size_t r0 = 0; r0 < T; r0 += kAttentionBlockRows) {
      const size_t rows = std::min<size_t>(kAttentionBlockRows, T - r0);
      const size_t k0 = window > 0 && double(r0 + 1) > window ? r0 + 1 - size_t(window) : 0;
      mean_block_keys += double(rows) * double(r0 + rows - k0);
    }
  }
  mean_tokens /= double(s.sequence_tokens.size());
  mean_keys /= double(s.sequence_tokens.size());
  mean_block_keys /= double(s.sequence_tokens.size());
  const double sequences = double(s.steps) * windows_per_step;
  p.tokens = sequences * mean_tokens;
  p.adapter_parameters = p.memory.adapter / 16;
  p.base_flops = p.tokens * base_per_token;
  p.head_flops = p.tokens * head_per_token;
  p.attention_flops = sequences * mean_keys * 4 * double(nh) * double(d) * double(L) * attention_factor;
  p.lora_flops = p.tokens * lora_per_token;
  // F16 mode: the base and the output layer at the F16 tensor-core rate, attention's
  // products with gradients at the TF32 rate (half the F16 rate on every NVIDIA tensor core
  // since Ampere, by the datasheets), the LoRA products in F32; F32 mode and the CPU:
  // everything at the F32 rate. With head dims 64 and 128 attention is fused
  // (cuda/train_attention.cu): the forward, its recomputation and the backward's two score
  // recomputations on the F16 tensor cores, dP twice, dV, dK and dQ in TF32, nothing
  // quadratic through memory. Other head dims run blocks of TF32 GEMMs that pass the
  // probabilities through memory, F32 per (head, row, key) of each 128-row block: 14 passes
  // (the forward's 4; the backward's 10: S and dP written, the softmax's 2, dS's 3, dQ, dK
  // and dV reading dS or P), 4 more to recompute a checkpointed layer; the GEMMs' time or those
  // bytes' at the device's bandwidth, whichever is larger.
  const double f32 = device.gflops_f32 * 1e9;
  if (f16_products) {
    const double tf32 = device.gflops / 2 * 1e9;
    double attention_seconds = 0;
    if (fused) {
      const double forwards = p.keep_all_layers ? 1.0 : 2.0;  // the forward's products, a unit each pass
      const double f16_share = (forwards + 1.0) / attention_factor;  // + the backward's two Sᵀ / S halves
      attention_seconds = p.attention_flops * f16_share / (device.gflops * 1e9) + p.attention_flops * (1 - f16_share) / tf32;
    } else {
      const double passes_through_memory = 14 + (p.keep_all_layers ? 0 : 4);
      p.attention_bytes = sequences * double(L) * double(nh) * mean_block_keys * 4 * passes_through_memory;
      const double bandwidth_seconds = device.gbps > 0 ? p.attention_bytes / (device.gbps * 1e9) : 0.0;
      attention_seconds = std::max(p.attention_flops / tf32, bandwidth_seconds);
    }
    p.seconds = (p.base_flops + p.head_flops) / (device.gflops * 1e9) + attention_seconds + p.lora_flops / f32;
  } else
    p.seconds = (p.base_flops + p.head_flops + p.attention_flops + p.lora_flops) / f32;
  return p;
}

nlohmann::json FinetunePlan::to_json() const {
  const auto& m = memory;
  return {{"device", device.device},
          {"device_name", device.name},
          {"measured", device.measured},
          {"gflops", device.gflops},
          {"gflops_f32", device.gflops_f32},
          {"memory_bytes", device.memory},
          {"checkpointing", !keep_all_layers},
          {"longest_sequence", longest},
          {"adapter_parameters", adapter_parameters},
          {"bytes",
           {{"base", m.base},
            {"embeddings", m.embeddings},
            {"adapter", m.adapter},
            {"saved_inputs", m.saved_inputs},
            {"offloaded_to_host", m.offloaded},
            {"activations", m.activations},
            {"gradients", m.gradients},
            {"head", m.head},
            {"scratch", m.scratch},
            {"workspace", m.workspace},
            {"total", m.total()}}},
          {"fits", fits},
          {"tokens", tokens},
          {"base_flops", base_flops},
          {"head_flops", head_flops},
          {"attention_flops", attention_flops},
          {"lora_flops", lora_flops},
          {"attention_bytes", attention_bytes},
          {"seconds", seconds}};
}

std::string finetune_plan_markdown(const FinetunePlan& p) {
  auto gib = [](uint64_t b) { return format_bytes(double(b)); };
  auto flop = [](double f) {
    return f >= 1e15   ? fmt::format("{:.1f} PFLOP", f / 1e15)
           : f >= 1e12 ? fmt::format("{:.1f} TFLOP", f / 1e12)
                       : fmt::format("{:.1f} GFLOP", f / 1e9);
  };
  auto hours = [](double s) {
    return s < 60 ? fmt::format("{:.1f} s", s) : s < 3600 ? fmt::format("{:.1f} min", s / 60) : fmt::format("{:.1f} h", s / 3600);
  };
  const auto& m = p.memory;
  std::string md = fmt::format(
      "## Fine-tuning plan on {} ({})\n\n| memory | |\n|---|---:|\n"
      "| frozen base | {} |\n| {} | {} |\n"
      "| adapter ({} parameters): weights, gradients, AdamW moments | {} |\n"
      "| layer inputs kept for the recomputation{} | {} |\n| activations ({}) | {} |\n| one layer's gradients | {} |\n"
      "| output layer's buffers (logits a block of rows at a time) | {} |\n| scratch | {} |\n",
      p.device.device, p.device.name, gib(m.base),
      !p.gpu ? "embedding table and output layer (F32)"
             : "output layer (F16 in F16 mode unless tied to the embedding table; an untied table stays in host memory)",
      gib(m.embeddings),
      p.adapter_parameters >= 1'000'000 ? fmt::format("{:.1f} M", double(p.adapter_parameters) / 1e6)
                                        : std::to_string(p.adapter_parameters),
      gib(m.adapter),
      m.offloaded ? fmt::format(" (two on the device; the others, {}, in pinned host memory, copied there and back "
                                "beside the compute)",
                                gib(m.offloaded))
                  : std::string(),
      gib(m.saved_inputs), p.keep_all_layers ? "every layer's: no checkpointing" : "one layer's: checkpointing",
      gib(m.activations), gib(m.gradients), gib(m.head), gib(m.scratch));
  if (m.workspace) md += fmt::format("| cuBLAS workspace | {} |\n", gib(m.workspace));
  md += fmt::format("| **total at the peak** (longest sequence {} tokens) | **{}** of {} |\n\n", p.longest, gib(m.total()),
                    gib(p.device.memory));
  md += fmt::format(
      "| time | |\n|---|---:|\n| tokens trained | {:.0f} |\n| base products | {} |\n| output layer | {} |\n"
      "| attention | {}{} |\n| LoRA products | {} |\n| GEMM rates ({}) | {} |\n"
      "| **time (bound by the GEMM rates{})** | **{}** ({:.0f} tokens/s) |\n\n",
      p.tokens, flop(p.base_flops), flop(p.head_flops), flop(p.attention_flops),
      p.attention_bytes > 0 ? fmt::format(", its probabilities {} through memory at {:.0f} GB/s",
                                          format_bytes(p.attention_bytes), p.device.gbps)
                            : std::string(),
      flop(p.lora_flops), p.device.measured ? "measured here" : "stated roofline",
      p.gpu ? fmt::format("{:.0f} GFLOP/s F16 tensor cores (TF32 half of it), {:.0f} GFLOP/s F32", p.device.gflops,
                          p.device.gflops_f32)
            : fmt::format("{:.0f} GFLOP/s F32", p.device.gflops_f32),
      p.attention_bytes > 0 ? " and attention's bandwidth" : "", hours(p.seconds),
      p.seconds > 0 ? p.tokens / p.seconds : 0.0);
  if (!p.fits)
    md += fmt::format("**Does not fit**: {} needed, {} offered. Lower --max-seq-len, keep --gradient-checkpointing "
                      "always, or use --base-weights nf4.\n",
                      gib(m.total()), gib(p.device.memory));
  else
    md += "Fits.\n";
  return md;
}

}  // namespace pivotmt
