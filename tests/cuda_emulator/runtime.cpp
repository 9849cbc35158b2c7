// The CUDA emulator's host side: the part of the CUDA runtime API and of cuBLAS that
// src/backends/cuda uses, implemented on the CPU, so that the backend's host code (device
// memory, the paged KV pool, pinned staging, metadata uploads, events) runs unchanged in
// the tests of a machine without a GPU. Linked instead of libcudart (tests only).
//
// Device memory is strict where a GPU would fail or corrupt silently:
//  - every allocation ends at a guard page (an overrun faults at once) and starts filled
//    with 0xFF bytes (NaN in F16 and F32) when under 64 MiB, so reading what was never
//    written shows;
//  - unless PIVOTMT_CUDA_EMULATOR_STRICT=0, device memory (allocations under 32 MiB) is
//    inaccessible to host code (PROT_NONE) except inside kernels, copies and GEMMs: host
//    code that dereferences a device pointer faults, and the fault handler names the
//    allocation;
//  - copies check that their device ranges lie inside one allocation;
//  - what the hardware refuses is refused: cudaMalloc's pointers are 256-byte aligned as
//    the real ones (the bytes between an allocation's end and its guard page hold a canary,
//    checked after every kernel, copy and GEMM: a write there aborts naming the
//    allocation), and a 2-D copy's pitch may not exceed cudaDevAttrMaxPitch (2^31 - 1).
// Streams, events, stream capture and the deferral of asynchronous copies are in
// streams.cpp, cuBLAS's part in cublas.cpp. Emulated devices: PIVOTMT_CUDA_EMULATOR_DEVICES
// (default 1) of PIVOTMT_CUDA_EMULATOR_MEMORY_MIB each (default 4096); allocations past that
// fail as cudaMalloc does. PIVOTMT_CUDA_EMULATOR_PINNED_MIB caps pinned host memory likewise.
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <memory>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "backends/cuda/cublas_loader.h"
#include "core/error.h"
#include "cuda_emulator/device_access.h"
#include "cuda_emulator/runtime_internal.h"

namespace pivotmt::cuda::emu {
namespace {

constexpr size_t kPoisonLimit = size_t(64) << 20;
constexpr size_t kMallocAlignment = 256;     // cudaMalloc's pointers (the CUDA programming guide)
constexpr size_t kMaxPitch = 2147483647;     // cudaDevAttrMaxPitch of current GPUs (Hopper included)
constexpr unsigned char kCanary = 0xC3;      // the bytes between an allocation's end and its guard page
// Protecting a populated region costs ~50 µs per page table touched, per launch: only
// allocations under this size are protected (the staging buffers, the cuBLAS workspace and
// the KV pool are not).
constexpr size_t kProtectLimit = size_t(32) << 20;

size_t env_size(const char* name, size_t fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const unsigned long long n = std::strtoull(v, &end, 10);
  return end && *end == 0 ? size_t(n) : fallback;
}
// Device memory inaccessible to host code between launches: on unless
// PIVOTMT_CUDA_EMULATOR_STRICT=0 (each launch costs an mprotect per protected allocation:
// the GPU engine tests take ~15% longer).
bool strict() {
  static const bool on = [] {
    const char* v = std::getenv("PIVOTMT_CUDA_EMULATOR_STRICT");
    return !(v && std::string(v) == "0");
  }();
  return on;
}
int emulated_devices() { return int(env_size("PIVOTMT_CUDA_EMULATOR_DEVICES", 1)); }
size_t emulated_memory() { return env_size("PIVOTMT_CUDA_EMULATOR_MEMORY_MIB", 4096) << 20; }

size_t page_size() {
  static const size_t p = size_t(sysconf(_SC_PAGESIZE));
  return p;
}

struct Allocation {
  char* map = nullptr;     // [data pages][guard page]
  size_t data_bytes = 0;   // the data pages' length
  char* ptr = nullptr;     // what cudaMalloc returned: 256-byte aligned, under 256 bytes before the guard page
  size_t bytes = 0;
  size_t tail() const { return size_t(map + data_bytes - (ptr + bytes)); }  // canary bytes after the end
  int device = 0;
};

struct State {
  std::mutex mutex;
  std::map<const char*, Allocation> allocations;  // by ptr
  std::map<const char*, size_t> pinned;  // cudaHostAlloc's allocations: start, bytes
  std::vector<size_t> used;
  int access_depth = 0;
};
State& state() {
  static State* s = new State;  // never destroyed: device memory may be freed at exit
  return *s;
}

thread_local int current_device = 0;
thread_local cudaError_t last_error = cudaSuccess;

void protect(const Allocation& a, bool accessible) {
  if (!strict() || a.bytes >= kProtectLimit) return;
  if (mprotect(a.map, a.data_bytes, accessible ? PROT_READ | PROT_WRITE : PROT_NONE) != 0)
    throw Error("CUDA emulator: mprotect failed");
}

// The allocation holding [p, p + n), or null.
const Allocation* find(const void* p, size_t n) {
  State& s = state();
  const char* c = static_cast<const char*>(p);
  auto it = s.allocations.upper_bound(c);
  if (it == s.allocations.begin()) return nullptr;
  --it;
  const Allocation& a = it->second;
  return c >= a.ptr && c + n <= a.ptr + a.bytes ? &a : nullptr;
}

// Fault handler: a fault inside device memory or its guard page is named, then the
// default action runs (the test dies with a core, as on a real illegal address).
struct sigaction previous_segv;
void on_segv(int sig, siginfo_t* info, void* context) {
  const char* addr = static_cast<const char*>(info->si_addr);
  // No locking in a signal handler: the map is only read.
  for (const auto& [ptr, a] : state().allocations) {
    if (addr >= a.map && addr < a.map + a.data_bytes + page_size()) {
      const char* what = addr >= a.map + a.data_bytes ? "ran past the end of" : "touched from host code";
      char line[256];
      const int n = snprintf(line, sizeof line,
                             "\nCUDA emulator: address %p %s device allocation %p of %zu bytes (cuda:%d)%s\n",
                             static_cast<const void*>(addr), what, static_cast<const void*>(a.ptr), a.bytes, a.device,
                             state().access_depth ? " inside a kernel, copy or GEMM" : " outside any kernel or copy");
      if (n > 0) (void)!write(2, line, size_t(n));
      break;
    }
  }
  sigaction(SIGSEGV, &previous_segv, nullptr);
  (void)sig;
  (void)context;
}
void install_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &previous_segv);
  });
}

bool valid_device(int d) { return d >= 0 && d < emulated_devices(); }

// A kernel, copy or GEMM that wrote past an allocation's end into the bytes before its guard
// page (what the 256-byte alignment leaves): named, then the process aborts, as the guard
// page's fault would.
void check_canaries() {
  for (const auto& [ptr, a] : state().allocations) {
    const unsigned char* tail = reinterpret_cast<const unsigned char*>(a.ptr + a.bytes);
    for (size_t i = 0; i < a.tail(); ++i) {
      if (tail[i] == kCanary) continue;
      char line[256];
      const int n = snprintf(line, sizeof line,
                             "\nCUDA emulator: a kernel, copy or GEMM ran past the end of device allocation %p of %zu "
                             "bytes (cuda:%d): byte %zu after its end was written\n",
                             static_cast<const void*>(a.ptr), a.bytes, a.device, i);
      if (n > 0) (void)!write(2, line, size_t(n));
      std::abort();
    }
  }
}

}  // namespace

DeviceAccess::DeviceAccess() {
  State& s = state();
  std::lock_guard lock(s.mutex);
  if (s.access_depth++ == 0)
    for (const auto& [ptr, a] : s.allocations) protect(a, true);
}
DeviceAccess::~DeviceAccess() {
  State& s = state();
  std::lock_guard lock(s.mutex);
  if (--s.access_depth == 0) {
    check_canaries();
    for (const auto& [ptr, a] : s.allocations) protect(a, false);
  }
}

bool device_range(const void* p, size_t n) {
  std::lock_guard lock(state().mutex);
  return find(p, n) != nullptr;
}

cudaError_t record(cudaError_t e) {
  if (e != cudaSuccess) last_error = e;
  return e;
}

// Whether [p, p + n) lies inside one pinned host allocation.
bool pinned_range(const void* p, size_t n) {
  std::lock_guard lock(state().mutex);
  const auto& pinned = state().pinned;
  const char* c = static_cast<const char*>(p);
  auto it = pinned.upper_bound(c);
  if (it == pinned.begin()) return false;
  --it;
  return c >= it->first && c + n <= it->first + it->second;
}

}  // namespace pivotmt::cuda::emu

using namespace pivotmt::cuda::emu;

extern "C" {

cudaError_t CUDARTAPI cudaGetDeviceCount(int* count) {
  *count = emulated_devices();
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaSetDevice(int device) {
  if (!valid_device(device)) return record(cudaErrorInvalidDevice);
  current_device = device;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaGetDeviceProperties(struct cudaDeviceProp* prop, int device) {
  if (!valid_device(device)) return record(cudaErrorInvalidDevice);
  std::memset(prop, 0, sizeof *prop);
  std::snprintf(prop->name, sizeof prop->name, "pivotmt CUDA emulator (CPU)");
  prop->major = 9;
  prop->minor = 0;
  prop->totalGlobalMem = emulated_memory();
  prop->multiProcessorCount = 1;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  // Hopper's limits (what the kernels are built for).
  prop->maxThreadsDim[0] = prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 2147483647;
  prop->maxGridSize[1] = prop->maxGridSize[2] = 65535;
  prop->sharedMemPerBlock = 48 * 1024;
  prop->sharedMemPerBlockOptin = 227 * 1024;
  prop->memPitch = kMaxPitch;
  prop->textureAlignment = 512;
  prop->pciBusID = 0x10 + device;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device) {
  if (!valid_device(device)) return record(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMaxPitch: *value = int(kMaxPitch); return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = 48 * 1024; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = 227 * 1024; return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; return cudaSuccess;
    case cudaDevAttrMaxGridDimX: *value = 2147483647; return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: *value = 1; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; return cudaSuccess;
    default: return record(cudaErrorInvalidValue);
  }
}

// Emulated device d sits at PCI bus 0x10 + d (NVML has none of them: the resource monitor
// falls back to CUDA's free memory).
cudaError_t CUDARTAPI cudaDeviceGetPCIBusId(char* pciBusId, int len, int device) {
  if (!valid_device(device)) return record(cudaErrorInvalidDevice);
  if (len < 13) return record(cudaErrorInvalidValue);
  std::snprintf(pciBusId, size_t(len), "00000000:%02X:00.0", 0x10 + device);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemGetInfo(size_t* free, size_t* total) {
  State& s = state();
  std::lock_guard lock(s.mutex);
  s.used.resize(size_t(emulated_devices()), 0);
  *total = emulated_memory();
  *free = *total - s.used[size_t(current_device)];
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMalloc(void** devPtr, size_t size) {
  if (const cudaError_t e = refuse_if_capturing()) return e;
  install_handler();
  State& s = state();
  std::lock_guard lock(s.mutex);
  s.used.resize(size_t(emulated_devices()), 0);
  if (size > emulated_memory() - s.used[size_t(current_device)]) return record(cudaErrorMemoryAllocation);
  // The data pages end at the guard page; the pointer is the last 256-byte boundary that
  // leaves room for `size` bytes before it.
  const size_t page = page_size(), n = std::max<size_t>(size, 1);
  const size_t data = (n + kMallocAlignment - 1 + page - 1) / page * page;
  void* m = mmap(nullptr, data + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return record(cudaErrorMemoryAllocation);
  Allocation a;
  a.map = static_cast<char*>(m);
  a.data_bytes = data;
  a.ptr = a.map + (data - n) / kMallocAlignment * kMallocAlignment;
  a.bytes = size;
  a.device = current_device;
  if (size <= kPoisonLimit) std::memset(a.ptr, 0xff, size);
  std::memset(a.ptr + size, kCanary, a.tail());
  mprotect(a.map + data, page, PROT_NONE);  // the guard page
  if (s.access_depth == 0) protect(a, false);
  s.allocations[a.ptr] = a;
  s.used[size_t(current_device)] += size;
  *devPtr = a.ptr;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaFree(void* devPtr) {
  if (const cudaError_t e = refuse_if_capturing()) return e;
  if (!devPtr) return cudaSuccess;
  run_all_deferred();  // cudaFree synchronises the device
  State& s = state();
  std::lock_guard lock(s.mutex);
  auto it = s.allocations.find(static_cast<const char*>(devPtr));
  if (it == s.allocations.end()) return record(cudaErrorInvalidValue);
  const Allocation a = it->second;
  s.allocations.erase(it);
  s.used[size_t(a.device)] -= a.bytes;
  munmap(a.map, a.data_bytes + page_size());
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaHostAlloc(void** pHost, size_t size, unsigned int) {
  // PIVOTMT_CUDA_EMULATOR_PINNED_MIB: the host memory that may be pinned (default: no limit),
  // for the tests of what a host that cannot pin more does.
  const size_t limit = env_size("PIVOTMT_CUDA_EMULATOR_PINNED_MIB", SIZE_MAX >> 20);
  {
    std::lock_guard lock(state().mutex);
    size_t pinned = 0;
    for (const auto& [p, n] : state().pinned) pinned += n;
    if (size > (limit << 20) || pinned > (limit << 20) - size) return record(cudaErrorMemoryAllocation);
  }
  void* p = std::aligned_alloc(4096, (std::max<size_t>(size, 1) + 4095) / 4096 * 4096);
  if (!p) return record(cudaErrorMemoryAllocation);
  std::lock_guard lock(state().mutex);
  state().pinned[static_cast<const char*>(p)] = size;
  *pHost = p;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaFreeHost(void* ptr) {
  if (const cudaError_t e = refuse_if_capturing()) return e;
  run_all_deferred();  // as cudaFree, it synchronises
  std::lock_guard lock(state().mutex);
  if (!state().pinned.erase(static_cast<const char*>(ptr))) return record(cudaErrorInvalidValue);
  std::free(ptr);
  return cudaSuccess;
}

namespace {
// The device side of a copy must lie in one allocation; the host side must not be device
// memory.
cudaError_t check_copy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  const bool dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (kind == cudaMemcpyHostToHost || kind == cudaMemcpyDefault) return cudaErrorInvalidMemcpyDirection;
  if (n == 0) return cudaSuccess;
  if (dst_device != device_range(dst, n) || src_device != device_range(src, n)) return cudaErrorInvalidValue;
  return cudaSuccess;
}
// A copy a GPU runs asynchronously to the host: device to device, or between device and
// pinned memory (a pageable source is staged before the call returns, a pageable
// destination written before it returns). `n`: the host side's span.
bool deferrable(const void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  if (kind == cudaMemcpyDeviceToDevice) return true;
  return pinned_range(kind == cudaMemcpyHostToDevice ? src : dst, n);
}
}  // namespace

cudaError_t CUDARTAPI cudaMemcpyAsync(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind,
                                      cudaStream_t stream) {
  if (const cudaError_t e = check_copy(dst, src, count, kind); e != cudaSuccess) return record(e);
  const auto copy = [=] {
    DeviceAccess access;
    if (count) std::memcpy(dst, src, count);
  };
  if (!issue(stream, copy, deferrable(dst, src, count, kind))) copy();
  return cudaSuccess;
}

// Device memory only, wholly inside one allocation (as the hardware faults otherwise).
cudaError_t CUDARTAPI cudaMemsetAsync(void* dst, int value, size_t count, cudaStream_t stream) {
  if (count && !device_range(dst, count)) return record(cudaErrorInvalidValue);
  const auto set = [=] {
    DeviceAccess access;
    if (count) std::memset(dst, value, count);
  };
  if (!issue(stream, set, true)) set();
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemcpy(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind) {
  if (const cudaError_t e = refuse_if_capturing()) return e;
  return cudaMemcpyAsync(dst, src, count, kind, nullptr);
}

cudaError_t CUDARTAPI cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width,
                                        size_t height, enum cudaMemcpyKind kind, cudaStream_t stream) {
  if (width > dpitch || width > spitch || dpitch > kMaxPitch || spitch > kMaxPitch)
    return record(cudaErrorInvalidPitchValue);
  if (height == 0 || width == 0) return cudaSuccess;
  // The whole span of each side (first row's start to last row's end).
  if (const cudaError_t e = check_copy(dst, src, 0, kind); e != cudaSuccess) return record(e);
  const size_t dst_span = (height - 1) * dpitch + width, src_span = (height - 1) * spitch + width;
  const bool dst_device = kind != cudaMemcpyDeviceToHost, src_device = kind != cudaMemcpyHostToDevice;
  if (dst_device != device_range(dst, dst_span) || src_device != device_range(src, src_span))
    return record(cudaErrorInvalidValue);
  const auto copy = [=] {
    DeviceAccess access;
    for (size_t r = 0; r < height; ++r)
      std::memcpy(static_cast<char*>(dst) + r * dpitch, static_cast<const char*>(src) + r * spitch, width);
  };
  if (!issue(stream, copy, deferrable(dst, src, std::max(dst_span, src_span), kind))) copy();
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemcpy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                                   enum cudaMemcpyKind kind) {
  if (const cudaError_t e = refuse_if_capturing()) return e;
  return cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height, kind, nullptr);
}

cudaError_t CUDARTAPI cudaDriverGetVersion(int* driverVersion) {
  *driverVersion = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaRuntimeGetVersion(int* runtimeVersion) {
  *runtimeVersion = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaGetLastError(void) {
  const cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}

const char* CUDARTAPI cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidPitchValue: return "cudaErrorInvalidPitchValue";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureWrongThread: return "cudaErrorStreamCaptureWrongThread";
    default: return "cudaErrorUnknown";
  }
}

const char* CUDARTAPI cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument (emulator: a device range outside every allocation?)";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidPitchValue: return "invalid pitch argument";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorIllegalState: return "the operation is not permitted in this state (a stream capture?)";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureWrongThread: return "attempt to terminate a thread-local capture sequence from another thread";
    default: return "unknown error";
  }
}

}  // extern "C"
