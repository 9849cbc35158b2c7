// CUDA kernels called directly, against plain host loops (built when CUDA is on: label
// "gpu" on a device, skipping without one, and again on the CUDA emulator, label
// "emulator"). Kernels reached through the op interface are checked by the op harness;
// these are the ones it cannot see in isolation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "backends/backend.h"
#include "backends/cuda/kernels.h"
#include "backends/kv_blocks.h"
#include "core/error.h"

namespace pivotmt {
namespace {

bool have_gpu() { return cuda_compiled() && cuda_device_count() > 0; }
#define REQUIRE_GPU() \
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device"

void ok(cudaError_t e) { ASSERT_EQ(e, cudaSuccess) << cudaGetErrorName(e); }

// A pool as CudaOps lays it out: `arrays` arrays (every layer's K, then V) of `blocks`
// blocks of kKvBlockPositions positions of `position_bytes` bytes.
struct PoolShape {
  size_t arrays, blocks, position_bytes;
  size_t block_bytes() const { return kKvBlockPositions * position_bytes; }
  size_t array_bytes() const { return blocks * block_bytes(); }
  size_t bytes() const { return arrays * array_bytes(); }
};

// What the copies must do, one array, position and byte at a time.
void copy_on_host(std::vector<unsigned char>& pool, const PoolShape& p, const std::vector<BlockCopy>& copies) {
  for (const auto& c : copies)
    for (size_t a = 0; a < p.arrays; ++a)
      for (size_t pos = 0; pos < c.positions; ++pos)
        for (size_t b = 0; b < p.position_bytes; ++b)
          pool[a * p.array_bytes() + size_t(c.to) * p.block_bytes() + pos * p.position_bytes + b] =
              pool[a * p.array_bytes() + size_t(c.from) * p.block_bytes() + pos * p.position_bytes + b];
}

void run_copies(const PoolShape& p, void* pool, const std::vector<BlockCopy>& copies) {
  PendingBlockCopies pending;
  for (const auto& c : copies) pending.add(c);
  const auto entries = pending.take_entries();
  auto d_entries = cuda::device_alloc(0, entries.size() * 4);
  ok(cudaMemcpy(d_entries.get(), entries.data(), entries.size() * 4, cudaMemcpyHostToDevice));
  cuda::kernels::kv_copy_blocks(static_cast<const int32_t*>(d_entries.get()), int(copies.size()), int(p.arrays),
                                p.array_bytes(), int(p.position_bytes), pool, nullptr);
  ok(cudaDeviceSynchronize());
}

TEST(CudaKernels, KvBlockCopiesMatchLayerByLayerCopies) {
  REQUIRE_GPU();
  // 12-byte positions (the 2-byte path: 3 KV heads x 2 dims), 128-byte positions (the
  // 16-byte path: Llama's 64-dim heads), 3 and 2 layers.
  for (const PoolShape p : {PoolShape{6, 7, 12}, PoolShape{4, 9, 128}}) {
    std::vector<unsigned char> pool(p.bytes());
    for (size_t i = 0; i < pool.size(); ++i) pool[i] = static_cast<unsigned char>(i * 131 + i / 251);
    auto d = cuda::device_alloc(0, pool.size());
    ok(cudaMemcpy(d.get(), pool.data(), pool.size(), cudaMemcpyHostToDevice));
    // A partial block, a whole block, one position; every other byte must stay as it was.
    const std::vector<BlockCopy> copies = {{4, 1, 11}, {0, 5, 16}, {2, 6, 1}};
    run_copies(p, d.get(), copies);
    copy_on_host(pool, p, copies);
    std::vector<unsigned char> got(pool.size());
    ok(cudaMemcpy(got.data(), d.get(), got.size(), cudaMemcpyDeviceToHost));
    EXPECT_EQ(got, pool) << "position of " << p.position_bytes << " bytes";
  }
}

// The reason the copy is a kernel: a pool whose layers lie more than 2^31 - 1 bytes apart
// (any uncapped pool on an 80 GB GPU) is past cudaMemcpy2D's maximum pitch.
TEST(CudaKernels, KvBlockCopiesReachArraysPastTheMaximumPitch) {
  REQUIRE_GPU();
  const PoolShape p{2, (size_t(1) << 31) / (kKvBlockPositions * 256) + 3, 256};  // 2 arrays of 2 GiB + 12 KiB
  size_t free = 0, total = 0;
  ok(cudaMemGetInfo(&free, &total));
  if (free < p.bytes() + (size_t(256) << 20)) GTEST_SKIP() << "needs " << p.bytes() / (1 << 20) << " MiB of device memory";
  auto d = cuda::device_alloc(0, p.bytes());
  char* pool = static_cast<char*>(d.get());
  // The old strided copy of a block is refused by CUDA itself.
  EXPECT_EQ(cudaMemcpy2D(pool, p.array_bytes(), pool + p.block_bytes(), p.array_bytes(), p.block_bytes(), p.arrays,
                         cudaMemcpyDeviceToDevice),
            cudaErrorInvalidPitchValue);
  cudaGetLastError();
  // Blocks at the start and at the very end of each array, written from the host.
  const std::vector<BlockCopy> copies = {{int32_t(p.blocks - 1), 0, 13}, {1, int32_t(p.blocks - 2), 16}};
  const std::vector<int32_t> touched = {0, 1, int32_t(p.blocks - 2), int32_t(p.blocks - 1)};
  std::vector<unsigned char> want(p.arrays * touched.size() * p.block_bytes());
  auto at = [&](size_t a, int32_t block) { return a * p.array_bytes() + size_t(block) * p.block_bytes(); };
  for (size_t a = 0; a < p.arrays; ++a)
    for (size_t t = 0; t < touched.size(); ++t) {
      unsigned char* h = want.data() + (a * touched.size() + t) * p.block_bytes();
      for (size_t i = 0; i < p.block_bytes(); ++i) h[i] = static_cast<unsigned char>(a * 71 + t * 13 + i * 7);
      ok(cudaMemcpy(pool + at(a, touched[t]), h, p.block_bytes(), cudaMemcpyHostToDevice));
    }
  run_copies(p, pool, copies);
  // Expected: the same copies on the host image of the touched blocks.
  auto index = [&](int32_t block) { return size_t(std::find(touched.begin(), touched.end(), block) - touched.begin()); };
  for (const auto& c : copies)
    for (size_t a = 0; a < p.arrays; ++a)
      std::memcpy(want.data() + (a * touched.size() + index(c.to)) * p.block_bytes(),
                  want.data() + (a * touched.size() + index(c.from)) * p.block_bytes(), c.positions * p.position_bytes);
  for (size_t a = 0; a < p.arrays; ++a)
    for (size_t t = 0; t < touched.size(); ++t) {
      std::vector<unsigned char> got(p.block_bytes());
      ok(cudaMemcpy(got.data(), pool + at(a, touched[t]), got.size(), cudaMemcpyDeviceToHost));
      EXPECT_EQ(0, std::memcmp(got.data(), want.data() + (a * touched.size() + t) * p.block_bytes(), got.size()))
          << "array " << a << ", block " << touched[t];
    }
}

}  // namespace
}  // namespace pivotmt
