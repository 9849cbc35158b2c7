#include "backends/cuda/decode_graphs.h"

#include <utility>

#include <fmt/format.h>

#include "backends/cuda/cuda_util.h"
#include "core/error.h"

namespace pivotmt::cuda {

void DecodeGraphs::Slot::drop_graph(cudaStream_t stream) {
  if (!exec) return;
  cudaStreamSynchronize(stream);  // no launch of it in flight
  cudaGraphExecDestroy(exec);
  exec = nullptr;
  signature.clear();
}

DecodeGraphs::Slot::~Slot() {
  if (exec) cudaGraphExecDestroy(exec);
  if (uploaded) cudaEventDestroy(uploaded);
}

const int32_t* DecodeGraphs::begin(size_t rows, const int32_t* meta, size_t words, int splits) {
  auto& slot = slots_[rows];
  if (!slot) {
    slot = std::make_unique<Slot>();
    check(cudaEventCreateWithFlags(&slot->uploaded, cudaEventDisableTiming), "cudaEventCreate");
    slot->splits = splits;
  }
  const int32_t* d = nullptr;
  if (words > 0) {  // (a caller whose ops upload their own metadata passes none)
    check(cudaEventSynchronize(slot->uploaded), "wait for the previous upload of a graph's metadata");
    if (words > slot->capacity) {  // a larger buffer moves the metadata: the graph read the old one
      slot->drop_graph(stream_);
      slot->capacity = 2 * words;
      slot->meta = Tensor(device_, DType::I32, 1, slot->capacity);
      slot->meta_host.reset(slot->capacity * 4);
    }
    std::memcpy(slot->meta_host.ptr, meta, words * 4);
    check(cudaMemcpyAsync(slot->meta.data(), slot->meta_host.ptr, words * 4, cudaMemcpyHostToDevice, stream_),
          "copy a graph's pass metadata");
    check(cudaEventRecord(slot->uploaded, stream_), "cudaEventRecord");
    d = slot->meta.as<int32_t>();
  }
  current_ = slot.get();
  graphable_ = true;
  deferred_.clear();
  signature_.assign({int64_t(rows), address(d)});
  return d;
}

DecodeGraphs::Ended DecodeGraphs::end(std::string& failure) {
  if (!current_) return Ended::NotRecording;
  Slot& slot = *std::exchange(current_, nullptr);
  const std::vector<std::function<void()>> work = std::move(deferred_);
  deferred_.clear();
  if (!graphable_) {
    for (const auto& w : work) w();
    return Ended::Launched;
  }
  if (slot.exec && slot.signature == signature_) {
    check(cudaGraphLaunch(slot.exec, stream_), "cudaGraphLaunch (a decode step)");
    return Ended::Replayed;
  }
  slot.drop_graph(stream_);
  try {
    capture(slot, work);
  } catch (const Error& e) {
    failed_ = true;
    slot.drop_graph(stream_);
    failure = e.what();
    for (const auto& w : work) w();
    return Ended::CaptureFailed;
  }
  return Ended::Captured;
}

void DecodeGraphs::end(PassCounters& counters, const std::string& device) {
  std::string failure;
  switch (end(failure)) {
    case Ended::Replayed: ++counters.graph_replays; break;
    case Ended::Captured: ++counters.graph_captures; break;
    case Ended::CaptureFailed:
      fmt::print(stderr, "warning: {}: capturing a decode step as a CUDA graph failed ({}); decode steps run without graphs\n",
                 device, failure);
      break;
    default: break;
  }
}

void DecodeGraphs::capture(Slot& slot, const std::vector<std::function<void()>>& work) {
  // Thread-local mode: other devices' threads (--devices all) may allocate meanwhile.
  check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
  try {
    for (const auto& w : work) w();
  } catch (...) {
    cudaGraph_t abandoned = nullptr;
    cudaStreamEndCapture(stream_, &abandoned);
    if (abandoned) cudaGraphDestroy(abandoned);
    cudaGetLastError();
    throw;
  }
  cudaGraph_t graph = nullptr;
  check(cudaStreamEndCapture(stream_, &graph), "cudaStreamEndCapture");
  const cudaError_t instantiated = cudaGraphInstantiate(&slot.exec, graph, 0);
  cudaGraphDestroy(graph);
  if (instantiated != cudaSuccess) slot.exec = nullptr;
  check(instantiated, "cudaGraphInstantiate");
  slot.signature = signature_;
  check(cudaGraphLaunch(slot.exec, stream_), "cudaGraphLaunch (a decode step)");
}

void DecodeGraphs::flush() {
  if (!current_) return;
  current_ = nullptr;
  const std::vector<std::function<void()>> work = std::move(deferred_);
  deferred_.clear();
  for (const auto& w : work) w();
}

void DecodeGraphs::abort() {
  try {
    flush();
  } catch (const std::exception&) {
    current_ = nullptr;
    deferred_.clear();
  }
}

}  // namespace pivotmt::cuda
