// The CUDA emulator's kernel side: what a kernel source (src/backends/cuda/*.cu) needs to
// compile as plain C++ and run on the CPU, for the tests of a machine without a GPU.
//
// Included before a .cu file (tests/cuda_emulator/kernels.cpp); it defines
// PIVOTMT_CUDA_EMULATOR, so launch.cuh leaves `launch` to this header. Every CUDA thread of
// a block runs as a fiber on the calling thread; warp shuffles and __syncwarp /
// __syncthreads are barriers between those fibers, so the kernels' cooperative code (warp
// reductions, shared memory, online softmax) runs as written. It is strict where the
// hardware is undefined: a full-mask warp operation with a lane missing (exited, or a
// partial warp) and a barrier that can never complete are errors naming the kernel.
//
// Not emulated: concurrency (threads run one at a time, in order, so data races do not
// show; work on a created stream — kernels, GEMMs, pinned copies — is deferred as late as
// CUDA's ordering allows instead: streams.cpp), and the device's math library (expf,
// rsqrtf... are the host's: last-bit differences only).
#pragma once
#define PIVOTMT_CUDA_EMULATOR 1

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>

#include "cuda_emulator/device_access.h"

// Function and variable qualifiers: kernels are host functions; shared memory is one
// object per (kernel, OS thread), which the fibers of a block share (blocks run one after
// another, so no two blocks use it at once).
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __forceinline__
#define __global__
#define __device__
#define __host__
#define __shared__ static thread_local
#define __forceinline__ inline

namespace pivotmt::cuda::emu {

// The running CUDA thread's coordinates (1-D grids and blocks: what our kernels launch).
struct Coordinates {
  uint3 thread{0, 0, 0};
  uint3 block{0, 0, 0};
  dim3 block_dim{1, 1, 1};
  dim3 grid_dim{1, 1, 1};
};
const Coordinates& coordinates();

// Barriers among the running block's threads (all live threads) and warp (all 32 lanes).
void sync_block();
void sync_warp();
// The warp's lanes each contribute `value`; each gets the value of lane `source(lane)`.
uint64_t warp_exchange(uint64_t value, int source_lane);

// Every lane of the running warp contributes `bytes` (at most kMaxGatherBytes) at `mine`;
// each gets a pointer to all 32 lanes' contributions, kMaxGatherBytes apart, valid until
// its next warp operation (one warp barrier: the warp-collective PTX instructions below are
// built on it).
constexpr size_t kMaxGatherBytes = 64;
const unsigned char* warp_all_gather(const void* mine, size_t bytes);

// cp.async: a copy from device to shared memory that lands at some time between its issue
// and the async_wait that covers its group. When is the schedule's choice (forward: at the
// wait; reverse: at the issue; random: either, per copy), so a kernel that reads the
// destination before waiting and syncing, or overwrites a buffer other threads still read,
// sees other values under some schedule.
void async_copy(void* shared_dst, const void* global_src, size_t bytes);
void async_commit();
void async_wait(int pending_groups);  // all but the newest `pending_groups` groups have landed

// Runs `kernel_body` as a grid of `blocks` × `threads` CUDA threads; throws Error naming
// `name` for a launch the hardware refuses (no threads, more than 1024 per block) and for a
// barrier that cannot complete.
void run_grid(const char* name, unsigned blocks, unsigned threads, const std::function<void()>& kernel_body);
// The launch configuration checks of run_grid alone: a launch into a capturing stream is
// refused when it is issued, as on the hardware, not when the graph runs.
void check_launch(const char* name, unsigned blocks, unsigned threads);

// The order in which ready threads run (as PIVOTMT_CUDA_EMULATOR_SCHEDULE: "forward",
// "reverse" or "random:SEED"); for tests.
void set_schedule(const std::string& order);

template <class T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>);
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}
template <class T>
T from_bits(uint64_t bits) {
  T v;
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}

}  // namespace pivotmt::cuda::emu

#define threadIdx (::pivotmt::cuda::emu::coordinates().thread)
#define blockIdx (::pivotmt::cuda::emu::coordinates().block)
#define blockDim (::pivotmt::cuda::emu::coordinates().block_dim)
#define gridDim (::pivotmt::cuda::emu::coordinates().grid_dim)

inline void __syncthreads() { ::pivotmt::cuda::emu::sync_block(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  if (mask != 0xffffffffu) throw std::logic_error("CUDA emulator: only full-warp __syncwarp is emulated");
  ::pivotmt::cuda::emu::sync_warp();
}
template <class T>
T __shfl_sync(unsigned mask, T value, int source, int width = 32) {
  if (mask != 0xffffffffu || width != 32) throw std::logic_error("CUDA emulator: only full-warp shuffles are emulated");
  using namespace ::pivotmt::cuda::emu;
  return from_bits<T>(warp_exchange(to_bits(value), source & 31));
}
template <class T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
  if (mask != 0xffffffffu || width != 32) throw std::logic_error("CUDA emulator: only full-warp shuffles are emulated");
  using namespace ::pivotmt::cuda::emu;
  const int lane = int(coordinates().thread.x % 32);
  return from_bits<T>(warp_exchange(to_bits(value), (lane ^ lane_mask) & 31));
}

// Atomics: threads run one at a time and switch only at barriers, so a read-modify-write
// is atomic as written.
template <class T>
T atomicAdd(T* address, T value) {
  static_assert(std::is_arithmetic_v<T>);
  const T old = *address;
  *address = old + value;
  return old;
}

// Device math functions the host library lacks.
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
// Round-to-nearest products and sums that the compiler must not fuse (the emulator is built
// without FMA contraction, so the plain operators are exactly these).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
// Reinterpretations of a float's bits.
inline unsigned __float_as_uint(float x) { return unsigned(::pivotmt::cuda::emu::to_bits(x)); }
inline float __uint_as_float(unsigned u) { return ::pivotmt::cuda::emu::from_bits<float>(u); }
template <class T>
T min(T a, T b) {
  return b < a ? b : a;
}
template <class T>
T max(T a, T b) {
  return a < b ? b : a;
}

// The PTX instructions of src/backends/cuda/ptx.cuh, as the PTX ISA defines them (fragment
// layouts of mma.m16n8k16 and ldmatrix), warp-collective: every lane must take part.
namespace pivotmt::cuda::ptx {

// The lane's four accumulators of a 16 x 8 product — rows g and g + 8, cols 2t and 2t + 1
// (g = lane / 4, t = lane % 4) — plus Σ over k < K of A(row, k) · B(k, col), summed in F32
// in k order (the hardware's order and intermediate precision are unspecified).
template <class ElementA, class ElementB>
void accumulate_fragment(float d[4], int K, ElementA A, ElementB B) {
  const int lane = int(emu::coordinates().thread.x % 32), g = lane / 4, t = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + i % 2;
    float sum = 0.0f;
    for (int k = 0; k < K; ++k) sum += A(row, k) * B(k, col);
    d[i] += sum;
  }
}

// d (16 x 8, F32) += a (16 x 16, F16, row-major fragments) · b (16 x 8, F16, column-major):
// mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32. With g = lane / 4, t = lane % 4: a's
// registers hold (row g, cols 2t, 2t+1), (row g+8, same), (row g, cols 2t+8, 2t+9), (row g+8,
// same); b's (rows 2t, 2t+1, col g), (rows 2t+8, 2t+9, col g); d's (row g, cols 2t, 2t+1),
// (row g+8, same). Products of halves are exact in F32; the sum is taken in F32 in k order
// (the hardware's order and intermediate precision are unspecified).
inline void mma_f16_f32(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  uint32_t mine[6];  // a's four registers, then b's two
  std::memcpy(mine, a, 16);
  std::memcpy(mine + 4, b, 8);
  const unsigned char* all = emu::warp_all_gather(mine, sizeof(mine));
  auto half_at = [&](int lane, int reg, int which) {
    uint16_t bits;
    std::memcpy(&bits, all + size_t(lane) * emu::kMaxGatherBytes + 4 * reg + 2 * which, 2);
    __half_raw raw;
    raw.x = bits;
    return __half2float(__half(raw));
  };
  auto A = [&](int row, int col) {  // the lane and register holding a[row][col]
    return half_at((row % 8) * 4 + (col % 8) / 2, (row >= 8 ? 1 : 0) + (col >= 8 ? 2 : 0), col % 2);
  };
  auto B = [&](int k, int col) { return half_at(col * 4 + (k % 8) / 2, 4 + (k >= 8 ? 1 : 0), k % 2); };
  accumulate_fragment(d, 16, A, B);
}

// d (16 x 8, F32) += a (16 x 8, TF32) · b (8 x 8, TF32):
// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32. a's registers hold (row g, col t),
// (row g+8, col t), (row g, col t+4), (row g+8, col t+4); b's (row t, col g), (row t+4, col
// g); d as above. The tensor cores read an F32 register's sign, exponent and top 10 mantissa
// bits: the low 13 are dropped here too, so an operand not rounded to TF32 first is
// truncated as on the hardware. Products of TF32 values are exact in F32; the sum is taken
// in F32 in k order.
inline void mma_tf32_f32(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  uint32_t mine[6];
  std::memcpy(mine, a, 16);
  std::memcpy(mine + 4, b, 8);
  const unsigned char* all = emu::warp_all_gather(mine, sizeof(mine));
  auto tf32_at = [&](int lane, int reg) {
    uint32_t bits;
    std::memcpy(&bits, all + size_t(lane) * emu::kMaxGatherBytes + 4 * reg, 4);
    return emu::from_bits<float>(bits & ~0x1fffu);
  };
  auto A = [&](int row, int k) { return tf32_at((row % 8) * 4 + k % 4, (row >= 8 ? 1 : 0) + (k >= 4 ? 2 : 0)); };
  auto B = [&](int k, int col) { return tf32_at(col * 4 + k % 4, 4 + (k >= 4 ? 1 : 0)); };
  accumulate_fragment(d, 8, A, B);
}

// ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16: four 8 x 8 matrices of 16-bit values;
// lane l gives the address of row l % 8 of matrix l / 8 (16 bytes, 16-byte aligned). Lane
// l's register i holds matrix i's (row l / 4, cols 2 (l % 4), +1), or with .trans its
// (rows 2 (l % 4), +1, col l / 4).
inline void ldmatrix_x4_impl(uint32_t r[4], const void* row_address, bool trans) {
  if (reinterpret_cast<uintptr_t>(row_address) % 16 != 0)
    throw std::logic_error("CUDA emulator: ldmatrix row address not 16-byte aligned");
  const unsigned char* all = emu::warp_all_gather(&row_address, sizeof(row_address));
  const int lane = int(emu::coordinates().thread.x % 32);
  auto element = [&](int matrix, int row, int col) {
    const char* address;
    std::memcpy(&address, all + size_t(8 * matrix + row) * emu::kMaxGatherBytes, sizeof(address));
    uint16_t v;
    std::memcpy(&v, address + 2 * col, 2);
    return uint32_t(v);
  };
  for (int m = 0; m < 4; ++m) {
    const int a = lane / 4, b = 2 * (lane % 4);
    r[m] = trans ? element(m, b, a) | element(m, b + 1, a) << 16 : element(m, a, b) | element(m, a, b + 1) << 16;
  }
}
inline void ldmatrix_x4(uint32_t r[4], const void* row_address) { ldmatrix_x4_impl(r, row_address, false); }
inline void ldmatrix_x4_trans(uint32_t r[4], const void* row_address) { ldmatrix_x4_impl(r, row_address, true); }

// cp.async.cg.shared.global (16 bytes), cp.async.commit_group, cp.async.wait_group N.
inline void cp_async_16(void* shared_dst, const void* global_src) { emu::async_copy(shared_dst, global_src, 16); }
inline void cp_async_commit() { emu::async_commit(); }
template <int N>
void cp_async_wait() {
  emu::async_wait(N);
}

}  // namespace pivotmt::cuda::ptx

namespace pivotmt::cuda {

// The emulator's launch: the same signature as launch.cuh's. Into a capturing stream, the
// kernel and its arguments (by value, as CUDA records them) become a node of the graph.
template <class... Params, class... Args>
void launch(const char* name, void (*kernel)(Params...), unsigned blocks, unsigned threads, cudaStream_t stream,
            Args&&... args) {
  emu::check_launch(name, blocks, threads);
  const std::tuple<Params...> params(std::forward<Args>(args)...);
  const auto run = [name, kernel, blocks, threads, params] {
    emu::run_grid(name, blocks, threads, [&] { std::apply(kernel, params); });
  };
  if (!emu::capture(stream, run)) run();
}

}  // namespace pivotmt::cuda
