// Embedding gather, residual add, SiLU·mul, row gather and float conversion.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backends/cuda/cuda_util.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "backends/random_fill.h"

namespace pivotmt::cuda::kernels {
namespace {

__global__ void embed_kernel(const __half* table, const int32_t* ids, int T, int H, __half* x, int ldx) {
  const size_t n = size_t(T) * H;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const size_t t = i / H, c = i % H;
    x[t * ldx + c] = table[size_t(ids[t]) * H + c];
  }
}

__global__ void add_kernel(__half* x, int ldx, const __half* y, int ldy, int rows, int cols) {
  const size_t n = size_t(rows) * cols;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const size_t r = i / cols, c = i % cols;
    x[r * ldx + c] = __float2half_rn(__half2float(x[r * ldx + c]) + __half2float(y[r * ldy + c]));
  }
}

__global__ void silu_mul_kernel(const __half* gate_up, int ldg, int rows, int F, __half* out, int ldo) {
  const size_t n = size_t(rows) * F;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const size_t r = i / F, c = i % F;
    const float g = __half2float(gate_up[r * ldg + c]), u = __half2float(gate_up[r * ldg + F + c]);
    const __half act = __float2half_rn(g / (1.0f + expf(-g)));  // F.silu on a half tensor
    out[r * ldo + c] = __float2half_rn(__half2float(act) * u);
  }
}

__global__ void gather_kernel(const char* x, int ldx, const int32_t* rows, int n, int cols, int elem, char* out,
                              int ldo) {
  const size_t bytes = size_t(cols) * elem, total = size_t(n) * bytes;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x) {
    const size_t r = i / bytes, b = i % bytes;
    out[r * size_t(ldo) * elem + b] = x[size_t(rows[r]) * size_t(ldx) * elem + b];
  }
}

__device__ float load_float(const void* src, int from, size_t i) {
  switch (from) {
    case 0:
      return static_cast<const float*>(src)[i];
    case 1:
      return __half2float(static_cast<const __half*>(src)[i]);
    default:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(src)[i]);
  }
}

__global__ void convert_kernel(const void* src, int from, void* dst, int to, size_t count) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < count; i += size_t(gridDim.x) * blockDim.x) {
    const float v = load_float(src, from, i);
    switch (to) {
      case 0:
        static_cast<float*>(dst)[i] = v;
        break;
      case 1:
        static_cast<__half*>(dst)[i] = __float2half_rn(v);
        break;
      default:
        static_cast<__nv_bfloat16*>(dst)[i] = __float2bfloat16_rn(v);
        break;
    }
  }
}

__global__ void fill_random_kernel(__half* dst, size_t count, uint64_t seed, float scale, float offset) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < count; i += size_t(gridDim.x) * blockDim.x)
    dst[i] = __float2half_rn(random_fill::value(seed, i, scale, offset));
}

constexpr unsigned kThreads = 256;
}  // namespace

void fill_random_f16(void* dst, size_t count, uint64_t seed, float scale, float offset, cudaStream_t s) {
  if (count == 0) return;
  launch("fill_random_kernel", fill_random_kernel, blocks_for(count, kThreads), kThreads, s, static_cast<__half*>(dst),
         count, seed, scale, offset);
}

void embed(const void* table, const int32_t* ids, int T, int H, void* x, int ldx, cudaStream_t s) {
  launch("embed_kernel", embed_kernel, blocks_for(size_t(T) * H, kThreads), kThreads, s,
         static_cast<const __half*>(table), ids, T, H, static_cast<__half*>(x), ldx);
}

void add(void* x, int ldx, const void* y, int ldy, int rows, int cols, cudaStream_t s) {
  launch("add_kernel", add_kernel, blocks_for(size_t(rows) * cols, kThreads), kThreads, s, static_cast<__half*>(x), ldx,
         static_cast<const __half*>(y), ldy, rows, cols);
}

void silu_mul(const void* gate_up, int ldg, int rows, int F, void* out, int ldo, cudaStream_t s) {
  launch("silu_mul_kernel", silu_mul_kernel, blocks_for(size_t(rows) * F, kThreads), kThreads, s,
         static_cast<const __half*>(gate_up), ldg, rows, F, static_cast<__half*>(out), ldo);
}

void gather_rows(const void* x, int ldx, const int32_t* rows, int n, int cols, int elem_bytes, void* out, int ldo,
                 cudaStream_t s) {
  launch("gather_kernel", gather_kernel, blocks_for(size_t(n) * cols * elem_bytes, kThreads), kThreads, s,
         static_cast<const char*>(x), ldx, rows, n, cols, elem_bytes, static_cast<char*>(out), ldo);
}

void convert(const void* src, int from, void* dst, int to, size_t count, cudaStream_t s) {
  if (count == 0) return;
  launch("convert_kernel", convert_kernel, blocks_for(count, kThreads), kThreads, s, src, from, dst, to, count);
}

}  // namespace pivotmt::cuda::kernels
