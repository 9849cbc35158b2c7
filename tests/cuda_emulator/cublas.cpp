// The CUDA emulator's cuBLAS: the entry points cublas_loader.h names, GemmEx on the CPU
// over the emulated device memory (runtime.cpp), F16 or F32 inputs with F32 sums; a GEMM
// issued to a capturing stream is recorded into its graph with the alpha and beta it saw.
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>
#include <vector>

#include <fmt/format.h>

#include "backends/cuda/cublas_loader.h"
#include "cuda_emulator/device_access.h"

struct cublasContext {
  cudaStream_t stream = nullptr;
};

// --- cuBLAS: the entry points cublas_loader.h names, with GemmEx on the CPU.
namespace pivotmt::cuda {
namespace {

thread_local std::string blas_detail;

cublasStatus_t blas_fail(cublasStatus_t s, std::string detail) {
  blas_detail = std::move(detail);
  return s;
}

cublasStatus_t create(cublasHandle_t* handle) {
  *handle = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t destroy(cublasHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t set_stream(cublasHandle_t handle, cudaStream_t stream) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t set_workspace(cublasHandle_t handle, void* workspace, size_t bytes) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (bytes && !emu::device_range(workspace, bytes))
    return blas_fail(CUBLAS_STATUS_INVALID_VALUE, "workspace is not device memory");
  return CUBLAS_STATUS_SUCCESS;
}

// op(X) as a dense row-major float matrix [rows, depth]: row r = element (r, l) of op(X).
std::vector<float> materialise(const void* x, bool f32, int ld, bool transposed, int rows, int depth) {
  const auto* h = static_cast<const __half*>(x);
  const auto* f = static_cast<const float*>(x);
  std::vector<float> out(size_t(rows) * size_t(depth));
  for (int r = 0; r < rows; ++r)
    for (int l = 0; l < depth; ++l) {
      const size_t at = transposed ? size_t(r) * ld + l : size_t(l) * ld + r;
      out[size_t(r) * depth + l] = f32 ? f[at] : __half2float(h[at]);
    }
  return out;
}

void gemm_run(bool ta, bool tb, int m, int n, int k, float a, const void* A, int lda, const void* B, int ldb, float b,
              void* C, cudaDataType Ctype, int ldc, bool f32_inputs);

// C = alpha op(A) op(B) + beta C, column-major, F16 inputs, F32 accumulation, F16 or F32 C.
cublasStatus_t gemm_ex(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
                       const void* alpha, const void* A, cudaDataType Atype, int lda, const void* B,
                       cudaDataType Btype, int ldb, const void* beta, void* C, cudaDataType Ctype, int ldc,
                       cublasComputeType_t compute, cublasGemmAlgo_t) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  // F16 A and B (F16 or F32 C), or F32 throughout: the combinations cuBLAS takes with compute
  // type 32F that the backend uses.
  const bool f32_inputs = Atype == CUDA_R_32F && Btype == CUDA_R_32F && Ctype == CUDA_R_32F;
  if (!(f32_inputs || (Atype == CUDA_R_16F && Btype == CUDA_R_16F && (Ctype == CUDA_R_16F || Ctype == CUDA_R_32F))) ||
      compute != CUBLAS_COMPUTE_32F)
    return blas_fail(CUBLAS_STATUS_NOT_SUPPORTED,
                     "the emulator's GemmEx takes F16 A and B with F16 or F32 C, or F32 A, B and C; compute 32F");
  const size_t in_elem = f32_inputs ? 4 : 2;
  const bool ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N;
  if (m < 0 || n < 0 || k < 0 || lda < std::max(1, ta ? k : m) || ldb < std::max(1, tb ? n : k) || ldc < std::max(1, m))
    return blas_fail(CUBLAS_STATUS_INVALID_VALUE, fmt::format("m={} n={} k={} lda={} ldb={} ldc={}", m, n, k, lda, ldb, ldc));
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  // The matrices' spans (column-major: the last column's start plus its length).
  const size_t a_span = (size_t(ta ? m : k) - 1) * lda + size_t(ta ? k : m);
  const size_t b_span = (size_t(tb ? k : n) - 1) * ldb + size_t(tb ? n : k);
  const size_t c_span = (size_t(n) - 1) * ldc + size_t(m), c_elem = Ctype == CUDA_R_32F ? 4 : 2;
  if ((k > 0 && (!emu::device_range(A, a_span * in_elem) || !emu::device_range(B, b_span * in_elem))) ||
      !emu::device_range(C, c_span * c_elem))
    return blas_fail(CUBLAS_STATUS_EXECUTION_FAILED, "A, B or C is not wholly inside one device allocation");
  // alpha and beta are host pointers: read now (a captured GEMM keeps the values it saw).
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
  const auto run = [=] { gemm_run(ta, tb, m, n, k, a, A, lda, B, ldb, b, C, Ctype, ldc, f32_inputs); };
  if (!emu::capture(handle->stream, run)) run();
  return CUBLAS_STATUS_SUCCESS;
}

void gemm_run(bool ta, bool tb, int m, int n, int k, float a, const void* A, int lda, const void* B, int ldb, float b,
              void* C, cudaDataType Ctype, int ldc, bool f32_inputs) {
  emu::DeviceAccess access;
  // Column-major op(A)[i, l] is A[i + l lda] (N) or A[l + i lda] (T): "transposed" in
  // materialise's row-major terms is the N case for A's rows i.
  const std::vector<float> rows_a = materialise(A, f32_inputs, lda, ta, m, k);   // [m, k]
  const std::vector<float> cols_b = materialise(B, f32_inputs, ldb, !tb, n, k);  // [n, k]: column j of op(B)
  for (int j = 0; j < n; ++j) {
    for (int i = 0; i < m; ++i) {
      const float* x = rows_a.data() + size_t(i) * k;
      const float* y = cols_b.data() + size_t(j) * k;
      float acc = 0.0f;
      for (int l = 0; l < k; ++l) acc += x[l] * y[l];
      const size_t at = size_t(j) * ldc + i;
      if (Ctype == CUDA_R_32F) {
        float* c = static_cast<float*>(C) + at;
        *c = a * acc + (b != 0.0f ? b * *c : 0.0f);
      } else {
        __half* c = static_cast<__half*>(C) + at;
        *c = __float2half_rn(a * acc + (b != 0.0f ? b * __half2float(*c) : 0.0f));
      }
    }
  }
}

const char* status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    default: return "CUBLAS_STATUS_UNKNOWN";
  }
}
const char* status_string(cublasStatus_t) { return blas_detail.empty() ? "emulated cuBLAS" : blas_detail.c_str(); }

}  // namespace

const Cublas& cublas() {
  static const Cublas c{create,      destroy,       set_stream,
                        set_workspace, gemm_ex, status_name,
                        status_string, "pivotmt CUDA emulator (GemmEx on the CPU)"};
  return c;
}

}  // namespace pivotmt::cuda
