// What runtime.cpp (device memory, copies) and streams.cpp (streams, events, capture) of the
// CUDA emulator call in each other.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <functional>

namespace pivotmt::cuda::emu {

// runtime.cpp: `e` recorded as the thread's last error when it is one; returned.
cudaError_t record(cudaError_t e);
// runtime.cpp: whether [p, p + n) lies inside one pinned host allocation.
bool pinned_range(const void* p, size_t n);

// streams.cpp: CUDA's rule for "potentially unsafe" calls during a capture (synchronising,
// allocating, synchronous copies): refused with the thread's captures invalidated.
cudaError_t refuse_if_capturing();
// streams.cpp: orders `work` on its stream — recorded into a capture (true); deferred when
// `deferrable` on a created stream (true); else the stream's earlier deferred work (every
// stream's, for the legacy default stream) runs first and the caller runs `work` now (false).
// Kernels, GEMMs and graph launches (capture()) are deferrable on a created stream.
bool issue(cudaStream_t stream, const std::function<void()>& work, bool deferrable);
// streams.cpp: every stream's deferred work, run now (a device-wide synchronisation).
void run_all_deferred();

}  // namespace pivotmt::cuda::emu
