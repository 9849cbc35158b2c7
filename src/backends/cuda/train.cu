// Training's kernels (train/train_device.h on a GPU), F32: RMSNorm and its backward, RoPE,
// causal attention and its backward (recomputing probabilities from the saved log-sum-exp),
// SiLU·mul and its backward, LoRA dropout with dropout_mask.h's masks, cross-entropy over a
// block of logits rows, embedding rows, and the frozen base's conversion (NF4 codes and
// their absmax, F16) to F32 just before its GEMM. Their specification is
// src/train/train_ops.cpp; tests/test_gpu_train.cpp compares the two.
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "backends/cuda/block_reduce.cuh"
#include "backends/cuda/cublas_loader.h"
#include "backends/cuda/cuda_util.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "train/dropout_mask.h"
#include "train/optimizer.h"

namespace pivotmt::cuda::kernels {
namespace {

constexpr int kThreads = kMaxBlockThreads;
constexpr int kMaxDimsPerLane = 8;  // head dims ≤ 256

// A warp's dot product of two head vectors (lanes across the dims), every lane gets it.
__device__ float warp_dot(const float* a, const float* b, int d, int lane) {
  float s = 0.0f;
  for (int dim = lane; dim < d; dim += 32) s += a[dim] * b[dim];
  for (int o = 16; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
  return s;
}

__global__ void rmsnorm_forward_kernel(const float* x, const float* w, int H, float eps, float* y, float* rinv) {
  const float* xr = x + size_t(blockIdx.x) * H;
  double ss = 0;
  for (int i = threadIdx.x; i < H; i += blockDim.x) ss += double(xr[i]) * xr[i];
  const float r = 1.0f / sqrtf(float(block_sum(ss) / double(H)) + eps);
  if (threadIdx.x == 0) rinv[blockIdx.x] = r;
  for (int i = threadIdx.x; i < H; i += blockDim.x) y[size_t(blockIdx.x) * H + i] = w[i] * (xr[i] * r);
}

__global__ void rmsnorm_backward_kernel(const float* x, const float* w, const float* rinv, const float* dy, int H,
                                        float* dx) {
  const float *xr = x + size_t(blockIdx.x) * H, *g = dy + size_t(blockIdx.x) * H;
  const double r = rinv[blockIdx.x];
  double dot = 0;
  for (int i = threadIdx.x; i < H; i += blockDim.x) dot += double(w[i]) * g[i] * xr[i];
  const double c = r * r * r * block_sum(dot) / double(H);
  for (int i = threadIdx.x; i < H; i += blockDim.x)
    dx[size_t(blockIdx.x) * H + i] += float(r * double(w[i]) * g[i] - double(xr[i]) * c);
}

// One thread per (row, head, pair): rotate-half RoPE, or its transpose (inverse).
__global__ void rope_kernel(float* x, int T, int stride, int heads, int d, const float* cos_t, const float* sin_t,
                            bool inverse) {
  const int half = d / 2;
  const size_t n = size_t(T) * heads * half;
  for (size_t e = blockIdx.x * size_t(blockDim.x) + threadIdx.x; e < n; e += size_t(gridDim.x) * blockDim.x) {
    const int i = int(e % half), h = int((e / half) % heads), r = int(e / (size_t(half) * heads));
    float* v = x + size_t(r) * stride + size_t(h) * d;
    const float c = cos_t[size_t(r) * half + i], s = inverse ? -sin_t[size_t(r) * half + i] : sin_t[size_t(r) * half + i];
    const float a = v[i], b = v[i + half];
    v[i] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    v[i + half] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
  }
}

__device__ int first_key(int i, int window) { return window > 0 && i - window + 1 > 0 ? i - window + 1 : 0; }

// One warp per (query row i, head h): scores scale·q·k over keys [first_key(i), i], an
// online softmax, out = Σ p v, lse = max + log Σ.
__global__ void attention_forward_kernel(const float* q, const float* k, const float* v, int T, int nh, int nkv, int d,
                                         int window, float* out, float* lse) {
  const int warp = int(blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32), lane = int(threadIdx.x % 32);
  if (warp >= T * nh) return;
  const int i = warp / nh, h = warp % nh, g = h / (nh / nkv);
  const size_t q_ld = size_t(nh) * d, kv_ld = size_t(nkv) * d;
  const float scale = 1.0f / sqrtf(float(d));
  const float* qi = q + size_t(i) * q_ld + size_t(h) * d;
  float acc[kMaxDimsPerLane];
  for (int c = 0; c < kMaxDimsPerLane; ++c) acc[c] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  for (int j = first_key(i, window); j <= i; ++j) {
    const float s = scale * warp_dot(qi, k + size_t(j) * kv_ld + size_t(g) * d, d, lane);
    const float m_new = fmaxf(m, s), old = m == -INFINITY ? 0.0f : expf(m - m_new), p = expf(s - m_new);
    l = l * old + p;
    const float* vj = v + size_t(j) * kv_ld + size_t(g) * d;
    for (int c = 0; c < kMaxDimsPerLane; ++c) {
      const int dim = lane + 32 * c;
      acc[c] = acc[c] * old + (dim < d ? p * vj[dim] : 0.0f);
    }
    m = m_new;
  }
  float* o = out + size_t(i) * q_ld + size_t(h) * d;
  for (int c = 0; c < kMaxDimsPerLane; ++c) {
    const int dim = lane + 32 * c;
    if (dim < d) o[dim] = acc[c] / l;
  }
  if (lane == 0) lse[size_t(h) * T + i] = m + logf(l);
}

// Backward, first half — one warp per (query row i, head h): D_i = dO_i·O_i (kept for the
// second half), and dQ_i += scale Σ_j P_ij (dO_i·V_j − D_i) K_j.
__global__ void attention_backward_dq_kernel(const float* q, const float* k, const float* v, const float* out,
                                             const float* dout, const float* lse, int T, int nh, int nkv, int d,
                                             int window, float* D, float* dq) {
  const int warp = int(blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32), lane = int(threadIdx.x % 32);
  if (warp >= T * nh) return;
  const int i = warp / nh, h = warp % nh, g = h / (nh / nkv);
  const size_t q_ld = size_t(nh) * d, kv_ld = size_t(nkv) * d;
  const float scale = 1.0f / sqrtf(float(d));
  const float *qi = q + size_t(i) * q_ld + size_t(h) * d, *doi = dout + size_t(i) * q_ld + size_t(h) * d;
  double dd = 0;
  for (int dim = lane; dim < d; dim += 32) dd += double(doi[dim]) * out[size_t(i) * q_ld + size_t(h) * d + dim];
  for (int o = 16; o > 0; o /= 2) dd += __shfl_xor_sync(0xffffffffu, dd, o);
  const float Di = float(dd), lse_i = lse[size_t(h) * T + i];
  if (lane == 0) D[size_t(h) * T + i] = Di;
  float acc[kMaxDimsPerLane];
  for (int c = 0; c < kMaxDimsPerLane; ++c) acc[c] = 0.0f;
  for (int j = first_key(i, window); j <= i; ++j) {
    const float* kj = k + size_t(j) * kv_ld + size_t(g) * d;
    const float p = expf(scale * warp_dot(qi, kj, d, lane) - lse_i);
    const float ds = p * (warp_dot(doi, v + size_t(j) * kv_ld + size_t(g) * d, d, lane) - Di);
    for (int c = 0; c < kMaxDimsPerLane; ++c) {
      const int dim = lane + 32 * c;
      if (dim < d) acc[c] += ds * kj[dim];
    }
  }
  float* dqi = dq + size_t(i) * q_ld + size_t(h) * d;
  for (int c = 0; c < kMaxDimsPerLane; ++c) {
    const int dim = lane + 32 * c;
    if (dim < d) dqi[dim] += scale * acc[c];
  }
}

// Backward, second half — one warp per (key row j, KV head g), over the query heads of its
// group and the rows that see it: dV_j += Σ P_ij dO_i, dK_j += scale Σ P_ij (dO_i·V_j − D_i) Q_i.
__global__ void attention_backward_dkv_kernel(const float* q, const float* k, const float* v, const float* dout,
                                              const float* lse, const float* D, int T, int nh, int nkv, int d,
                                              int window, float* dk, float* dv) {
  const int warp = int(blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32), lane = int(threadIdx.x % 32);
  if (warp >= T * nkv) return;
  const int j = warp / nkv, g = warp % nkv, group = nh / nkv;
  const size_t q_ld = size_t(nh) * d, kv_ld = size_t(nkv) * d;
  const float scale = 1.0f / sqrtf(float(d));
  const float *kj = k + size_t(j) * kv_ld + size_t(g) * d, *vj = v + size_t(j) * kv_ld + size_t(g) * d;
  const int last = window > 0 && j + window - 1 < T - 1 ? j + window - 1 : T - 1;
  float ak[kMaxDimsPerLane], av[kMaxDimsPerLane];
  for (int c = 0; c < kMaxDimsPerLane; ++c) ak[c] = av[c] = 0.0f;
  for (int h = g * group; h < (g + 1) * group; ++h)
    for (int i = j; i <= last; ++i) {
      const float *qi = q + size_t(i) * q_ld + size_t(h) * d, *doi = dout + size_t(i) * q_ld + size_t(h) * d;
      const float p = expf(scale * warp_dot(qi, kj, d, lane) - lse[size_t(h) * T + i]);
      const float ds = p * (warp_dot(doi, vj, d, lane) - D[size_t(h) * T + i]);
      for (int c = 0; c < kMaxDimsPerLane; ++c) {
        const int dim = lane + 32 * c;
        if (dim < d) {
          av[c] += p * doi[dim];
          ak[c] += ds * qi[dim];
        }
      }
    }
  float *dkj = dk + size_t(j) * kv_ld + size_t(g) * d, *dvj = dv + size_t(j) * kv_ld + size_t(g) * d;
  for (int c = 0; c < kMaxDimsPerLane; ++c) {
    const int dim = lane + 32 * c;
    if (dim < d) {
      dkj[dim] += scale * ak[c];
      dvj[dim] += av[c];
    }
  }
}

__device__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

__global__ void silu_mul_forward_kernel(const float* g, const float* u, size_t n, float* out) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    out[i] = g[i] * sigmoid(g[i]) * u[i];
}

__global__ void silu_mul_backward_kernel(const float* g, const float* u, const float* dout, size_t n, float* dg,
                                         float* du) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float s = sigmoid(g[i]);
    du[i] += dout[i] * g[i] * s;
    dg[i] += dout[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
  }
}

__global__ void add_kernel(const float* a, const float* b, size_t n, float* out) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    out[i] = a[i] + b[i];
}

__global__ void dropout_kernel(const float* x, size_t n, uint64_t seed, uint32_t threshold, float s, float* out) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    out[i] = train::keep(seed, i, threshold) ? x[i] * s : 0.0f;
}

// dx += dxd · s where kept (all when !drop): the product rounded, then the sum, as the CPU.
__global__ void add_dropped_kernel(const float* dxd, size_t n, uint64_t seed, uint32_t threshold, float s, bool drop,
                                   float* dx) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    if (!drop || train::keep(seed, i, threshold)) dx[i] = __fadd_rn(dx[i], __fmul_rn(dxd[i], s));
}

// One block per logits row: its loss m + log Σ exp(x − m) − x[label] (exponentials in F32,
// summed in double), the row replaced by scale · softmax − scale · onehot(label).
__global__ void cross_entropy_kernel(float* logits, const int32_t* labels, int V, float scale, double* row_loss) {
  float* row = logits + size_t(blockIdx.x) * V;
  const int label = labels[blockIdx.x];
  if (label < 0) {
    for (int j = threadIdx.x; j < V; j += blockDim.x) row[j] = 0.0f;
    if (threadIdx.x == 0) row_loss[blockIdx.x] = 0.0;
    return;
  }
  float m = -INFINITY;
  for (int j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, row[j]);
  m = block_max(m);
  const float label_logit = row[label];
  __syncthreads();  // every thread read the label's logit before it is overwritten
  double s = 0;
  for (int j = threadIdx.x; j < V; j += blockDim.x) {
    row[j] = expf(row[j] - m);
    s += row[j];
  }
  s = block_sum(s);
  const float g = float(double(scale) / s);
  for (int j = threadIdx.x; j < V; j += blockDim.x) row[j] *= g;
  __syncthreads();
  if (threadIdx.x == 0) {
    row[label] -= scale;
    row_loss[blockIdx.x] = double(m) + log(s) - double(label_logit);
  }
}

__global__ void embed_rows_kernel(const float* table, const int32_t* ids, int H, float* out) {
  const float* src = table + size_t(ids[blockIdx.x]) * H;
  for (int i = threadIdx.x; i < H; i += blockDim.x) out[size_t(blockIdx.x) * H + i] = src[i];
}

// One thread per byte of NF4 codes: its two elements (high nibble first) times their
// block's absmax.
__global__ void nf4_dequantize_kernel(const uint8_t* packed, const float* absmax, const float* codes, size_t numel,
                                      float* out) {
  const size_t bytes = (numel + 1) / 2;
  for (size_t b = blockIdx.x * size_t(blockDim.x) + threadIdx.x; b < bytes; b += size_t(gridDim.x) * blockDim.x) {
    const uint8_t v = packed[b];
    const size_t e = 2 * b;
    out[e] = codes[v >> 4] * absmax[e / 64];
    if (e + 1 < numel) out[e + 1] = codes[v & 15] * absmax[(e + 1) / 64];
  }
}

// F16 operands of a tensor-core GEMM: an F32 matrix [rows, cols] (ld apart) rounded to
// nearest, or NF4 codes dequantised (the code times its block's absmax in F32, then rounded).
// `scale`: a power of two (exact) applied before rounding.
// `scale`: device memory (base_gemm's f16_scalars) or null for 1.
__global__ void f32_to_f16_kernel(const float* in, int rows, int cols, int ld, const float* scale, __half* out) {
  const size_t n = size_t(rows) * cols;
  const float s = scale ? *scale : 1.0f;
  for (size_t e = blockIdx.x * size_t(blockDim.x) + threadIdx.x; e < n; e += size_t(gridDim.x) * blockDim.x)
    out[e] = __float2half_rn(in[(e / cols) * ld + e % cols] * s);
}

// One thread: max |A| from max_abs_kernel's partials (a NaN kept) → the power of two that
// brings it to [2^13, 2^14) (1 for zeros, NaN or infinity: those propagate as they are);
// scalars = {scale, alpha / scale, beta}: the F16 rounding's factor and the GEMM's alpha and
// beta, read by the GEMM from device memory so that nothing waits for the host.
__global__ void f16_scalars_kernel(const float* partial, int blocks, float alpha, float beta, float* scalars) {
  float amax = 0.0f;
  for (int b = 0; b < blocks; ++b) amax = (partial[b] > amax || partial[b] != partial[b]) ? partial[b] : amax;
  float scale = 1.0f;
  if (amax > 0.0f && amax <= 3.402823466e38f) {  // finite and positive
    int e = 0;
    frexpf(amax, &e);  // amax = f · 2^e, f in [0.5, 1)
    scale = ldexpf(1.0f, min(max(14 - e, -100), 100));
  }
  scalars[0] = scale;
  scalars[1] = alpha / scale;
  scalars[2] = beta;
}

// max |x| over a [rows, cols] matrix (ld apart) of a grid-stride share per block: the
// block's in partial[blockIdx.x] (NaN kept: fmaxf would drop it, and a NaN must show).
__global__ void max_abs_kernel(const float* in, int rows, int cols, int ld, float* partial) {
  __shared__ float warp_max[kThreads / 32];
  const size_t n = size_t(rows) * cols;
  float m = 0.0f;
  for (size_t e = blockIdx.x * size_t(blockDim.x) + threadIdx.x; e < n; e += size_t(gridDim.x) * blockDim.x) {
    const float a = fabsf(in[(e / cols) * ld + e % cols]);
    m = (a > m || a != a) ? a : m;
  }
  for (int o = 16; o > 0; o /= 2) {
    const float other = __shfl_xor_sync(0xffffffffu, m, o);
    m = (other > m || other != other) ? other : m;
  }
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < int(blockDim.x / 32); ++w) m = (warp_max[w] > m || warp_max[w] != warp_max[w]) ? warp_max[w] : m;
    partial[blockIdx.x] = m;
  }
}

__global__ void nf4_to_f16_kernel(const uint8_t* packed, const float* absmax, const float* codes, size_t numel,
                                  __half* out) {
  const size_t bytes = (numel + 1) / 2;
  for (size_t b = blockIdx.x * size_t(blockDim.x) + threadIdx.x; b < bytes; b += size_t(gridDim.x) * blockDim.x) {
    const uint8_t v = packed[b];
    const size_t e = 2 * b;
    out[e] = __float2half_rn(codes[v >> 4] * absmax[e / 64]);
    if (e + 1 < numel) out[e + 1] = __float2half_rn(codes[v & 15] * absmax[(e + 1) / 64]);
  }
}

__global__ void f16_to_f32_kernel(const __half* in, size_t n, float* out) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    out[i] = __half2float(in[i]);
}

// Σ x² of a grid-stride share per block (squares exact in double, summed in double): the
// block's partial in partial[blockIdx.x]; the host adds the partials in block order.
__global__ void sum_squares_kernel(const float* x, size_t n, double* partial) {
  double s = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    s += double(x[i]) * double(x[i]);
  s = block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void scale_kernel(float* x, size_t n, float s) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    x[i] = __fmul_rn(x[i], s);
}

// optimizer.cpp's adamw_update, each product and sum rounded on its own (never an FMA) and
// the division and square root correctly rounded, so the result is the CPU's bit for bit.
__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, size_t n, train::AdamWScalars s) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float gi = g[i];
    const float mi = __fadd_rn(__fmul_rn(m[i], s.beta1), __fmul_rn(s.one_minus_beta1, gi));
    const float vi = __fadd_rn(__fmul_rn(v[i], s.beta2), __fmul_rn(s.one_minus_beta2, __fmul_rn(gi, gi)));
    float pi = __fadd_rn(p[i], __fmul_rn(s.step_size, __fdiv_rn(mi, __fadd_rn(__fsqrt_rn(vi), s.eps_scaled))));
    if (s.decay != 1.0f) pi = __fmul_rn(pi, s.decay);
    m[i] = mi;
    v[i] = vi;
    p[i] = pi;
  }
}

void check_dims(int d, const char* what) {
  if (d <= 0 || d > 32 * kMaxDimsPerLane)
    throw Error(std::string("cuda training ") + what + ": heads of " + std::to_string(d) + " dims (at most 256)");
}

}  // namespace

void train_gemm(cublasHandle_t blas, bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  if (M == 0 || N == 0) return;
  // Row-major C = op(A) op(B) is column-major Cᵀ = op(B)ᵀ op(A)ᵀ: B's and A's buffers read
  // column-major are Bᵀ and Aᵀ, so each keeps its own transpose flag.
  check_cublas(cublas().gemm_ex(blas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K,
                                &alpha, B, CUDA_R_32F, ldb, A, CUDA_R_32F, lda, &beta, C, CUDA_R_32F, ldc,
                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx (training, F32)");
}

void train_gemm_f16(cublasHandle_t blas, bool trans_a, bool trans_b, int M, int N, int K, const float* alpha_beta,
                    const void* A, int lda, const void* B, int ldb, float* C, int ldc) {
  if (M == 0 || N == 0) return;
  // alpha and beta from device memory for this call, then the handle back to host scalars
  // (every other call passes host pointers).
  check_cublas(cublas().set_pointer_mode(blas, CUBLAS_POINTER_MODE_DEVICE), "cublasSetPointerMode (device)");
  const cublasStatus_t status =
      cublas().gemm_ex(blas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K,
                       alpha_beta, B, CUDA_R_16F, ldb, A, CUDA_R_16F, lda, alpha_beta + 1, C, CUDA_R_32F, ldc,
                       CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  check_cublas(cublas().set_pointer_mode(blas, CUBLAS_POINTER_MODE_HOST), "cublasSetPointerMode (host)");
  check_cublas(status, "cublasGemmEx (training, F16 inputs, F32 accumulation, scalars on the device)");
}

void train_rmsnorm_forward(const float* x, const float* w, int T, int H, float eps, float* y, float* rinv, cudaStream_t s) {
  if (T == 0) return;
  launch("rmsnorm_forward_kernel", rmsnorm_forward_kernel, unsigned(T), kThreads, s, x, w, H, eps, y, rinv);
}

void train_rmsnorm_backward(const float* x, const float* w, const float* rinv, const float* dy, int T, int H, float* dx,
                            cudaStream_t s) {
  if (T == 0) return;
  launch("rmsnorm_backward_kernel", rmsnorm_backward_kernel, unsigned(T), kThreads, s, x, w, rinv, dy, H, dx);
}

void train_rope(float* x, int T, int stride, int heads, int d, const float* cos_t, const float* sin_t, bool inverse,
                cudaStream_t s) {
  const size_t n = size_t(T) * heads * (d / 2);
  if (n == 0) return;
  launch("rope_kernel", rope_kernel, blocks_for(n, kThreads), kThreads, s, x, T, stride, heads, d, cos_t, sin_t, inverse);
}

void train_attention_forward(const float* q, const float* k, const float* v, int T, int nh, int nkv, int d, int window,
                             float* out, float* lse, cudaStream_t s) {
  check_dims(d, "attention");
  if (T == 0) return;
  constexpr int kWarps = 4;
  launch("attention_forward_kernel", attention_forward_kernel, unsigned((size_t(T) * nh + kWarps - 1) / kWarps),
         32 * kWarps, s, q, k, v, T, nh, nkv, d, window, out, lse);
}

void train_attention_backward(const float* q, const float* k, const float* v, const float* out, const float* dout,
                              const float* lse, int T, int nh, int nkv, int d, int window, float* D, float* dq,
                              float* dk, float* dv, cudaStream_t s) {
  check_dims(d, "attention backward");
  if (T == 0) return;
  constexpr int kWarps = 4;
  launch("attention_backward_dq_kernel", attention_backward_dq_kernel,
         unsigned((size_t(T) * nh + kWarps - 1) / kWarps), 32 * kWarps, s, q, k, v, out, dout, lse, T, nh, nkv, d,
         window, D, dq);
  launch("attention_backward_dkv_kernel", attention_backward_dkv_kernel,
         unsigned((size_t(T) * nkv + kWarps - 1) / kWarps), 32 * kWarps, s, q, k, v, dout, lse, D, T, nh, nkv, d,
         window, dk, dv);
}

void train_silu_mul_forward(const float* g, const float* u, size_t n, float* out, cudaStream_t s) {
  if (n) launch("silu_mul_forward_kernel", silu_mul_forward_kernel, blocks_for(n, kThreads), kThreads, s, g, u, n, out);
}

void train_silu_mul_backward(const float* g, const float* u, const float* dout, size_t n, float* dg, float* du,
                             cudaStream_t s) {
  if (n)
    launch("silu_mul_backward_kernel", silu_mul_backward_kernel, blocks_for(n, kThreads), kThreads, s, g, u, dout, n, dg,
           du);
}

void train_add(const float* a, const float* b, size_t n, float* out, cudaStream_t s) {
  if (n) launch("add_kernel", add_kernel, blocks_for(n, kThreads), kThreads, s, a, b, n, out);
}

void train_dropout(const float* x, size_t n, uint64_t seed, uint32_t threshold, float scale, float* out,
                   cudaStream_t s) {
  if (n) launch("dropout_kernel", dropout_kernel, blocks_for(n, kThreads), kThreads, s, x, n, seed, threshold, scale, out);
}

void train_add_dropped(const float* dxd, size_t n, uint64_t seed, uint32_t threshold, float scale, bool drop, float* dx,
                       cudaStream_t s) {
  if (n)
    launch("add_dropped_kernel", add_dropped_kernel, blocks_for(n, kThreads), kThreads, s, dxd, n, seed, threshold, scale,
           drop, dx);
}

void train_cross_entropy(float* logits, const int32_t* labels, int rows, int V, float scale, double* row_loss,
                         cudaStream_t s) {
  if (rows) launch("cross_entropy_kernel", cross_entropy_kernel, unsigned(rows), kThreads, s, logits, labels, V, scale, row_loss);
}

void train_embed_rows(const float* table, const int32_t* ids, int T, int H, float* out, cudaStream_t s) {
  if (T) launch("embed_rows_kernel", embed_rows_kernel, unsigned(T), kThreads, s, table, ids, H, out);
}

void train_nf4_dequantize(const uint8_t* packed, const float* absmax, const float* codes, size_t numel, float* out,
                          cudaStream_t s) {
  if (numel)
    launch("nf4_dequantize_kernel", nf4_dequantize_kernel, blocks_for((numel + 1) / 2, kThreads), kThreads, s, packed,
           absmax, codes, numel, out);
}

int train_max_abs(const float* in, int rows, int cols, int ld, float* partial, int max_blocks, cudaStream_t s) {
  const size_t n = size_t(rows) * cols;
  const int blocks = int(std::min<size_t>(size_t(max_blocks), std::max<size_t>(1, blocks_for(n, kThreads))));
  launch("max_abs_kernel", max_abs_kernel, unsigned(blocks), kThreads, s, in, rows, cols, ld, partial);
  return blocks;
}

void train_f16_scalars(const float* partial, int blocks, float alpha, float beta, float* scalars, cudaStream_t s) {
  launch("f16_scalars_kernel", f16_scalars_kernel, 1, 32, s, partial, blocks, alpha, beta, scalars);
}

void train_f32_to_f16(const float* in, int rows, int cols, int ld, uint16_t* out, cudaStream_t s, const float* scale) {
  const size_t n = size_t(rows) * cols;
  if (n)
    launch("f32_to_f16_kernel", f32_to_f16_kernel, blocks_for(n, kThreads), kThreads, s, in, rows, cols, ld, scale,
           reinterpret_cast<__half*>(out));
}

void train_nf4_to_f16(const uint8_t* packed, const float* absmax, const float* codes, size_t numel, uint16_t* out,
                      cudaStream_t s) {
  if (numel)
    launch("nf4_to_f16_kernel", nf4_to_f16_kernel, blocks_for((numel + 1) / 2, kThreads), kThreads, s, packed, absmax,
           codes, numel, reinterpret_cast<__half*>(out));
}

int train_sum_squares(const float* x, size_t n, double* partial, int max_blocks, cudaStream_t s) {
  const int blocks = int(std::min<size_t>(size_t(max_blocks), std::max<size_t>(1, blocks_for(n, kThreads))));
  launch("sum_squares_kernel", sum_squares_kernel, unsigned(blocks), kThreads, s, x, n, partial);
  return blocks;
}

void train_scale(float* x, size_t n, float scale, cudaStream_t s) {
  if (n) launch("scale_kernel", scale_kernel, blocks_for(n, kThreads), kThreads, s, x, n, scale);
}

void train_adamw(float* p, const float* g, float* m, float* v, size_t n, const train::AdamWScalars& scalars,
                 cudaStream_t s) {
  if (n) launch("adamw_kernel", adamw_kernel, blocks_for(n, kThreads), kThreads, s, p, g, m, v, n, scalars);
}

void train_f16_to_f32(const uint16_t* in, size_t n, float* out, cudaStream_t s) {
  if (n)
    launch("f16_to_f32_kernel", f16_to_f32_kernel, blocks_for(n, kThreads), kThreads, s,
           reinterpret_cast<const __half*>(in), n, out);
}

}  // namespace pivotmt::cuda::kernels
