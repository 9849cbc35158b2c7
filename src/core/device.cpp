#include "core/device.h"

#include <charconv>

#include <fmt/format.h>

#include "core/error.h"

namespace pivotmt {

Device Device::parse(std::string_view text) {
  if (text == "cpu") return {DeviceKind::CPU, 0};
  if (text == "cuda") return {DeviceKind::CUDA, 0};
  if (text.starts_with("cuda:")) {
    std::string_view num = text.substr(5);
    int index = -1;
    auto [ptr, ec] = std::from_chars(num.data(), num.data() + num.size(), index);
    if (ec == std::errc() && ptr == num.data() + num.size() && index >= 0) return {DeviceKind::CUDA, index};
  }
  throw Error(fmt::format("unknown device '{}': expected cpu, cuda or cuda:N", text));
}

std::string Device::to_string() const {
  return kind == DeviceKind::CPU ? "cpu" : fmt::format("cuda:{}", index);
}

}  // namespace pivotmt
