// Compiled when the build has no CUDA: every CUDA entry point says so clearly.
#include "backends/backend.h"
#include "backends/encoder_ops.h"
#include "backends/ops.h"
#include "core/error.h"
#include "train/train_device.h"

namespace pivotmt::cuda {

[[noreturn]] static void no_cuda() {
  throw UnsupportedError("device cuda: this pivotmt was built without CUDA (reconfigure with -DPIVOTMT_CUDA=ON)");
}

bool compiled() { return false; }
std::shared_ptr<void> device_alloc(int, size_t) { no_cuda(); }
std::unique_ptr<Ops> make_ops(int, const OpsOptions&) { no_cuda(); }
std::unique_ptr<EncoderOps> make_encoder_ops(int) { no_cuda(); }
std::unique_ptr<train::TrainDevice> make_train_device(int, train::BaseCompute) { no_cuda(); }
int device_count() { return 0; }
double measure_copy_gbps(int, size_t) { no_cuda(); }
size_t allocated_bytes(int) { return 0; }
size_t peak_allocated_bytes(int) { return 0; }
double measure_gemm_tflops(int, int, bool) { no_cuda(); }
void set_gemv_enabled(bool) {}
CudaDeviceInfo device_info(int) { no_cuda(); }
std::string blas_library() { return "none (built without CUDA)"; }
CudaVersions versions() { return {}; }
void convert_floats(int, DType, const void*, DType, void*, size_t) { no_cuda(); }

}  // namespace pivotmt::cuda
