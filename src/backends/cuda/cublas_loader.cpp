#include "backends/cuda/cublas_loader.h"

#include <dlfcn.h>
#include <glob.h>
#include <link.h>

#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "core/error.h"

namespace pivotmt::cuda {
namespace {

template <class F>
void bind(void* lib, const char* name, F& f) {
  f = reinterpret_cast<F>(dlsym(lib, name));
  if (!f) throw Error(fmt::format("cuBLAS: {} not found in the loaded library ({})", name, dlerror()));
}

// Folders that hold cuBLAS when the dynamic loader's own search (LD_LIBRARY_PATH, the
// ldconfig cache, the default folders) does not find it: the CUDA toolkit's, and the
// nvidia wheels PyTorch installs (CUDA 13 wheels put every library in nvidia/cu13/lib,
// CUDA 12 ones in nvidia/cublas/lib), system-wide, per user, in a venv or a conda env.
std::vector<std::string> candidate_folders() {
  std::vector<std::string> patterns = {"/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib",
                                       fmt::format("/usr/local/cuda-{}*/lib64", CUBLAS_VER_MAJOR)};
  std::vector<std::string> pythons = {"/usr/local/lib/python3*", "/usr/lib/python3*", "/opt/conda/lib/python3*"};
  for (const char* var : {"VIRTUAL_ENV", "CONDA_PREFIX"})
    if (const char* v = std::getenv(var); v && *v) pythons.push_back(std::string(v) + "/lib/python3*");
  if (const char* home = std::getenv("HOME"); home && *home) pythons.push_back(std::string(home) + "/.local/lib/python3*");
  for (const auto& py : pythons)
    for (const char* packages : {"site-packages", "dist-packages"})
      for (const std::string& sub : {fmt::format("nvidia/cu{}/lib", CUBLAS_VER_MAJOR), std::string("nvidia/cublas/lib")})
        patterns.push_back(py + "/" + packages + "/" + sub);
  std::vector<std::string> folders;
  for (const auto& pattern : patterns) {
    glob_t g{};
    if (glob(pattern.c_str(), GLOB_ONLYDIR, nullptr, &g) == 0)
      for (size_t i = 0; i < g.gl_pathc; ++i) folders.emplace_back(g.gl_pathv[i]);
    globfree(&g);
  }
  return folders;
}

// The file a handle was loaded from.
std::string path_of(void* lib) {
  link_map* map = nullptr;
  if (dlinfo(lib, RTLD_DI_LINKMAP, &map) == 0 && map && map->l_name && *map->l_name) return map->l_name;
  return "?";
}

Cublas load() {
  // The major version this build was compiled against (cuBLAS keeps its ABI within one).
  const std::string name = fmt::format("libcublas.so.{}", CUBLAS_VER_MAJOR);
  const std::string lt = fmt::format("libcublasLt.so.{}", CUBLAS_VER_MAJOR);
  void* lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  std::string tried = fmt::format("{} ({})", name, lib ? "" : dlerror());
  if (!lib) {
    for (const auto& folder : candidate_folders()) {
      // cuBLASLt first, from the same folder: the toolkit's libcublas has no RUNPATH to find it.
      dlopen((folder + "/" + lt).c_str(), RTLD_NOW | RTLD_GLOBAL);
      if ((lib = dlopen((folder + "/" + name).c_str(), RTLD_NOW | RTLD_LOCAL))) break;
      tried += fmt::format(", {}/{}", folder, name);
    }
  }
  if (!lib)
    throw Error(fmt::format("cuBLAS: cannot load {}; tried {}: install the CUDA {} toolkit's libraries or PyTorch's "
                            "nvidia-cublas wheel, or add the folder holding {} to LD_LIBRARY_PATH",
                            name, tried, CUBLAS_VER_MAJOR, name));
  Cublas c{};
  bind(lib, "cublasCreate_v2", c.create);
  bind(lib, "cublasDestroy_v2", c.destroy);
  bind(lib, "cublasSetStream_v2", c.set_stream);
  bind(lib, "cublasSetWorkspace_v2", c.set_workspace);
  bind(lib, "cublasSetPointerMode_v2", c.set_pointer_mode);
  bind(lib, "cublasGemmEx", c.gemm_ex);
  bind(lib, "cublasGemmStridedBatchedEx", c.gemm_strided_batched_ex);
  bind(lib, "cublasGetStatusName", c.status_name);
  bind(lib, "cublasGetStatusString", c.status_string);
  static const std::string path = path_of(lib);
  c.library = path.c_str();
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
