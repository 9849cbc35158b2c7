// Where a computation runs. Ops dispatch on this; model code never tests for CUDA itself.
#pragma once
#include <string>
#include <string_view>

namespace pivotmt {

enum class DeviceKind { CPU, CUDA };

struct Device {
  DeviceKind kind = DeviceKind::CPU;
  int index = 0;

  // "cpu", "cuda", "cuda:1". Throws Error naming the text otherwise.
  static Device parse(std::string_view text);
  std::string to_string() const;
  bool operator==(const Device&) const = default;
};

}  // namespace pivotmt
