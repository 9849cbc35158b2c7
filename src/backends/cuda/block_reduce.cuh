// Block-wide reductions of training's kernels (train.cu, train_attention.cu): every thread
// passes its value and gets the block's result. Blocks of at most kMaxBlockThreads threads,
// a multiple of 32; the warps' partial results are combined in warp order (the same result
// every run).
#pragma once
#include <cmath>

namespace pivotmt::cuda::kernels {

constexpr int kMaxBlockThreads = 256;

template <class T>
__device__ T block_sum(T v) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  __shared__ T warp_sums[kMaxBlockThreads / 32];
  __shared__ T total;
  __syncthreads();
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    T s = 0;
    for (int i = 0; i < int(blockDim.x / 32); ++i) s += warp_sums[i];
    total = s;
  }
  __syncthreads();
  return total;
}

__device__ inline float block_max(float v) {
  for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __shared__ float warp_max[kMaxBlockThreads / 32];
  __shared__ float total;
  __syncthreads();
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float m = -INFINITY;
    for (int i = 0; i < int(blockDim.x / 32); ++i) m = fmaxf(m, warp_max[i]);
    total = m;
  }
  __syncthreads();
  return total;
}

}  // namespace pivotmt::cuda::kernels
