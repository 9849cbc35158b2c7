// The optimiser side of the original recipe (REFERENCE.md §11): AdamW as bitsandbytes'
// 32-bit kernel computes it, the cosine schedule with linear warmup of transformers, and
// global-norm gradient clipping as torch.nn.utils.clip_grad_norm_.
#pragma once
#include <cstdint>

#include "train/lora.h"

namespace pivotmt::train {

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
};

// First and second moments for every parameter of an adapter (same layout), and the step.
struct AdamWState {
  LoraAdapter m, v;
  int64_t step = 0;
};
AdamWState adamw_init(const LoraAdapter& params);

// One step at learning rate lr: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²;
// p += -lr·√(1-b2^t)/(1-b1^t) · m / (√v + eps·√(1-b2^t)); then p *= 1 - lr·wd when wd > 0.
void adamw_step(LoraAdapter& params, const LoraAdapter& grads, AdamWState& state, double lr, const AdamWConfig& c);

// lr(s) = base · s / warmup for s < warmup, then base · max(0, ½(1 + cos(π (s - warmup) /
// (total - warmup)))). The optimiser's first step (s = 0) takes lr(0).
double cosine_lr(double base, int64_t step, int64_t warmup, int64_t total);

// The global L2 norm of all gradients (before clipping).
double global_norm(const LoraAdapter& grads);
// Scales the gradients by min(1, max_norm / (norm + 1e-6)) (no-op when max_norm <= 0).
void clip_gradients(LoraAdapter& grads, double norm, double max_norm);

}  // namespace pivotmt::train
