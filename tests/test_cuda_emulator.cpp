// The CUDA emulator's own guarantees (tests/cuda_emulator): it runs cooperative kernels as
// the hardware does (warp shuffles, shared memory between barriers) and refuses what the
// hardware leaves undefined or faults on, so that the GPU tests run on it mean something.
#include "cuda_emulator/emulator.h"
#include "backends/cuda/ptx.cuh"

#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "backends/backend.h"
#include "backends/cuda/cublas_loader.h"
#include "core/dtype.h"
#include "core/error.h"

namespace pivotmt {
namespace {

using cuda::launch;
namespace ptx = cuda::ptx;

// --- Kernels under test (plain CUDA; compiled here by the emulator's header).

// out[b] = sum of x over block b's threads: warp butterflies, then one value per warp in
// shared memory after a barrier.
__global__ void block_sum(const float* x, float* out) {
  float v = x[blockIdx.x * blockDim.x + threadIdx.x];
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  __shared__ float partial[32];
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0;
    for (unsigned w = 0; w < blockDim.x / 32; ++w) total += partial[w];
    out[blockIdx.x] = total;
  }
}

// out[i] = in[n - 1 - i] through shared memory: wrong without the barrier, since thread i
// would read a slot a later thread has not yet written.
__global__ void reverse_in_shared(const int* in, int* out) {
  __shared__ int s[1024];
  s[threadIdx.x] = in[threadIdx.x];
  __syncthreads();
  out[threadIdx.x] = s[blockDim.x - 1 - threadIdx.x];
}

// Each lane gets lane `source`'s 64-bit value, then its xor-neighbour's lane index.
__global__ void broadcast(int64_t* out, int source) {
  const int64_t mine = int64_t(threadIdx.x) << 40 | threadIdx.x;
  out[threadIdx.x] = __shfl_sync(0xffffffffu, mine, source);
  out[blockDim.x + threadIdx.x] = __shfl_xor_sync(0xffffffffu, int(threadIdx.x), 3);
}

__global__ void shuffle_in_partial_warp(float* out) { out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1); }

// Lanes 16-31 return while lanes 0-15 shuffle: undefined on the hardware.
__global__ void shuffle_after_some_lanes_return(float* out) {
  if (threadIdx.x % 32 >= 16) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}

// Lane 0 of warp 0 waits at __syncthreads while its warp-mates wait for it at __syncwarp.
__global__ void barrier_deadlock(int* out) {
  if (threadIdx.x == 0) {
    __syncthreads();
  } else if (threadIdx.x < 32) {
    __syncwarp();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

__global__ void write_at(char* p, size_t offset) { p[offset] = 1; }

// A race: each thread reads its neighbour's shared slot with no barrier in between.
__global__ void racy_neighbour(int* out) {
  __shared__ int s[64];
  s[threadIdx.x] = int(threadIdx.x) + 100 * int(blockIdx.x);
  out[blockIdx.x * blockDim.x + threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}

// The tensor-core path of src/backends/cuda/ptx.cuh on one warp: A (16 x 16, row-major) and
// B (16 x 8) staged into shared memory by cp.async, A's fragments by ldmatrix, B's twice —
// from Bᵀ stored [n][k] by ldmatrix and from B stored [k][n] by ldmatrix.trans (as the
// attention kernel reads keys and values) — then d = a · b by mma, each lane writing its
// accumulators where the PTX ISA's layout puts them: row g (+ 8), cols 2t, 2t + 1.
__global__ void tensor_core_product(const __half* a, const __half* b_nk, const __half* b_kn, float* d_nk, float* d_kn) {
  __shared__ struct alignas(16) {
    __half a[16][24], b_nk[8][24], b_kn[16][16];  // rows padded to 16-byte multiples
  } sh;
  const int lane = int(threadIdx.x);
  // 16-byte pieces: a has 32 (2 per row), b_nk 16, b_kn 16.
  ptx::cp_async_16(&sh.a[lane / 2][8 * (lane % 2)], a + 8 * lane);
  if (lane < 16) ptx::cp_async_16(&sh.b_nk[lane / 2][8 * (lane % 2)], b_nk + 8 * lane);
  else ptx::cp_async_16(&sh.b_kn[(lane - 16)][0], b_kn + 8 * (lane - 16));
  ptx::cp_async_commit();
  ptx::cp_async_wait<0>();
  __syncthreads();
  uint32_t fa[4], fb[4], fbt[4];
  ptx::ldmatrix_x4(fa, &sh.a[lane % 8 + 8 * ((lane / 8) % 2)][8 * (lane / 16)]);
  ptx::ldmatrix_x4(fb, &sh.b_nk[lane % 8][8 * ((lane / 8) % 2)]);        // matrices 2, 3 repeat 0, 1
  ptx::ldmatrix_x4_trans(fbt, &sh.b_kn[lane % 8 + 8 * ((lane / 8) % 2)][0]);
  float d1[4] = {0, 0, 0, 0}, d2[4] = {0.5f, 0.5f, 0.5f, 0.5f};  // d2 accumulates onto 0.5
  ptx::mma_f16_f32(d1, fa, fb);
  ptx::mma_f16_f32(d2, fa, fbt);
  const int g = lane / 4, t = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
    d_nk[row * 8 + col] = d1[i];
    d_kn[row * 8 + col] = d2[i];
  }
}

// mma.m16n8k8 in TF32 on one warp: each lane loads its fragments where the PTX ISA's
// layout puts them — a (16 x 8, row-major): (g, t), (g+8, t), (g, t+4), (g+8, t+4); b
// (8 x 8, [k][n]): (t, g), (t+4, g) — and writes d at (g (+ 8), 2t, 2t + 1).
__global__ void tf32_product(const float* a, const float* b, float* d) {
  const int lane = int(threadIdx.x), g = lane / 4, t = lane % 4;
  const uint32_t fa[4] = {__float_as_uint(a[g * 8 + t]), __float_as_uint(a[(g + 8) * 8 + t]),
                          __float_as_uint(a[g * 8 + t + 4]), __float_as_uint(a[(g + 8) * 8 + t + 4])};
  const uint32_t fb[2] = {__float_as_uint(b[t * 8 + g]), __float_as_uint(b[(t + 4) * 8 + g])};
  float acc[4] = {0.25f, 0.25f, 0.25f, 0.25f};  // accumulates onto 0.25
  ptx::mma_tf32_f32(acc, fa, fb);
  for (int i = 0; i < 4; ++i) d[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2] = acc[i];
}

// Reads a cp.async's destination without waiting for it: undefined on the hardware.
__global__ void read_before_wait(const int* in, int* out) {
  __shared__ struct alignas(16) {
    int v[4 * 32];
  } s;
  for (int i = 0; i < 4; ++i) s.v[4 * threadIdx.x + i] = -1;
  ptx::cp_async_16(&s.v[4 * threadIdx.x], in + 4 * threadIdx.x);
  ptx::cp_async_commit();
  for (int i = 0; i < 4; ++i) out[4 * threadIdx.x + i] = s.v[4 * threadIdx.x + i];
  ptx::cp_async_wait<0>();
}

__global__ void copy_floats(const float* in, float* out, int n) {
  if (int(threadIdx.x) < n) out[threadIdx.x] = in[threadIdx.x];
}

__global__ void misaligned_ldmatrix(float* out) {
  __shared__ struct alignas(16) {
    __half v[8 * 16 + 8];
  } s;
  uint32_t r[4];
  ptx::ldmatrix_x4(r, &s.v[1 + 8 * (threadIdx.x % 8)]);
  out[threadIdx.x] = float(r[0]);
}

// --- Helpers: device buffers through the backend (the emulated cudaMalloc).
template <class T>
std::shared_ptr<void> upload(const std::vector<T>& v) {
  auto d = cuda::device_alloc(0, v.size() * sizeof(T));
  EXPECT_EQ(cudaMemcpy(d.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return d;
}
template <class T>
std::vector<T> download(const std::shared_ptr<void>& d, size_t n) {
  std::vector<T> v(n);
  EXPECT_EQ(cudaMemcpy(v.data(), d.get(), n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return v;
}

TEST(CudaEmulator, WarpShufflesAndSharedMemoryReduce) {
  const unsigned blocks = 3, threads = 256;
  std::vector<float> x(blocks * threads);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i % 97) - 40.0f;  // exact in F32 sums
  auto dx = upload(x);
  auto dout = cuda::device_alloc(0, blocks * sizeof(float));
  launch("block_sum", block_sum, blocks, threads, nullptr, static_cast<const float*>(dx.get()),
         static_cast<float*>(dout.get()));
  const auto out = download<float>(dout, blocks);
  for (unsigned b = 0; b < blocks; ++b)
    EXPECT_EQ(out[b], std::accumulate(x.begin() + b * threads, x.begin() + (b + 1) * threads, 0.0f)) << "block " << b;
}

TEST(CudaEmulator, SyncthreadsOrdersSharedMemory) {
  for (unsigned n : {32u, 100u, 1024u}) {
    std::vector<int> in(n);
    std::iota(in.begin(), in.end(), 7);
    auto din = upload(in);
    auto dout = cuda::device_alloc(0, n * sizeof(int));
    launch("reverse_in_shared", reverse_in_shared, 1, n, nullptr, static_cast<const int*>(din.get()),
           static_cast<int*>(dout.get()));
    const auto out = download<int>(dout, n);
    for (unsigned i = 0; i < n; ++i) ASSERT_EQ(out[i], in[n - 1 - i]) << "n " << n << " i " << i;
  }
}

TEST(CudaEmulator, ShufflesMoveWholeValuesBetweenLanes) {
  auto dout = cuda::device_alloc(0, 2 * 64 * sizeof(int64_t));
  launch("broadcast", broadcast, 1, 64, nullptr, static_cast<int64_t*>(dout.get()), 37);  // source 37 & 31 = 5
  const auto out = download<int64_t>(dout, 128);
  for (int t = 0; t < 64; ++t) {
    const int64_t lane5 = (t / 32) * 32 + 5;
    EXPECT_EQ(out[size_t(t)], lane5 << 40 | lane5) << t;
    EXPECT_EQ(int(out[size_t(64 + t)]), (t / 32) * 32 + ((t % 32) ^ 3)) << t;
  }
}

TEST(CudaEmulator, RefusesWhatTheHardwareLeavesUndefined) {
  auto dout = cuda::device_alloc(0, 1024 * sizeof(float));
  auto* out = static_cast<float*>(dout.get());
  auto message = [&](auto kernel, unsigned threads) {
    try {
      launch("kernel", kernel, 1, threads, nullptr, out);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(message(shuffle_in_partial_warp, 48).find("warp of 16 threads"), std::string::npos);
  EXPECT_NE(message(shuffle_after_some_lanes_return, 64).find("returned"), std::string::npos);
  EXPECT_NE(message(shuffle_in_partial_warp, 0).find("cudaErrorInvalidConfiguration"), std::string::npos);
  EXPECT_NE(message(shuffle_in_partial_warp, 2048).find("cudaErrorInvalidConfiguration"), std::string::npos);
  try {
    launch("barrier_deadlock", barrier_deadlock, 1, 64, nullptr, reinterpret_cast<int*>(out));
    FAIL() << "a barrier that cannot complete went unnoticed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("deadlock"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("barrier_deadlock"), std::string::npos) << e.what();
  }
  // The emulator is usable after a failed launch.
  launch("shuffle_in_partial_warp", shuffle_in_partial_warp, 1, 32, nullptr, out);
  EXPECT_EQ(download<float>(dout, 1)[0], 1.0f);
}

TEST(CudaEmulator, OtherSchedulesExposeRaces) {
  auto dout = cuda::device_alloc(0, 2 * 64 * sizeof(int));
  auto run = [&](const char* order) {
    cuda::emu::set_schedule(order);
    launch("racy_neighbour", racy_neighbour, 2, 64, nullptr, static_cast<int*>(dout.get()));
    return download<int>(dout, 128);
  };
  const auto forward = run("forward"), reverse = run("reverse"), random = run("random:7");
  cuda::emu::set_schedule("forward");
  // Forward: thread t reads slot t + 1 before thread t + 1 writes it (the previous block's
  // value); reverse: after. A race-free kernel gives the same under every order.
  EXPECT_NE(forward, reverse);
  EXPECT_EQ(reverse[5], 6 + 0);
  EXPECT_EQ(reverse[64 + 5], 6 + 100);
  EXPECT_NE(random, forward);
  EXPECT_THROW(cuda::emu::set_schedule("sideways"), Error);
}

TEST(CudaEmulator, TensorCoreFragmentsFollowThePtxLayouts) {
  // Small integers: every product and sum is exact in F32, so the result is the integer product.
  std::vector<uint16_t> a(16 * 16), b_nk(8 * 16), b_kn(16 * 8);
  std::vector<float> fa(a.size()), fb(16 * 8);
  for (int i = 0; i < 16; ++i)
    for (int k = 0; k < 16; ++k) fa[size_t(i * 16 + k)] = float((i * 5 + k * 3) % 11 - 5);
  for (int k = 0; k < 16; ++k)
    for (int n = 0; n < 8; ++n) fb[size_t(k * 8 + n)] = float((k * 7 + n * 2) % 9 - 4);
  for (size_t i = 0; i < a.size(); ++i) a[i] = f32_to_f16(fa[i]);
  for (int k = 0; k < 16; ++k)
    for (int n = 0; n < 8; ++n) {
      b_kn[size_t(k * 8 + n)] = f32_to_f16(fb[size_t(k * 8 + n)]);
      b_nk[size_t(n * 16 + k)] = f32_to_f16(fb[size_t(k * 8 + n)]);
    }
  auto da = upload(a), dbn = upload(b_nk), dbk = upload(b_kn);
  auto d1 = cuda::device_alloc(0, 16 * 8 * 4), d2 = cuda::device_alloc(0, 16 * 8 * 4);
  for (const char* order : {"forward", "reverse", "random:3"}) {
    cuda::emu::set_schedule(order);
    launch("tensor_core_product", tensor_core_product, 1, 32, nullptr, static_cast<const __half*>(da.get()),
           static_cast<const __half*>(dbn.get()), static_cast<const __half*>(dbk.get()), static_cast<float*>(d1.get()),
           static_cast<float*>(d2.get()));
    const auto got1 = download<float>(d1, 128), got2 = download<float>(d2, 128);
    for (int i = 0; i < 16; ++i)
      for (int n = 0; n < 8; ++n) {
        float want = 0;
        for (int k = 0; k < 16; ++k) want += fa[size_t(i * 16 + k)] * fb[size_t(k * 8 + n)];
        ASSERT_EQ(got1[size_t(i * 8 + n)], want) << order << " (" << i << ", " << n << ") from [n][k]";
        ASSERT_EQ(got2[size_t(i * 8 + n)], want + 0.5f) << order << " (" << i << ", " << n << ") from [k][n], .trans";
      }
  }
  cuda::emu::set_schedule("forward");
}

// TF32 products: the layouts of the PTX ISA, exact products of TF32 values summed in F32,
// and an operand's low 13 mantissa bits ignored (truncated, as the tensor cores read it).
TEST(CudaEmulator, Tf32MmaFollowsThePtxLayoutsAndTruncates) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> small(-8, 8);
  auto tf32_trunc = [](float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    u &= ~0x1fffu;
    std::memcpy(&x, &u, 4);
    return x;
  };
  // Multiples of 1/16 (exact in TF32: sums exact too), then values with low bits set.
  for (bool low_bits : {false, true}) {
    std::vector<float> a(128), b(64);
    for (auto& x : a) x = float(small(rng)) / 16 + (low_bits ? 1e-4f : 0.0f);
    for (auto& x : b) x = float(small(rng)) / 16;
    auto da = upload(a), db = upload(b);
    auto dd = cuda::device_alloc(0, 128 * sizeof(float));
    launch("tf32_product", tf32_product, 1, 32, nullptr, static_cast<const float*>(da.get()),
           static_cast<const float*>(db.get()), static_cast<float*>(dd.get()));
    const auto got = download<float>(dd, 128);
    for (int i = 0; i < 16; ++i)
      for (int n = 0; n < 8; ++n) {
        float want = 0;
        for (int k = 0; k < 8; ++k) want += tf32_trunc(a[size_t(i * 8 + k)]) * b[size_t(k * 8 + n)];
        ASSERT_EQ(got[size_t(i * 8 + n)], want + 0.25f) << "(" << i << ", " << n << ")" << (low_bits ? " low bits" : "");
      }
    if (low_bits) {  // the truncation is visible: most untruncated products differ
      int differ = 0;
      for (int i = 0; i < 16; ++i)
        for (int n = 0; n < 8; ++n) {
          double exact = 0.25;
          for (int k = 0; k < 8; ++k) exact += double(a[size_t(i * 8 + k)]) * b[size_t(k * 8 + n)];
          differ += double(got[size_t(i * 8 + n)]) != exact;
        }
      EXPECT_GT(differ, 64);
    }
  }
}

TEST(CudaEmulator, AsyncCopiesLandBetweenIssueAndWait) {
  std::vector<int> in(128);
  std::iota(in.begin(), in.end(), 1);
  auto din = upload(in);
  auto dout = cuda::device_alloc(0, in.size() * sizeof(int));
  auto run = [&](const char* order) {
    cuda::emu::set_schedule(order);
    launch("read_before_wait", read_before_wait, 1, 32, nullptr, static_cast<const int*>(din.get()),
           static_cast<int*>(dout.get()));
    return download<int>(dout, in.size());
  };
  // Forward lands copies at the wait (the early read sees the old -1s), reverse at the
  // issue: a kernel that reads before waiting gives different results.
  EXPECT_EQ(run("forward"), std::vector<int>(in.size(), -1));
  EXPECT_EQ(run("reverse"), in);
  cuda::emu::set_schedule("forward");
  auto dfloat = cuda::device_alloc(0, 32 * sizeof(float));
  try {
    launch("misaligned_ldmatrix", misaligned_ldmatrix, 1, 32, nullptr, static_cast<float*>(dfloat.get()));
    FAIL() << "ldmatrix from a row that is not 16-byte aligned went unnoticed";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("16-byte aligned"), std::string::npos) << e.what();
  }
}

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
