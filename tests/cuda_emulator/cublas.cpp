// The CUDA emulator's cuBLAS: the entry points cublas_loader.h names, GemmEx and its strided
// batched form on the CPU over the emulated device memory (runtime.cpp), F16 or F32 inputs
// (F32 optionally read as TF32, as the tensor cores do) with F32 sums; a GEMM
// issued to a capturing stream is recorded into its graph with the alpha and beta it saw.
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "backends/cuda/cublas_loader.h"
#include "cuda_emulator/device_access.h"

struct cublasContext {
  cudaStream_t stream = nullptr;
  cublasPointerMode_t pointer_mode = CUBLAS_POINTER_MODE_HOST;
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
cublasStatus_t set_pointer_mode(cublasHandle_t handle, cublasPointerMode_t mode) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (mode != CUBLAS_POINTER_MODE_HOST && mode != CUBLAS_POINTER_MODE_DEVICE)
    return blas_fail(CUBLAS_STATUS_INVALID_VALUE, "pointer mode");
  handle->pointer_mode = mode;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t set_workspace(cublasHandle_t handle, void* workspace, size_t bytes) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (bytes && !emu::device_range(workspace, bytes))
    return blas_fail(CUBLAS_STATUS_INVALID_VALUE, "workspace is not device memory");
  return CUBLAS_STATUS_SUCCESS;
}

// The value the tensor cores read of an F32 input under compute type 32F_FAST_TF32: "only
// the first 10 bits of the input mantissa are read" (PyTorch's notes on TF32) — the low 13
// bits dropped, not rounded. Infinities and NaNs keep their class.
float tf32_read(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u &= ~0x1fffu;
  std::memcpy(&x, &u, 4);
  return x;
}

// op(X) as a dense row-major float matrix [rows, depth]: row r = element (r, l) of op(X).
std::vector<float> materialise(const void* x, bool f32, bool tf32, int ld, bool transposed, int rows, int depth) {
  const auto* h = static_cast<const __half*>(x);
  const auto* f = static_cast<const float*>(x);
  std::vector<float> out(size_t(rows) * size_t(depth));
  for (int r = 0; r < rows; ++r)
    for (int l = 0; l < depth; ++l) {
      const size_t at = transposed ? size_t(r) * ld + l : size_t(l) * ld + r;
      const float v = f32 ? f[at] : __half2float(h[at]);
      out[size_t(r) * depth + l] = tf32 ? tf32_read(v) : v;
    }
  return out;
}

struct GemmArgs {
  bool ta = false, tb = false;
  int m = 0, n = 0, k = 0;
  float alpha = 0, beta = 0;
  const void* A = nullptr;
  const void* B = nullptr;
  void* C = nullptr;
  int lda = 0, ldb = 0, ldc = 0;
  long long stride_a = 0, stride_b = 0, stride_c = 0;  // elements between batch items
  int batch = 1;
  cudaDataType c_type = CUDA_R_32F;
  bool f32_inputs = true, tf32 = false;
};

void gemm_run(const GemmArgs& g);

// C_b = alpha op(A_b) op(B_b) + beta C_b for each batch item b (X_b = X + b · stride_x),
// column-major, with cuBLAS's checks: F16 A and B with F16 or F32 C and compute 32F, or F32
// throughout with compute 32F or 32F_FAST_TF32 — the combinations the backends use.
cublasStatus_t gemm_batched(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void* alpha, const void* A, cudaDataType Atype, int lda, long long stride_a,
                            const void* B, cudaDataType Btype, int ldb, long long stride_b, const void* beta, void* C,
                            cudaDataType Ctype, int ldc, long long stride_c, int batch, cublasComputeType_t compute) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  const bool f32_inputs = Atype == CUDA_R_32F && Btype == CUDA_R_32F && Ctype == CUDA_R_32F;
  const bool f16_inputs = Atype == CUDA_R_16F && Btype == CUDA_R_16F && (Ctype == CUDA_R_16F || Ctype == CUDA_R_32F);
  if (!((f32_inputs && (compute == CUBLAS_COMPUTE_32F || compute == CUBLAS_COMPUTE_32F_FAST_TF32)) ||
        (f16_inputs && compute == CUBLAS_COMPUTE_32F)))
    return blas_fail(CUBLAS_STATUS_NOT_SUPPORTED,
                     "the emulator's GEMMs take F16 A and B with F16 or F32 C (compute 32F), or F32 A, B and C "
                     "(compute 32F or 32F_FAST_TF32)");
  const size_t in_elem = f32_inputs ? 4 : 2;
  const bool ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N;
  if (m < 0 || n < 0 || k < 0 || batch < 0 || lda < std::max(1, ta ? k : m) || ldb < std::max(1, tb ? n : k) ||
      ldc < std::max(1, m) || stride_a < 0 || stride_b < 0 || stride_c < 0)
    return blas_fail(CUBLAS_STATUS_INVALID_VALUE, fmt::format("m={} n={} k={} lda={} ldb={} ldc={} batch={} strides {} {} {}",
                                                              m, n, k, lda, ldb, ldc, batch, stride_a, stride_b, stride_c));
  if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;
  // The matrices' spans (column-major: the last column's start plus its length), the last
  // batch item's end included.
  const size_t a_span = (size_t(ta ? m : k) - 1) * lda + size_t(ta ? k : m) + size_t(batch - 1) * size_t(stride_a);
  const size_t b_span = (size_t(tb ? k : n) - 1) * ldb + size_t(tb ? n : k) + size_t(batch - 1) * size_t(stride_b);
  const size_t c_span = (size_t(n) - 1) * ldc + size_t(m) + size_t(batch - 1) * size_t(stride_c);
  const size_t c_elem = Ctype == CUDA_R_32F ? 4 : 2;
  if ((k > 0 && (!emu::device_range(A, a_span * in_elem) || !emu::device_range(B, b_span * in_elem))) ||
      !emu::device_range(C, c_span * c_elem))
    return blas_fail(CUBLAS_STATUS_EXECUTION_FAILED, "A, B or C is not wholly inside one device allocation");
  // Batch items writing the same C elements race on a GPU: refused. Disjoint are items one
  // after another (stride ≥ one item's span) or side by side within the leading dimension
  // (stride ≥ m, the last item's rows ending within ldc: heads' columns of one matrix).
  const size_t item_span = (size_t(n) - 1) * ldc + size_t(m);
  const bool stacked = size_t(stride_c) >= item_span;
  const bool side_by_side = size_t(stride_c) >= size_t(m) && size_t(batch - 1) * size_t(stride_c) + m <= size_t(ldc);
  if (batch > 1 && !stacked && !side_by_side)
    return blas_fail(CUBLAS_STATUS_INVALID_VALUE,
                     fmt::format("batch items of C may overlap (stride {}, m {}, ldc {}, span {})", stride_c, m, ldc,
                                 item_span));
  GemmArgs g;
  g.ta = ta, g.tb = tb, g.m = m, g.n = n, g.k = k, g.A = A, g.B = B, g.C = C, g.lda = lda, g.ldb = ldb, g.ldc = ldc;
  g.stride_a = stride_a, g.stride_b = stride_b, g.stride_c = stride_c, g.batch = batch, g.c_type = Ctype;
  g.f32_inputs = f32_inputs, g.tf32 = compute == CUBLAS_COMPUTE_32F_FAST_TF32;
  // Host pointer mode: alpha and beta read now (a captured GEMM keeps the values it saw).
  // Device pointer mode: read from device memory when the GEMM runs (a graph's replay reads
  // what is there then), as cuBLAS does.
  const bool device_scalars = handle->pointer_mode == CUBLAS_POINTER_MODE_DEVICE;
  if (device_scalars) {
    if (!emu::device_range(alpha, sizeof(float)) || !emu::device_range(beta, sizeof(float)))
      return blas_fail(CUBLAS_STATUS_INVALID_VALUE, "device pointer mode: alpha or beta is not device memory");
  } else {
    if (emu::device_range(alpha, sizeof(float)) || emu::device_range(beta, sizeof(float)))
      return blas_fail(CUBLAS_STATUS_INVALID_VALUE, "host pointer mode: alpha or beta is device memory");
    g.alpha = *static_cast<const float*>(alpha), g.beta = *static_cast<const float*>(beta);
  }
  const auto* alpha_dev = static_cast<const float*>(alpha);
  const auto* beta_dev = static_cast<const float*>(beta);
  const auto run = [g, device_scalars, alpha_dev, beta_dev] {
    GemmArgs now = g;
    if (device_scalars) {
      emu::DeviceAccess access;
      now.alpha = *alpha_dev, now.beta = *beta_dev;
    }
    gemm_run(now);
  };
  if (!emu::capture(handle->stream, run)) run();
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t gemm_ex(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
                       const void* alpha, const void* A, cudaDataType Atype, int lda, const void* B,
                       cudaDataType Btype, int ldb, const void* beta, void* C, cudaDataType Ctype, int ldc,
                       cublasComputeType_t compute, cublasGemmAlgo_t) {
  return gemm_batched(handle, transa, transb, m, n, k, alpha, A, Atype, lda, 0, B, Btype, ldb, 0, beta, C, Ctype, ldc, 0,
                      1, compute);
}

cublasStatus_t gemm_strided_batched_ex(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                                       int n, int k, const void* alpha, const void* A, cudaDataType Atype, int lda,
                                       long long stride_a, const void* B, cudaDataType Btype, int ldb,
                                       long long stride_b, const void* beta, void* C, cudaDataType Ctype, int ldc,
                                       long long stride_c, int batch, cublasComputeType_t compute, cublasGemmAlgo_t) {
  return gemm_batched(handle, transa, transb, m, n, k, alpha, A, Atype, lda, stride_a, B, Btype, ldb, stride_b, beta, C,
                      Ctype, ldc, stride_c, batch, compute);
}

void gemm_run(const GemmArgs& g) {
  emu::DeviceAccess access;
  const size_t in_elem = g.f32_inputs ? 4 : 2, c_elem = g.c_type == CUDA_R_32F ? 4 : 2;
  for (int b = 0; b < g.batch; ++b) {
    const auto* A = static_cast<const char*>(g.A) + size_t(b) * size_t(g.stride_a) * in_elem;
    const auto* B = static_cast<const char*>(g.B) + size_t(b) * size_t(g.stride_b) * in_elem;
    char* C = static_cast<char*>(g.C) + size_t(b) * size_t(g.stride_c) * c_elem;
    // Column-major op(A)[i, l] is A[i + l lda] (N) or A[l + i lda] (T): "transposed" in
    // materialise's row-major terms is the N case for A's rows i.
    const std::vector<float> rows_a = materialise(A, g.f32_inputs, g.tf32, g.lda, g.ta, g.m, g.k);   // [m, k]
    const std::vector<float> cols_b = materialise(B, g.f32_inputs, g.tf32, g.ldb, !g.tb, g.n, g.k);  // [n, k]: op(B)'s columns
    for (int j = 0; j < g.n; ++j) {
      for (int i = 0; i < g.m; ++i) {
        const float* x = rows_a.data() + size_t(i) * g.k;
        const float* y = cols_b.data() + size_t(j) * g.k;
        float acc = 0.0f;
        for (int l = 0; l < g.k; ++l) acc += x[l] * y[l];
        const size_t at = size_t(j) * g.ldc + i;
        if (g.c_type == CUDA_R_32F) {
          float* c = reinterpret_cast<float*>(C) + at;
          *c = g.alpha * acc + (g.beta != 0.0f ? g.beta * *c : 0.0f);
        } else {
          __half* c = reinterpret_cast<__half*>(C) + at;
          *c = __float2half_rn(g.alpha * acc + (g.beta != 0.0f ? g.beta * __half2float(*c) : 0.0f));
        }
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
  static const Cublas c{create,      destroy,          set_stream,  set_workspace, set_pointer_mode,
                        gemm_ex,     gemm_strided_batched_ex, status_name,
                        status_string, "pivotmt CUDA emulator (GemmEx on the CPU)"};
  return c;
}

}  // namespace pivotmt::cuda
