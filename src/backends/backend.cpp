#include "backends/backend.h"

#include <fmt/format.h>

#include "core/error.h"

namespace pivotmt {

bool cuda_compiled() { return cuda::compiled(); }
int cuda_device_count() { return cuda::device_count(); }
CudaDeviceInfo cuda_device_info(int index) { return cuda::device_info(index); }

void convert_floats_on(const Device& device, DType from, const void* src, DType to, void* dst, size_t count) {
  auto supported = [](DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; };
  if (!supported(from) || !supported(to))
    throw UnsupportedError(fmt::format("convert: {} -> {} is not supported (F32, F16, BF16 only)", dtype_name(from),
                                       dtype_name(to)));
  if (device.kind == DeviceKind::CPU) return convert_floats(from, src, to, dst, count);
  cuda::convert_floats(device.index, from, src, to, dst, count);
}

}  // namespace pivotmt
