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
// show), asynchrony (every launch and copy completes before it returns), and the device's
// math library (expf, rsqrtf... are the host's: last-bit differences only).
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

// Runs `kernel_body` as a grid of `blocks` × `threads` CUDA threads; throws Error naming
// `name` for a launch the hardware refuses (no threads, more than 1024 per block) and for a
// barrier that cannot complete.
void run_grid(const char* name, unsigned blocks, unsigned threads, const std::function<void()>& kernel_body);

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

// Device math functions the host library lacks.
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
template <class T>
T min(T a, T b) {
  return b < a ? b : a;
}
template <class T>
T max(T a, T b) {
  return a < b ? b : a;
}

namespace pivotmt::cuda {

// The emulator's launch: the same signature as launch.cuh's.
template <class... Params, class... Args>
void launch(const char* name, void (*kernel)(Params...), unsigned blocks, unsigned threads, cudaStream_t,
            Args&&... args) {
  std::tuple<Params...> params(std::forward<Args>(args)...);
  emu::run_grid(name, blocks, threads, [&] { std::apply(kernel, params); });
}

}  // namespace pivotmt::cuda
