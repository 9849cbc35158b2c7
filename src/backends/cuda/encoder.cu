// The encoder ops' kernels (BERT, XLM-R, M2M100), all F32 (but an F16 embedding table, and
// the F16 rounding of an F16 linear's inputs): LayerNorm (and the post-norm
// residual form), the exact GELU, bias rows, bidirectional attention over packed sequences;
// for the encoder–decoder also residual adds, ReLU, embeddings, and attention of decoder rows
// over per-sequence key/value caches.
// Their specification is backends/cpu/ops_ref.cpp's loops; the tests compare the two.
#include <cuda_fp16.h>

#include <cstdint>
#include <string>

#include "backends/cuda/cublas_loader.h"
#include "backends/cuda/cuda_util.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"

namespace pivotmt::cuda::kernels {
namespace {

constexpr int kRowThreads = 256;

// The sum of each thread's `v` over the block (warp shuffles, then one value per warp
// summed by thread 0 in order); every thread gets it.
__device__ float block_sum(float v) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  __shared__ float warp_sums[kRowThreads / 32];
  __shared__ float total;
  __syncthreads();  // a previous call's readers are done with `total`
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0.0f;
    for (int i = 0; i < int(blockDim.x / 32); ++i) s += warp_sums[i];
    total = s;
  }
  __syncthreads();
  return total;
}

// One block per row: x = LayerNorm(x + y + bias) (y, bias null: LayerNorm(x)); the mean,
// then the biased variance around it (two passes, as torch.nn.LayerNorm), F32.
__global__ void layer_norm_kernel(float* x, const float* y, const float* bias, int H, const float* w, const float* b,
                                  float eps) {
  float* row = x + size_t(blockIdx.x) * H;
  const float* add = y ? y + size_t(blockIdx.x) * H : nullptr;
  float s = 0.0f;
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    if (add) row[i] = row[i] + add[i] + bias[i];
    s += row[i];
  }
  const float mean = block_sum(s) / float(H);
  float ss = 0.0f;
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    const float c = row[i] - mean;
    ss += c * c;
  }
  const float inv = 1.0f / sqrtf(block_sum(ss) / float(H) + eps);
  for (int i = threadIdx.x; i < H; i += blockDim.x) row[i] = (row[i] - mean) * inv * w[i] + b[i];
}

__global__ void gelu_kernel(float* x, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

// One block per row: y[row] += bias.
__global__ void add_bias_kernel(float* y, int n, const float* bias) {
  float* row = y + size_t(blockIdx.x) * n;
  for (int i = threadIdx.x; i < n; i += blockDim.x) row[i] += bias[i];
}

// One warp's attention of a query row's head over `n` keys (rows `key_stride` floats apart,
// values `value_offset` floats after their key): an online softmax (max, sum, weighted
// values) in F32; lanes across the head's dims (d ≤ 256).
constexpr int kMaxDimsPerLane = 8;
__device__ void attend_keys(const float* q, const float* keys, size_t key_stride, size_t value_offset, int n, int d,
                            float* o, int lane) {
  const float scale = 1.0f / sqrtf(float(d));
  float qd[kMaxDimsPerLane], acc[kMaxDimsPerLane];
  for (int i = 0; i < kMaxDimsPerLane; ++i) {
    const int dim = lane + 32 * i;
    qd[i] = dim < d ? q[dim] : 0.0f;
    acc[i] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  for (int j = 0; j < n; ++j) {
    const float* k = keys + size_t(j) * key_stride;
    const float* v = k + value_offset;
    float s = 0.0f;
    for (int i = 0; i < kMaxDimsPerLane; ++i) {
      const int dim = lane + 32 * i;
      if (dim < d) s += qd[i] * k[dim];
    }
    for (int o2 = 16; o2 > 0; o2 /= 2) s += __shfl_xor_sync(0xffffffffu, s, o2);
    s *= scale;
    const float m_new = fmaxf(m, s), old = m == -INFINITY ? 0.0f : expf(m - m_new), p = expf(s - m_new);
    l = l * old + p;
    for (int i = 0; i < kMaxDimsPerLane; ++i) {
      const int dim = lane + 32 * i;
      acc[i] = acc[i] * old + (dim < d ? p * v[dim] : 0.0f);
    }
    m = m_new;
  }
  for (int i = 0; i < kMaxDimsPerLane; ++i) {
    const int dim = lane + 32 * i;
    if (dim < d) o[dim] = acc[i] / l;
  }
}

// One warp per (row, head): the row's query against every key of its sequence.
__global__ void encoder_attention_kernel(const float* qkv, int heads, int d, const int32_t* row_begin,
                                         const int32_t* row_end, float* out, int rows) {
  const int warp = int(blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32), lane = int(threadIdx.x % 32);
  if (warp >= rows * heads) return;  // whole warps leave together
  const int t = warp / heads, h = warp % heads;
  const size_t width = size_t(3) * heads * d;
  const float* keys = qkv + size_t(row_begin[t]) * width + size_t(heads + h) * d;
  attend_keys(qkv + size_t(t) * width + size_t(h) * d, keys, width, size_t(heads) * d, row_end[t] - row_begin[t], d,
              out + size_t(t) * heads * d + size_t(h) * d, lane);
}

// One warp per (row, head): a decoder row's query against its cache's visible keys.
__global__ void cached_attention_kernel(const float* q, int ldq, const CacheRow* meta, int rows, int heads, int d,
                                        int layer, float* out) {
  const int warp = int(blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32), lane = int(threadIdx.x % 32);
  if (warp >= rows * heads) return;
  const int t = warp / heads, h = warp % heads;
  const size_t H = size_t(heads) * d;
  const CacheRow c = meta[t];
  const float* keys = c.kv + size_t(2 * layer) * c.capacity * H + size_t(h) * d;
  attend_keys(q + size_t(t) * ldq + size_t(h) * d, keys, H, size_t(c.capacity) * H, c.visible, d,
              out + size_t(t) * H + size_t(h) * d, lane);
}

// One block per row: its new key and value into its cache's layer.
__global__ void write_cache_kernel(const float* kv_new, int ld, const CacheRow* meta, int H, int layer) {
  const CacheRow c = meta[blockIdx.x];
  const float* src = kv_new + size_t(blockIdx.x) * ld;
  float* key = c.kv + (size_t(2 * layer) * c.capacity + size_t(c.position)) * H;
  float* value = key + size_t(c.capacity) * H;
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    key[i] = src[i];
    value[i] = src[H + i];
  }
}

__global__ void add_kernel(float* x, const float* y, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    x[i] += y[i];
}

__global__ void relu_kernel(float* x, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    x[i] = fmaxf(x[i], 0.0f);
}

__device__ float table_value(const float* row, int i) { return row[i]; }
__device__ float table_value(const __half* row, int i) { return __half2float(row[i]); }

// One block per row. __fmul_rn / __fadd_rn: no contraction into a fused multiply-add (the
// CPU rounds the product, then the sum). An F16 table's values are exact in F32, so the
// CPU's F16 table gives the same sums.
template <typename Element>
__global__ void embed_kernel(const Element* table, const int32_t* ids, const int32_t* position_ids, int H, float scale,
                             const float* positions, float* out) {
  const Element* row = table + size_t(ids[blockIdx.x]) * H;
  const float* pos = positions + size_t(position_ids[blockIdx.x]) * H;
  float* o = out + size_t(blockIdx.x) * H;
  for (int i = threadIdx.x; i < H; i += blockDim.x) o[i] = __fadd_rn(__fmul_rn(table_value(row, i), scale), pos[i]);
}

// A block per (sequence, block of columns): a thread per column sums its sequence's kept
// rows in double, in row order — the CPU's loop, the same bits.
__global__ void pool_rows_kernel(const float* x, int H, const int32_t* starts, const int32_t* keep, double weight,
                                 double* acc, int column_blocks) {
  const int s = int(blockIdx.x) / column_blocks, i = int(blockIdx.x % column_blocks * blockDim.x + threadIdx.x);
  if (i >= H) return;
  double a = acc[size_t(s) * H + i];
  for (int t = starts[s]; t < starts[s + 1]; ++t)
    if (keep[t]) a += weight * double(x[size_t(t) * H + i]);
  acc[size_t(s) * H + i] = a;
}

// Round to F16, nearest even; finite values beyond F16's range become ±65504 rather than
// infinities (transformers clamps M2M100's F16 states for the same reason), NaN stays NaN.
__global__ void to_f16_kernel(const float* x, size_t n, __half* out) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float v = x[i];
    out[i] = __float2half_rn(isnan(v) ? v : fminf(fmaxf(v, -65504.0f), 65504.0f));
  }
}

}  // namespace

void encoder_layer_norm(float* x, const float* y, const float* bias, int rows, int H, const float* w, const float* b,
                        float eps, cudaStream_t s) {
  if (rows == 0) return;
  launch("layer_norm_kernel", layer_norm_kernel, unsigned(rows), kRowThreads, s, x, y, bias, H, w, b, eps);
}

void encoder_gelu(float* x, size_t n, cudaStream_t s) {
  if (n == 0) return;
  launch("gelu_kernel", gelu_kernel, blocks_for(n, 256), 256, s, x, n);
}

void encoder_add_bias(float* y, int rows, int n, const float* bias, cudaStream_t s) {
  if (rows == 0) return;
  launch("add_bias_kernel", add_bias_kernel, unsigned(rows), kRowThreads, s, y, n, bias);
}

bool encoder_attention_supported(int d) { return d > 0 && d <= 32 * kMaxDimsPerLane; }

void encoder_attention(const float* qkv, int rows, int heads, int d, const int32_t* row_begin, const int32_t* row_end,
                       float* out, cudaStream_t s) {
  if (!encoder_attention_supported(d))
    throw Error("cuda encoder attention: heads of " + std::to_string(d) + " dims (at most 256)");
  if (rows == 0) return;
  constexpr int kWarps = 4;
  const size_t warps = size_t(rows) * heads;
  launch("encoder_attention_kernel", encoder_attention_kernel, unsigned((warps + kWarps - 1) / kWarps), 32 * kWarps, s,
         qkv, heads, d, row_begin, row_end, out, rows);
}

void encoder_add(float* x, const float* y, size_t n, cudaStream_t s) {
  if (n == 0) return;
  launch("add_kernel", add_kernel, blocks_for(n, 256), 256, s, x, y, n);
}

void encoder_relu(float* x, size_t n, cudaStream_t s) {
  if (n == 0) return;
  launch("relu_kernel", relu_kernel, blocks_for(n, 256), 256, s, x, n);
}

void encoder_embed(const void* table, bool table_f16, const int32_t* ids_and_positions, int rows, int H, float scale,
                   const float* positions, float* out, cudaStream_t s) {
  if (rows == 0) return;
  if (table_f16)
    launch("embed_kernel<half>", embed_kernel<__half>, unsigned(rows), kRowThreads, s,
           static_cast<const __half*>(table), ids_and_positions, ids_and_positions + rows, H, scale, positions, out);
  else
    launch("embed_kernel<float>", embed_kernel<float>, unsigned(rows), kRowThreads, s,
           static_cast<const float*>(table), ids_and_positions, ids_and_positions + rows, H, scale, positions, out);
}

void encoder_pool_rows(const float* x, int H, const int32_t* starts, int sequences, const int32_t* keep, double weight,
                       double* acc, cudaStream_t s) {
  if (sequences == 0 || H == 0) return;
  const int column_blocks = (H + 255) / 256;
  launch("pool_rows_kernel", pool_rows_kernel, unsigned(sequences * column_blocks), 256, s, x, H, starts, keep, weight,
         acc, column_blocks);
}

void encoder_to_f16(const float* x, size_t n, void* out, cudaStream_t s) {
  if (n == 0) return;
  launch("to_f16_kernel", to_f16_kernel, blocks_for(n, 256), 256, s, x, n, static_cast<__half*>(out));
}

void encoder_write_cache(const float* kv_new, int ld, const CacheRow* rows_meta, int rows, int H, int layer,
                         cudaStream_t s) {
  if (rows == 0) return;
  launch("write_cache_kernel", write_cache_kernel, unsigned(rows), kRowThreads, s, kv_new, ld, rows_meta, H, layer);
}

void encoder_cached_attention(const float* q, int ldq, const CacheRow* rows_meta, int rows, int heads, int d, int layer,
                              float* out, cudaStream_t s) {
  if (!encoder_attention_supported(d))
    throw Error("cuda cached attention: heads of " + std::to_string(d) + " dims (at most 256)");
  if (rows == 0) return;
  constexpr int kWarps = 4;
  const size_t warps = size_t(rows) * heads;
  launch("cached_attention_kernel", cached_attention_kernel, unsigned((warps + kWarps - 1) / kWarps), 32 * kWarps, s,
         q, ldq, rows_meta, rows, heads, d, layer, out);
}

void linear_f32(cublasHandle_t blas, const float* x, int rows, const float* w, int out, int in, float* y) {
  if (rows == 0) return;
  const float alpha = 1.0f, beta = 0.0f;
  check_cublas(cublas().gemm_ex(blas, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &alpha, w, CUDA_R_32F, in, x, CUDA_R_32F,
                                in, &beta, y, CUDA_R_32F, out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx (encoder linear, F32)");
}

}  // namespace pivotmt::cuda::kernels
