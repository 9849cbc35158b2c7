// How a request picks its next token (engine/sampling.h implements it; the op interface's
// sample_rows carries it to the device). No dependencies, so that backends/ops.h can name it.
#pragma once
#include <cstdint>

namespace pivotmt {

struct SamplingParams {
  bool greedy = true;
  float temperature = 1.0f;
  int top_k = 0;       // 0: off
  float top_p = 1.0f;  // 1: off
  uint64_t seed = 0;   // the request's generator (drawn on the host)
};

}  // namespace pivotmt
