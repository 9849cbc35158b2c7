// A small persistent thread pool for the CPU kernels: parallel_for splits [0, n) into one
// contiguous chunk per thread. Persistent workers, because decode steps of small models
// are microseconds long and creating threads per call would dominate them.
#pragma once
#include <cstddef>
#include <functional>

namespace pivotmt::cpu {

void parallel_for(size_t n, const std::function<void(size_t begin, size_t end)>& body);

}  // namespace pivotmt::cpu
