// The CUDA emulator's own guarantees (tests/cuda_emulator), its kernel half: it runs
// cooperative kernels as the hardware does (warp shuffles, shared memory between barriers,
// the PTX instructions of ptx.cuh by the ISA's fragment layouts) and refuses what the
// hardware leaves undefined, so that the GPU tests run on it mean something. The runtime
// half (streams, copies, GEMMs, capture, device memory) is test_cuda_emulator_runtime.cpp.
#include "cuda_emulator/emulator.h"
#include "backends/cuda/ptx.cuh"

#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "backends/backend.h"
#include "core/error.h"
#include "emulator_buffers.h"

namespace pivotmt {
namespace {

using cuda::launch;
using test::download;
using test::upload;
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

__global__ void misaligned_ldmatrix(float* out) {
  __shared__ struct alignas(16) {
    __half v[8 * 16 + 8];
  } s;
  uint32_t r[4];
  ptx::ldmatrix_x4(r, &s.v[1 + 8 * (threadIdx.x % 8)]);
  out[threadIdx.x] = float(r[0]);
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

}  // namespace
}  // namespace pivotmt
