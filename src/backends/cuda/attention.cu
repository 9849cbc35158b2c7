// Keys and values into the paged cache, block copies within it, and causal attention over it. Correct first: one
// warp per (query row, head) streams the visible keys in chunks of 32 with an online
// softmax, so no T × T score matrix exists at any prompt length. (Part 2 of the GPU work
// replaces it with tiled prefill and split-KV decode kernels tested against this one.)
#include <cuda_fp16.h>

#include "backends/cuda/cuda_util.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "backends/paged_attention.h"

namespace pivotmt::cuda::kernels {
namespace {

__global__ void kv_write_kernel(const __half* qkv, int ldq, int T, int nh, int nkv, int d, const int32_t* slots,
                                __half* k_pool, __half* v_pool) {
  const int width = nkv * d;
  const size_t n = size_t(T) * width;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const size_t t = i / width, e = i % width;
    const __half* row = qkv + t * ldq;
    const size_t dst = size_t(slots[t]) * width + e;
    k_pool[dst] = row[size_t(nh) * d + e];
    v_pool[dst] = row[size_t(nh + nkv) * d + e];
  }
}

// Block copies: entry e = (from, to, positions) copies positions [0, positions) of block
// `from` into block `to` in each of the pool's `arrays` arrays (every layer's keys and
// values, `array_bytes` apart). One thread block per (entry, array), Unit-sized accesses
// (16 bytes when a position's bytes allow). Entries are independent (kv_blocks.h's
// PendingBlockCopies): no block is both read and written by one launch.
template <class Unit>
__global__ void kv_copy_blocks_kernel(const int32_t* entries, int arrays, size_t array_bytes, int position_bytes,
                                      char* pool) {
  const int entry = int(blockIdx.x / unsigned(arrays)), array = int(blockIdx.x % unsigned(arrays));
  const int32_t from = entries[3 * entry], to = entries[3 * entry + 1], positions = entries[3 * entry + 2];
  const size_t block_bytes = kKvBlockPositions * size_t(position_bytes);
  char* base = pool + size_t(array) * array_bytes;
  const Unit* src = reinterpret_cast<const Unit*>(base + size_t(from) * block_bytes);
  Unit* dst = reinterpret_cast<Unit*>(base + size_t(to) * block_bytes);
  const int units = int(size_t(positions) * size_t(position_bytes) / sizeof(Unit));
  for (int i = int(threadIdx.x); i < units; i += int(blockDim.x)) dst[i] = src[i];
}

constexpr int kMaxHeadDim = 256;
constexpr int kDimsPerLane = kMaxHeadDim / 32;
constexpr int kWarpsPerBlock = 4;

__device__ float warp_max(float v) {
  for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ float warp_sum(float v) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__global__ void attention_kernel(const __half* qkv, int ldq, int T, int nh, int nkv, int d, int window, float scale,
                                 const int32_t* row_seq, const int32_t* positions, const int32_t* table_offsets,
                                 const int32_t* tables, const __half* k_pool, const __half* v_pool, __half* out,
                                 int ldo) {
  __shared__ float q_shared[kWarpsPerBlock][kMaxHeadDim];
  __shared__ float p_shared[kWarpsPerBlock][32];
  __shared__ int64_t slot_shared[kWarpsPerBlock][32];
  const int warp_in_block = threadIdx.x / 32, lane = threadIdx.x % 32;
  const size_t job = size_t(blockIdx.x) * kWarpsPerBlock + warp_in_block;  // (row, head)
  if (job >= size_t(T) * nh) return;  // whole warps leave together: no block-level sync below
  const int t = int(job / nh), h = int(job % nh), kv_head = h / (nh / nkv);
  const int64_t pos = positions[t];
  const int32_t* table = tables + table_offsets[row_seq[t]];
  const int64_t first = paged::first_visible(pos, window);

  float* q = q_shared[warp_in_block];
  for (int i = lane; i < d; i += 32) q[i] = __half2float(qkv[size_t(t) * ldq + size_t(h) * d + i]) * scale;
  __syncwarp();

  float acc[kDimsPerLane];
  for (int i = 0; i < kDimsPerLane; ++i) acc[i] = 0.0f;
  paged::SoftmaxState state;
  for (int64_t j0 = first; j0 <= pos; j0 += 32) {
    // Lane l scores key j0 + l.
    const int64_t j = j0 + lane;
    float score = -INFINITY;
    int64_t slot = 0;
    if (j <= pos) {
      slot = paged::slot(table, j);
      const __half2* k = reinterpret_cast<const __half2*>(k_pool + paged::element(slot, kv_head, nkv, d));
      float s = 0.0f;
      for (int i = 0; i < d / 2; ++i) {
        const float2 kf = __half22float2(k[i]);
        s += q[2 * i] * kf.x + q[2 * i + 1] * kf.y;
      }
      score = s;
    }
    paged::SoftmaxState chunk;
    chunk.max = warp_max(score);
    const float p = j <= pos ? expf(score - chunk.max) : 0.0f;
    chunk.sum = warp_sum(p);
    const paged::SoftmaxState merged = paged::merge(state, chunk);
    const float old_scale = paged::rescale(state.max, merged.max), chunk_scale = paged::rescale(chunk.max, merged.max);
    for (int i = 0; i < kDimsPerLane; ++i) acc[i] *= old_scale;
    // Every lane adds every key of the chunk to the output dims it owns (lane + 32 i); the
    // chunk's weights and slots go through the warp's shared memory (two __syncwarp per
    // chunk instead of two shuffles per key: the same work on the GPU; in the tests' CUDA
    // emulator, 12 warp barriers per 32 keys instead of 74, an emulated ablation 3.8x faster).
    p_shared[warp_in_block][lane] = p * chunk_scale;
    slot_shared[warp_in_block][lane] = slot;
    __syncwarp();
    const int keys = int(min(int64_t(32), pos - j0 + 1));
    for (int kk = 0; kk < keys; ++kk) {
      const float pk = p_shared[warp_in_block][kk];
      const __half* v = v_pool + paged::element(slot_shared[warp_in_block][kk], kv_head, nkv, d);
      for (int i = 0; i < kDimsPerLane; ++i) {
        const int dim = lane + 32 * i;
        if (dim < d) acc[i] += pk * __half2float(v[dim]);
      }
    }
    __syncwarp();  // every lane has read the chunk before the next one overwrites it
    state = merged;
  }
  __half* o = out + size_t(t) * ldo + size_t(h) * d;
  const float inv = 1.0f / state.sum;
  for (int i = 0; i < kDimsPerLane; ++i) {
    const int dim = lane + 32 * i;
    if (dim < d) o[dim] = __float2half_rn(acc[i] * inv);
  }
}

}  // namespace

void kv_write(const void* qkv, int ldq, int T, int nh, int nkv, int d, const int32_t* slots, void* k_pool, void* v_pool,
              cudaStream_t s) {
  if (T == 0) return;
  launch("kv_write_kernel", kv_write_kernel, blocks_for(size_t(T) * nkv * d, 256), 256, s,
         static_cast<const __half*>(qkv), ldq, T, nh, nkv, d, slots, static_cast<__half*>(k_pool),
         static_cast<__half*>(v_pool));
}

void kv_copy_blocks(const int32_t* entries, int count, int arrays, size_t array_bytes, int position_bytes, void* pool,
                    cudaStream_t s) {
  if (count == 0) return;
  if (arrays <= 0 || position_bytes <= 0 || position_bytes % 2 != 0 || array_bytes % 16 != 0 ||
      reinterpret_cast<uintptr_t>(pool) % 16 != 0)
    throw Error("cuda kv_copy_blocks: the pool must be 16-byte aligned with even position sizes");
  const size_t blocks = size_t(count) * size_t(arrays);
  if (blocks > 0x7fffffffu) throw Error("cuda kv_copy_blocks: too many block copies for one launch");
  if (position_bytes % 16 == 0)
    launch("kv_copy_blocks_kernel<uint4>", kv_copy_blocks_kernel<uint4>, unsigned(blocks), 128, s, entries, arrays,
           array_bytes, position_bytes, static_cast<char*>(pool));
  else
    launch("kv_copy_blocks_kernel<uint16>", kv_copy_blocks_kernel<uint16_t>, unsigned(blocks), 128, s, entries, arrays,
           array_bytes, position_bytes, static_cast<char*>(pool));
}

void attention(const void* qkv, int ldq, int T, int nh, int nkv, int d, int window, const int32_t* row_seq,
               const int32_t* positions, const int32_t* table_offsets, const int32_t* tables, const void* k_pool,
               const void* v_pool, void* out, int ldo, cudaStream_t s) {
  if (d > kMaxHeadDim || d % 2 != 0) throw Error("cuda attention: head_dim must be even and at most 256");
  const size_t jobs = size_t(T) * nh;
  if (jobs == 0) return;
  const unsigned blocks = unsigned((jobs + kWarpsPerBlock - 1) / kWarpsPerBlock);
  launch("attention_kernel", attention_kernel, blocks, 32 * kWarpsPerBlock, s, static_cast<const __half*>(qkv), ldq, T,
         nh, nkv, d, window, 1.0f / sqrtf(float(d)), row_seq, positions, table_offsets, tables,
         static_cast<const __half*>(k_pool), static_cast<const __half*>(v_pool), static_cast<__half*>(out), ldo);
}

}  // namespace pivotmt::cuda::kernels
