// Embedding gather, residual add, SiLU·mul, row gather and float conversion.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <utility>

#include "backends/cuda/cuda_util.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "backends/random_fill.h"

namespace pivotmt::cuda::kernels {
namespace {

// The row kernels below run one row per block over Unit-sized pieces: 8 halves (one
// 16-byte access) when every row start is 16-byte aligned and the width a multiple of 8,
// else single halves. No division per element: the row is the block.
template <class Unit>
constexpr int kLanes = sizeof(Unit) / 2;  // halves per piece

template <class Unit>
__device__ __forceinline__ void load_piece(const __half* p, __half* out) {
  const Unit raw = *reinterpret_cast<const Unit*>(p);
  memcpy(out, &raw, sizeof(raw));  // read as the halves they are (no type punning)
}
template <class Unit>
__device__ __forceinline__ void store_piece(__half* p, const __half* in) {
  Unit raw;
  memcpy(&raw, in, sizeof(raw));
  *reinterpret_cast<Unit*>(p) = raw;
}

template <class Unit>
__global__ void embed_kernel(const __half* table, const int32_t* ids, int H, __half* x, int ldx) {
  const __half* src = table + size_t(ids[blockIdx.x]) * H;
  __half* dst = x + size_t(blockIdx.x) * ldx;
  constexpr int L = kLanes<Unit>;
  for (int c = L * int(threadIdx.x); c < H; c += L * int(blockDim.x)) {
    __half v[L];
    load_piece<Unit>(src + c, v);
    store_piece<Unit>(dst + c, v);
  }
}

template <class Unit>
__global__ void add_kernel(__half* x, int ldx, const __half* y, int ldy, int cols) {
  __half* xr = x + size_t(blockIdx.x) * ldx;
  const __half* yr = y + size_t(blockIdx.x) * ldy;
  constexpr int L = kLanes<Unit>;
  for (int c = L * int(threadIdx.x); c < cols; c += L * int(blockDim.x)) {
    __half a[L], b[L];
    load_piece<Unit>(xr + c, a);
    load_piece<Unit>(yr + c, b);
    for (int i = 0; i < L; ++i) a[i] = __float2half_rn(__half2float(a[i]) + __half2float(b[i]));
    store_piece<Unit>(xr + c, a);
  }
}

template <class Unit>
__global__ void silu_mul_kernel(const __half* gate_up, int ldg, int F, __half* out, int ldo) {
  const __half* gate = gate_up + size_t(blockIdx.x) * ldg;
  __half* o = out + size_t(blockIdx.x) * ldo;
  constexpr int L = kLanes<Unit>;
  for (int c = L * int(threadIdx.x); c < F; c += L * int(blockDim.x)) {
    __half g[L], u[L];
    load_piece<Unit>(gate + c, g);
    load_piece<Unit>(gate + F + c, u);
    for (int i = 0; i < L; ++i) {
      const float gf = __half2float(g[i]);
      const __half act = __float2half_rn(gf / (1.0f + expf(-gf)));  // F.silu on a half tensor
      g[i] = __float2half_rn(__half2float(act) * __half2float(u[i]));
    }
    store_piece<Unit>(o + c, g);
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

__global__ void fill_random_f32_kernel(float* dst, size_t count, uint64_t seed, float scale, float offset) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < count; i += size_t(gridDim.x) * blockDim.x)
    dst[i] = random_fill::value(seed, i, scale, offset);
}

constexpr unsigned kThreads = 256;
}  // namespace

void fill_random_f32(float* dst, size_t count, uint64_t seed, float scale, float offset, cudaStream_t s) {
  if (count == 0) return;
  launch("fill_random_f32_kernel", fill_random_f32_kernel, blocks_for(count, kThreads), kThreads, s, dst, count, seed,
         scale, offset);
}

void fill_random_f16(void* dst, size_t count, uint64_t seed, float scale, float offset, cudaStream_t s) {
  if (count == 0) return;
  launch("fill_random_kernel", fill_random_kernel, blocks_for(count, kThreads), kThreads, s, static_cast<__half*>(dst),
         count, seed, scale, offset);
}

// Whether rows of `cols` halves at these starts and strides allow 16-byte pieces.
static bool pieces16(int cols, std::initializer_list<std::pair<const void*, int>> rows) {
  if (cols % 8 != 0) return false;
  for (const auto& [p, ld] : rows)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0 || ld % 8 != 0) return false;
  return true;
}

void embed(const void* table, const int32_t* ids, int T, int H, void* x, int ldx, cudaStream_t s) {
  if (T == 0) return;
  const auto* t = static_cast<const __half*>(table);
  auto* out = static_cast<__half*>(x);
  if (pieces16(H, {{table, H}, {x, ldx}}))
    launch("embed_kernel<16B>", embed_kernel<uint4>, T, kThreads, s, t, ids, H, out, ldx);
  else
    launch("embed_kernel<2B>", embed_kernel<uint16_t>, T, kThreads, s, t, ids, H, out, ldx);
}

void add(void* x, int ldx, const void* y, int ldy, int rows, int cols, cudaStream_t s) {
  if (rows == 0) return;
  auto* xp = static_cast<__half*>(x);
  const auto* yp = static_cast<const __half*>(y);
  if (pieces16(cols, {{x, ldx}, {y, ldy}}))
    launch("add_kernel<16B>", add_kernel<uint4>, rows, kThreads, s, xp, ldx, yp, ldy, cols);
  else
    launch("add_kernel<2B>", add_kernel<uint16_t>, rows, kThreads, s, xp, ldx, yp, ldy, cols);
}

void silu_mul(const void* gate_up, int ldg, int rows, int F, void* out, int ldo, cudaStream_t s) {
  if (rows == 0) return;
  const auto* g = static_cast<const __half*>(gate_up);
  auto* o = static_cast<__half*>(out);
  if (pieces16(F, {{gate_up, ldg}, {out, ldo}}))
    launch("silu_mul_kernel<16B>", silu_mul_kernel<uint4>, rows, kThreads, s, g, ldg, F, o, ldo);
  else
    launch("silu_mul_kernel<2B>", silu_mul_kernel<uint16_t>, rows, kThreads, s, g, ldg, F, o, ldo);
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
