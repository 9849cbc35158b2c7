// Which SIMD kernels this CPU can run, found once at run time (machines differ from one
// run to the next, so nothing is fixed at build time). PIVOTMT_CPU_ISA=portable|avx2|
// avx512|avx512vnni caps the choice, so each path can be tested and benchmarked on a
// machine that has a better one.
#pragma once
#include <string>

namespace pivotmt::cpu {

enum class Isa {
  Portable,    // plain loops
  Avx2,        // AVX2 + FMA + F16C
  Avx512,      // + AVX-512 F, BW, VL, DQ
  Avx512Vnni,  // + AVX-512 VNNI (int8 dot products)
};

// The best level the CPU and the OS support, capped by PIVOTMT_CPU_ISA (an unknown value
// throws Error naming the accepted ones).
Isa isa();
// Levels the hardware supports, ignoring the cap (for tests that walk every path).
Isa hardware_isa();
const char* isa_name(Isa isa);
// For tests and benchmarks: run the kernels as if the CPU had at most `cap`.
void set_isa_cap(Isa cap);
// "avx512vnni (hardware: avx512vnni, bf16)" style description for logs and benchmarks.
std::string describe_isa();

}  // namespace pivotmt::cpu
