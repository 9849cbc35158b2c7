// Index and softmax arithmetic of attention over a paged KV cache, shared by the CUDA
// kernels (compiled as __host__ __device__) and the CPU tests that check it.
//
// Layout of one layer's keys (values alike) in the pool: [blocks * 16 positions, kv_heads,
// head_dim]; a sequence's position p lives in slot table[p / 16] * 16 + p % 16.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "backends/kv_blocks.h"

#if defined(__CUDACC__)
#define PIVOTMT_HD __host__ __device__
#else
#define PIVOTMT_HD
#endif

namespace pivotmt::paged {

// The pool slot of position `p` of a sequence whose block table is `table`.
PIVOTMT_HD inline int64_t slot(const int32_t* table, int64_t p) {
  return int64_t(table[p / int64_t(kKvBlockPositions)]) * int64_t(kKvBlockPositions) + p % int64_t(kKvBlockPositions);
}

// Element offset of (slot, kv head, dim 0) in a layer's key or value pool.
PIVOTMT_HD inline int64_t element(int64_t slot, int64_t kv_head, int64_t kv_heads, int64_t head_dim) {
  return (slot * kv_heads + kv_head) * head_dim;
}

// The first position a query at `pos` sees: 0, or the start of Mistral's window.
PIVOTMT_HD inline int64_t first_visible(int64_t pos, int64_t window) {
  return window > 0 && pos + 1 > window ? pos + 1 - window : 0;
}

// The running state of a softmax over scores seen so far: their maximum and the sum of
// exp(score - max). Partial states over disjoint key ranges merge exactly (log-sum-exp);
// a partial weighted sum of values is rescaled by the same factor.
struct SoftmaxState {
  float max = -INFINITY;
  float sum = 0.0f;
};

// exp(old_max - new_max), 0 when nothing was seen yet (old_max = -inf).
PIVOTMT_HD inline float rescale(float old_max, float new_max) {
  return old_max == -INFINITY ? 0.0f : expf(old_max - new_max);
}

PIVOTMT_HD inline SoftmaxState merge(SoftmaxState a, SoftmaxState b) {
  const float m = a.max > b.max ? a.max : b.max;
  if (m == -INFINITY) return a;
  return {m, a.sum * rescale(a.max, m) + b.sum * rescale(b.max, m)};
}

}  // namespace pivotmt::paged
