// Linear layers through cuBLAS. Row-major y = x Wᵀ is column-major yᵀ = W xᵀ: the "TN"
// call with m = out, n = rows, k = in, lda = in (W read as its transpose), ldb = ldx,
// ldc = ldy (a fused output's row stride).
#include <cublas_v2.h>

#include "backends/cuda/cublas_loader.h"
#include "backends/cuda/cuda_util.h"
#include "backends/cuda/kernels.h"

namespace pivotmt::cuda::kernels {

void linear(cublasHandle_t blas, const void* x, int ldx, int rows, const void* w, int out, int in, void* y, int ldy,
            bool y_f32) {
  if (rows == 0) return;
  const float alpha = 1.0f, beta = 0.0f;
  check_cublas(cublas().gemm_ex(blas, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &alpha, w, CUDA_R_16F, in, x, CUDA_R_16F,
                            ldx, &beta, y, y_f32 ? CUDA_R_32F : CUDA_R_16F, ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx (linear)");
}

}  // namespace pivotmt::cuda::kernels
