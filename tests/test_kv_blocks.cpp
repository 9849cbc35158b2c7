// The paged KV cache's host logic (used by the GPU backend, tested here without one): the
// block pool's reference counts, prefix sharing (full blocks referenced, a partial block
// copied), copy on write, truncation, refusals that change nothing; the index and softmax
// arithmetic the attention kernels share.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>

#include "backends/kv_blocks.h"
#include "backends/paged_attention.h"
#include "core/error.h"

namespace pivotmt {
namespace {

constexpr size_t B = kKvBlockPositions;

TEST(KvBlocks, PoolCountsReferences) {
  BlockPool pool(3);
  EXPECT_EQ(pool.free_blocks(), 3u);
  const int32_t a = pool.allocate(), b = pool.allocate(), c = pool.allocate();
  EXPECT_EQ(pool.allocate(), -1);  // empty
  EXPECT_NE(a, b);
  EXPECT_NE(b, c);
  pool.retain(b);
  pool.release(b);
  EXPECT_EQ(pool.refcount(b), 1);
  EXPECT_EQ(pool.free_blocks(), 0u);
  pool.release(b);
  EXPECT_EQ(pool.free_blocks(), 1u);
  EXPECT_EQ(pool.allocate(), b);  // freed blocks are reused
  EXPECT_THROW(pool.retain(7), Error);
  pool.release(a);
  EXPECT_THROW(pool.release(a), Error);  // double free named, not corrupting
  (void)c;
}

TEST(KvBlocks, GrowAllocatesWhatIsMissingOrNothing) {
  BlockPool pool(4);
  std::vector<BlockCopy> copies;
  {
    BlockTable t(pool);
    EXPECT_TRUE(t.grow(0, 1, copies));
    EXPECT_EQ(t.blocks().size(), 1u);
    EXPECT_TRUE(t.grow(1, B, copies));  // still one block
    EXPECT_EQ(t.blocks().size(), 1u);
    EXPECT_TRUE(t.grow(B, B + 1, copies));
    EXPECT_EQ(t.blocks().size(), 2u);
    EXPECT_FALSE(t.grow(B + 1, 5 * B, copies));  // needs 3 more, 2 free: refused whole
    EXPECT_EQ(t.blocks().size(), 2u);
    EXPECT_EQ(pool.free_blocks(), 2u);
    EXPECT_TRUE(t.grow(B + 1, 4 * B, copies));
    EXPECT_EQ(pool.free_blocks(), 0u);
    EXPECT_TRUE(copies.empty());
    t.truncate(B + 3);  // keeps the blocks of positions 0 .. B + 2
    EXPECT_EQ(t.blocks().size(), 2u);
    EXPECT_EQ(pool.free_blocks(), 2u);
  }
  EXPECT_EQ(pool.free_blocks(), 4u);  // a released table returns everything
}

TEST(KvBlocks, PrefixSharedByReferencePartialBlockCopied) {
  BlockPool pool(8);
  std::vector<BlockCopy> copies;
  BlockTable donor(pool);
  ASSERT_TRUE(donor.grow(0, 3 * B + 5, copies));  // 4 blocks, the last partly used
  {
    BlockTable a(pool), b(pool);
    ASSERT_TRUE(a.share_prefix(donor, 2 * B, copies));  // block-aligned: nothing copied
    EXPECT_TRUE(copies.empty());
    EXPECT_EQ(a.blocks(), std::vector<int32_t>(donor.blocks().begin(), donor.blocks().begin() + 2));
    EXPECT_EQ(pool.refcount(donor.blocks()[0]), 2);
    ASSERT_TRUE(b.share_prefix(donor, 2 * B + 7, copies));
    ASSERT_EQ(copies.size(), 1u);  // the third block's 7 positions, into a fresh block
    EXPECT_EQ(copies[0].from, donor.blocks()[2]);
    EXPECT_EQ(copies[0].positions, 7u);
    EXPECT_EQ(b.blocks()[2], copies[0].to);
    EXPECT_EQ(pool.refcount(copies[0].to), 1);
    EXPECT_EQ(pool.refcount(donor.blocks()[1]), 3);
    EXPECT_EQ(pool.free_blocks(), 8u - 5u);
    copies.clear();
    // a grows into its third block: fresh, no copy (its shared blocks are full).
    ASSERT_TRUE(a.grow(2 * B, 2 * B + 1, copies));
    EXPECT_TRUE(copies.empty());
    EXPECT_EQ(pool.refcount(a.blocks()[2]), 1);
  }
  EXPECT_EQ(pool.refcount(donor.blocks()[0]), 1);  // the sharers' references are gone
  EXPECT_EQ(pool.free_blocks(), 4u);
}

TEST(KvBlocks, WritingIntoASharedBlockCopiesItFirst) {
  BlockPool pool(4);
  std::vector<BlockCopy> copies;
  BlockTable donor(pool), sharer(pool);
  ASSERT_TRUE(donor.grow(0, 2 * B, copies));
  ASSERT_TRUE(sharer.share_prefix(donor, 2 * B, copies));
  // The sharer drops to 1.5 blocks and writes on: block 1 is the donor's too, so it is
  // copied (its first B/2 positions) before the write.
  sharer.truncate(B + B / 2);
  ASSERT_TRUE(sharer.grow(B + B / 2, B + B / 2 + 1, copies));
  ASSERT_EQ(copies.size(), 1u);
  EXPECT_EQ(copies[0].from, donor.blocks()[1]);
  EXPECT_EQ(copies[0].positions, B / 2);
  EXPECT_NE(sharer.blocks()[1], donor.blocks()[1]);
  EXPECT_EQ(sharer.blocks()[0], donor.blocks()[0]);  // untouched shared block stays shared
  EXPECT_EQ(pool.refcount(donor.blocks()[1]), 1);
  // No block for the partial prefix block: refused, nothing taken.
  BlockPool small(2);
  BlockTable d2(small), s2(small);
  ASSERT_TRUE(d2.grow(0, 2 * B, copies));
  EXPECT_FALSE(s2.share_prefix(d2, B + 3, copies));
  EXPECT_TRUE(s2.blocks().empty());
  EXPECT_EQ(small.refcount(d2.blocks()[0]), 1);
  EXPECT_TRUE(s2.share_prefix(d2, B, copies));  // the full block alone needs none
}

TEST(PagedAttention, SlotsAndWindows) {
  const std::vector<int32_t> table = {5, 0, 9};
  EXPECT_EQ(paged::slot(table.data(), 0), 5 * int64_t(B));
  EXPECT_EQ(paged::slot(table.data(), int64_t(B) - 1), 5 * int64_t(B) + int64_t(B) - 1);
  EXPECT_EQ(paged::slot(table.data(), int64_t(B)), 0);
  EXPECT_EQ(paged::slot(table.data(), 2 * int64_t(B) + 3), 9 * int64_t(B) + 3);
  EXPECT_EQ(paged::element(7, 1, 4, 128), (7 * 4 + 1) * 128);
  EXPECT_EQ(paged::first_visible(10, 0), 0);
  EXPECT_EQ(paged::first_visible(10, 4), 7);   // sees 7, 8, 9, 10
  EXPECT_EQ(paged::first_visible(2, 4), 0);
  EXPECT_EQ(paged::first_visible(3, 4), 0);
  EXPECT_EQ(paged::first_visible(4, 4), 1);
}

// Chunked softmax states merged in any grouping equal the softmax over all scores; the
// weighted sums rescaled with them equal the direct attention output.
TEST(PagedAttention, SplitSoftmaxMergesExactly) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  for (size_t n : {size_t(1), size_t(7), size_t(33), size_t(769)}) {
    std::vector<float> s(n), v(n);
    for (size_t i = 0; i < n; ++i) s[i] = normal(rng), v[i] = normal(rng);
    double max = -INFINITY, sum = 0, out = 0;
    for (float x : s) max = std::max(max, double(x));
    for (size_t i = 0; i < n; ++i) sum += std::exp(s[i] - max), out += std::exp(s[i] - max) * v[i];
    out /= sum;
    for (size_t chunk : {size_t(1), size_t(5), size_t(32)}) {
      paged::SoftmaxState state;
      float acc = 0;
      for (size_t j0 = 0; j0 < n; j0 += chunk) {
        paged::SoftmaxState c;
        for (size_t j = j0; j < std::min(n, j0 + chunk); ++j) c.max = std::max(c.max, s[j]);
        float part = 0;
        for (size_t j = j0; j < std::min(n, j0 + chunk); ++j) c.sum += std::exp(s[j] - c.max), part += std::exp(s[j] - c.max) * v[j];
        const auto merged = paged::merge(state, c);
        acc = acc * paged::rescale(state.max, merged.max) + part * paged::rescale(c.max, merged.max);
        state = merged;
      }
      EXPECT_NEAR(state.max, max, 0) << n;
      EXPECT_NEAR(state.sum, sum, 1e-4 * sum) << n << " chunk " << chunk;
      EXPECT_NEAR(acc / state.sum, out, 1e-4 * (1 + std::fabs(out))) << n << " chunk " << chunk;
    }
  }
  // Merging with an empty state changes nothing.
  const paged::SoftmaxState a{2.0f, 3.0f};
  EXPECT_EQ(paged::merge(paged::SoftmaxState{}, a).sum, 3.0f);
  EXPECT_EQ(paged::merge(a, paged::SoftmaxState{}).max, 2.0f);
}

}  // namespace
}  // namespace pivotmt

namespace pivotmt {
namespace {

// The metadata a GPU pass uploads: each row's position, pool slot and sequence, and the
// sequences' block tables with their offsets.
TEST(PagedPass, MetadataPacksSlotsAndTables) {
  const std::vector<int32_t> a = {7, 2}, b = {4};  // a: positions 0..31, b: 0..15
  const std::vector<int32_t> tokens = {11, 12, 13, 14};
  const std::vector<int64_t> positions = {15, 16, 17, 3};  // a's rows cross a block boundary
  const auto m = pack_pass(tokens, positions, {{&a, 0, 3}, {&b, 3, 1}});
  ASSERT_EQ(m.data.size(), 4u * 4 + 2 + 3 + 2 * 2);
  EXPECT_EQ(std::vector<int32_t>(m.data.begin(), m.data.begin() + 4), tokens);
  EXPECT_EQ(m.data[m.positions() + 1], 16);
  EXPECT_EQ(m.data[m.slots() + 0], 7 * 16 + 15);
  EXPECT_EQ(m.data[m.slots() + 1], 2 * 16 + 0);
  EXPECT_EQ(m.data[m.slots() + 2], 2 * 16 + 1);
  EXPECT_EQ(m.data[m.slots() + 3], 4 * 16 + 3);
  for (size_t r = 0; r < 4; ++r) {  // the slot is paged::slot of the row's own table
    const auto& table = r < 3 ? a : b;
    EXPECT_EQ(m.data[m.slots() + r], paged::slot(table.data(), positions[r]));
    EXPECT_EQ(m.data[m.row_seq() + r], r < 3 ? 0 : 1);
  }
  EXPECT_EQ(m.data[m.table_offsets() + 0], 0);
  EXPECT_EQ(m.data[m.table_offsets() + 1], 2);
  EXPECT_EQ(std::vector<int32_t>(m.data.begin() + long(m.tables()), m.data.begin() + long(m.query_tiles())),
            (std::vector<int32_t>{7, 2, 4}));
  // One query tile per sequence here: (first row, rows).
  EXPECT_EQ(std::vector<int32_t>(m.data.begin() + long(m.query_tiles()), m.data.end()), (std::vector<int32_t>{0, 3, 3, 1}));
  EXPECT_THROW(pack_pass({1}, {16}, {{&b, 0, 1}}), Error);  // past b's one block
  EXPECT_THROW(pack_pass({1, 2}, {0}, {{&b, 0, 2}}), Error);
}

// Query tiles cut each sequence's rows into runs of at most kQueryTileRows, never across
// sequences: every row in exactly one tile, tiles in row order.
TEST(PagedPass, QueryTilesCoverEachSequenceInRunsOfAtMost64Rows) {
  std::vector<int32_t> a(10), b = {10}, c(9);
  std::iota(a.begin(), a.end(), 0);
  std::iota(c.begin(), c.end(), 11);
  const size_t na = 130, nb = 1, nc = 128;  // 64 + 64 + 2; 1; 64 + 64
  std::vector<int64_t> positions;
  for (size_t i = 0; i < na; ++i) positions.push_back(int64_t(i) + 5);
  positions.push_back(0);
  for (size_t i = 0; i < nc; ++i) positions.push_back(int64_t(i));
  const std::vector<int32_t> tokens(positions.size(), 1);
  const auto m = pack_pass(tokens, positions, {{&a, 0, na}, {&b, na, nb}, {&c, na + nb, nc}});
  ASSERT_EQ(m.Q, 6u);
  const std::vector<int32_t> tiles(m.data.begin() + long(m.query_tiles()), m.data.end());
  EXPECT_EQ(tiles, (std::vector<int32_t>{0, 64, 64, 64, 128, 2, 130, 1, 131, 64, 195, 64}));
  EXPECT_EQ(m.R, 0u);
  // A mixed pass: sequences under 5 rows (b's decode row) listed for the split-KV kernel
  // instead of tiled; the rest of the layout unchanged.
  const auto mixed = pack_pass(tokens, positions, {{&a, 0, na}, {&b, na, nb}, {&c, na + nb, nc}}, 5);
  ASSERT_EQ(mixed.Q, 5u);
  ASSERT_EQ(mixed.R, 1u);
  EXPECT_TRUE(std::equal(m.data.begin(), m.data.begin() + long(m.query_tiles()), mixed.data.begin()));
  EXPECT_EQ(std::vector<int32_t>(mixed.data.begin() + long(mixed.query_tiles()), mixed.data.begin() + long(mixed.few_rows())),
            (std::vector<int32_t>{0, 64, 64, 64, 128, 2, 131, 64, 195, 64}));
  EXPECT_EQ(std::vector<int32_t>(mixed.data.begin() + long(mixed.few_rows()), mixed.data.end()), (std::vector<int32_t>{130}));
}

// Copies waiting for one launch must be independent: none reads a block another writes,
// none writes a block another reads or writes (the GPU runs them all at once).
TEST(PagedPass, WaitingBlockCopiesAreIndependent) {
  PendingBlockCopies p;
  p.add({4, 1, 11});
  p.add({4, 2, 3});  // the same source twice: fine
  p.add({0, 5, 0});  // nothing to copy: dropped
  EXPECT_EQ(p.size(), 2u);
  EXPECT_FALSE(p.independent({1, 6, 2}));  // reads block 1, which a waiting copy writes
  EXPECT_FALSE(p.independent({7, 4, 2}));  // writes block 4, which a waiting copy reads
  EXPECT_FALSE(p.independent({7, 2, 2}));  // writes block 2, which a waiting copy writes
  EXPECT_TRUE(p.independent({3, 6, 16}));
  EXPECT_THROW(p.add({1, 6, 2}), Error);
  EXPECT_THROW(p.add({3, 6, 17}), Error);  // more positions than a block holds
  EXPECT_THROW(p.add({3, 3, 1}), Error);
  EXPECT_EQ(p.take_entries(), (std::vector<int32_t>{4, 1, 11, 4, 2, 3}));
  EXPECT_TRUE(p.empty());
  p.add({1, 6, 2});  // once the waiting ones ran
  EXPECT_EQ(p.take_entries(), (std::vector<int32_t>{1, 6, 2}));
}

// The copies a prefix share and a copy on write produce, in the order an engine meets
// them, with a donor freed in between: its block is handed out again as a destination,
// which must wait for the copy that reads it.
TEST(PagedPass, AFreedSourceReusedAsADestinationIsNotIndependent) {
  BlockPool pool(4);
  std::vector<BlockCopy> copies;
  PendingBlockCopies pending;
  auto donor = std::make_unique<BlockTable>(pool);
  ASSERT_TRUE(donor->grow(0, 20, copies));  // blocks 0, 1
  BlockTable a(pool), b(pool);
  ASSERT_TRUE(a.share_prefix(*donor, 20, copies));  // block 0 shared, block 1's 4 positions into block 2
  ASSERT_EQ(copies, (std::vector<BlockCopy>{{1, 2, 4}}));
  for (const auto& c : copies) pending.add(c);
  copies.clear();
  donor.reset();  // block 1 free again
  ASSERT_TRUE(b.share_prefix(a, 20, copies));  // block 0 shared; block 2's 4 positions into... block 1
  ASSERT_EQ(copies, (std::vector<BlockCopy>{{2, 1, 4}}));
  EXPECT_FALSE(pending.independent(copies[0]));
}

}  // namespace
}  // namespace pivotmt
