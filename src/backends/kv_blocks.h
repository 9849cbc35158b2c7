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

// --- What a GPU pass needs on the device, packed on the host (tested on the CPU).

// One sequence of a pass: its block table and its rows [row0, row0 + count).
struct PassSequence {
  const std::vector<int32_t>* blocks = nullptr;
  size_t row0 = 0, count = 0;
};

// One int32 buffer, copied to the device in one go:
//   tokens [T] | positions [T] | slots [T] | row_seq [T] | table_offsets [S] | tables [E]
//   | query_tiles [2 Q] | few_rows [R].
// slots[t] is row t's pool slot (block * 16 + position % 16), row_seq[t] its sequence,
// tables the sequences' block tables one after another, table_offsets[s] where s's starts;
// query_tiles the (first row, rows) pairs of each sequence's rows cut into tiles of at most
// kQueryTileRows (tiled prefill attention: one tile's rows share one block table), for the
// sequences of at least `tile_min_rows` rows; few_rows the rows of the others, in order (a
// pass mixing prompt chunks with decode rows: the decode rows go to the split-KV kernel).
constexpr size_t kQueryTileRows = 64;
struct PassMetadata {
  std::vector<int32_t> data;
  size_t T = 0, S = 0, E = 0, Q = 0, R = 0;
  size_t tokens() const { return 0; }
  size_t positions() const { return T; }
  size_t slots() const { return 2 * T; }
  size_t row_seq() const { return 3 * T; }
  size_t table_offsets() const { return 4 * T; }
  size_t tables() const { return 4 * T + S; }
  size_t query_tiles() const { return 4 * T + S + E; }
  size_t few_rows() const { return 4 * T + S + E + 2 * Q; }
};
// Throws when a row's position is past its sequence's blocks.
PassMetadata pack_pass(const std::vector<int32_t>& tokens, const std::vector<int64_t>& positions,
                       const std::vector<PassSequence>& seqs, size_t tile_min_rows = 1);

// Block copies waiting for the next pass. The GPU runs them as one kernel launch, every
// copy at once (the pool's layers are too far apart for one strided cudaMemcpy2D per copy:
// the pitch would be a layer's whole array, gigabytes, past cudaDevAttrMaxPitch). Copies
// run concurrently, so a copy joins the waiting ones only when it is independent of them:
// it must not read a block a waiting copy writes, nor write a block a waiting copy reads or
// writes (a block freed and handed out again between two copies); otherwise the waiting
// copies run first.
class PendingBlockCopies {
 public:
  bool independent(const BlockCopy& c) const;
  void add(const BlockCopy& c);  // throws unless independent(c); copies of 0 positions are dropped
  bool empty() const { return copies_.empty(); }
  size_t size() const { return copies_.size(); }
  // The waiting copies as (from, to, positions) int32 triples, the kernel's entries; forgets them.
  std::vector<int32_t> take_entries();
  void clear() { copies_.clear(); }

 private:
  std::vector<BlockCopy> copies_;
};

}  // namespace pivotmt
