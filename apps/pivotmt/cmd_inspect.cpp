#include <fmt/format.h>

#include "backends/backend.h"
#include "commands.h"
#include "core/progress.h"
#include "hub/hub_client.h"
#include "models/inspect.h"

namespace pivotmt::cli {
namespace {
// Whether the model's weights fit the device's free memory, and how many KV positions the
// rest holds: F16 weights and KV on a GPU (less what the GPU ops keep — cuBLAS's workspace,
// the weights' staging buffers, a safety margin — and ~350 MiB for activations); on
// the CPU F16 weights read in place and F32 keys and values, from MemAvailable.
nlohmann::json device_fit(const nlohmann::json& report, const Device& device) {
  const double weights = report["memory_bytes"]["fp16"].get<double>();
  const double kv_per_position = report["kv_cache_bytes_per_token"].get<double>() * (device.kind == DeviceKind::CPU ? 2 : 1);
  double free = 0, total = 0;
  std::string name = device.to_string();
  if (device.kind == DeviceKind::CUDA) {
    const auto info = cuda_device_info(device.index);
    free = double(info.free_memory), total = double(info.total_memory);
    name = fmt::format("{} ({})", device.to_string(), info.name);
  } else {
    const HostMemory m = host_memory();
    free = double(m.available), total = double(m.total);
  }
  const double kept = device.kind == DeviceKind::CUDA ? double(cuda::kReservedBytes + (size_t(352) << 20)) : 0.0;
  const double left = free - weights - kept;
  const bool fits = left > kv_per_position * 4096;  // room for one full-context sequence at least
  const double positions = left > 0 ? left / kv_per_position : 0;
  nlohmann::json j = {{"device", device.to_string()}, {"name", name}, {"free_bytes", free}, {"total_bytes", total},
                      {"weights_bytes", weights}, {"kv_bytes_per_position", kv_per_position}, {"fits", fits},
                      {"kv_positions", size_t(positions)}};
  j["summary"] = fits ? fmt::format("fits on {}: {} of F16 weights, {} free, room for {:.0f}k KV positions ({} each)", name,
                                    format_bytes(weights), format_bytes(free), positions / 1000, format_bytes(kv_per_position))
                      : fmt::format("does NOT fit on {}: {} of F16 weights{} and {} per KV position, {} free of {}", name,
                                    format_bytes(weights), kept > 0 ? fmt::format(" + {} of working memory", format_bytes(kept)) : "",
                                    format_bytes(kv_per_position), format_bytes(free), format_bytes(total));
  return j;
}
}  // namespace

void register_inspect(CLI::App& app) {
  auto* cmd = app.add_subcommand("inspect", "Describe a checkpoint: architecture, parameters, memory, KV cache; verify its tensors");
  static std::string model;
  static bool as_json = false;
  static std::string device;
  cmd->add_option("MODEL", model, "Model directory or hub id org/name[@revision]")->required();
  cmd->add_flag("--json", as_json, "Print one JSON object");
  cmd->add_option("--device", device, "Also say whether the model fits this device (cpu, cuda, cuda:N, auto)");
  cmd->callback([] {
    const std::string dir = resolve_repo_path(model, RepoType::Model);
    auto report = inspect_model(dir);
    if (!device.empty()) report["device_fit"] = device_fit(report, resolve_device(device));
    if (as_json) {
      fmt::print("{}\n", report.dump(2));
      return;
    }
    fmt::print("{}", format_inspect_report(report));
    if (report.contains("device_fit")) fmt::print("{}\n", report["device_fit"]["summary"].get<std::string>());
  });
}

}  // namespace pivotmt::cli
