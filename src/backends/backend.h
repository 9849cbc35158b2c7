// The per-device op interface. Each op is declared once here with its shape/dtype checks
// in backend.cpp; backends/cpu/*.cpp and backends/cuda/*.cu implement it. Without CUDA at
// build time the CUDA entry points throw UnsupportedError ("built without CUDA"), so model
// code never needs #ifdef.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "core/device.h"
#include "core/dtype.h"

namespace pivotmt {

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  int sm_major = 0, sm_minor = 0;
  size_t total_memory = 0, free_memory = 0;
  std::string pci_bus_id;  // "00000000:19:00.0": how NVML finds the same GPU
};

bool cuda_compiled();    // the CUDA backend is part of this build
int cuda_device_count();  // 0 without CUDA, a driver or a GPU
CudaDeviceInfo cuda_device_info(int index);

// The host's memory from /proc/meminfo (MemTotal, MemAvailable: the page cache counts as
// available); zeros when it cannot be read.
struct HostMemory {
  size_t total = 0, available = 0;
};
HostMemory host_memory();

// --device: "auto" (cuda:0 when a GPU is visible and `gpu_ok`, else the CPU), "cpu",
// "cuda", "cuda:N". Throws naming the device when it is not there or the build has no CUDA.
Device resolve_device(std::string_view text, bool gpu_ok = true);

// Converts float elements (F32 / F16 / BF16) on `device`: host memory in, host memory out.
// On the GPU this is the loader's path for TowerInstruct's F32 shards (staged, converted
// to F16 on the device). The CPU implementation is the reference.
void convert_floats_on(const Device& device, DType from, const void* src, DType to, void* dst, size_t count);

namespace cuda {
// Device memory a GPU's ops keep beside the weights, the KV pool and the activations:
// cuBLAS's workspace, the two staging buffers weights are loaded through (freed once the
// weights are in, before the KV pool is sized) and a margin for the CUDA context's growth
// and fragmentation. The pool sizing, `inspect --device` and `plan` all count it.
constexpr size_t kBlasWorkspaceBytes = size_t(32) << 20;  // cuBLAS(Lt) workspace on Hopper
constexpr size_t kStagingBytes = size_t(64) << 20;        // per staging buffer (two, pinned and on the device)
constexpr size_t kSafetyBytes = size_t(512) << 20;
constexpr size_t kReservedBytes = kBlasWorkspaceBytes + 2 * kStagingBytes + kSafetyBytes;

// Implemented in backends/cuda (or by the stub when CUDA is off).
// Device memory (cudaMalloc, freed when the last handle goes); throws Error naming the
// device, the size asked for and what is free.
std::shared_ptr<void> device_alloc(int device, size_t bytes);
bool compiled();
int device_count();
// Ceilings measured on the device (for benchmarks to state figures against): a
// device-to-device copy, counting bytes read + written; an F16 n × n × n cuBLAS GEMM with
// F32 accumulation on random data (f32: F32 inputs and outputs, no tensor cores — the rate of
// the encoders' and training's F32 products). Median of several timed runs after a warm-up.
double measure_copy_gbps(int device, size_t bytes);
double measure_gemm_tflops(int device, int n, bool f32 = false);
// Whether an F16 linear of up to 8 rows (a decode step) may take the GEMV kernel instead of
// cuBLAS (default on; PIVOTMT_CUDA_GEMV=0 at start turns it off): process-wide, for
// measuring both sides. A no-op without CUDA.
void set_gemv_enabled(bool on);
// Device memory pivotmt holds through device_alloc now / at most so far (0 without CUDA).
size_t allocated_bytes(int device);
size_t peak_allocated_bytes(int device);
CudaDeviceInfo device_info(int index);
// The cuBLAS library file loaded (loading it), or why none could be.
std::string blas_library();
// The CUDA versions the driver supports and the runtime was built as (e.g. 13000 = 13.0).
struct CudaVersions {
  int driver = 0, runtime = 0;
};
CudaVersions versions();
void convert_floats(int device, DType from, const void* src, DType to, void* dst, size_t count);
}  // namespace cuda

}  // namespace pivotmt
