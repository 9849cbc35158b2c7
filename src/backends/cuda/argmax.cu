// Greedy selection on the device: the first maximum of each logits row, so only the ids
// travel back to the host.
#include "backends/cuda/cuda_util.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"

namespace pivotmt::cuda::kernels {
namespace {

constexpr int kThreads = 256;

// (value, index) pairs: the larger value wins, the smaller index on ties (first maximum).
__device__ void better(float& v, int& i, float ov, int oi) {
  if (ov > v || (ov == v && oi < i)) v = ov, i = oi;
}

__global__ void argmax_kernel(const float* x, int ldx, int cols, int32_t* ids) {
  const float* row = x + size_t(blockIdx.x) * ldx;
  float v = -INFINITY;
  int idx = 0x7fffffff;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) better(v, idx, row[c], c);
  for (int o = 16; o > 0; o /= 2)
    better(v, idx, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, idx, o));
  __shared__ float vs[kThreads / 32];
  __shared__ int is[kThreads / 32];
  if (threadIdx.x % 32 == 0) vs[threadIdx.x / 32] = v, is[threadIdx.x / 32] = idx;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) better(v, idx, vs[w], is[w]);
    ids[blockIdx.x] = idx == 0x7fffffff ? 0 : idx;  // an all -inf / NaN row: token 0, as the host would
  }
}

}  // namespace

void argmax_rows(const float* x, int ldx, int rows, int cols, int32_t* ids, cudaStream_t s) {
  if (rows == 0) return;
  launch("argmax_kernel", argmax_kernel, rows, kThreads, s, x, ldx, cols, ids);
}

}  // namespace pivotmt::cuda::kernels
