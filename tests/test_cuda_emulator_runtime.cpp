// The CUDA emulator's own guarantees, its runtime half (tests/cuda_emulator/runtime.cpp,
// streams.cpp, cublas.cpp): the order of a stream's work and what waiting covers, copies and
// GEMMs kept inside their allocations, stream capture and graphs, allocation alignment and
// pitch limits, device memory the host cannot touch and kernels cannot overrun. The kernel
// half — threads, barriers, shuffles, the PTX instructions — is test_cuda_emulator.cpp.
#include "cuda_emulator/emulator.h"

#include <cublas_v2.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "backends/backend.h"
#include "backends/cuda/cublas_loader.h"
#include "core/dtype.h"
#include "core/error.h"
#include "emulator_buffers.h"

namespace pivotmt {
namespace {

using cuda::launch;
using test::download;
using test::upload;

__global__ void copy_floats(const float* in, float* out, int n) {
  if (int(threadIdx.x) < n) out[threadIdx.x] = in[threadIdx.x];
}
__global__ void write_at(char* p, size_t offset) { p[offset] = 1; }

// Copies on a created stream between device and pinned memory run as late as CUDA's
// ordering allows, so a program that does not wait for them sees the old data (what a GPU
// may show it); the waits CUDA defines make them land.
TEST(CudaEmulator, StreamCopiesLandAsLateAsCudaAllows) {
  constexpr size_t n = 64;
  float* pinned = nullptr;
  ASSERT_EQ(cudaHostAlloc(reinterpret_cast<void**>(&pinned), 2 * n * sizeof(float), cudaHostAllocDefault), cudaSuccess);
  float* back = pinned + n;  // inside the same pinned allocation
  auto dev = cuda::device_alloc(0, n * sizeof(float));
  float* d = static_cast<float*>(dev.get());
  cudaStream_t copies = nullptr, compute = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&copies, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking), cudaSuccess);
  cudaEvent_t before = nullptr, after = nullptr;
  ASSERT_EQ(cudaEventCreate(&before), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&after), cudaSuccess);
  auto fill = [&](float* p, float v) { std::fill(p, p + n, v); };
  const std::vector<float> ones(n, 1.0f), twos(n, 2.0f), threes(n, 3.0f);
  // Host to device from pinned memory: the source rewritten before any wait is what lands.
  fill(pinned, 1.0f);
  ASSERT_EQ(cudaMemcpyAsync(d, pinned, n * 4, cudaMemcpyHostToDevice, copies), cudaSuccess);
  fill(pinned, 2.0f);
  ASSERT_EQ(cudaStreamSynchronize(copies), cudaSuccess);
  EXPECT_EQ(download<float>(dev, n), twos);
  // Device to pinned memory: not there until waited for; an event recorded before the copy
  // does not cover it, one recorded after does (a stream waiting on it, or the host).
  fill(back, 0.0f);
  ASSERT_EQ(cudaEventRecord(before, copies), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(back, d, n * 4, cudaMemcpyDeviceToHost, copies), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(after, copies), cudaSuccess);
  ASSERT_EQ(cudaStreamWaitEvent(compute, before, 0), cudaSuccess);
  ASSERT_EQ(cudaEventSynchronize(before), cudaSuccess);
  EXPECT_EQ(std::vector<float>(back, back + n), std::vector<float>(n, 0.0f));
  ASSERT_EQ(cudaStreamWaitEvent(compute, after, 0), cudaSuccess);
  EXPECT_EQ(std::vector<float>(back, back + n), twos);
  // Within a stream, order holds: a kernel issued after a copy sees it.
  fill(pinned, 3.0f);
  ASSERT_EQ(cudaMemcpyAsync(d, pinned, n * 4, cudaMemcpyHostToDevice, compute), cudaSuccess);
  auto out = cuda::device_alloc(0, n * sizeof(float));
  launch("copy_after", copy_floats, 1, 64, compute, static_cast<const float*>(d), static_cast<float*>(out.get()), int(n));
  EXPECT_EQ(download<float>(out, n), threes);
  // Kernels on a created stream run as late as copies do: a copy on another stream that
  // does not wait for the kernel reads what was there before it; one that waits for an
  // event recorded after the kernel reads its output (`out` holds threes from above).
  auto src = upload(twos), zeros = upload(std::vector<float>(n, 0.0f));  // (uploads complete every stream's work)
  launch("copy_later", copy_floats, 1, 64, compute, static_cast<const float*>(src.get()), static_cast<float*>(out.get()),
         int(n));
  ASSERT_EQ(cudaEventRecord(after, compute), cudaSuccess);
  launch("zero_out", copy_floats, 1, 64, compute, static_cast<const float*>(zeros.get()), static_cast<float*>(out.get()),
         int(n));  // issued after the event: not covered by it
  fill(back, -1.0f);
  ASSERT_EQ(cudaMemcpyAsync(back, out.get(), n * 4, cudaMemcpyDeviceToHost, copies), cudaSuccess);  // no wait
  ASSERT_EQ(cudaStreamSynchronize(copies), cudaSuccess);
  EXPECT_EQ(std::vector<float>(back, back + n), threes) << "a kernel ran before a copy that did not wait for it";
  ASSERT_EQ(cudaStreamWaitEvent(copies, after, 0), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(back, out.get(), n * 4, cudaMemcpyDeviceToHost, copies), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(copies), cudaSuccess);
  EXPECT_EQ(std::vector<float>(back, back + n), twos) << "the event covers the first kernel, not the second";
  ASSERT_EQ(cudaStreamSynchronize(compute), cudaSuccess);
  EXPECT_EQ(download<float>(out, n), std::vector<float>(n, 0.0f));
  // The device synchronising, or freeing memory, completes everything.
  fill(pinned, 1.0f);
  ASSERT_EQ(cudaMemcpyAsync(d, pinned, n * 4, cudaMemcpyHostToDevice, copies), cudaSuccess);
  fill(back, 0.0f);
  ASSERT_EQ(cudaMemcpyAsync(back, d, n * 4, cudaMemcpyDeviceToHost, copies), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(std::vector<float>(back, back + n), ones);
  // Pageable host memory: the copy is done when the call returns.
  std::vector<float> pageable(n, 0.0f);
  ASSERT_EQ(cudaMemcpyAsync(pageable.data(), d, n * 4, cudaMemcpyDeviceToHost, copies), cudaSuccess);
  EXPECT_EQ(pageable, ones);
  cudaEventDestroy(before);
  cudaEventDestroy(after);
  cudaStreamDestroy(copies);
  cudaStreamDestroy(compute);
  EXPECT_EQ(cudaFreeHost(pinned), cudaSuccess);
}

TEST(CudaEmulator, CopiesAndGemmsStayInsideTheirAllocations) {
  auto d = cuda::device_alloc(0, 100);
  std::vector<char> host(200);
  EXPECT_EQ(cudaMemcpy(d.get(), host.data(), 100, cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d.get(), host.data(), 101, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(host.data(), static_cast<char*>(d.get()) + 1, 100, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(host.data(), host.data() + 100, 10, cudaMemcpyHostToDevice), cudaErrorInvalidValue);  // host dst
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // read once, then cleared
  // A GEMM whose C would run past its allocation (m = 8 rows of F16 = 16 bytes, n = 4: 64
  // bytes; the allocation has 48).
  auto a = cuda::device_alloc(0, 8 * 2 * 2), b = cuda::device_alloc(0, 2 * 4 * 2), c = cuda::device_alloc(0, 48);
  cublasHandle_t blas;
  ASSERT_EQ(cuda::cublas().create(&blas), CUBLAS_STATUS_SUCCESS);
  const float one = 1.0f, zero = 0.0f;
  EXPECT_EQ(cuda::cublas().gemm_ex(blas, CUBLAS_OP_N, CUBLAS_OP_N, 8, 4, 2, &one, a.get(), CUDA_R_16F, 8, b.get(),
                                   CUDA_R_16F, 2, &zero, c.get(), CUDA_R_16F, 8, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_EXECUTION_FAILED);
  EXPECT_EQ(cuda::cublas().gemm_ex(blas, CUBLAS_OP_N, CUBLAS_OP_N, 8, 3, 2, &one, a.get(), CUDA_R_16F, 4, b.get(),
                                   CUDA_R_16F, 2, &zero, c.get(), CUDA_R_16F, 8, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_INVALID_VALUE);  // lda < m
  cuda::cublas().destroy(blas);
}

// Strided-batched GEMMs: each item is the GemmEx of its slices (heads side by side in one
// matrix's columns, as training attention lays them out); F32 inputs under compute type
// 32F_FAST_TF32 are read as the tensor cores read them (top 10 mantissa bits); items whose
// outputs could overlap are refused; alpha and beta from device memory in device pointer mode.
TEST(CudaEmulator, BatchedGemmsSliceTheirItemsAndReadTf32AsTensorCoresDo) {
  cublasHandle_t blas;
  ASSERT_EQ(cuda::cublas().create(&blas), CUBLAS_STATUS_SUCCESS);
  // Column-major A [m = 2, k = 3] per item, two items side by side: lda = 4, stride 2.
  const int m = 2, n = 2, k = 3, items = 2;
  std::vector<float> A(4 * k), B(k * n * items), C(4 * n, -1.0f);
  std::iota(A.begin(), A.end(), 1.0f);
  std::iota(B.begin(), B.end(), -3.0f);
  auto dA = cuda::device_alloc(0, A.size() * 4), dB = cuda::device_alloc(0, B.size() * 4), dC = cuda::device_alloc(0, C.size() * 4);
  ASSERT_EQ(cudaMemcpy(dA.get(), A.data(), A.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dB.get(), B.data(), B.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dC.get(), C.data(), C.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  const float one = 1.0f, zero = 0.0f;
  ASSERT_EQ(cuda::cublas().gemm_strided_batched_ex(blas, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, dA.get(), CUDA_R_32F, 4,
                                                   2, dB.get(), CUDA_R_32F, k, k * n, &zero, dC.get(), CUDA_R_32F, 4, 2,
                                                   items, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_SUCCESS);
  std::vector<float> got(C.size());
  ASSERT_EQ(cudaMemcpy(got.data(), dC.get(), got.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  for (int b = 0; b < items; ++b)
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < m; ++i) {
        float want = 0;
        for (int l = 0; l < k; ++l) want += A[size_t(l) * 4 + size_t(b) * 2 + i] * B[size_t(b) * k * n + size_t(j) * k + l];
        EXPECT_EQ(got[size_t(j) * 4 + size_t(b) * 2 + i], want) << "item " << b << " (" << i << ", " << j << ")";
      }
  // TF32: 1 + 2^-12 has mantissa bits below the top 10, so the tensor cores read 1.
  const float x = 1.0f + 1.0f / 4096.0f;
  auto dx = cuda::device_alloc(0, 4), dy = cuda::device_alloc(0, 4);
  ASSERT_EQ(cudaMemcpy(dx.get(), &x, 4, cudaMemcpyHostToDevice), cudaSuccess);
  for (auto compute : {CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_FAST_TF32}) {
    ASSERT_EQ(cuda::cublas().gemm_strided_batched_ex(blas, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, dx.get(), CUDA_R_32F,
                                                     1, 0, dx.get(), CUDA_R_32F, 1, 0, &zero, dy.get(), CUDA_R_32F, 1, 1,
                                                     1, compute, CUBLAS_GEMM_DEFAULT),
              CUBLAS_STATUS_SUCCESS);
    float y = 0;
    ASSERT_EQ(cudaMemcpy(&y, dy.get(), 4, cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(y, compute == CUBLAS_COMPUTE_32F ? x * x : 1.0f);
  }
  // Two items writing one C (stride 1 with m = 2 rows: their rows overlap): refused.
  EXPECT_EQ(cuda::cublas().gemm_strided_batched_ex(blas, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, dA.get(), CUDA_R_32F,
                                                   4, 2, dB.get(), CUDA_R_32F, k, k * n, &zero, dC.get(), CUDA_R_32F, 4,
                                                   1, items, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_INVALID_VALUE);
  // Device pointer mode: alpha and beta read from device memory when the GEMM runs; a device
  // pointer in host mode (or a host one in device mode) is refused, not dereferenced.
  const float scalars[2] = {3.0f, 0.0f};
  auto ds = cuda::device_alloc(0, sizeof scalars);
  ASSERT_EQ(cudaMemcpy(ds.get(), scalars, sizeof scalars, cudaMemcpyHostToDevice), cudaSuccess);
  const auto* alpha_beta = static_cast<const float*>(ds.get());
  EXPECT_EQ(cuda::cublas().gemm_ex(blas, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, alpha_beta, dx.get(), CUDA_R_32F, 1, dx.get(),
                                   CUDA_R_32F, 1, alpha_beta + 1, dy.get(), CUDA_R_32F, 1, CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_INVALID_VALUE);
  ASSERT_EQ(cuda::cublas().set_pointer_mode(blas, CUBLAS_POINTER_MODE_DEVICE), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cuda::cublas().gemm_ex(blas, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, dx.get(), CUDA_R_32F, 1, dx.get(),
                                   CUDA_R_32F, 1, &zero, dy.get(), CUDA_R_32F, 1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_INVALID_VALUE);
  ASSERT_EQ(cuda::cublas().gemm_ex(blas, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, alpha_beta, dx.get(), CUDA_R_32F, 1, dx.get(),
                                   CUDA_R_32F, 1, alpha_beta + 1, dy.get(), CUDA_R_32F, 1, CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_SUCCESS);
  float y3 = 0;
  ASSERT_EQ(cudaMemcpy(&y3, dy.get(), 4, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(y3, 3.0f * (x * x));
  ASSERT_EQ(cuda::cublas().set_pointer_mode(blas, CUBLAS_POINTER_MODE_HOST), CUBLAS_STATUS_SUCCESS);
  // TF32 with F16 inputs is not a combination cuBLAS offers.
  EXPECT_EQ(cuda::cublas().gemm_ex(blas, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, dx.get(), CUDA_R_16F, 1, dx.get(),
                                   CUDA_R_16F, 1, &zero, dy.get(), CUDA_R_32F, 1, CUBLAS_COMPUTE_32F_FAST_TF32,
                                   CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_NOT_SUPPORTED);
  cuda::cublas().destroy(blas);
}

__global__ void add_one(int* x) { x[threadIdx.x] += 1; }

// Stream capture: kernels, copies and GEMMs issued to a capturing stream are recorded, not
// run; each launch of the instantiated graph runs them in order, with the arguments they
// were issued with (a GEMM's alpha read at capture, as cuBLAS reads a host pointer).
TEST(CudaEmulator, StreamCaptureRecordsWorkAndGraphLaunchesRunIt) {
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  auto d = cuda::device_alloc(0, 32 * 4);
  std::vector<int> host(32, 5), back(32);
  ASSERT_EQ(cudaMemcpy(d.get(), host.data(), 32 * 4, cudaMemcpyHostToDevice), cudaSuccess);
  // A GEMM C [2, 1] = alpha A [2, 1] · B [1, 1] (F16 ones), F32 C.
  auto a = cuda::device_alloc(0, 4), b = cuda::device_alloc(0, 2), c = cuda::device_alloc(0, 8);
  const std::vector<uint16_t> ones(2, 0x3c00);
  ASSERT_EQ(cudaMemcpy(a.get(), ones.data(), 4, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(b.get(), ones.data(), 2, cudaMemcpyHostToDevice), cudaSuccess);
  cublasHandle_t blas;
  ASSERT_EQ(cuda::cublas().create(&blas), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cuda::cublas().set_stream(blas, stream), CUBLAS_STATUS_SUCCESS);

  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  cudaStreamCaptureStatus status;
  ASSERT_EQ(cudaStreamIsCapturing(stream, &status), cudaSuccess);
  EXPECT_EQ(status, cudaStreamCaptureStatusActive);
  launch("add_one", add_one, 1, 32, stream, static_cast<int*>(d.get()));
  launch("add_one", add_one, 1, 32, stream, static_cast<int*>(d.get()));
  float alpha = 3.0f;
  const float zero = 0.0f;
  ASSERT_EQ(cuda::cublas().gemm_ex(blas, CUBLAS_OP_N, CUBLAS_OP_N, 2, 1, 1, &alpha, a.get(), CUDA_R_16F, 2, b.get(),
                                   CUDA_R_16F, 1, &zero, c.get(), CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_SUCCESS);
  alpha = 100.0f;  // read at capture: the graph keeps 3
  ASSERT_EQ(cudaMemcpyAsync(back.data(), d.get(), 32 * 4, cudaMemcpyDeviceToHost, stream), cudaSuccess);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_NE(graph, nullptr);
  EXPECT_EQ(back, std::vector<int>(32, 0));  // nothing ran yet
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  for (int launches = 1; launches <= 2; ++launches) {
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    EXPECT_EQ(back, std::vector<int>(32, 5 + 2 * launches)) << "after launch " << launches;
  }
  std::vector<float> product(2);
  ASSERT_EQ(cudaMemcpy(product.data(), c.get(), 8, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(product, std::vector<float>(2, 3.0f));
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  cuda::cublas().destroy(blas);
  // Launch configurations are refused when issued, not when the graph runs.
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  EXPECT_THROW(launch("add_one", add_one, 1, 2048, stream, static_cast<int*>(d.get())), Error);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  cudaGraphDestroy(graph);
  EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess);
}

// What CUDA refuses while a stream captures: synchronising, allocating and freeing,
// synchronous copies (the capture is then invalidated and cudaStreamEndCapture fails); the
// legacy default stream cannot be captured; relaxed mode allows allocation.
TEST(CudaEmulator, StreamCaptureRefusesWhatCudaRefuses) {
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  EXPECT_EQ(cudaStreamBeginCapture(nullptr, cudaStreamCaptureModeGlobal), cudaErrorStreamCaptureUnsupported);
  auto d = cuda::device_alloc(0, 256);
  std::vector<char> host(256);
  cudaEvent_t event;
  ASSERT_EQ(cudaEventCreate(&event), cudaSuccess);
  const std::vector<std::pair<const char*, std::function<cudaError_t()>>> refused = {
      {"cudaStreamSynchronize", [&] { return cudaStreamSynchronize(stream); }},
      {"cudaDeviceSynchronize", [&] { return cudaDeviceSynchronize(); }},
      {"cudaEventSynchronize", [&] { return cudaEventSynchronize(event); }},
      {"cudaMalloc", [&] {
         void* p = nullptr;
         return cudaMalloc(&p, 64);
       }},
      {"cudaFree", [&] { return cudaFree(d.get()); }},
      {"cudaMemcpy", [&] { return cudaMemcpy(d.get(), host.data(), 16, cudaMemcpyHostToDevice); }},
  };
  for (const auto& [name, call] : refused) {
    ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    EXPECT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaErrorIllegalState) << "nested";
    EXPECT_EQ(call(), cudaErrorStreamCaptureUnsupported) << name;
    cudaStreamCaptureStatus status;
    ASSERT_EQ(cudaStreamIsCapturing(stream, &status), cudaSuccess);
    EXPECT_EQ(status, cudaStreamCaptureStatusInvalidated) << name;
    cudaGraph_t graph = reinterpret_cast<cudaGraph_t>(1);
    EXPECT_EQ(cudaStreamEndCapture(stream, &graph), cudaErrorStreamCaptureInvalidated) << name;
    EXPECT_EQ(graph, nullptr) << name;
  }
  EXPECT_EQ(cudaStreamEndCapture(stream, nullptr), cudaErrorIllegalState);  // none in progress
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);  // after the capture: allowed again
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), cudaSuccess);
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, 64), cudaSuccess);
  EXPECT_EQ(cudaFree(p), cudaSuccess);
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  cudaGraphDestroy(graph);
  cudaEventDestroy(event);
  cudaStreamDestroy(stream);
  cudaGetLastError();
}

// What real CUDA refuses or guarantees, the emulator too: 256-byte aligned allocations (a
// kernel's 16-byte loads rely on it) and no 2-D copy with a pitch past cudaDevAttrMaxPitch.
TEST(CudaEmulator, AllocationsAlignAndPitchesAreLimitedAsOnTheHardware) {
  for (size_t n : {size_t(1), size_t(100), size_t(256), size_t(4097), size_t(70) << 20}) {
    auto d = cuda::device_alloc(0, n);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(d.get()) % 256, 0u) << n << " bytes";
  }
  int max_pitch = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&max_pitch, cudaDevAttrMaxPitch, 0), cudaSuccess);
  EXPECT_EQ(max_pitch, 2147483647);
  auto d = cuda::device_alloc(0, 4096);
  char* p = static_cast<char*>(d.get());
  EXPECT_EQ(cudaMemcpy2D(p, size_t(max_pitch), p + 2048, size_t(max_pitch), 1024, 1, cudaMemcpyDeviceToDevice), cudaSuccess);
  EXPECT_EQ(cudaMemcpy2D(p, size_t(max_pitch) + 1, p + 2048, 64, 64, 1, cudaMemcpyDeviceToDevice), cudaErrorInvalidPitchValue);
  EXPECT_EQ(cudaMemcpy2D(p, 64, p + 2048, size_t(1) << 34, 64, 1, cudaMemcpyDeviceToDevice), cudaErrorInvalidPitchValue);
  cudaGetLastError();
}

TEST(CudaEmulator, DeviceMemoryIsLimitedAndNamed) {
  try {
    cuda::device_alloc(0, size_t(1) << 40);
    FAIL() << "allocated 1 TiB";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:0: cannot allocate"), std::string::npos) << e.what();
  }
  EXPECT_EQ(cudaSetDevice(cuda::device_count()), cudaErrorInvalidDevice);
  cudaGetLastError();
}

using CudaEmulatorDeathTest = ::testing::Test;

TEST_F(CudaEmulatorDeathTest, HostCodeCannotTouchDeviceMemory) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        auto d = cuda::device_alloc(0, 64);
        *static_cast<volatile char*>(d.get()) = 1;
      },
      "touched from host code");
}

// A kernel writes the last byte of an allocation of `bytes` (fine), then byte `offset`: the
// process must die with `message`.
void expect_overrun_dies(size_t bytes, size_t offset, const std::string& message) {
  EXPECT_DEATH(
      {
        auto d = cuda::device_alloc(0, bytes);
        launch("write_at", write_at, 1, 1, nullptr, static_cast<char*>(d.get()), bytes - 1);
        launch("write_at", write_at, 1, 1, nullptr, static_cast<char*>(d.get()), offset);
      },
      message);
}

TEST_F(CudaEmulatorDeathTest, AKernelRunningPastItsAllocationFaults) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  expect_overrun_dies(4096, 4096, "ran past the end of device allocation 0x[0-9a-f]+ of 4096 bytes");
}

// Alignment leaves bytes between an allocation's end and its guard page: a write there is
// caught too, after the kernel.
TEST_F(CudaEmulatorDeathTest, AKernelWritingIntoTheAlignmentPaddingIsCaught) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  expect_overrun_dies(100, 130, "ran past the end of device allocation 0x[0-9a-f]+ of 100 bytes .cuda:0.: byte 30 after its end");
}

}  // namespace
}  // namespace pivotmt
