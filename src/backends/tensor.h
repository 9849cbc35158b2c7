// A 2-D array (rows × cols, rows `stride` elements apart) of one dtype in one device's
// memory: host memory for the CPU, cudaMalloc'd memory for a GPU (never managed memory).
// A tensor owns its storage through a shared handle, so views (a range of rows or
// columns) keep it alive; copying a Tensor copies the handle, not the data.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "core/device.h"
#include "core/dtype.h"

namespace pivotmt {

class Tensor {
 public:
  Tensor() = default;
  // Allocates rows × cols elements on `device` (contents undefined). Throws Error naming the
  // device and the size when the memory is not there.
  Tensor(Device device, DType dtype, size_t rows, size_t cols);
  // Wraps memory someone else owns (kept alive by `owner`).
  Tensor(Device device, DType dtype, size_t rows, size_t cols, size_t stride, std::shared_ptr<void> owner, void* data);

  const Device& device() const { return device_; }
  DType dtype() const { return dtype_; }
  size_t rows() const { return rows_; }
  size_t cols() const { return cols_; }
  size_t stride() const { return stride_; }  // elements from one row to the next
  size_t numel() const { return rows_ * cols_; }
  bool empty() const { return data_ == nullptr; }
  bool contiguous() const { return stride_ == cols_; }
  void* data() const { return data_; }
  template <class T>
  T* as() const { return static_cast<T*>(data_); }
  // Rows [r0, r0 + n) / columns [c0, c0 + n): views sharing the storage.
  Tensor rows(size_t r0, size_t n) const;
  Tensor cols(size_t c0, size_t n) const;
  std::string describe() const;  // "cuda:0 F16 [7, 4096] (stride 12288)"

 private:
  Device device_;
  DType dtype_ = DType::F32;
  size_t rows_ = 0, cols_ = 0, stride_ = 0;
  std::shared_ptr<void> storage_;
  void* data_ = nullptr;
};

}  // namespace pivotmt
