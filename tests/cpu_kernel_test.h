// Shared by the CPU kernels' tests (test_cpu_kernels, test_ggml_kernels), which run every
// SIMD path this machine has: a fixture listing the ISA levels (portable, AVX2, AVX-512,
// AVX-512 VNNI) up to the hardware's, for set_isa_cap, that restores the machine's own
// level after each test; and a relative comparison of two float vectors.
#pragma once
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backends/cpu/cpu_features.h"

namespace pivotmt::test {

struct IsaLevels : ::testing::Test {
  ~IsaLevels() override { cpu::set_isa_cap(cpu::Isa::Avx512Vnni); }
  static std::vector<cpu::Isa> levels() {
    std::vector<cpu::Isa> v;
    for (cpu::Isa i : {cpu::Isa::Portable, cpu::Isa::Avx2, cpu::Isa::Avx512, cpu::Isa::Avx512Vnni})
      if (i <= cpu::hardware_isa()) v.push_back(i);
    return v;
  }
};

inline void expect_close(const std::vector<float>& got, const std::vector<float>& want, float tol,
                         const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], tol * std::max(1.0f, std::fabs(want[i]))) << what << " at " << i;
}

}  // namespace pivotmt::test
