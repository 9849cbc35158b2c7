// The tensor-core and asynchronous-copy PTX instructions the kernels use, one inline function
// each. The CUDA emulator (tests/cuda_emulator/emulator.h) defines the same functions from
// the PTX ISA's fragment layouts, so a kernel written against these runs in the tests too.
//
//   mma_f16_f32(d, a, b)     d[16 x 8] += a[16 x 16] · b[16 x 8], F16 in, F32 accumulate
//                            (mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32)
//   mma_tf32_f32(d, a, b)    d[16 x 8] += a[16 x 8] · b[8 x 8], TF32 in (F32 registers whose
//                            low 13 bits the tensor cores ignore: round first), F32 accumulate
//                            (mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32)
//   ldmatrix_x4(r, row)      four 8 x 8 F16 matrices from shared memory, lane l naming row
//   ldmatrix_x4_trans(r, row)  l % 8 of matrix l / 8 (the .trans form transposes each)
//   cp_async_16(dst, src)    a 16-byte global → shared copy that does not hold the thread
//   cp_async_commit()        closes the group of copies issued so far
//   cp_async_wait<N>()       waits until at most N groups are in flight
//
// Fragment layouts (g = lane / 4, t = lane % 4): a's four registers hold a[g][2t..2t+1],
// a[g+8][2t..], a[g][2t+8..], a[g+8][2t+8..]; b's two hold b[2t..2t+1][g], b[2t+8..][g];
// d's four floats d[g][2t], d[g][2t+1], d[g+8][2t], d[g+8][2t+1]. TF32's a holds a[g][t],
// a[g+8][t], a[g][t+4], a[g+8][t+4]; its b b[t][g], b[t+4][g]; its d as F16's.
#pragma once
#include <cstdint>

#if !defined(PIVOTMT_CUDA_EMULATOR)
namespace pivotmt::cuda::ptx {

__device__ __forceinline__ void mma_f16_f32(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ void mma_tf32_f32(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ unsigned shared_address(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* row_address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row_address))
               : "memory");
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void* row_address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row_address))
               : "memory");
}

__device__ __forceinline__ void cp_async_16(void* shared_dst, const void* global_src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(shared_address(shared_dst)), "l"(global_src)
               : "memory");
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

}  // namespace pivotmt::cuda::ptx
#endif
