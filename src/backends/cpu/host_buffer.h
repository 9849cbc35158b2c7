// Anonymous host memory for large buffers written soon after they are made (the CPU KV
// cache): its pages faulted in by one call instead of one trap per 4 KiB page, and huge
// pages asked for where the buffer spans them.
#pragma once
#include <cstddef>

namespace pivotmt::cpu {

class HostBuffer {
 public:
  HostBuffer() = default;
  // `bytes` of zeroed memory (throws pivotmt::Error when the system has none to give).
  explicit HostBuffer(size_t bytes);
  ~HostBuffer();
  HostBuffer(HostBuffer&& other) noexcept;
  HostBuffer& operator=(HostBuffer&& other) noexcept;
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;

  float* floats() const { return static_cast<float*>(data_); }
  size_t bytes() const { return bytes_; }

 private:
  void release();
  void* data_ = nullptr;     // bytes_ usable, 2 MiB-aligned when huge pages were asked for
  size_t bytes_ = 0;
  void* mapping_ = nullptr;  // what munmap gets back
  size_t mapped_ = 0;
};

}  // namespace pivotmt::cpu
