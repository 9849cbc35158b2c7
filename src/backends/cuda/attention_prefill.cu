// Prefill attention on the tensor cores, FlashAttention-2's scheme over the paged KV cache.
//
// One thread block per (query tile, head): a tile is up to 64 consecutive rows of one
// sequence (PassMetadata's query tiles), its 4 warps 16 rows each. The block walks the
// keys its rows can see (from the earliest row's first visible key to the last row's
// position) in tiles of 32; each key tile's keys and values are gathered from their pool
// slots into shared memory by cp.async, the next tile's copies in flight while the warps
// compute on this one (two stages). Per key tile a warp computes S = Q Kᵀ (16 x 32) with
// mma.sync (F16 in, F32 accumulate), masks it per row (causal, Mistral's window, rows past
// the tile), folds it into an online softmax kept in registers, and adds P V with P
// rounded to F16 (as FlashAttention does) — so no score matrix exists anywhere, and the
// F32 cores do none of the O(T²·d) work. A warp whose 16 rows see none of a key tile skips
// it (causal tiles above the diagonal), but still copies and syncs with the block.
//
// Same result as attention() (attention.cu, the twin it is tested against) up to the order
// of the sums and P's rounding; head_dim 64 or 128 (attention() covers the rest).
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "backends/cuda/cuda_util.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/mma_rows.cuh"
#include "backends/cuda/ptx.cuh"
#include "backends/paged_attention.h"

namespace pivotmt::cuda::kernels {
namespace {

constexpr int kTileRows = int(kQueryTileRows);  // query rows per block: 4 warps of 16
constexpr int kTileKeys = kAttentionTileKeys;   // keys per shared-memory tile
constexpr int kPrefillWarps = kTileRows / 16;
static_assert(kTileRows == 64, "4 warps of 16 query rows");

// The two stages of keys and values. Rows are padded by 8 halves (16 bytes) so that the 8
// row addresses of one ldmatrix fall in different shared-memory banks.
template <int D>
struct alignas(16) KvTiles {
  static constexpr int Ld = D + 8;
  __half k[2][kTileKeys][Ld];
  __half v[2][kTileKeys][Ld];
};
static_assert(sizeof(KvTiles<128>) <= 48 * 1024, "static shared memory is limited to 48 KiB per block");

template <int D>
__global__ void attention_prefill_kernel(const __half* qkv, int ldq, int nh, int nkv, int window, float scale,
                                         const int32_t* tiles, const int32_t* row_seq, const int32_t* positions,
                                         const int32_t* table_offsets, const int32_t* tables, const __half* k_pool,
                                         const __half* v_pool, __half* out, int ldo) {
  __shared__ KvTiles<D> sh;
  const int tile = int(blockIdx.x) / nh, head = int(blockIdx.x) % nh, kv_head = head / (nh / nkv);
  const int row0 = tiles[2 * tile], rows = tiles[2 * tile + 1];
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32, g = lane / 4, t4 = lane % 4;
  const int32_t* table = tables + table_offsets[row_seq[row0]];

  // The block's keys [lo, hi) and this warp's [warp_lo, warp_hi) (empty for a warp past the rows).
  int64_t lo = INT64_MAX, hi = 0, warp_lo = INT64_MAX, warp_hi = 0;
  for (int r = 0; r < rows; ++r) {
    const int64_t p = positions[row0 + r], first = paged::first_visible(p, window);
    lo = first < lo ? first : lo;
    hi = p + 1 > hi ? p + 1 : hi;
    if (r / 16 == warp) {
      warp_lo = first < warp_lo ? first : warp_lo;
      warp_hi = p + 1 > warp_hi ? p + 1 : warp_hi;
    }
  }
  // This lane's two rows of the warp's 16 (fragment rows g and g + 8).
  const int ra = 16 * warp + g, rb = ra + 8;
  const int64_t pos_a = ra < rows ? positions[row0 + ra] : -1, pos_b = rb < rows ? positions[row0 + rb] : -1;
  const int64_t first_a = paged::first_visible(pos_a, window), first_b = paged::first_visible(pos_b, window);

  // Q's A fragments for the whole head, kept in registers: qf[kc] covers dims 16 kc .. 16 kc + 15.
  uint32_t qf[D / 16][4];
  const __half* qa = qkv + size_t(row0 + ra) * ldq + size_t(head) * D + 2 * t4;
  const __half* qb = qkv + size_t(row0 + rb) * ldq + size_t(head) * D + 2 * t4;
#pragma unroll
  for (int kc = 0; kc < D / 16; ++kc) {
    qf[kc][0] = ra < rows ? load_pair(qa + 16 * kc) : 0u;
    qf[kc][1] = rb < rows ? load_pair(qb + 16 * kc) : 0u;
    qf[kc][2] = ra < rows ? load_pair(qa + 16 * kc + 8) : 0u;
    qf[kc][3] = rb < rows ? load_pair(qb + 16 * kc + 8) : 0u;
  }

  // Keys [key0, key0 + 32) into a stage: 16-byte pieces by cp.async, zeros past hi (their
  // values are multiplied by P = 0, which must not meet a NaN left in shared memory).
  const auto load_tile = [&](int stage, int64_t key0) {
    constexpr int Pieces = D / 8;  // 16-byte pieces of one key's row
    for (int c = int(threadIdx.x); c < kTileKeys * Pieces; c += int(blockDim.x)) {
      const int key = c / Pieces, piece = c % Pieces;
      const int64_t j = key0 + key;
      __half* kd = &sh.k[stage][key][8 * piece];
      __half* vd = &sh.v[stage][key][8 * piece];
      if (j < hi) {
        const int64_t at = paged::element(paged::slot(table, j), kv_head, nkv, D) + 8 * piece;
        ptx::cp_async_16(kd, k_pool + at);
        ptx::cp_async_16(vd, v_pool + at);
      } else {
        *reinterpret_cast<uint4*>(kd) = make_uint4(0u, 0u, 0u, 0u);
        *reinterpret_cast<uint4*>(vd) = make_uint4(0u, 0u, 0u, 0u);
      }
    }
    ptx::cp_async_commit();
  };

  RowsState<D> st;
#pragma unroll
  for (int n = 0; n < D / 8; ++n) st.o[n][0] = st.o[n][1] = st.o[n][2] = st.o[n][3] = 0.0f;

  const int key_tiles = hi > lo ? int((hi - lo + kTileKeys - 1) / kTileKeys) : 0;
  if (key_tiles > 0) load_tile(0, lo);
  for (int it = 0; it < key_tiles; ++it) {
    const int stage = it & 1;
    if (it + 1 < key_tiles) {
      load_tile(stage ^ 1, lo + int64_t(it + 1) * kTileKeys);  // its stage was last read before the previous sync
      ptx::cp_async_wait<1>();
    } else {
      ptx::cp_async_wait<0>();
    }
    __syncthreads();  // every thread's copies of this stage have landed
    const int64_t key0 = lo + int64_t(it) * kTileKeys;
    if (key0 < warp_hi && key0 + kTileKeys > warp_lo)  // warp-uniform
      attend_key_tile<D, KvTiles<D>::Ld>(sh.k[stage], sh.v[stage], key0, qf, pos_a, first_a, pos_b, first_b, scale, st);
    __syncthreads();  // every warp is done with this stage before the next iteration refills it
  }

  const float l_a = quad_sum(st.l_a), l_b = quad_sum(st.l_b);
  const auto& o = st.o;
  const auto store = [&](int r, float l, int first_reg) {
    if (r >= rows) return;
    __half* dst = out + size_t(row0 + r) * ldo + size_t(head) * D + 2 * t4;
    const float inv = 1.0f / l;
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
      *reinterpret_cast<__half2*>(dst + 8 * n) = __floats2half2_rn(o[n][first_reg] * inv, o[n][first_reg + 1] * inv);
  };
  store(ra, l_a, 0);
  store(rb, l_b, 2);
}

}  // namespace

bool attention_prefill_supported(int nh, int nkv, int d, int ldq, const void* qkv, int ldo, const void* out) {
  return (d == 64 || d == 128) && nkv > 0 && nh % nkv == 0 && ldq % 2 == 0 && ldo % 2 == 0 &&
         reinterpret_cast<uintptr_t>(qkv) % 4 == 0 && reinterpret_cast<uintptr_t>(out) % 4 == 0;
}

void attention_prefill(const void* qkv, int ldq, int nh, int nkv, int d, int window, const int32_t* tiles,
                       int tile_count, const int32_t* row_seq, const int32_t* positions, const int32_t* table_offsets,
                       const int32_t* tables, const void* k_pool, const void* v_pool, void* out, int ldo,
                       cudaStream_t s) {
  if (!attention_prefill_supported(nh, nkv, d, ldq, qkv, ldo, out))
    throw Error("cuda attention_prefill: " + std::to_string(nh) + " heads over " + std::to_string(nkv) +
                " KV heads of " + std::to_string(d) + " dims (row strides " + std::to_string(ldq) + ", " +
                std::to_string(ldo) + ") are not supported");
  if (tile_count == 0) return;
  const size_t blocks = size_t(tile_count) * nh;
  if (blocks > 0x7fffffffu) throw Error("cuda attention_prefill: too many (query tile, head) blocks for one launch");
  const float scale = 1.0f / sqrtf(float(d));
  const auto run = [&](auto kernel, const char* name) {
    launch(name, kernel, unsigned(blocks), 32 * kPrefillWarps, s, static_cast<const __half*>(qkv), ldq, nh, nkv,
           window, scale, tiles, row_seq, positions, table_offsets, tables, static_cast<const __half*>(k_pool),
           static_cast<const __half*>(v_pool), static_cast<__half*>(out), ldo);
  };
  if (d == 64) run(attention_prefill_kernel<64>, "attention_prefill_kernel<64>");
  else run(attention_prefill_kernel<128>, "attention_prefill_kernel<128>");
}

}  // namespace pivotmt::cuda::kernels
