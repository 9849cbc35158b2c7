#include "backends/cuda/cublas_loader.h"

#include <dlfcn.h>

#include <mutex>
#include <string>

#include <fmt/format.h>

#include "core/error.h"

namespace pivotmt::cuda {
namespace {

template <class F>
void bind(void* lib, const char* name, F& f) {
  f = reinterpret_cast<F>(dlsym(lib, name));
  if (!f) throw Error(fmt::format("cuBLAS: {} not found in the loaded library ({})", name, dlerror()));
}

Cublas load() {
  // The major version this build was compiled against (cuBLAS keeps its ABI within one).
  const std::string name = fmt::format("libcublas.so.{}", CUBLAS_VER_MAJOR);
  void* lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib)
    throw Error(fmt::format("cuBLAS: cannot load {} ({}): install the CUDA {} toolkit's libraries or add their folder "
                            "(e.g. /usr/local/cuda/lib64) to LD_LIBRARY_PATH",
                            name, dlerror(), CUBLAS_VER_MAJOR));
  Cublas c{};
  bind(lib, "cublasCreate_v2", c.create);
  bind(lib, "cublasDestroy_v2", c.destroy);
  bind(lib, "cublasSetStream_v2", c.set_stream);
  bind(lib, "cublasSetWorkspace_v2", c.set_workspace);
  bind(lib, "cublasGemmEx", c.gemm_ex);
  bind(lib, "cublasGetStatusName", c.status_name);
  bind(lib, "cublasGetStatusString", c.status_string);
  return c;  // the library stays loaded for the process
}

}  // namespace

const Cublas& cublas() {
  static std::once_flag once;
  static Cublas c;
  std::call_once(once, [] { c = load(); });
  return c;
}

}  // namespace pivotmt::cuda
