// What a run used: peak host memory (the kernel's high-water mark of this process), and on
// a GPU its memory and utilisation sampled while the run goes — through NVML when the driver
// provides libnvidia-ml (loaded at run time: no build dependency), else the memory CUDA
// reports (cudaMemGetInfo; no utilisation without NVML).
#pragma once
#include <atomic>
#include <cstddef>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/device.h"

namespace pivotmt {

// VmHWM of /proc/self/status in bytes (0 when unreadable).
size_t peak_host_memory_bytes();

class ResourceMonitor {
 public:
  // Samples `device` every `interval_s` seconds on a thread of its own until destroyed; on the
  // CPU it only records the host's peak.
  explicit ResourceMonitor(const Device& device, double interval_s = 1.0);
  ~ResourceMonitor();
  ResourceMonitor(const ResourceMonitor&) = delete;
  ResourceMonitor& operator=(const ResourceMonitor&) = delete;

  // {"peak_host_memory_bytes", and for a GPU "gpu_memory_used_max_bytes", "gpu_samples",
  //  "gpu_source": "nvml" | "cuda", with NVML "gpu_utilization_mean" / "_max" (percent)}.
  nlohmann::json summary() const;

 private:
  void sample();
  Device device_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  mutable std::mutex mutex_;
  size_t samples_ = 0, memory_max_ = 0;
  double utilization_sum_ = 0, utilization_max_ = 0;
  bool nvml_ = false;
  void* nvml_device_ = nullptr;
};

}  // namespace pivotmt
