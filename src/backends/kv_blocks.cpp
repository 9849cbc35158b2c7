#include "backends/kv_blocks.h"

#include <algorithm>

#include <fmt/format.h>

#include "core/error.h"

namespace pivotmt {

namespace {
size_t blocks_for(size_t positions) { return (positions + kKvBlockPositions - 1) / kKvBlockPositions; }
}  // namespace

BlockPool::BlockPool(size_t blocks) : refs_(blocks, 0) {
  free_.reserve(blocks);
  for (size_t b = blocks; b-- > 0;) free_.push_back(int32_t(b));  // block 0 handed out first
}

int32_t BlockPool::allocate() {
  if (free_.empty()) return -1;
  const int32_t b = free_.back();
  free_.pop_back();
  refs_[size_t(b)] = 1;
  return b;
}

void BlockPool::retain(int32_t block) {
  if (refcount(block) <= 0) throw Error(fmt::format("KV block {} retained while free", block));
  ++refs_[size_t(block)];
}

void BlockPool::release(int32_t block) {
  if (refcount(block) <= 0) throw Error(fmt::format("KV block {} released while free", block));
  if (--refs_[size_t(block)] == 0) free_.push_back(block);
}

int32_t BlockPool::refcount(int32_t block) const {
  if (block < 0 || size_t(block) >= refs_.size()) throw Error(fmt::format("KV block {} outside the pool of {}", block, refs_.size()));
  return refs_[size_t(block)];
}

BlockTable::~BlockTable() {
  for (int32_t b : blocks_) pool_->release(b);
}

bool BlockTable::grow(size_t length, size_t positions, std::vector<BlockCopy>& copies) {
  if (length > positions_capacity()) throw Error(fmt::format("KV table: length {} past its {} positions", length, positions_capacity()));
  const size_t have = blocks_.size(), want = std::max(have, blocks_for(positions));
  // The block that position `length` falls in must be private before it is written.
  const size_t partial = length % kKvBlockPositions;
  const size_t block_of_length = length / kKvBlockPositions;
  const bool cow = positions > length && block_of_length < have && pool_->refcount(blocks_[block_of_length]) > 1;
  const size_t needed = (want - have) + (cow ? 1 : 0);
  if (needed > pool_->free_blocks()) return false;
  if (cow) {
    const int32_t fresh = pool_->allocate();
    copies.push_back({blocks_[block_of_length], fresh, partial});
    pool_->release(blocks_[block_of_length]);
    blocks_[block_of_length] = fresh;
  }
  while (blocks_.size() < want) blocks_.push_back(pool_->allocate());
  return true;
}

bool BlockTable::share_prefix(const BlockTable& other, size_t n, std::vector<BlockCopy>& copies) {
  if (!blocks_.empty()) throw Error("KV table: sharing a prefix into a table that holds blocks");
  if (n > other.positions_capacity()) throw Error(fmt::format("KV table: prefix of {} from a table of {} positions", n, other.positions_capacity()));
  const size_t full = n / kKvBlockPositions, partial = n % kKvBlockPositions;
  if (partial && pool_->free_blocks() == 0) return false;
  for (size_t i = 0; i < full; ++i) {
    pool_->retain(other.blocks_[i]);
    blocks_.push_back(other.blocks_[i]);
  }
  if (partial) {
    const int32_t fresh = pool_->allocate();
    copies.push_back({other.blocks_[full], fresh, partial});
    blocks_.push_back(fresh);
  }
  return true;
}

void BlockTable::truncate(size_t n) {
  const size_t keep = blocks_for(n);
  while (blocks_.size() > keep) {
    pool_->release(blocks_.back());
    blocks_.pop_back();
  }
}

PassMetadata pack_pass(const std::vector<int32_t>& tokens, const std::vector<int64_t>& positions,
                       const std::vector<PassSequence>& seqs, size_t tile_min_rows) {
  PassMetadata m;
  m.T = tokens.size();
  m.S = seqs.size();
  if (positions.size() != m.T) throw Error(fmt::format("pass: {} positions for {} tokens", positions.size(), m.T));
  for (const auto& s : seqs) {
    m.E += s.blocks->size();
    if (s.count >= tile_min_rows) m.Q += (s.count + kQueryTileRows - 1) / kQueryTileRows;
    else m.R += s.count;
  }
  m.data.assign(4 * m.T + m.S + m.E + 2 * m.Q + m.R, -1);
  std::copy(tokens.begin(), tokens.end(), m.data.begin());
  size_t entry = 0;
  for (size_t i = 0; i < m.S; ++i) {
    const auto& s = seqs[i];
    const auto& blocks = *s.blocks;
    m.data[m.table_offsets() + i] = int32_t(entry);
    std::copy(blocks.begin(), blocks.end(), m.data.begin() + long(m.tables() + entry));
    for (size_t r = s.row0; r < s.row0 + s.count; ++r) {
      if (r >= m.T) throw Error(fmt::format("pass: sequence {} has row {} of {}", i, r, m.T));
      const int64_t p = positions[r];
      if (p < 0 || size_t(p) >= blocks.size() * kKvBlockPositions)
        throw Error(fmt::format("pass: position {} past the {} positions of sequence {}'s blocks", p,
                                blocks.size() * kKvBlockPositions, i));
      m.data[m.positions() + r] = int32_t(p);
      m.data[m.slots() + r] = int32_t(blocks[size_t(p) / kKvBlockPositions] * int64_t(kKvBlockPositions) + p % int64_t(kKvBlockPositions));
      m.data[m.row_seq() + r] = int32_t(i);
    }
    entry += blocks.size();
  }
  size_t tile = 0, few = 0;
  for (const auto& s : seqs) {
    if (s.count < tile_min_rows) {
      for (size_t r = s.row0; r < s.row0 + s.count; ++r) m.data[m.few_rows() + few++] = int32_t(r);
      continue;
    }
    for (size_t r = s.row0; r < s.row0 + s.count; r += kQueryTileRows, ++tile) {
      m.data[m.query_tiles() + 2 * tile] = int32_t(r);
      m.data[m.query_tiles() + 2 * tile + 1] = int32_t(std::min(kQueryTileRows, s.row0 + s.count - r));
    }
  }
  return m;
}

bool PendingBlockCopies::independent(const BlockCopy& c) const {
  for (const auto& w : copies_)
    if (c.from == w.to || c.to == w.from || c.to == w.to) return false;
  return true;
}

void PendingBlockCopies::add(const BlockCopy& c) {
  if (c.positions == 0) return;
  if (c.positions > kKvBlockPositions || c.from < 0 || c.to < 0 || c.from == c.to)
    throw Error(fmt::format("KV block copy {} -> {} of {} positions", c.from, c.to, c.positions));
  if (!independent(c)) throw Error(fmt::format("KV block copy {} -> {} depends on a waiting copy", c.from, c.to));
  copies_.push_back(c);
}

std::vector<int32_t> PendingBlockCopies::take_entries() {
  std::vector<int32_t> entries;
  entries.reserve(3 * copies_.size());
  for (const auto& c : copies_) entries.insert(entries.end(), {c.from, c.to, int32_t(c.positions)});
  copies_.clear();
  return entries;
}

}  // namespace pivotmt
