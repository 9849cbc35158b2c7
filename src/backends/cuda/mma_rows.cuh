// Register-level helpers of the tensor-core attention kernels (attention_prefill.cu,
// train_attention.cu), for mma.sync's m16n8 fragments (ptx.cuh): a fragment row's values
// lie in the 4 lanes of a quad (lane / 4 names the row), two F16 values per 32-bit register.
#pragma once
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

namespace pivotmt::cuda::kernels {

__device__ __forceinline__ uint32_t load_pair(const __half* p) {  // two halves, 4-byte aligned
  const __half2 h = *reinterpret_cast<const __half2*>(p);
  uint32_t bits;
  memcpy(&bits, &h, sizeof(bits));
  return bits;
}

// Two floats rounded to F16 as one register; rounded_sum gets their rounded values (a
// softmax's denominator sums what the product with V will use).
__device__ __forceinline__ uint32_t pack_pair(float lo, float hi, float& rounded_sum) {
  const __half2 h = __floats2half2_rn(lo, hi);
  const float2 back = __half22float2(h);
  rounded_sum += back.x + back.y;
  uint32_t bits;
  memcpy(&bits, &h, sizeof(bits));
  return bits;
}

__device__ __forceinline__ float quad_max(float v) {  // over the 4 lanes holding one row
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

}  // namespace pivotmt::cuda::kernels
