#include "backends/cuda/weight_upload.h"

#include <algorithm>
#include <cstring>

#include "backends/backend.h"
#include "backends/cuda/kernels.h"

namespace pivotmt::cuda {
namespace {

int dtype_code(DType t) { return t == DType::F32 ? 0 : t == DType::F16 ? 1 : 2; }

}  // namespace

WeightUpload::WeightUpload(int device, cudaStream_t stream) : device_(device), stream_(stream) {
  for (auto& e : done_) check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
}

WeightUpload::~WeightUpload() {
  cudaSetDevice(device_);
  for (auto& e : done_) {
    if (!e) continue;
    cudaEventSynchronize(e);  // the buffers are freed after this: no copy may still read them
    cudaEventDestroy(e);
  }
}

void WeightUpload::to_f16(std::span<const std::byte> raw, DType from, void* dst) {
  check(cudaSetDevice(device_), "cudaSetDevice");
  if (!host_[0].ptr) {
    for (int i = 0; i < 2; ++i) {
      host_[i].reset(kStagingBytes);
      device_buffer_[i] = device_alloc(device_, kStagingBytes);
    }
  }
  const size_t elem = dtype_size(from), per_chunk = kStagingBytes / elem, count = raw.size() / elem;
  for (size_t done = 0, k = 0; done < count; done += per_chunk, ++k) {
    const int buf = int(k % 2);
    const size_t n = std::min(per_chunk, count - done);
    check(cudaEventSynchronize(done_[buf]), "wait for a staging buffer");
    std::memcpy(host_[buf].ptr, raw.data() + done * elem, n * elem);
    char* out = static_cast<char*>(dst) + done * 2;
    if (from == DType::F16) {
      check(cudaMemcpyAsync(out, host_[buf].ptr, n * 2, cudaMemcpyHostToDevice, stream_), "copy weights");
    } else {
      check(cudaMemcpyAsync(device_buffer_[buf].get(), host_[buf].ptr, n * elem, cudaMemcpyHostToDevice, stream_),
            "copy weights");
      kernels::convert(device_buffer_[buf].get(), dtype_code(from), out, dtype_code(DType::F16), n, stream_);
    }
    check(cudaEventRecord(done_[buf], stream_), "cudaEventRecord");
  }
}

void WeightUpload::release() {
  check(cudaSetDevice(device_), "cudaSetDevice");
  check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  for (int i = 0; i < 2; ++i) {
    host_[i].release();
    device_buffer_[i].reset();
  }
}

}  // namespace pivotmt::cuda
