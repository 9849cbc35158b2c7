// What the GPU suites share: whether a device is there (a real GPU, or the CUDA emulator in
// the "emulated." builds), the skip that says why, the device they test, and random data.
#pragma once
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "backends/backend.h"
#include "core/device.h"

namespace pivotmt::test {

inline bool have_gpu() { return cuda_compiled() && cuda_device_count() > 0; }
#define REQUIRE_GPU() \
  if (!::pivotmt::test::have_gpu()) GTEST_SKIP() << "no CUDA device"

inline const Device kGpu{DeviceKind::CUDA, 0};

// n values uniform in [-scale, scale).
inline std::vector<float> random_values(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

}  // namespace pivotmt::test
