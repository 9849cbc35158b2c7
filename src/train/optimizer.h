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

// The floats of step t (t counted from 1) that every element's update uses, computed once on
// the host so that a GPU's kernel applies exactly the CPU's values.
struct AdamWScalars {
  float beta1 = 0, one_minus_beta1 = 0, beta2 = 0, one_minus_beta2 = 0;
  float step_size = 0;   // −lr·√(1−b2^t)/(1−b1^t)
  float eps_scaled = 0;  // eps·√(1−b2^t)
  float decay = 1;       // 1 − lr·wd (1: no decay)
};
AdamWScalars adamw_scalars(int64_t t, double lr, const AdamWConfig& c);
// The update of n elements (the reference a device's kernel is checked against bit for bit:
// every product and sum rounded separately, never fused).
void adamw_update(float* p, const float* g, float* m, float* v, size_t n, const AdamWScalars& s);

// lr(s) = base · s / warmup for s < warmup, then base · max(0, ½(1 + cos(π (s - warmup) /
// (total - warmup)))). The optimiser's first step (s = 0) takes lr(0).
double cosine_lr(double base, int64_t step, int64_t warmup, int64_t total);

// The global L2 norm of all gradients (before clipping).
double global_norm(const LoraAdapter& grads);
// Scales the gradients by clip_coefficient (no-op when it is 1).
void clip_gradients(LoraAdapter& grads, double norm, double max_norm);
// min(1, max_norm / (norm + 1e-6)) as torch computes it; 1 when max_norm <= 0.
float clip_coefficient(double norm, double max_norm);

}  // namespace pivotmt::train
