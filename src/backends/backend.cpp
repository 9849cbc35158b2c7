#include "backends/backend.h"

#include <fstream>
#include <string>

#include <fmt/format.h>

#include "core/error.h"

namespace pivotmt {

bool cuda_compiled() { return cuda::compiled(); }
int cuda_device_count() { return cuda::device_count(); }
CudaDeviceInfo cuda_device_info(int index) { return cuda::device_info(index); }

HostMemory host_memory() {
  HostMemory m;
  std::ifstream in("/proc/meminfo");
  std::string key, unit;
  size_t kb = 0;
  while (in >> key >> kb >> unit) {
    if (key == "MemTotal:") m.total = kb * 1024;
    if (key == "MemAvailable:") m.available = kb * 1024;
  }
  return m;
}

Device resolve_device(std::string_view text, bool gpu_ok) {
  if (text == "auto") return gpu_ok && cuda_device_count() > 0 ? Device{DeviceKind::CUDA, 0} : Device{};
  const Device d = Device::parse(text);
  if (d.kind == DeviceKind::CUDA) {
    if (!cuda_compiled()) throw UnsupportedError(fmt::format("device {}: this pivotmt was built without CUDA (reconfigure with -DPIVOTMT_CUDA=ON)", text));
    const int n = cuda_device_count();
    if (d.index >= n)
      throw Error(fmt::format("device {}: this machine has {} CUDA device{}{}", d.to_string(), n, n == 1 ? "" : "s",
                              n == 0 ? " (no GPU visible: use --device cpu)" : ""));
  }
  return d;
}

void convert_floats_on(const Device& device, DType from, const void* src, DType to, void* dst, size_t count) {
  auto supported = [](DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; };
  if (!supported(from) || !supported(to))
    throw UnsupportedError(fmt::format("convert: {} -> {} is not supported (F32, F16, BF16 only)", dtype_name(from),
                                       dtype_name(to)));
  if (device.kind == DeviceKind::CPU) return convert_floats(from, src, to, dst, count);
  cuda::convert_floats(device.index, from, src, to, dst, count);
}

}  // namespace pivotmt
