// Kernel launches: launch("name", kernel, blocks, threads, stream, args...) starts the
// kernel and checks the launch at once (a launch that fails says so with the kernel's name
// instead of corrupting what runs after it).
//
// The launchers in the *.cu files go through this one function, not <<<...>>> directly, so
// that the test suite's CUDA emulator (tests/cuda_emulator: the same kernel sources compiled
// as C++ and run on CPU threads of execution) can supply its own `launch` and run every
// kernel and every host path of the backend on a machine without a GPU.
#pragma once
#include <utility>

#include "backends/cuda/cuda_util.h"

#if !defined(PIVOTMT_CUDA_EMULATOR)
namespace pivotmt::cuda {

template <class... Params, class... Args>
void launch(const char* name, void (*kernel)(Params...), unsigned blocks, unsigned threads, cudaStream_t stream,
            Args&&... args) {
  kernel<<<blocks, threads, 0, stream>>>(std::forward<Args>(args)...);
  check_launch(name);
}

}  // namespace pivotmt::cuda
#endif
