// cuBLAS, loaded when the first GPU ops are made (dlopen), not linked: its libraries are
// over 500 MB, and loading them at process start cost every CPU-only run ~160 MB of
// resident memory and made a CUDA build unusable on a machine without them.
#pragma once
#include <cublas_v2.h>

namespace pivotmt::cuda {

struct Cublas {
  decltype(&cublasCreate_v2) create;
  decltype(&cublasDestroy_v2) destroy;
  decltype(&cublasSetStream_v2) set_stream;
  decltype(&cublasSetWorkspace_v2) set_workspace;
  decltype(&cublasSetPointerMode_v2) set_pointer_mode;
  // cublasGemmEx and cublasGemmStridedBatchedEx have C++ overloads: the C entry points'
  // types spelled out.
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*,
                            const void*, cudaDataType, int, const void*, cudaDataType, int, const void*, void*,
                            cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
  cublasStatus_t (*gemm_strided_batched_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                                            const void*, const void*, cudaDataType, int, long long, const void*,
                                            cudaDataType, int, long long, const void*, void*, cudaDataType, int,
                                            long long, int, cublasComputeType_t, cublasGemmAlgo_t);
  decltype(&cublasGetStatusName) status_name;
  decltype(&cublasGetStatusString) status_string;
  const char* library = "";  // the file loaded (pivotmt info shows it)
};

// The loaded library's entry points; throws Error naming the library and the folders
// searched when it cannot be loaded.
const Cublas& cublas();

}  // namespace pivotmt::cuda
