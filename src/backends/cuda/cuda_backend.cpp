// CUDA backend: device queries, device memory, and the float conversion used by
// convert_floats_on (the loader's path for F32 / BF16 checkpoints).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "backends/backend.h"
#include "backends/cuda/cublas_loader.h"
#include "backends/cuda/cuda_util.h"
#include "backends/cuda/kernels.h"

namespace pivotmt::cuda {

void Pinned::reset(size_t n) {
  release();
  check(cudaHostAlloc(&ptr, n, cudaHostAllocDefault), "cudaHostAlloc (pinned staging)");
  bytes = n;
}

void Pinned::release() {
  if (ptr) check(cudaFreeHost(ptr), "cudaFreeHost");
  ptr = nullptr;
  bytes = 0;
}

Pinned::~Pinned() {
  if (ptr) cudaFreeHost(ptr);
}

void StagedUpload::copy(const void* src, size_t bytes, void* dst, cudaStream_t stream, const char* what) {
  if (bytes == 0) return;
  if (copied_) check(cudaEventSynchronize(copied_), what);  // the staging's previous copy has read it
  else check(cudaEventCreateWithFlags(&copied_, cudaEventDisableTiming), "cudaEventCreate");
  if (host_.bytes < bytes) host_.reset(std::max(bytes, 2 * host_.bytes));
  std::memcpy(host_.ptr, src, bytes);
  check(cudaMemcpyAsync(dst, host_.ptr, bytes, cudaMemcpyHostToDevice, stream), what);
  check(cudaEventRecord(copied_, stream), what);
}

StagedUpload::~StagedUpload() {
  if (copied_) {
    cudaEventSynchronize(copied_);
    cudaEventDestroy(copied_);
  }
}

void check_cublas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(fmt::format("cuBLAS {}: {} ({})", what, cublas().status_name(s), cublas().status_string(s)));
}

namespace {
int code(DType t) { return t == DType::F32 ? 0 : t == DType::F16 ? 1 : 2; }

void select(int device) {
  const int n = device_count();
  if (device < 0 || device >= n)
    throw Error(fmt::format("device cuda:{} does not exist: this machine has {} CUDA device{}", device, n, n == 1 ? "" : "s"));
  check(cudaSetDevice(device), "cudaSetDevice");
}
}  // namespace

bool compiled() { return true; }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver / no device" error
    return 0;
  }
  return n;
}

CudaDeviceInfo device_info(int index) {
  select(index);
  cudaDeviceProp p{};
  check(cudaGetDeviceProperties(&p, index), "cudaGetDeviceProperties");
  CudaDeviceInfo info;
  info.index = index;
  info.name = p.name;
  info.sm_major = p.major;
  info.sm_minor = p.minor;
  check(cudaMemGetInfo(&info.free_memory, &info.total_memory), "cudaMemGetInfo");
  char bus[32] = {};
  if (cudaDeviceGetPCIBusId(bus, sizeof bus, index) == cudaSuccess)
    info.pci_bus_id = bus;
  else
    cudaGetLastError();
  return info;
}

CudaVersions versions() {
  CudaVersions v;
  if (cudaDriverGetVersion(&v.driver) != cudaSuccess) cudaGetLastError();
  if (cudaRuntimeGetVersion(&v.runtime) != cudaSuccess) cudaGetLastError();
  return v;
}

std::string blas_library() {
  try {
    return cublas().library;
  } catch (const Error& e) {
    return fmt::format("not loaded: {}", e.what());
  }
}

namespace {
// Bytes held through device_alloc, per device (now, peak).
struct Usage {
  std::atomic<size_t> now{0}, peak{0};
};
Usage& usage(int device) {
  static Usage devices[64];
  return devices[std::clamp(device, 0, 63)];
}
}  // namespace

size_t allocated_bytes(int device) { return usage(device).now.load(); }
size_t peak_allocated_bytes(int device) { return usage(device).peak.load(); }

std::shared_ptr<void> device_alloc(int device, size_t bytes) {
  select(device);
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    size_t free = 0, total = 0;
    cudaMemGetInfo(&free, &total);
    throw Error(fmt::format("cuda:{}: cannot allocate {:.1f} MiB of device memory ({:.1f} MiB free of {:.1f} MiB): {}",
                            device, double(bytes) / (1 << 20), double(free) / (1 << 20), double(total) / (1 << 20),
                            cudaGetErrorString(e)));
  }
  Usage& u = usage(device);
  const size_t now = u.now += bytes;
  for (size_t peak = u.peak.load(); now > peak && !u.peak.compare_exchange_weak(peak, now);) {
  }
  return std::shared_ptr<void>(p, [device, bytes](void* q) {
    cudaSetDevice(device);
    cudaFree(q);
    usage(device).now -= bytes;
  });
}

namespace {
// Median milliseconds of `reps` runs of `body` on `stream`, timed with CUDA events after
// two warm-up runs.
template <class Body>
double median_ms(cudaStream_t stream, int reps, Body body) {
  for (int i = 0; i < 2; ++i) body();
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    check(cudaEventRecord(start, stream), "cudaEventRecord");
    body();
    check(cudaEventRecord(stop, stream), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float t = 0;
    check(cudaEventElapsedTime(&t, start, stop), "cudaEventElapsedTime");
    ms.push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}
}  // namespace

void set_gemv_enabled(bool on) { kernels::set_gemv_enabled(on); }

double measure_copy_gbps(int device, size_t bytes) {
  auto a = device_alloc(device, bytes), b = device_alloc(device, bytes);
  kernels::fill_random_f16(a.get(), bytes / 2, 1, 1.0f, 0.0f, nullptr);
  const double ms = median_ms(nullptr, 10, [&] { check(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice, nullptr), "copy"); });
  return 2.0 * double(bytes) / (ms * 1e-3) / 1e9;
}

double measure_gemm_tflops(int device, int n, bool f32) {
  const size_t elems = size_t(n) * size_t(n), bytes = elems * (f32 ? 4 : 2);
  auto a = device_alloc(device, bytes), b = device_alloc(device, bytes), c = device_alloc(device, bytes);
  if (f32) {
    kernels::fill_random_f32(static_cast<float*>(a.get()), elems, 2, 1.0f, 0.0f, nullptr);
    kernels::fill_random_f32(static_cast<float*>(b.get()), elems, 3, 1.0f, 0.0f, nullptr);
  } else {
    kernels::fill_random_f16(a.get(), elems, 2, 1.0f, 0.0f, nullptr);
    kernels::fill_random_f16(b.get(), elems, 3, 1.0f, 0.0f, nullptr);
  }
  const cudaDataType type = f32 ? CUDA_R_32F : CUDA_R_16F;
  cublasHandle_t blas;
  check_cublas(cublas().create(&blas), "cublasCreate");
  const double ms = median_ms(nullptr, 10, [&] {
    const float alpha = 1.0f, beta = 0.0f;
    check_cublas(cublas().gemm_ex(blas, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &alpha, a.get(), type, n, b.get(), type, n, &beta,
                                  c.get(), type, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmEx (ceiling)");
  });
  cublas().destroy(blas);
  return 2.0 * double(n) * n * n / (ms * 1e-3) / 1e12;
}

void convert_floats(int device, DType from, const void* src, DType to, void* dst, size_t count) {
  if (count == 0) return;
  const size_t in_bytes = count * dtype_size(from), out_bytes = count * dtype_size(to);
  auto in = device_alloc(device, in_bytes), out = device_alloc(device, out_bytes);
  check(cudaMemcpy(in.get(), src, in_bytes, cudaMemcpyHostToDevice), "copy to device");
  kernels::convert(in.get(), code(from), out.get(), code(to), count, nullptr);
  check(cudaMemcpy(dst, out.get(), out_bytes, cudaMemcpyDeviceToHost), "copy to host");
}

}  // namespace pivotmt::cuda
