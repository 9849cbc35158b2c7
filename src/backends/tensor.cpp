#include "backends/tensor.h"

#include <cstdlib>
#include <new>

#include <fmt/format.h>

#include "backends/backend.h"
#include "core/error.h"

namespace pivotmt {

Tensor::Tensor(Device device, DType dtype, size_t rows, size_t cols)
    : device_(device), dtype_(dtype), rows_(rows), cols_(cols), stride_(cols) {
  const size_t bytes = std::max<size_t>(rows * cols * dtype_size(dtype), 1);
  if (device.kind == DeviceKind::CPU) {
    // 64-byte aligned: the SIMD kernels load whole cache lines.
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) throw Error(fmt::format("cpu: cannot allocate {} bytes for a [{}, {}] {} tensor", bytes, rows, cols, dtype_name(dtype)));
    storage_ = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  } else {
    storage_ = cuda::device_alloc(device.index, bytes);
  }
  data_ = storage_.get();
}

Tensor::Tensor(Device device, DType dtype, size_t rows, size_t cols, size_t stride, std::shared_ptr<void> owner, void* data)
    : device_(device), dtype_(dtype), rows_(rows), cols_(cols), stride_(stride), storage_(std::move(owner)), data_(data) {
  if (stride < cols) throw Error(fmt::format("tensor stride {} is shorter than a row of {}", stride, cols));
}

Tensor Tensor::rows(size_t r0, size_t n) const {
  if (r0 + n > rows_) throw Error(fmt::format("rows [{}, {}) of {}", r0, r0 + n, describe()));
  return Tensor(device_, dtype_, n, cols_, stride_, storage_, static_cast<char*>(data_) + r0 * stride_ * dtype_size(dtype_));
}

Tensor Tensor::cols(size_t c0, size_t n) const {
  if (c0 + n > cols_) throw Error(fmt::format("columns [{}, {}) of {}", c0, c0 + n, describe()));
  return Tensor(device_, dtype_, rows_, n, stride_, storage_, static_cast<char*>(data_) + c0 * dtype_size(dtype_));
}

std::string Tensor::describe() const {
  std::string s = fmt::format("{} {} [{}, {}]", device_.to_string(), dtype_name(dtype_), rows_, cols_);
  if (stride_ != cols_) s += fmt::format(" (stride {})", stride_);
  return s;
}

}  // namespace pivotmt
