// RMSNorm and RoPE with Hugging Face's FP16 numerics (shared/docs/REFERENCE.md §14).
#include <cuda_fp16.h>

#include "backends/cuda/cuda_util.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"

namespace pivotmt::cuda::kernels {
namespace {

constexpr int kNormThreads = 256;

// One block per row: the sum of squares in F32 (warp shuffles, then one value per warp).
__global__ void rmsnorm_kernel(const __half* x, int ldx, const __half* w, int H, float eps, __half* y, int ldy) {
  const __half* row = x + size_t(blockIdx.x) * ldx;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    const float v = __half2float(row[i]);
    ss += v * v;
  }
  for (int o = 16; o > 0; o /= 2) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  __shared__ float warp_sums[kNormThreads / 32];
  __shared__ float inv;
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = ss;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.0f;
    for (int i = 0; i < int(blockDim.x / 32); ++i) total += warp_sums[i];
    inv = rsqrtf(total / float(H) + eps);
  }
  __syncthreads();
  __half* out = y + size_t(blockIdx.x) * ldy;
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    const __half normed = __float2half_rn(__half2float(row[i]) * inv);    // .to(input_dtype)
    out[i] = __float2half_rn(__half2float(w[i]) * __half2float(normed));  // weight * hidden
  }
}

// One thread per (row, head, pair i < d/2): (a, b) = (x[i], x[i + d/2]).
__global__ void rope_kernel(__half* x, int ldx, int T, int heads, int d, const int32_t* positions,
                            const float* inv_freq) {
  const int half_d = d / 2;
  const size_t n = size_t(T) * heads * half_d;
  for (size_t j = blockIdx.x * size_t(blockDim.x) + threadIdx.x; j < n; j += size_t(gridDim.x) * blockDim.x) {
    const int i = int(j % half_d);
    const int h = int((j / half_d) % heads);
    const size_t t = j / (size_t(half_d) * heads);
    const float angle = float(positions[t]) * inv_freq[i];  // F32, as freqs = inv_freq @ positions
    const __half c = __float2half_rn(cosf(angle)), s = __float2half_rn(sinf(angle));
    __half* v = x + t * ldx + size_t(h) * d;
    const __half a = v[i], b = v[i + half_d];
    // q * cos + rotate_half(q) * sin, each product and the sum rounded to F16.
    v[i] = __hadd(__hmul(a, c), __hmul(__hneg(b), s));
    v[i + half_d] = __hadd(__hmul(b, c), __hmul(a, s));
  }
}

}  // namespace

void rmsnorm(const void* x, int ldx, const void* w, int rows, int H, float eps, void* y, int ldy, cudaStream_t s) {
  if (rows == 0) return;
  launch("rmsnorm_kernel", rmsnorm_kernel, rows, kNormThreads, s, static_cast<const __half*>(x), ldx,
         static_cast<const __half*>(w), H, eps, static_cast<__half*>(y), ldy);
}

void rope(void* x, int ldx, int T, int heads, int head_dim, const int32_t* positions, const float* inv_freq,
          cudaStream_t s) {
  const size_t n = size_t(T) * heads * (head_dim / 2);
  if (n == 0) return;
  launch("rope_kernel", rope_kernel, blocks_for(n, 256), 256, s, static_cast<__half*>(x), ldx, T, heads, head_dim,
         positions, inv_freq);
}

}  // namespace pivotmt::cuda::kernels
