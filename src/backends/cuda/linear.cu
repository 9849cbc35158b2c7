// Linear layers: y = x Wᵀ with F16 x and W, F32 sums. Many rows go through cuBLAS:
// row-major y = x Wᵀ is column-major yᵀ = W xᵀ, the "TN" call with m = out, n = rows,
// k = in, lda = in (W read as its transpose), ldb = ldx, ldc = ldy (a fused output's row
// stride). A decode step's few rows go through rows_gemv_kernel below instead.
#include <cublas_v2.h>
#include <cuda_fp16.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "backends/cuda/cublas_loader.h"
#include "backends/cuda/cuda_util.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"

namespace pivotmt::cuda::kernels {
namespace {

constexpr int kGemvWarps = 8;  // warps per block
// Warps a launch aims at: the output features are split into that many runs of consecutive
// features, one per warp (a 32k-word output layer: 8 features a warp; a 4096-wide
// projection: 1). 4096 warps are 31 per SM of an H100, each with four 16-byte loads a lane
// in flight: ~62 KB per SM, where streaming at 3.35 TB/s with ~0.7 µs of latency needs ~18.
constexpr int kGemvTargetWarps = 4096;

// One output feature for the R rows: the warp streams the feature's weight row (see
// rows_gemv_kernel).
template <int R>
__device__ void gemv_feature(const __half* x, int ldx, const __half* row, int in, int lane, int feature, void* y,
                             int ldy, bool y_f32) {
  float acc[R];
  for (int r = 0; r < R; ++r) acc[r] = 0.0f;
  // Unrolled so that several 16-byte weight loads are in flight per lane before their sums
  // are needed (the loop is a stream of independent loads: latency, not arithmetic).
#pragma unroll 4
  for (int k = 8 * lane; k < in; k += 256) {
    const uint4 wraw = *reinterpret_cast<const uint4*>(row + k);
    __half wh[8];
    memcpy(wh, &wraw, sizeof(wraw));  // read as the halves they are (no type punning)
    float wf[8];
    for (int j = 0; j < 8; ++j) wf[j] = __half2float(wh[j]);
    for (int r = 0; r < R; ++r) {
      const uint4 xraw = *reinterpret_cast<const uint4*>(x + size_t(r) * ldx + k);
      __half xh[8];
      memcpy(xh, &xraw, sizeof(xraw));
      float piece = 0.0f;
      for (int j = 0; j < 8; ++j) piece = fmaf(wf[j], __half2float(xh[j]), piece);
      acc[r] += piece;
    }
  }
  for (int r = 0; r < R; ++r)
    for (int o = 16; o > 0; o /= 2) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], o);
  if (lane != 0) return;
  for (int r = 0; r < R; ++r) {
    if (y_f32) static_cast<float*>(y)[size_t(r) * ldy + feature] = acc[r];
    else static_cast<__half*>(y)[size_t(r) * ldy + feature] = __float2half_rn(acc[r]);
  }
}

// y[r, o] = Σ_k x[r, k] · W[o, k] for R ≤ kGemvMaxRows rows: memory-bound (every weight is
// read once and used R times), so each warp streams one weight row with 16-byte loads — 8
// halves a lane, 256 a warp — against the R rows of x (small, served from the caches), sums
// in F32 (fmaf per product, each 8-product piece added to its lane's sum), the lanes' sums
// added by a butterfly of shuffles, and one F32 → output rounding (cuBLAS's arithmetic, the
// sum's order aside). Written so that batch-1 decode — this product over all the weights —
// has a kernel built to stream at the copy ceiling; whether it beats cuBLAS's few-column
// kernels is measured, not assumed (ops_harness --perf prints both; PIVOTMT_CUDA_GEMV=0).
template <int R>
__global__ void rows_gemv_kernel(const __half* x, int ldx, const __half* w, int out, int in, void* y, int ldy,
                                 bool y_f32, int features_per_warp) {
  const int warp = int(blockIdx.x) * kGemvWarps + int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int first = warp * features_per_warp, end = out < first + features_per_warp ? out : first + features_per_warp;
  for (int feature = first; feature < end; ++feature) {  // whole warps run the same features
    gemv_feature<R>(x, ldx, w + size_t(feature) * in, in, lane, feature, y, ldy, y_f32);
  }
}

template <int R>
void launch_gemv(const void* x, int ldx, const void* w, int out, int in, void* y, int ldy, bool y_f32, cudaStream_t s) {
  const int features_per_warp = (out + kGemvTargetWarps - 1) / kGemvTargetWarps;
  const int warps = (out + features_per_warp - 1) / features_per_warp;
  launch("rows_gemv_kernel", rows_gemv_kernel<R>, unsigned((warps + kGemvWarps - 1) / kGemvWarps), 32 * kGemvWarps, s,
         static_cast<const __half*>(x), ldx, static_cast<const __half*>(w), out, in, y, ldy, y_f32, features_per_warp);
}

// PIVOTMT_CUDA_GEMV=0 sends every product to cuBLAS (a measurement's other side, or a way
// round the kernel should a device run it slower).
std::atomic<bool>& gemv_switch() {
  static std::atomic<bool> on{[] {
    const char* v = std::getenv("PIVOTMT_CUDA_GEMV");
    return !v || std::string_view(v) != "0";
  }()};
  return on;
}

}  // namespace

void set_gemv_enabled(bool on) { gemv_switch() = on; }
bool gemv_enabled() { return gemv_switch(); }

bool gemv_supported(const void* x, int ldx, int rows, const void* w, int in) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return rows >= 1 && rows <= kGemvMaxRows && in % 8 == 0 && (rows == 1 || ldx % 8 == 0) && aligned(x) && aligned(w);
}

void linear(cublasHandle_t blas, cudaStream_t s, const void* x, int ldx, int rows, const void* w, int out, int in,
            void* y, int ldy, bool y_f32) {
  if (rows == 0) return;
  if (gemv_enabled() && gemv_supported(x, ldx, rows, w, in)) {
    switch (rows) {
      case 1: return launch_gemv<1>(x, ldx, w, out, in, y, ldy, y_f32, s);
      case 2: return launch_gemv<2>(x, ldx, w, out, in, y, ldy, y_f32, s);
      case 3: return launch_gemv<3>(x, ldx, w, out, in, y, ldy, y_f32, s);
      case 4: return launch_gemv<4>(x, ldx, w, out, in, y, ldy, y_f32, s);
      case 5: return launch_gemv<5>(x, ldx, w, out, in, y, ldy, y_f32, s);
      case 6: return launch_gemv<6>(x, ldx, w, out, in, y, ldy, y_f32, s);
      case 7: return launch_gemv<7>(x, ldx, w, out, in, y, ldy, y_f32, s);
      default: return launch_gemv<8>(x, ldx, w, out, in, y, ldy, y_f32, s);
    }
  }
  const float alpha = 1.0f, beta = 0.0f;
  check_cublas(cublas().gemm_ex(blas, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &alpha, w, CUDA_R_16F, in, x, CUDA_R_16F,
                            ldx, &beta, y, y_f32 ? CUDA_R_32F : CUDA_R_16F, ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx (linear)");
}

}  // namespace pivotmt::cuda::kernels
