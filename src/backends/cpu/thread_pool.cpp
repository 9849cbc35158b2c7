#include "backends/cpu/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "backends/cpu/ops.h"

namespace pivotmt::cpu {
namespace {

// Workers spin a short while for the next job before they sleep: a decode step of a small
// model is a hundred parallel_for calls a few microseconds apart, and waking a sleeping
// thread (on a VM, an idle virtual CPU) costs tens of microseconds each time — measured:
// the tiny model decoded at half speed with sleeping workers.
class Pool {
 public:
  explicit Pool(int threads) {
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { work(i); });
  }
  ~Pool() {
    {
      std::lock_guard lock(m_);
      stop_ = true;
      generation_.fetch_add(1);
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
  }
  int size() const { return int(workers_.size()) + 1; }

  void run(size_t n, const std::function<void(size_t, size_t)>& body) {
    const size_t parts = std::min<size_t>(size_t(size()), n);
    if (parts <= 1) {
      if (n) body(0, n);
      return;
    }
    std::unique_lock call(call_m_);  // one parallel_for at a time
    body_.store(&body, std::memory_order_relaxed);
    n_.store(n, std::memory_order_relaxed);
    parts_.store(parts, std::memory_order_relaxed);
    pending_.store(int(parts) - 1);
    generation_.fetch_add(1);  // seq_cst: pairs with a worker's sleeping_ / generation_ check
    if (sleeping_.load() > 0) {
      std::lock_guard lock(m_);  // a worker between its check and its wait holds m_
      cv_.notify_all();
    }
    chunk(0, n, parts, body);
    for (unsigned spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins)
      if (spins > kSpins) std::this_thread::yield();
      else pause();
  }

 private:
  static constexpr unsigned kSpins = 20000;  // pause instructions: ~0.5 ms on this machine (measured)

  static void pause() {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  }
  static void chunk(size_t part, size_t n, size_t parts, const std::function<void(size_t, size_t)>& body) {
    const size_t begin = n * part / parts, end = n * (part + 1) / parts;
    if (begin < end) body(begin, end);
  }
  void work(int index) {
    uint64_t seen = 0;
    while (true) {
      unsigned spins = 0;
      while (generation_.load(std::memory_order_acquire) == seen && spins++ < kSpins) pause();
      if (generation_.load() == seen) {
        std::unique_lock lock(m_);
        sleeping_.fetch_add(1);
        cv_.wait(lock, [&] { return generation_.load() != seen; });
        sleeping_.fetch_sub(1);
      }
      // The job's parameters, then the generation again: a worker that sat out one job may
      // wake when the next is already posted; it must not mix the two.
      const uint64_t job = generation_.load(std::memory_order_acquire);
      if (stop_.load()) return;
      const size_t n = n_.load(std::memory_order_relaxed), parts = parts_.load(std::memory_order_relaxed);
      const auto* body = body_.load(std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_acquire);  // the loads above before the re-check
      if (generation_.load(std::memory_order_acquire) != job) continue;  // retry with the newer job
      seen = job;
      if (size_t(index) >= parts) continue;
      chunk(size_t(index), n, parts, *body);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  std::vector<std::thread> workers_;
  std::mutex m_, call_m_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> sleeping_{0}, pending_{0};
  std::atomic<bool> stop_{false};
  // The posted job; written before generation_ is bumped, read after it is seen.
  std::atomic<const std::function<void(size_t, size_t)>*> body_{nullptr};
  std::atomic<size_t> n_{0}, parts_{0};
};

std::atomic<int> g_threads{0};

// set_num_threads, else PIVOTMT_THREADS (workers sharing a machine's cores get their share
// this way), else every core.
int default_threads() {
  if (g_threads.load() > 0) return g_threads.load();
  if (const char* env = std::getenv("PIVOTMT_THREADS"); env && *env) {
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    if (end && *end == '\0' && n > 0 && n <= 4096) return int(n);
  }
  return int(std::max(1u, std::thread::hardware_concurrency()));
}

Pool& pool() {
  static Pool p(default_threads());
  return p;
}
}  // namespace

void set_num_threads(int n) { g_threads = n; }
int num_threads() { return pool().size(); }

void parallel_for(size_t n, const std::function<void(size_t, size_t)>& body) { pool().run(n, body); }

}  // namespace pivotmt::cpu
