// CUDA kernels called directly, against plain host loops (built when CUDA is on: label
// "gpu" on a device, skipping without one, and again on the CUDA emulator, label
// "emulator"). Kernels reached through the op interface are checked by the op harness;
// these are the ones it cannot see in isolation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "backends/backend.h"
#include "backends/cuda/blas_stream.h"
#include "backends/cuda/cuda_util.h"
#include "backends/cuda/kernels.h"
#include "backends/kv_blocks.h"
#include "backends/ops.h"
#include "backends/paged_attention.h"
#include "core/dtype.h"
#include "core/error.h"
#include "engine/sampling.h"

namespace pivotmt {
namespace {

bool have_gpu() { return cuda_compiled() && cuda_device_count() > 0; }
#define REQUIRE_GPU() \
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device"

void ok(cudaError_t e) { ASSERT_EQ(e, cudaSuccess) << cudaGetErrorName(e); }

// A device copy of a host vector.
template <class V>
std::shared_ptr<void> to_device(const V& host) {
  auto d = cuda::device_alloc(0, host.size() * sizeof(host[0]));
  EXPECT_EQ(cudaMemcpy(d.get(), host.data(), host.size() * sizeof(host[0]), cudaMemcpyHostToDevice), cudaSuccess);
  return d;
}

// sample_kernel on rows of `logits` (row stride ld, V scored), one setting per row; the ids.
std::vector<int32_t> sample_on_device(const std::vector<float>& logits, int ld, int V,
                                      const std::vector<cuda::kernels::DeviceSampling>& params) {
  auto dlogits = to_device(logits), dparams = to_device(params);
  auto dids = cuda::device_alloc(0, params.size() * 4);
  cuda::kernels::sample_rows(static_cast<const float*>(dlogits.get()), ld, int(params.size()), V,
                             static_cast<const cuda::kernels::DeviceSampling*>(dparams.get()),
                             static_cast<int32_t*>(dids.get()), nullptr);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<int32_t> ids(params.size());
  EXPECT_EQ(cudaMemcpy(ids.data(), dids.get(), ids.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  return ids;
}

// StagedUpload: the host does not wait for its copies, yet rewriting its staging waits for
// the copy that reads it — two copies back to back, nothing between them on the stream
// (on the emulator the first is still pending when the second is staged) each land whole.
TEST(CudaKernels, StagedUploadsDoNotRewriteWhatACopyStillReads) {
  REQUIRE_GPU();
  ok(cudaSetDevice(0));
  cudaStream_t stream = nullptr;
  ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const size_t n = 256;
  auto first = cuda::device_alloc(0, n * 4), second = cuda::device_alloc(0, n * 4);
  {
    cuda::StagedUpload staged;
    std::vector<int32_t> a(n), b(n);
    std::iota(a.begin(), a.end(), 1);
    std::iota(b.begin(), b.end(), 1000);
    staged.copy(a.data(), n * 4, first.get(), stream, "first");
    staged.copy(b.data(), n * 4, second.get(), stream, "second");
    a.assign(n, -1);  // the caller's memory is free at once
    ok(cudaStreamSynchronize(stream));
    std::vector<int32_t> got(n);
    ok(cudaMemcpy(got.data(), first.get(), n * 4, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(got[i], int32_t(i + 1)) << "first copy, element " << i;
    ok(cudaMemcpy(got.data(), second.get(), n * 4, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(got[i], int32_t(i + 1000)) << "second copy, element " << i;
  }
  ok(cudaStreamDestroy(stream));
}

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

// A decode step's few-row linear (rows_gemv_kernel, up to kGemvMaxRows rows) against the
// products of the same F16 values summed in double, strided rows in and out, F16 and F32
// outputs — and cuBLAS's path (9 rows, or GEMV refused) against the same sums.
TEST(CudaKernels, FewRowLinearEqualsDoubleSums) {
  REQUIRE_GPU();
  namespace k = cuda::kernels;
  const cuda::BlasStream bs(0);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  auto halves = [&](size_t n, float scale) {
    std::vector<uint16_t> h(n);
    std::vector<float> f(n);
    for (size_t i = 0; i < n; ++i) f[i] = u(rng) * scale;
    convert_floats(DType::F32, f.data(), DType::F16, h.data(), n);
    return h;
  };
  auto value = [](uint16_t h) {
    float f;
    convert_floats(DType::F16, &h, DType::F32, &f, 1);
    return double(f);
  };
  struct Case {
    int rows, in, out;
    bool gemv;
  };
  // 9001 features: three a warp, the last warp one (runs of consecutive features per warp
  // once there are more than the kernel's 4096 warps).
  for (const Case c : {Case{1, 8, 1, true}, Case{3, 520, 33, true}, Case{8, 4096, 257, true}, Case{5, 256, 96, true},
                       Case{2, 64, 9001, true}, Case{9, 520, 33, false}, Case{2, 524, 40, false}}) {
    const int ldx = c.in + 8, ldy = c.out + 3;
    const auto x = halves(size_t(c.rows) * ldx, 1.0f), w = halves(size_t(c.out) * c.in, 1.0f / std::sqrt(float(c.in)));
    auto dx = to_device(x), dw = to_device(w);
    EXPECT_EQ(k::gemv_supported(dx.get(), ldx, c.rows, dw.get(), c.in), c.gemv) << c.rows << " rows of " << c.in;
    for (const bool f32 : {true, false}) {
      auto dy = cuda::device_alloc(0, size_t(c.rows) * ldy * 4);
      k::linear(bs.blas(), bs.stream(), dx.get(), ldx, c.rows, dw.get(), c.out, c.in, dy.get(), ldy, f32);
      ok(cudaStreamSynchronize(bs.stream()));
      std::vector<float> got(size_t(c.rows) * ldy);
      std::vector<uint16_t> got16(size_t(c.rows) * ldy);
      ok(cudaMemcpy(f32 ? static_cast<void*>(got.data()) : static_cast<void*>(got16.data()), dy.get(),
                    size_t(c.rows) * ldy * (f32 ? 4 : 2), cudaMemcpyDeviceToHost));
      for (int r = 0; r < c.rows; ++r)
        for (int o = 0; o < c.out; ++o) {
          double want = 0, magnitude = 0;
          for (int i = 0; i < c.in; ++i) {
            const double p = value(x[size_t(r) * ldx + i]) * value(w[size_t(o) * c.in + i]);
            want += p;
            magnitude += std::fabs(p);
          }
          const double y = f32 ? got[size_t(r) * ldy + o] : value(got16[size_t(r) * ldy + o]);
          // F32 sums: within a few F32 roundings of the terms' magnitude; an F16 output one
          // rounding of F16 (2^-11 relative) further.
          const double bound = 1e-6 * magnitude + (f32 ? 0.0 : std::fabs(want) / 2048 + 6e-8);
          EXPECT_NEAR(y, want, bound) << c.rows << " rows, in " << c.in << ", row " << r << ", feature " << o
                                      << (f32 ? ", F32" : ", F16");
        }
    }
  }
  // Misaligned rows go to cuBLAS.
  auto dx = to_device(halves(64, 1.0f));
  EXPECT_FALSE(k::gemv_supported(static_cast<char*>(dx.get()) + 2, 16, 2, dx.get(), 16));
  EXPECT_FALSE(k::gemv_supported(dx.get(), 12, 2, dx.get(), 8));  // a second row 24 bytes on
  EXPECT_TRUE(k::gemv_supported(dx.get(), 12, 1, dx.get(), 8));   // one row: its stride unread
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

// Split-KV decode attention against its twin, the warp-per-(row, head) kernel of part 1:
// MHA, SmolLM2's GQA 9/3, 4 query heads per KV head at 128 dims with and without a
// sliding window, 256-dim heads; rows of 1 to 300 visible keys (two rows of one sequence
// among them) over shuffled block tables; 1, 2 and 5 splits (short rows leave splits
// empty). F16 outputs within two F16 steps (the sums run in another order).
TEST(CudaKernels, SplitKvDecodeAttentionEqualsTheWarpPerHeadKernel) {
  REQUIRE_GPU();
  struct Config {
    int nh, nkv, d, window;
  };
  const std::vector<int> lengths = {1, 50, 300, 101};      // sequences' cached positions
  const std::vector<std::pair<int, int>> rows = {{0, 0}, {1, 49}, {2, 299}, {3, 99}, {3, 100}};  // (sequence, position)
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (const Config c : {Config{4, 4, 64, 0}, Config{9, 3, 64, 0}, Config{8, 2, 128, 0}, Config{8, 2, 128, 37},
                         Config{2, 1, 256, 0}}) {
    const int T = int(rows.size()), ldq = (c.nh + 2 * c.nkv) * c.d + 8;  // padded rows
    ASSERT_TRUE(cuda::kernels::attention_split_supported(c.nh, c.nkv, c.d, ldq, reinterpret_cast<void*>(uintptr_t(256))));
    // Block tables: each sequence's blocks, drawn from a shuffled pool.
    std::vector<int32_t> table_offsets, tables;
    for (int len : lengths) {
      table_offsets.push_back(int32_t(tables.size()));
      for (int b = 0; b < (len + int(kKvBlockPositions) - 1) / int(kKvBlockPositions); ++b) tables.push_back(int32_t(tables.size()));
    }
    const size_t pool_blocks = tables.size() + 3;
    std::shuffle(tables.begin(), tables.end(), rng);
    const size_t width = size_t(c.nkv) * c.d, slots = pool_blocks * kKvBlockPositions;
    auto halves = [&](size_t n) {
      std::vector<uint16_t> v(n);
      for (auto& h : v) h = f32_to_f16(uniform(rng) * 2.0f);
      return v;
    };
    const auto k = halves(slots * width), v = halves(slots * width), qkv = halves(size_t(T) * ldq);
    std::vector<int32_t> row_seq, positions;
    for (const auto& [seq, pos] : rows) {
      row_seq.push_back(seq);
      positions.push_back(pos);
    }
    auto dk = to_device(k), dv = to_device(v), dq = to_device(qkv), dseq = to_device(row_seq), dpos = to_device(positions),
         doff = to_device(table_offsets), dtab = to_device(tables);
    const size_t ldo = size_t(c.nh) * c.d + 16;
    auto run = [&](int splits, int min_keys, const std::vector<int32_t>& only = {}) {
      std::vector<uint16_t> out(T * ldo, 0x7e00);  // NaN: what no kernel writes stays visible
      auto dout = to_device(out);
      const auto* seq = static_cast<const int32_t*>(dseq.get());
      const auto* pos = static_cast<const int32_t*>(dpos.get());
      const auto* off = static_cast<const int32_t*>(doff.get());
      const auto* tab = static_cast<const int32_t*>(dtab.get());
      if (splits == 0) {
        cuda::kernels::attention(dq.get(), ldq, T, c.nh, c.nkv, c.d, c.window, seq, pos, off, tab, dk.get(), dv.get(),
                                 dout.get(), int(ldo), nullptr);
      } else {
        auto partials = cuda::device_alloc(0, std::max<size_t>(4, cuda::kernels::attention_split_partials(T, c.nh, c.d, splits) * 4));
        // `only`: these rows through the kernel's row list (a mixed pass's decode rows).
        auto drows = to_device(only.empty() ? std::vector<int32_t>{0} : only);
        cuda::kernels::attention_split(dq.get(), ldq, only.empty() ? T : int(only.size()), c.nh, c.nkv, c.d, c.window, seq,
                                       pos, off, tab, dk.get(), dv.get(), splits, min_keys,
                                       only.empty() ? nullptr : static_cast<const int32_t*>(drows.get()),
                                       static_cast<float*>(partials.get()), dout.get(), int(ldo), nullptr);
      }
      EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      EXPECT_EQ(cudaMemcpy(out.data(), dout.get(), out.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
      return out;
    };
    const auto want = run(0, 0);
    // Each row cuts its own keys: even splits, splits past a short row's keys left empty
    // (a minimum per split), and more splits than the longest row has keys.
    for (const auto [splits, min_keys] : std::vector<std::pair<int, int>>{{1, 1}, {2, 1}, {5, 1}, {5, 64}, {33, 16}, {400, 1}}) {
      const auto got = run(splits, min_keys);
      for (int t = 0; t < T; ++t)
        for (size_t i = 0; i < ldo; ++i) {
          const float a = f16_to_f32(want[t * ldo + i]), b = f16_to_f32(got[t * ldo + i]);
          if (i >= size_t(c.nh) * c.d) {  // the padding stays untouched
            EXPECT_TRUE(std::isnan(b)) << "row " << t << " padding " << i;
            continue;
          }
          ASSERT_NEAR(b, a, 2e-3f + 2e-3f * std::fabs(a))
              << c.nh << "/" << c.nkv << "x" << c.d << " window " << c.window << " splits " << splits << " (min "
              << min_keys << ") row " << t
              << " (position " << positions[t] << ") element " << i;
        }
    }
    // Rows 4 and 1 alone through the kernel's row list (the tensor cores take the others in
    // a mixed pass): those rows as before, every other row untouched.
    const std::vector<int32_t> only = {4, 1};
    for (const auto [splits, min_keys] : std::vector<std::pair<int, int>>{{1, 1}, {5, 16}}) {
      const auto got = run(splits, min_keys, only);
      for (int t = 0; t < T; ++t)
        for (size_t i = 0; i < ldo; ++i) {
          const float a = f16_to_f32(want[t * ldo + i]), b = f16_to_f32(got[t * ldo + i]);
          if (i >= size_t(c.nh) * c.d || std::find(only.begin(), only.end(), t) == only.end()) {
            EXPECT_TRUE(std::isnan(b)) << "row " << t << " element " << i << " written though not listed";
            continue;
          }
          ASSERT_NEAR(b, a, 2e-3f + 2e-3f * std::fabs(a)) << "listed row " << t << " element " << i << " splits " << splits;
        }
    }
  }
}

// The tensor-core prefill kernel against the warp-per-(row, head) kernel on a pass as
// CudaOps builds it (pack_pass's query tiles): a 100-row prompt (tiles of 64 + 36 rows,
// warps with no rows), a 70-row chunk continuing a 230-position cache, one decode row, and
// 5 rows of one sequence at scattered positions (each row masks on its own position); MHA,
// GQA, a sliding window, 64 and 128 dims.
TEST(CudaKernels, TensorCorePrefillAttentionEqualsTheWarpPerHeadKernel) {
  REQUIRE_GPU();
  struct Config {
    int nh, nkv, d, window;
  };
  struct Run {
    int length;                  // the sequence's cached positions after the pass
    std::vector<int> positions;  // its rows' positions in the pass
  };
  std::vector<Run> runs(4);
  for (int p = 0; p < 100; ++p) runs[0].positions.push_back(p);
  for (int p = 230; p < 300; ++p) runs[1].positions.push_back(p);
  runs[2].positions = {150};
  runs[3].positions = {40, 3, 39, 17, 0};
  for (auto& r : runs) r.length = *std::max_element(r.positions.begin(), r.positions.end()) + 1;
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (const Config c : {Config{4, 4, 64, 0}, Config{6, 2, 64, 0}, Config{8, 2, 128, 0}, Config{8, 2, 128, 37},
                         Config{4, 1, 128, 0}}) {
    std::vector<std::vector<int32_t>> blocks(runs.size());
    int32_t next_block = 0;
    for (size_t i = 0; i < runs.size(); ++i)
      for (int b = 0; b < (runs[i].length + int(kKvBlockPositions) - 1) / int(kKvBlockPositions); ++b)
        blocks[i].push_back(next_block++);
    const size_t pool_blocks = size_t(next_block) + 2;
    std::vector<int32_t> permutation(pool_blocks);  // the blocks scattered over the pool
    for (size_t i = 0; i < pool_blocks; ++i) permutation[i] = int32_t(i);
    std::shuffle(permutation.begin(), permutation.end(), rng);
    for (auto& table : blocks)
      for (auto& b : table) b = permutation[size_t(b)];
    std::vector<PassSequence> seqs;
    std::vector<int64_t> positions;
    for (size_t i = 0; i < runs.size(); ++i) {
      seqs.push_back({&blocks[i], positions.size(), runs[i].positions.size()});
      for (int p : runs[i].positions) positions.push_back(p);
    }
    const int T = int(positions.size());
    const PassMetadata meta = pack_pass(std::vector<int32_t>(size_t(T), 0), positions, seqs);
    const int ldq = (c.nh + 2 * c.nkv) * c.d + 8;
    const size_t width = size_t(c.nkv) * c.d, slots = pool_blocks * kKvBlockPositions;
    auto halves = [&](size_t n) {
      std::vector<uint16_t> v(n);
      for (auto& h : v) h = f32_to_f16(uniform(rng) * 2.0f);
      return v;
    };
    const auto k = halves(slots * width), v = halves(slots * width), qkv = halves(size_t(T) * ldq);
    auto dk = to_device(k), dv = to_device(v), dq = to_device(qkv), dmeta = to_device(meta.data);
    const auto* m = static_cast<const int32_t*>(dmeta.get());
    const int ldo = c.nh * c.d + 16;
    ASSERT_TRUE(cuda::kernels::attention_prefill_supported(c.nh, c.nkv, c.d, ldq, dq.get(), ldo, dq.get()));
    auto run = [&](bool tensor_cores) {
      std::vector<uint16_t> out(size_t(T) * ldo, 0x7e00);  // NaN: what no kernel writes stays visible
      auto dout = to_device(out);
      if (tensor_cores)
        cuda::kernels::attention_prefill(dq.get(), ldq, c.nh, c.nkv, c.d, c.window, m + meta.query_tiles(),
                                         int(meta.Q), m + meta.row_seq(), m + meta.positions(),
                                         m + meta.table_offsets(), m + meta.tables(), dk.get(), dv.get(), dout.get(),
                                         ldo, nullptr);
      else
        cuda::kernels::attention(dq.get(), ldq, T, c.nh, c.nkv, c.d, c.window, m + meta.row_seq(),
                                 m + meta.positions(), m + meta.table_offsets(), m + meta.tables(), dk.get(), dv.get(),
                                 dout.get(), ldo, nullptr);
      EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      EXPECT_EQ(cudaMemcpy(out.data(), dout.get(), out.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
      return out;
    };
    const auto want = run(false), got = run(true);
    double worst = 0;
    for (int t = 0; t < T; ++t)
      for (int i = 0; i < ldo; ++i) {
        const float a = f16_to_f32(want[size_t(t) * ldo + i]), b = f16_to_f32(got[size_t(t) * ldo + i]);
        if (i >= c.nh * c.d) {  // the padding stays untouched
          EXPECT_TRUE(std::isnan(b)) << "row " << t << " padding " << i;
          continue;
        }
        worst = std::max(worst, double(std::fabs(a - b)));
        ASSERT_NEAR(b, a, 2e-3f + 2e-3f * std::fabs(a))
            << c.nh << "/" << c.nkv << "x" << c.d << " window " << c.window << " row " << t << " (position "
            << positions[size_t(t)] << ") element " << i;
      }
    std::cout << c.nh << "/" << c.nkv << "x" << c.d << " window " << c.window << ": largest difference " << worst << "\n";
  }
}

// Device sampling against engine/sampling.cpp's sample_token_at (the specification) on the
// same logits and draws: greedy rows, the original study's settings (temperature 0.1, top-k
// 50, top-p 0.75), top-k alone, wide top-k with top-p, ties at the k-th score and at the
// maximum, draws near 0 and 1, vocabularies of 3,001 and TowerInstruct's 32,007 (a row
// stride not a multiple of 4). On the emulator (the host's exp) every id must be equal; on
// a GPU expf and exp may differ in the last bit, which moves a draw only when it falls
// within that of a cumulative boundary: at most 1 in 200 may differ there.
TEST(CudaKernels, DeviceSamplingEqualsTheHostSampler) {
  REQUIRE_GPU();
  cudaDeviceProp prop{};
  ok(cudaGetDeviceProperties(&prop, 0));
  const bool emulated = std::string(prop.name).find("emulator") != std::string::npos;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  const std::vector<SamplingParams> settings = {
      {.greedy = true},
      {.greedy = false, .temperature = 0.1f, .top_k = 50, .top_p = 0.75f},
      {.greedy = false, .temperature = 1.0f, .top_k = 1, .top_p = 1.0f},
      {.greedy = false, .temperature = 0.7f, .top_k = 40, .top_p = 1.0f},
      {.greedy = false, .temperature = 1.3f, .top_k = 1000, .top_p = 0.9f},
      {.greedy = false, .temperature = 2.0f, .top_k = 7, .top_p = 0.5f}};
  int compared = 0, differing = 0, to_host = 0;
  for (const int V : {3001, 32007}) {
    const int ld = V + 3;
    for (int round = 0; round < 4; ++round) {
      const int rows = int(settings.size()) * 3;
      std::vector<float> logits(size_t(rows) * ld, NAN);  // the padding is never read
      std::vector<RowSampling> params(static_cast<size_t>(rows));
      for (int r = 0; r < rows; ++r) {
        float* row = &logits[size_t(r) * ld];
        const float spread = round == 0 ? 1.0f : round == 1 ? 4.0f : 10.0f;
        for (int i = 0; i < V; ++i) row[i] = normal(rng) * spread;
        if (round == 3) {  // ties: a plateau at the top, and at what would be the k-th
          for (int i = 0; i < 60; ++i) row[size_t(rng() % unsigned(V))] = 40.0f;
          for (int i = 0; i < 3; ++i) row[size_t(rng() % unsigned(V))] = 41.0f;
        }
        const int draw = r / int(settings.size());  // each setting with each kind of draw
        const double u = draw == 0 ? uniform(rng) : draw == 1 ? 1e-9 : 1.0 - 1e-9;
        params[size_t(r)] = {settings[size_t(r) % settings.size()], u};
      }
      std::vector<cuda::kernels::DeviceSampling> dp;
      for (const auto& [p, u] : params) dp.push_back({u, p.temperature, p.top_p, p.top_k, p.greedy ? 1 : 0});
      const std::vector<int32_t> ids = sample_on_device(logits, ld, V, dp);
      for (int r = 0; r < rows; ++r) {
        const auto& [p, u] = params[size_t(r)];
        const TokenId want = sample_token_at(std::span(&logits[size_t(r) * ld], size_t(V)), p, u);
        if (ids[size_t(r)] == -1) {  // handed back: only when more than the kept tokens tie into the top-k
          ++to_host;
          continue;
        }
        ++compared;
        if (ids[size_t(r)] != want) {
          ++differing;
          if (emulated)
            ADD_FAILURE() << "V " << V << " round " << round << " row " << r << " (T " << p.temperature << ", top-k "
                          << p.top_k << ", top-p " << p.top_p << ", u " << u << "): device " << ids[size_t(r)]
                          << ", host " << want;
        }
      }
    }
  }
  std::cout << compared << " rows compared, " << differing << " differ, " << to_host << " left to the host\n";
  EXPECT_EQ(to_host, 0);  // no row here has 2048 tokens tied into its top-k
  EXPECT_LE(differing * 200, compared);
}

// Exact boundaries, where only the order of comparisons decides: two tokens tied at the top
// (probability exactly 1/2 each, the rest underflowing to 0). top-p 0.5 drops the first of
// them (cumulative 1/2 <= 1 - p; ascending order puts the lower index first); a draw of
// exactly 1/2 is not below the first token's cumulative 1/2, so it takes the second.
TEST(CudaKernels, DeviceSamplingTakesExactBoundariesAsTheHost) {
  REQUIRE_GPU();
  const int V = 1000;
  std::vector<float> logits(size_t(3) * V, -1e4f);
  for (int r = 0; r < 3; ++r) logits[size_t(r) * V + 17] = logits[size_t(r) * V + 604] = 5.0f;
  const std::vector<cuda::kernels::DeviceSampling> params = {
      {0.25, 1.0f, 0.5f, 2, 0},  // top-p 0.5: token 17 dropped, 604 whatever the draw
      {0.5, 1.0f, 1.0f, 2, 0},   // u = 1/2 exactly: 604
      {0.4999, 1.0f, 1.0f, 2, 0}};  // just below: 17
  const std::vector<int32_t> ids = sample_on_device(logits, V, V, params);
  for (int r = 0; r < 3; ++r) {
    const auto& p = params[size_t(r)];
    const SamplingParams sp{.greedy = false, .temperature = p.temperature, .top_k = p.top_k, .top_p = p.top_p};
    EXPECT_EQ(sample_token_at(std::span(&logits[size_t(r) * V], size_t(V)), sp, p.u), r == 2 ? 17 : 604) << r;
    EXPECT_EQ(ids[size_t(r)], r == 2 ? 17 : 604) << "row " << r;
  }
}

// More tokens tied into the top-k than the kernel keeps: the row is handed back (-1).
TEST(CudaKernels, DeviceSamplingHandsBackARowWithTooManyTies) {
  REQUIRE_GPU();
  const int V = 5000;
  std::vector<float> logits(size_t(V), 1.0f);  // every token ties at the k-th score
  EXPECT_EQ(sample_on_device(logits, V, V, {{0.5, 1.0f, 1.0f, 5, 0}}), std::vector<int32_t>{-1});
}

}  // namespace
}  // namespace pivotmt
