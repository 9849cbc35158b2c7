// Decode passes as CUDA graphs (OpsOptions::cuda_graphs), the half of CudaOps that records,
// captures and replays them. A pass with one new row per sequence defers its ops, each
// recorded with its kernel arguments (its "signature"), to end_forward. There the graph
// captured for this row count is replayed when the pass's signature is the one it was
// captured with; else the ops are captured into a new graph (and run by launching it). The
// pass metadata of a graph lives at fixed addresses, in a buffer of its row count with
// pack_pass's layout (T one-row sequences: tokens, positions, slots, row → sequence, table
// offsets, then the block tables), uploaded before each launch; the split-KV kernel cuts
// each row's keys itself, so a graph's split count is fixed by its row count alone. An
// activation buffer reallocated by a longer prefill changes the signature: that count's
// graph is captured again.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backends/cuda/cuda_util.h"
#include "backends/ops.h"
#include "backends/tensor.h"
#include "core/device.h"

namespace pivotmt::cuda {

class DecodeGraphs {
 public:
  DecodeGraphs(Device device, cudaStream_t stream) : device_(device), stream_(stream) {}
  ~DecodeGraphs() { clear(); }

  // Graphs are a speed-up: after a capture the driver refused, passes run as launches.
  bool usable() const { return !failed_; }
  // A pass of `rows` one-row sequences headed for their graph: the first `words` int32 of
  // its metadata (`meta`) uploaded into the row count's fixed buffer, whose device address
  // is returned (none with no words: the encoder ops' decoder steps upload their own into
  // buffers whose addresses are in the signature); `splits`: split-KV attention's count if
  // the row count is new. The pass's ops are then recorded (issue) until end().
  const int32_t* begin(size_t rows, const int32_t* meta, size_t words, int splits);
  bool recording() const { return current_ != nullptr; }
  int splits() const { return current_->splits; }
  // An op whose form a graph does not hold: the pass runs its recorded ops as launches.
  void not_graphable() { graphable_ = false; }

  // An op's kernels: launched now, or (a pass being recorded) run at end(), with the values
  // that make its launches what they are: every kernel argument but the pass metadata
  // (fixed per graph) and the stream.
  template <class Body>
  void issue(std::initializer_list<int64_t> signature, Body&& body) {
    if (!current_) {
      body();
      return;
    }
    signature_.insert(signature_.end(), signature);
    deferred_.emplace_back(std::forward<Body>(body));
  }

  // What end() did with the pass.
  enum class Ended { NotRecording, Launched, Replayed, Captured, CaptureFailed };
  // Replays the row count's graph, or captures one; a pass that cannot be a graph runs its
  // ops as they were recorded (also when the capture fails: `failure` says why).
  Ended end(std::string& failure);
  // end(), counted in `counters` (captures, replays); a failed capture is a warning on
  // stderr naming `device` (the pass ran as launches, later ones run without graphs).
  void end(PassCounters& counters, const std::string& device);
  // The recorded ops run now, the rest of the pass as launches (a read mid-pass); abort():
  // the same, an error doing so dropped for the one that aborted.
  void flush();
  void abort();
  // Every graph dropped (they name buffers about to be replaced).
  void clear() { slots_.clear(); }

  static int64_t address(const void* p) { return int64_t(reinterpret_cast<uintptr_t>(p)); }
  static int64_t bits(float f) {
    uint32_t b;
    std::memcpy(&b, &f, 4);
    return b;
  }
  static int64_t shape_of(const Tensor& t) { return int64_t(t.rows()) << 40 | int64_t(t.cols()) << 20 | int64_t(t.stride()); }

 private:
  struct Slot {
    Tensor meta;  // [capacity] int32: pack_pass's layout up to the block tables
    size_t capacity = 0;
    Pinned meta_host;
    cudaEvent_t uploaded = nullptr;  // the last upload from meta_host done
    cudaGraphExec_t exec = nullptr;
    std::vector<int64_t> signature;  // of the pass it was captured from
    int splits = 1;                  // split-KV attention's
    void drop_graph(cudaStream_t stream);
    ~Slot();
  };
  void capture(Slot& slot, const std::vector<std::function<void()>>& work);

  Device device_;
  cudaStream_t stream_;
  std::map<size_t, std::unique_ptr<Slot>> slots_;  // by row count
  Slot* current_ = nullptr;  // the pass's, while its ops are recorded
  bool graphable_ = false;   // every op of the pass so far has a form a graph holds
  bool failed_ = false;      // a capture failed: no more graphs on this device
  std::vector<std::function<void()>> deferred_;
  std::vector<int64_t> signature_;
};

}  // namespace pivotmt::cuda
