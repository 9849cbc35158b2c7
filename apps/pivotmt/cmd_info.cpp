#include <fmt/format.h>

#include "backends/backend.h"
#include "commands.h"
#include "core/progress.h"
#include "hub/hub_config.h"

namespace pivotmt::cli {

void register_info(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Show the build, devices and Hugging Face cache settings");
  cmd->callback([] {
    fmt::print("pivotmt {}\n", PIVOTMT_VERSION);
    fmt::print("CUDA backend: {}\n", cuda_compiled() ? "built" : "not built");
    const int n = cuda_device_count();
    for (int i = 0; i < n; ++i) {
      const auto d = cuda_device_info(i);
      fmt::print("  cuda:{} {} (sm_{}{}, PCI {}), {} free of {}\n", i, d.name, d.sm_major, d.sm_minor,
                 d.pci_bus_id.empty() ? "?" : d.pci_bus_id, format_bytes(double(d.free_memory)),
                 format_bytes(double(d.total_memory)));
    }
    if (cuda_compiled() && n == 0) fmt::print("  no CUDA device visible: commands run on the CPU\n");
    if (n > 0) {
      const auto v = cuda::versions();
      auto text = [](int x) { return fmt::format("{}.{}", x / 1000, x % 1000 / 10); };
      fmt::print("CUDA driver {}, runtime {}\n", text(v.driver), text(v.runtime));
      if (v.driver < v.runtime)
        fmt::print("warning: the NVIDIA driver supports CUDA {}, older than the runtime pivotmt was built with ({}); "
                   "if a CUDA call fails, update the driver\n",
                   text(v.driver), text(v.runtime));
      fmt::print("cuBLAS: {}\n", cuda::blas_library());
    }
    const auto hub = HubConfig::from_env();
    fmt::print("hub endpoint: {}\nhub cache: {}\noffline: {}\ntoken: {}\n", hub.endpoint, hub.cache_dir,
               hub.offline ? "yes" : "no", hub.token ? "set (not shown)" : "none");
  });
}

}  // namespace pivotmt::cli
