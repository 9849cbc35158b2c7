// Paged KV memory's bookkeeping, on the host: a pool of fixed blocks (kKvBlockPositions
// positions of every layer's keys and values each) with reference counts, and each
// sequence's block table. Plain logic, no device memory: the GPU backend owns the memory
// and uses this to decide where positions live, and the decisions are tested on the CPU.
//
// A shared prompt prefix is referenced, not copied: its full blocks are retained by the
// new sequence; only a partial last block is copied (by the caller, a CopyJob). A block is
// written only by a sequence that holds it alone: growing into a shared block copies it
// first (copy on write).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace pivotmt {

constexpr size_t kKvBlockPositions = 16;

class BlockPool {
 public:
  explicit BlockPool(size_t blocks);
  size_t capacity() const { return refs_.size(); }
  size_t free_blocks() const { return free_.size(); }
  int32_t allocate();  // reference count 1; -1 when none is free
  void retain(int32_t block);
  void release(int32_t block);  // back to the free list when its last holder lets go
  int32_t refcount(int32_t block) const;

 private:
  std::vector<int32_t> refs_;
  std::vector<int32_t> free_;  // a stack: recently freed blocks are reused first
};

// Copy kKvBlockPositions-aligned `positions` positions of block `from` into block `to`.
struct BlockCopy {
  int32_t from = -1, to = -1;
  size_t positions = 0;
  bool operator==(const BlockCopy&) const = default;
};

// One sequence's blocks: block i holds positions [i * 16, i * 16 + 16).
class BlockTable {
 public:
  explicit BlockTable(BlockPool& pool) : pool_(&pool) {}
  ~BlockTable();
  BlockTable(const BlockTable&) = delete;
  BlockTable& operator=(const BlockTable&) = delete;

  const std::vector<int32_t>& blocks() const { return blocks_; }
  size_t positions_capacity() const { return blocks_.size() * kKvBlockPositions; }

  // Room for `positions` when `length` are written: allocates the missing blocks and makes
  // the block that position `length` falls in private (a copy when it is shared). False,
  // with nothing changed, when the pool has too few free blocks.
  bool grow(size_t length, size_t positions, std::vector<BlockCopy>& copies);
  // This (empty) table takes other's first n positions: full blocks shared, a partial last
  // block copied into a new one. False, nothing changed, when no block is free for it.
  bool share_prefix(const BlockTable& other, size_t n, std::vector<BlockCopy>& copies);
  // Keeps the blocks holding the first n positions, releases the rest.
  void truncate(size_t n);
  void clear() { truncate(0); }

 private:
  BlockPool* pool_;
  std::vector<int32_t> blocks_;
};

}  // namespace pivotmt
