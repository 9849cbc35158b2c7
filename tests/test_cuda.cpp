// GPU tests (CTest label "gpu"): skip cleanly when this build has no CUDA or the machine
// has no device; otherwise compare every CUDA op with the CPU reference.
#include <gtest/gtest.h>

#include <random>

#include "backends/backend.h"
#include "core/error.h"

namespace pivotmt {
namespace {

bool have_gpu() { return cuda_compiled() && cuda_device_count() > 0; }

TEST(Cuda, WithoutDeviceTheErrorIsClear) {
  if (have_gpu()) GTEST_SKIP() << "a GPU is present";
  float in = 1.0f;
  uint16_t out = 0;
  try {
    convert_floats_on(Device::parse("cuda"), DType::F32, &in, DType::F16, &out, 1);
    FAIL() << "converted on a GPU that is not there";
  } catch (const Error& e) {
    EXPECT_FALSE(std::string(e.what()).empty());
  }
}

TEST(Cuda, DeviceInfo) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const auto info = cuda_device_info(0);
  EXPECT_FALSE(info.name.empty());
  EXPECT_GT(info.total_memory, 0u);
}

TEST(Cuda, ConvertMatchesCpuReference) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (size_t n : {size_t(1), size_t(7), size_t(769), size_t(1) << 20}) {
    std::vector<float> src(n);
    for (auto& v : src) v = normal(rng) * (rng() % 2 ? 1e-5f : 1e3f);
    for (DType to : {DType::F16, DType::BF16}) {
      std::vector<uint16_t> cpu(n), gpu(n);
      convert_floats_on(Device::parse("cpu"), DType::F32, src.data(), to, cpu.data(), n);
      convert_floats_on(Device::parse("cuda:0"), DType::F32, src.data(), to, gpu.data(), n);
      EXPECT_EQ(cpu, gpu) << "n=" << n << " to " << dtype_name(to);
      std::vector<float> back_cpu(n), back_gpu(n);
      convert_floats_on(Device::parse("cpu"), to, cpu.data(), DType::F32, back_cpu.data(), n);
      convert_floats_on(Device::parse("cuda:0"), to, cpu.data(), DType::F32, back_gpu.data(), n);
      EXPECT_EQ(back_cpu, back_gpu);
    }
  }
}

}  // namespace
}  // namespace pivotmt
