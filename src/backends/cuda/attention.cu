// Keys and values into the paged cache, block copies within it, and causal attention over it. Correct first: one
// warp per (query row, head) streams the visible keys in chunks of 32 with an online
// softmax, so no T × T score matrix exists at any prompt length. Decode rows (a few per
// pass) take the split-KV kernel below instead, tested against that one; tiled prefill on
// the tensor cores is still to come (part 2 of the GPU work).
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <string>

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

// ---- Split-KV decode attention
//
// One thread block per (row, KV head, split of the row's visible keys): the G = nh / nkv
// query heads of a GQA group read each key and value once. A key is handled by
// LanesPerKey = d / 8 lanes, each with 8 of its dims loaded as one 16-byte access, so a
// warp scores 32 / LanesPerKey keys at a time and the block's 4 warps 4× that; each such
// key lane keeps an online softmax per query head over the keys it saw (max, sum, the
// weighted values' 8 dims). At the end the block merges its key lanes' states through
// shared memory (log-sum-exp), and either writes the output (one split) or the split's
// state to `partials` for attention_combine_kernel. Splits give a batch-1 step enough
// blocks to fill the GPU at long contexts (the warp-per-(row, head) kernel runs nh warps).
constexpr int kSplitWarps = 4;
constexpr int kMaxGroup = 8;  // query heads per KV head

// 8 halves from a 16-byte aligned address in one 16-byte load, as floats. (The bytes go
// through memcpy: reading the uint4 through a __half2 pointer would break C++'s aliasing
// rules, which the emulator's host compiler enforces.)
__device__ __forceinline__ void load8(const __half* p, float out[8]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  __half2 h[4];
  memcpy(h, &raw, sizeof(raw));
  for (int i = 0; i < 4; ++i) {
    const float2 f = __half22float2(h[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

template <int LanesPerKey>
__global__ void attention_split_kernel(const __half* qkv, int ldq, int nh, int nkv, int window, float scale,
                                       const int32_t* row_seq, const int32_t* positions, const int32_t* table_offsets,
                                       const int32_t* tables, const __half* k_pool, const __half* v_pool, int splits,
                                       int min_keys_per_split, const int32_t* rows, float* partials, __half* out,
                                       int ldo) {
  constexpr int D = 8 * LanesPerKey, KeysPerWarp = 32 / LanesPerKey, KeyLanes = kSplitWarps * KeysPerWarp;
  __shared__ float state_shared[KeyLanes][kMaxGroup][2];  // (max, sum) per key lane and head
  __shared__ float acc_shared[KeyLanes][kMaxGroup][D];    // 32 KiB whatever D
  const int split = int(blockIdx.x % unsigned(splits)), kv_head = int(blockIdx.x / unsigned(splits)) % nkv;
  const int j = int(blockIdx.x / unsigned(splits * nkv));  // the j-th row this launch handles
  const int t = rows ? rows[j] : j;
  const int G = nh / nkv, warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int key_lane = warp * KeysPerWarp + lane / LanesPerKey, part = lane % LanesPerKey;
  const int64_t pos = positions[t];
  const int32_t* table = tables + table_offsets[row_seq[t]];
  // The row's own visible keys cut into `splits` ranges of at least min_keys_per_split keys
  // (a short row leaves its last splits empty): each row's partition depends on its own
  // length and the split count only, so a pass's rows may differ in length and a captured
  // CUDA graph (splits fixed per row count) computes what an uncaptured pass does.
  const int64_t first = paged::first_visible(pos, window), visible = pos + 1 - first;
  const int64_t keys_per_split = max(int64_t(min_keys_per_split), (visible + splits - 1) / splits);
  const int64_t begin = first + int64_t(split) * keys_per_split;
  const int64_t end = min(pos + 1, begin + keys_per_split);  // keys [begin, end); may be empty

  float q[kMaxGroup][8], m[kMaxGroup], l[kMaxGroup], acc[kMaxGroup][8];
  // Loops over the group's heads run to kMaxGroup, unrolled, guarded by g < G: constant
  // indices keep q, m, l and acc in registers (a loop to a run-time G would index them
  // dynamically, which puts them in local memory).
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    if (g >= G) break;
    load8(qkv + size_t(t) * ldq + size_t(kv_head * G + g) * D + 8 * part, q[g]);
    for (int i = 0; i < 8; ++i) q[g][i] *= scale;
    m[g] = -INFINITY;
    l[g] = 0.0f;
    for (int i = 0; i < 8; ++i) acc[g][i] = 0.0f;
  }
  // The loop bounds are the block's: every lane runs every shuffle (lanes past `end` add 0).
  for (int64_t j0 = begin; j0 < end; j0 += KeyLanes) {
    const int64_t j = j0 + key_lane;
    const bool live = j < end;
    float kf[8], vf[8];
    if (live) {
      const int64_t at = paged::element(paged::slot(table, j), kv_head, nkv, D) + 8 * part;
      load8(k_pool + at, kf);
      load8(v_pool + at, vf);
    } else {
      for (int i = 0; i < 8; ++i) kf[i] = vf[i] = 0.0f;
    }
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) {
      if (g >= G) break;
      float score = 0.0f;
      for (int i = 0; i < 8; ++i) score += q[g][i] * kf[i];
      for (int o = LanesPerKey / 2; o > 0; o /= 2) score += __shfl_xor_sync(0xffffffffu, score, o);
      if (!live) continue;
      const float m_new = fmaxf(m[g], score), old_scale = paged::rescale(m[g], m_new), p = expf(score - m_new);
      l[g] = l[g] * old_scale + p;
      for (int i = 0; i < 8; ++i) acc[g][i] = acc[g][i] * old_scale + p * vf[i];
      m[g] = m_new;
    }
  }
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    if (g >= G) break;
    for (int i = 0; i < 8; ++i) acc_shared[key_lane][g][8 * part + i] = acc[g][i];
    if (part == 0) {
      state_shared[key_lane][g][0] = m[g];
      state_shared[key_lane][g][1] = l[g];
    }
  }
  __syncthreads();
  for (int idx = int(threadIdx.x); idx < G * D; idx += int(blockDim.x)) {
    const int g = idx / D, dim = idx % D, head = kv_head * G + g;
    float top = -INFINITY;
    for (int k = 0; k < KeyLanes; ++k) top = fmaxf(top, state_shared[k][g][0]);
    float sum = 0.0f, value = 0.0f;
    for (int k = 0; k < KeyLanes; ++k) {
      const float f = paged::rescale(state_shared[k][g][0], top);
      sum += state_shared[k][g][1] * f;
      value += acc_shared[k][g][dim] * f;
    }
    if (splits == 1) {
      out[size_t(t) * ldo + size_t(head) * D + dim] = __float2half_rn(value / sum);
    } else {
      float* p = partials + ((size_t(j) * nh + head) * splits + split) * (D + 2);
      p[2 + dim] = value;
      if (dim == 0) {
        p[0] = top;
        p[1] = sum;
      }
    }
  }
}

// The splits' states of one (row, head) per block merged (log-sum-exp), F16 out.
__global__ void attention_combine_kernel(const float* partials, int nh, int d, int splits, const int32_t* rows,
                                         __half* out, int ldo) {
  const int j = int(blockIdx.x) / nh, head = int(blockIdx.x) % nh, t = rows ? rows[j] : j;
  const float* p = partials + size_t(blockIdx.x) * splits * (d + 2);
  float top = -INFINITY;
  for (int s = 0; s < splits; ++s) top = fmaxf(top, p[size_t(s) * (d + 2)]);
  for (int dim = int(threadIdx.x); dim < d; dim += int(blockDim.x)) {
    float sum = 0.0f, value = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float* ps = p + size_t(s) * (d + 2);
      const float f = paged::rescale(ps[0], top);
      sum += ps[1] * f;
      value += ps[2 + dim] * f;
    }
    out[size_t(t) * ldo + size_t(head) * d + dim] = __float2half_rn(value / sum);
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

namespace pivotmt::cuda::kernels {

bool attention_split_supported(int nh, int nkv, int d, int ldq, const void* qkv) {
  return (d == 64 || d == 128 || d == 256) && nkv > 0 && nh % nkv == 0 && nh / nkv <= kMaxGroup && ldq % 8 == 0 &&
         reinterpret_cast<uintptr_t>(qkv) % 16 == 0;
}

size_t attention_split_partials(int T, int nh, int d, int splits) {
  return splits > 1 ? size_t(T) * nh * splits * (d + 2) : 0;
}

void attention_split(const void* qkv, int ldq, int T, int nh, int nkv, int d, int window, const int32_t* row_seq,
                     const int32_t* positions, const int32_t* table_offsets, const int32_t* tables, const void* k_pool,
                     const void* v_pool, int splits, int min_keys_per_split, const int32_t* rows, float* partials,
                     void* out, int ldo, cudaStream_t s) {
  if (!attention_split_supported(nh, nkv, d, ldq, qkv))
    throw Error("cuda attention_split: " + std::to_string(nh) + " heads over " + std::to_string(nkv) + " KV heads of " +
                std::to_string(d) + " dims (row stride " + std::to_string(ldq) + ") are not supported");
  if (splits < 1 || min_keys_per_split < 1 || (splits > 1 && partials == nullptr))
    throw Error("cuda attention_split: " + std::to_string(splits) + " splits of at least " +
                std::to_string(min_keys_per_split) + " keys");
  if (T == 0) return;
  const size_t blocks = size_t(T) * nkv * splits;
  if (blocks > 0x7fffffffu) throw Error("cuda attention_split: too many (row, KV head, split) blocks for one launch");
  const float scale = 1.0f / sqrtf(float(d));
  const auto run = [&](auto kernel, const char* name) {
    launch(name, kernel, unsigned(blocks), 32 * kSplitWarps, s, static_cast<const __half*>(qkv), ldq, nh, nkv, window,
           scale, row_seq, positions, table_offsets, tables, static_cast<const __half*>(k_pool),
           static_cast<const __half*>(v_pool), splits, min_keys_per_split, rows, partials, static_cast<__half*>(out), ldo);
  };
  if (d == 64) run(attention_split_kernel<8>, "attention_split_kernel<64>");
  else if (d == 128) run(attention_split_kernel<16>, "attention_split_kernel<128>");
  else run(attention_split_kernel<32>, "attention_split_kernel<256>");
  if (splits > 1)
    launch("attention_combine_kernel", attention_combine_kernel, unsigned(size_t(T) * nh), 128, s,
           static_cast<const float*>(partials), nh, d, splits, rows, static_cast<__half*>(out), ldo);
}

}  // namespace pivotmt::cuda::kernels
