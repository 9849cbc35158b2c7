// CUDA backend: device queries and the float conversion kernel used when loading weights.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "backends/backend.h"
#include "core/error.h"

namespace pivotmt::cuda {
namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string("CUDA ") + what + ": " + cudaGetErrorString(e));
}

// Reads element i of a float buffer of the given type as float.
__device__ float load_as_float(const void* src, int from, size_t i) {
  switch (from) {
    case 0: return static_cast<const float*>(src)[i];
    case 1: return __half2float(static_cast<const __half*>(src)[i]);
    default: return __bfloat162float(static_cast<const __nv_bfloat16*>(src)[i]);
  }
}

// One thread per element; round-to-nearest-even like the CPU reference.
__global__ void convert_kernel(const void* src, int from, void* dst, int to, size_t count) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < count; i += size_t(gridDim.x) * blockDim.x) {
    const float v = load_as_float(src, from, i);
    switch (to) {
      case 0: static_cast<float*>(dst)[i] = v; break;
      case 1: static_cast<__half*>(dst)[i] = __float2half_rn(v); break;
      default: static_cast<__nv_bfloat16*>(dst)[i] = __float2bfloat16_rn(v); break;
    }
  }
}

int code(DType t) { return t == DType::F32 ? 0 : t == DType::F16 ? 1 : 2; }

struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) { check(cudaMalloc(&ptr, bytes), "cudaMalloc"); }
  ~DeviceBuffer() { cudaFree(ptr); }
};
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
  cudaDeviceProp p{};
  check(cudaGetDeviceProperties(&p, index), "cudaGetDeviceProperties");
  CudaDeviceInfo info;
  info.index = index;
  info.name = p.name;
  info.sm_major = p.major;
  info.sm_minor = p.minor;
  check(cudaSetDevice(index), "cudaSetDevice");
  check(cudaMemGetInfo(&info.free_memory, &info.total_memory), "cudaMemGetInfo");
  return info;
}

void convert_floats(int device, DType from, const void* src, DType to, void* dst, size_t count) {
  if (count == 0) return;
  check(cudaSetDevice(device), "cudaSetDevice");
  const size_t in_bytes = count * dtype_size(from), out_bytes = count * dtype_size(to);
  DeviceBuffer in(in_bytes), out(out_bytes);
  check(cudaMemcpy(in.ptr, src, in_bytes, cudaMemcpyHostToDevice), "copy to device");
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<size_t>((count + threads - 1) / threads, 65535));
  convert_kernel<<<blocks, threads>>>(in.ptr, code(from), out.ptr, code(to), count);
  check(cudaGetLastError(), "convert kernel launch");
  check(cudaMemcpy(dst, out.ptr, out_bytes, cudaMemcpyDeviceToHost), "copy to host");
}

}  // namespace pivotmt::cuda
