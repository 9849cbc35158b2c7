#include "backends/resource_monitor.h"

#include <dlfcn.h>

#include <chrono>
#include <fstream>
#include <string>

#include "backends/backend.h"

namespace pivotmt {

namespace {
// The few NVML entry points used, declared here (their C ABI has been stable since NVML's
// first versions) so that a build without the driver's headers still has them.
struct NvmlUtilization {
  unsigned int gpu, memory;
};
struct NvmlMemory {
  unsigned long long total, free, used;
};
struct Nvml {
  int (*init)() = nullptr;
  int (*handle_by_pci_bus_id)(const char*, void**) = nullptr;
  int (*utilization)(void*, NvmlUtilization*) = nullptr;
  int (*memory)(void*, NvmlMemory*) = nullptr;
  bool ok = false;
};

const Nvml& nvml() {
  static const Nvml n = [] {
    Nvml r;
    void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return r;
    r.init = reinterpret_cast<int (*)()>(dlsym(lib, "nvmlInit_v2"));
    r.handle_by_pci_bus_id =
        reinterpret_cast<int (*)(const char*, void**)>(dlsym(lib, "nvmlDeviceGetHandleByPciBusId_v2"));
    r.utilization = reinterpret_cast<int (*)(void*, NvmlUtilization*)>(dlsym(lib, "nvmlDeviceGetUtilizationRates"));
    r.memory = reinterpret_cast<int (*)(void*, NvmlMemory*)>(dlsym(lib, "nvmlDeviceGetMemoryInfo"));
    r.ok = r.init && r.handle_by_pci_bus_id && r.utilization && r.memory && r.init() == 0;
    return r;
  }();
  return n;
}
}  // namespace

size_t peak_host_memory_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return size_t(std::stoull(line.substr(6))) * 1024;  // "VmHWM:  1234 kB"
  return 0;
}

ResourceMonitor::ResourceMonitor(const Device& device, double interval_s) : device_(device) {
  if (device_.kind != DeviceKind::CUDA) return;
  // The same GPU by its PCI bus id: NVML numbers every GPU of the machine in PCI order,
  // CUDA only the visible ones (CUDA_VISIBLE_DEVICES, as --devices gives each worker) and
  // fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID, so index i is not the same GPU.
  if (nvml().ok) {
    std::string bus;
    try {
      bus = cuda_device_info(device_.index).pci_bus_id;
    } catch (const std::exception&) {
    }
    if (!bus.empty() && nvml().handle_by_pci_bus_id(bus.c_str(), &nvml_device_) == 0) nvml_ = true;
  }
  thread_ = std::thread([this, interval_s] {
    while (!stop_) {
      sample();
      for (double waited = 0; waited < interval_s && !stop_; waited += 0.05)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
}

ResourceMonitor::~ResourceMonitor() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void ResourceMonitor::sample() {
  size_t used = 0;
  double util = -1;
  if (nvml_) {
    NvmlMemory m{};
    NvmlUtilization u{};
    if (nvml().memory(nvml_device_, &m) == 0) used = size_t(m.used);
    if (nvml().utilization(nvml_device_, &u) == 0) util = double(u.gpu);
  } else {
    try {
      const auto info = cuda_device_info(device_.index);
      used = info.total_memory - info.free_memory;
    } catch (...) {  // a sample is best effort: the run matters, not its monitor
      return;
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  ++samples_;
  memory_max_ = std::max(memory_max_, used);
  if (util >= 0) {
    utilization_sum_ += util;
    utilization_max_ = std::max(utilization_max_, util);
  }
}

nlohmann::json ResourceMonitor::summary() const {
  nlohmann::json j = {{"peak_host_memory_bytes", peak_host_memory_bytes()}};
  if (device_.kind != DeviceKind::CUDA) return j;
  std::lock_guard<std::mutex> lock(mutex_);
  j["gpu_source"] = nvml_ ? "nvml" : "cuda";
  j["gpu_samples"] = samples_;
  j["gpu_memory_used_max_bytes"] = memory_max_;
  if (nvml_ && samples_ > 0) {
    j["gpu_utilization_mean"] = utilization_sum_ / double(samples_);
    j["gpu_utilization_max"] = utilization_max_;
  }
  return j;
}

}  // namespace pivotmt
