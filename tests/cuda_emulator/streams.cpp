// The CUDA emulator's streams, events and graphs (the rest of the runtime is in
// runtime.cpp): the order of the work issued to each stream, what synchronising covers,
// and stream capture.
//
// Stream capture (CUDA graphs): kernels, copies and GEMMs issued to a capturing stream are
// recorded, not run, and run at each launch of the instantiated graph; what CUDA forbids
// during a capture is refused the same way (cudaErrorStreamCaptureUnsupported, the capture
// invalidated so that cudaStreamEndCapture fails): synchronising (device, stream, event),
// cudaMalloc / cudaFree / cudaFreeHost and synchronous copies on a thread whose capture is
// not in relaxed mode (in global mode, on every thread).
// Asynchrony: kernels, GEMMs, graph launches, and copies (and memsets) between device memory
// and pinned host memory or within device memory, issued to a created stream, are deferred —
// run in the stream's order as late as CUDA's ordering rules allow: when a synchronisation
// covers them (stream, device, an event recorded after them, cudaFree / cudaFreeHost), when
// another stream waits for an event recorded after them (cudaStreamWaitEvent), or before
// the stream's next work that completes at its call (a copy to or from pageable memory). A
// program that reads such work's output, or rewrites its input, without having waited for
// it sees what a GPU may show it: the data before the work. Work on the legacy default
// stream first completes every stream's deferred work — stricter than CUDA for streams
// created non-blocking, which do not synchronise with it.
#include <cuda_runtime.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "cuda_emulator/device_access.h"
#include "cuda_emulator/runtime_internal.h"

// The runtime's opaque handle types, defined here.
struct CaptureSequence {
  std::vector<std::function<void()>> work;
  std::thread::id thread;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  bool invalidated = false;
};
struct CUstream_st {
  unsigned flags = 0;
  std::unique_ptr<CaptureSequence> capture;  // while capturing
  uint64_t issued = 0;                       // work issued to the stream so far
  std::deque<std::pair<uint64_t, std::function<void()>>> deferred;  // (issue number, copy) not yet run
};
struct CUgraph_st {
  std::vector<std::function<void()>> work;
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> work;
};
struct CUevent_st {
  std::chrono::steady_clock::time_point when{};
  bool recorded = false;
  cudaStream_t stream = nullptr;  // where it was recorded, after the stream's first `position` works
  uint64_t position = 0;
};

namespace pivotmt::cuda::emu {
namespace {

// The capturing streams: this thread's, and the count of global-mode captures anywhere.
thread_local std::vector<cudaStream_t> thread_captures;
std::atomic<int> global_captures{0};

}  // namespace

// CUDA's rule for "potentially unsafe" calls during a capture: refused on a thread with a
// capture not in relaxed mode, and on any thread while a global-mode capture runs; the
// thread's captures are invalidated.
cudaError_t refuse_if_capturing() {
  bool refused = global_captures.load() > 0;
  for (cudaStream_t st : thread_captures) refused = refused || st->capture->mode != cudaStreamCaptureModeRelaxed;
  if (!refused) return cudaSuccess;
  for (cudaStream_t st : thread_captures) st->capture->invalidated = true;
  return record(cudaErrorStreamCaptureUnsupported);
}

namespace {

// The created streams (whose deferred work a synchronisation may have to run).
struct Streams {
  std::recursive_mutex mutex;  // held while deferred work runs: one stream's run in order
  std::set<cudaStream_t> live;
};
Streams& streams() {
  static Streams* s = new Streams;
  return *s;
}

// Runs the stream's deferred work issued up to `position` (all: UINT64_MAX), in order.
void run_deferred(cudaStream_t stream, uint64_t position = UINT64_MAX) {
  if (!stream) return;
  std::lock_guard lock(streams().mutex);
  while (!stream->deferred.empty() && stream->deferred.front().first <= position) {
    const auto work = std::move(stream->deferred.front().second);
    stream->deferred.pop_front();
    work();
  }
}

}  // namespace

void run_all_deferred() {
  std::lock_guard lock(streams().mutex);
  for (cudaStream_t s : streams().live) run_deferred(s);
}

bool issue(cudaStream_t stream, const std::function<void()>& work, bool deferrable) {
  if (stream && stream->capture) {
    stream->capture->work.push_back(work);
    return true;
  }
  if (!stream) {
    run_all_deferred();
    return false;
  }
  std::lock_guard lock(streams().mutex);
  ++stream->issued;
  if (deferrable) {
    stream->deferred.emplace_back(stream->issued, work);
    return true;
  }
  run_deferred(stream);
  return false;
}

bool capture(cudaStream_t stream, const std::function<void()>& work) { return issue(stream, work, stream != nullptr); }

}  // namespace pivotmt::cuda::emu

using namespace pivotmt::cuda::emu;

extern "C" {

// Synchronising runs the deferred work it covers and checks the capture rules.
cudaError_t CUDARTAPI cudaDeviceSynchronize(void) {
  if (const cudaError_t e = refuse_if_capturing()) return e;
  run_all_deferred();
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaStreamCreateWithFlags(cudaStream_t* pStream, unsigned int flags) {
  *pStream = new CUstream_st{flags};
  std::lock_guard lock(streams().mutex);
  streams().live.insert(*pStream);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaStreamDestroy(cudaStream_t stream) {
  if (stream && stream->capture) return record(cudaErrorIllegalState);
  if (stream) {
    run_deferred(stream);  // its work completes
    std::lock_guard lock(streams().mutex);
    streams().live.erase(stream);
  }
  delete stream;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaStreamSynchronize(cudaStream_t stream) {
  if (stream && stream->capture) {  // the capturing stream itself: refused in any mode
    stream->capture->invalidated = true;
    return record(cudaErrorStreamCaptureUnsupported);
  }
  if (const cudaError_t e = refuse_if_capturing()) return e;
  if (stream) run_deferred(stream);
  else run_all_deferred();
  return cudaSuccess;
}
// Work issued to `stream` after this waits for the event's work: what it covers runs now.
cudaError_t CUDARTAPI cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int) {
  if (!event) return record(cudaErrorInvalidResourceHandle);
  if (stream && stream->capture) return record(cudaErrorStreamCaptureUnsupported);  // no cross-stream captures here
  if (event->recorded) run_deferred(event->stream, event->position);
  return cudaSuccess;
}

// --- Stream capture and graphs.
cudaError_t CUDARTAPI cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode) {
  if (!stream) return record(cudaErrorStreamCaptureUnsupported);  // the legacy default stream cannot be captured
  if (stream->capture) return record(cudaErrorIllegalState);
  stream->capture = std::make_unique<CaptureSequence>();
  stream->capture->thread = std::this_thread::get_id();
  stream->capture->mode = mode;
  if (mode != cudaStreamCaptureModeRelaxed) thread_captures.push_back(stream);
  if (mode == cudaStreamCaptureModeGlobal) ++global_captures;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* pGraph) {
  if (!stream || !stream->capture) return record(cudaErrorIllegalState);
  CaptureSequence& c = *stream->capture;
  if (c.mode != cudaStreamCaptureModeRelaxed && c.thread != std::this_thread::get_id())
    return record(cudaErrorStreamCaptureWrongThread);
  std::erase(thread_captures, stream);
  if (c.mode == cudaStreamCaptureModeGlobal) --global_captures;
  const std::unique_ptr<CaptureSequence> ended = std::move(stream->capture);
  if (ended->invalidated) {
    *pGraph = nullptr;
    return record(cudaErrorStreamCaptureInvalidated);
  }
  *pGraph = new CUgraph_st{std::move(ended->work)};
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus* pCaptureStatus) {
  *pCaptureStatus = !stream || !stream->capture        ? cudaStreamCaptureStatusNone
                    : stream->capture->invalidated ? cudaStreamCaptureStatusInvalidated
                                                   : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaGraphInstantiate(cudaGraphExec_t* pGraphExec, cudaGraph_t graph, unsigned long long) {
  if (!graph) return record(cudaErrorInvalidValue);
  *pGraphExec = new CUgraphExec_st{graph->work};
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaGraphLaunch(cudaGraphExec_t graphExec, cudaStream_t stream) {
  if (!graphExec) return record(cudaErrorInvalidValue);
  const auto run = [work = graphExec->work] {
    for (const auto& w : work) w();
  };
  if (!capture(stream, run)) run();
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaGraphExecDestroy(cudaGraphExec_t graphExec) {
  delete graphExec;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaEventCreate(cudaEvent_t* event) {
  *event = new CUevent_st;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int) { return cudaEventCreate(event); }
cudaError_t CUDARTAPI cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (!event) return record(cudaErrorInvalidResourceHandle);
  if (!stream) run_all_deferred();  // the legacy stream's event covers every stream's work
  event->when = std::chrono::steady_clock::now();
  event->recorded = true;
  event->stream = stream;
  std::lock_guard lock(streams().mutex);
  event->position = stream ? stream->issued : 0;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaEventSynchronize(cudaEvent_t event) {
  if (!event) return record(cudaErrorInvalidResourceHandle);
  if (const cudaError_t e = refuse_if_capturing()) return e;
  if (event->recorded) run_deferred(event->stream, event->position);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!start || !end || !start->recorded || !end->recorded) return record(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
  return cudaSuccess;
}

}  // extern "C"
