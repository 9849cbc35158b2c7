// RMSNorm and RoPE with Hugging Face's FP16 numerics (shared/docs/REFERENCE.md §14).
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

#include "backends/cuda/cuda_util.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"

namespace pivotmt::cuda::kernels {
namespace {

constexpr int kNormThreads = 256;

// rsqrt(mean of squares + eps) of a block's row, from each thread's partial sum of squares
// `ss`: warp shuffles, then one value per warp, summed by thread 0 in F32; every thread gets it.
__device__ float block_inv_rms(float ss, int H, float eps) {
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
  return inv;
}

// One block per row: the sum of squares in F32.
__global__ void rmsnorm_kernel(const __half* x, int ldx, const __half* w, int H, float eps, __half* y, int ldy) {
  const __half* row = x + size_t(blockIdx.x) * ldx;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    const float v = __half2float(row[i]);
    ss += v * v;
  }
  const float inv = block_inv_rms(ss, H, eps);
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

// 8 halves at a 16-byte aligned address, in one access each way (through memcpy: the
// halves are not read as another type).
struct Half8 {
  __half h[8];
};
__device__ __forceinline__ Half8 load_half8(const __half* p) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  Half8 v;
  memcpy(&v, &raw, sizeof(raw));
  return v;
}
__device__ __forceinline__ void store_half8(__half* p, const Half8& v) {
  uint4 raw;
  memcpy(&raw, &v, sizeof(raw));
  *reinterpret_cast<uint4*>(p) = raw;
}

// x += y and out = rmsnorm(x) · w for one row per block, 8 halves per access. Each thread
// normalises the elements it added itself, so only the sum of squares crosses threads.
// The add rounds once per element (add_kernel's), the norm is rmsnorm_kernel's.
__global__ void add_rmsnorm_kernel(__half* x, int ldx, const __half* y, int ldy, const __half* w, int H, float eps,
                                   __half* out, int ldo) {
  __half* xr = x + size_t(blockIdx.x) * ldx;
  const __half* yr = y + size_t(blockIdx.x) * ldy;
  float ss = 0.0f;
  for (int c = 8 * int(threadIdx.x); c < H; c += 8 * int(blockDim.x)) {
    const Half8 a = load_half8(xr + c), b = load_half8(yr + c);
    Half8 sum;
    for (int i = 0; i < 8; ++i) {
      sum.h[i] = __float2half_rn(__half2float(a.h[i]) + __half2float(b.h[i]));
      const float v = __half2float(sum.h[i]);
      ss += v * v;
    }
    store_half8(xr + c, sum);
  }
  const float inv = block_inv_rms(ss, H, eps);
  __half* o = out + size_t(blockIdx.x) * ldo;
  for (int c = 8 * int(threadIdx.x); c < H; c += 8 * int(blockDim.x)) {
    const Half8 v = load_half8(xr + c), wv = load_half8(w + c);
    Half8 r;
    for (int i = 0; i < 8; ++i) {
      const __half normed = __float2half_rn(__half2float(v.h[i]) * inv);
      r.h[i] = __float2half_rn(__half2float(wv.h[i]) * __half2float(normed));
    }
    store_half8(o + c, r);
  }
}

// RoPE on a row's q and k heads and its k and v into the cache, one row per block: item
// (head, c) rotates dims [8c, 8c + 8) with [d/2 + 8c, d/2 + 8c + 8) (rope_kernel's
// arithmetic), writing them back and, for a k head, into the key pool; the last items copy
// v's 16-byte pieces into the value pool.
__global__ void rope_kv_write_kernel(__half* qkv, int ldq, int nh, int nkv, int d, const int32_t* positions,
                                     const float* inv_freq, const int32_t* slots, __half* k_pool, __half* v_pool) {
  const int t = int(blockIdx.x), half_d = d / 2, chunks = half_d / 8;
  __half* row = qkv + size_t(t) * ldq;
  const float pos = float(positions[t]);
  const size_t width = size_t(nkv) * d, cache_row = size_t(slots[t]) * width;
  const int rotations = (nh + nkv) * chunks, copies = nkv * d / 8;
  for (int item = int(threadIdx.x); item < rotations + copies; item += int(blockDim.x)) {
    if (item >= rotations) {
      const int e = 8 * (item - rotations);
      store_half8(v_pool + cache_row + e, load_half8(row + size_t(nh + nkv) * d + e));
      continue;
    }
    const int h = item / chunks, i0 = 8 * (item % chunks);
    __half* head = row + size_t(h) * d;
    const Half8 a = load_half8(head + i0), b = load_half8(head + half_d + i0);
    Half8 ra, rb;
    for (int i = 0; i < 8; ++i) {
      const float angle = pos * inv_freq[i0 + i];
      const __half c = __float2half_rn(cosf(angle)), s = __float2half_rn(sinf(angle));
      ra.h[i] = __hadd(__hmul(a.h[i], c), __hmul(__hneg(b.h[i]), s));
      rb.h[i] = __hadd(__hmul(b.h[i], c), __hmul(a.h[i], s));
    }
    store_half8(head + i0, ra);
    store_half8(head + half_d + i0, rb);
    if (h >= nh) {
      __half* k = k_pool + cache_row + size_t(h - nh) * d;
      store_half8(k + i0, ra);
      store_half8(k + half_d + i0, rb);
    }
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

bool add_rmsnorm_supported(const void* x, int ldx, const void* y, int ldy, const void* w, int H, const void* out,
                           int ldo) {
  return H % 8 == 0 && ldx % 8 == 0 && ldy % 8 == 0 && ldo % 8 == 0 && aligned16(x) && aligned16(y) && aligned16(w) &&
         aligned16(out);
}

void add_rmsnorm(void* x, int ldx, const void* y, int ldy, const void* w, int rows, int H, float eps, void* out,
                 int ldo, cudaStream_t s) {
  if (!add_rmsnorm_supported(x, ldx, y, ldy, w, H, out, ldo))
    throw Error("cuda add_rmsnorm: rows must be 16-byte aligned with widths a multiple of 8 halves");
  if (rows == 0) return;
  launch("add_rmsnorm_kernel", add_rmsnorm_kernel, rows, kNormThreads, s, static_cast<__half*>(x), ldx,
         static_cast<const __half*>(y), ldy, static_cast<const __half*>(w), H, eps, static_cast<__half*>(out), ldo);
}

bool rope_kv_write_supported(const void* qkv, int ldq, int d, const void* k_pool, const void* v_pool) {
  return d % 16 == 0 && ldq % 8 == 0 && aligned16(qkv) && aligned16(k_pool) && aligned16(v_pool);
}

void rope_kv_write(void* qkv, int ldq, int T, int nh, int nkv, int d, const int32_t* positions, const float* inv_freq,
                   const int32_t* slots, void* k_pool, void* v_pool, cudaStream_t s) {
  if (!rope_kv_write_supported(qkv, ldq, d, k_pool, v_pool))
    throw Error("cuda rope_kv_write: head_dim must be a multiple of 16 and rows 16-byte aligned");
  if (T == 0) return;
  launch("rope_kv_write_kernel", rope_kv_write_kernel, T, 128, s, static_cast<__half*>(qkv), ldq, nh, nkv, d, positions,
         inv_freq, slots, static_cast<__half*>(k_pool), static_cast<__half*>(v_pool));
}

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
