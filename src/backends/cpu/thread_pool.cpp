#include "backends/cpu/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "backends/cpu/ops.h"

namespace pivotmt::cpu {
namespace {

class Pool {
 public:
  explicit Pool(int threads) {
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { work(i); });
  }
  ~Pool() {
    {
      std::lock_guard lock(m_);
      stop_ = true;
      ++generation_;
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
    {
      std::lock_guard lock(m_);
      body_ = &body;
      n_ = n;
      parts_ = parts;
      pending_ = int(parts) - 1;
      ++generation_;
    }
    cv_.notify_all();
    chunk(0);
    std::unique_lock lock(m_);
    done_cv_.wait(lock, [this] { return pending_ == 0; });
    body_ = nullptr;
  }

 private:
  void chunk(size_t part) {
    const size_t begin = n_ * part / parts_, end = n_ * (part + 1) / parts_;
    if (begin < end) (*body_)(begin, end);
  }
  void work(int index) {
    uint64_t seen = 0;
    while (true) {
      std::unique_lock lock(m_);
      cv_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (stop_) return;
      if (size_t(index) >= parts_) continue;
      lock.unlock();
      chunk(size_t(index));
      lock.lock();
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }

  std::vector<std::thread> workers_;
  std::mutex m_, call_m_;
  std::condition_variable cv_, done_cv_;
  uint64_t generation_ = 0;
  bool stop_ = false;
  const std::function<void(size_t, size_t)>* body_ = nullptr;
  size_t n_ = 0, parts_ = 0;
  int pending_ = 0;
};

std::atomic<int> g_threads{0};

Pool& pool() {
  static Pool p(g_threads.load() > 0 ? g_threads.load() : int(std::max(1u, std::thread::hardware_concurrency())));
  return p;
}
}  // namespace

void set_num_threads(int n) { g_threads = n; }
int num_threads() { return pool().size(); }

void parallel_for(size_t n, const std::function<void(size_t, size_t)>& body) { pool().run(n, body); }

}  // namespace pivotmt::cpu
