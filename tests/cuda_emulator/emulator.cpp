// The CUDA emulator's scheduler: a block's CUDA threads as fibers on the calling thread.
// A fiber runs until it waits at a barrier or returns; the last thread to arrive at a
// barrier makes the waiting ones ready again. So a kernel without barriers costs one switch
// per thread, and a warp shuffle costs one switch per lane.
//
// Why a hand-written context switch: a warp barrier costs 32 switches, and an emulated
// prefill of a long prompt meets hundreds of millions of them. glibc's swapcontext makes a
// system call per switch (it saves the signal mask): one GPU engine test ran over 10
// minutes without finishing with it, 21 s with this one. This switch saves the six
// callee-saved registers and the stack pointer (x86-64 System V, as the rest of the
// emulator assumes Linux on x86-64). Not built with the sanitizers (the sanitizer build
// has CUDA off; fibers would need their annotations).
#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <string>
#include <memory>
#include <vector>

#include <fmt/format.h>

#include "core/error.h"
#include "cuda_emulator/device_access.h"
#include "cuda_emulator/emulator.h"

static_assert(sizeof(void*) == 8, "the CUDA emulator's fibers are x86-64 only");

// void pivotmt_emu_switch(void** save_sp, void* load_sp): saves the callee-saved registers
// on the current stack and its pointer in *save_sp, then resumes the stack at load_sp.
asm(R"(
  .text
  .globl pivotmt_emu_switch
  .type pivotmt_emu_switch, @function
pivotmt_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size pivotmt_emu_switch, .-pivotmt_emu_switch
)");
extern "C" void pivotmt_emu_switch(void** save_sp, void* load_sp);

namespace pivotmt::cuda::emu {
namespace {

constexpr size_t kStackBytes = 64 * 1024;  // kernel frames are a few registers' worth of locals
constexpr int kMaxThreadsPerBlock = 1024;

struct Barrier {
  int arrived = 0;
  std::vector<int> waiting;  // fibers to make ready when it completes
};

struct Warp {
  int lanes = 0;   // threads of the block in this warp (32 but in a partial last warp)
  int exited = 0;  // lanes that have returned
  Barrier barrier;
  uint64_t generation = 0;      // completed warp barriers: picks the shuffle buffer
  uint64_t slots[2][32] = {};  // a shuffle's values, double-buffered (one barrier per shuffle)
  unsigned char gathered[2][32][kMaxGatherBytes] = {};  // warp_all_gather's, alike
};

// A cp.async copy not yet landed.
struct AsyncCopy {
  void* dst;
  const void* src;
  size_t bytes;
};

struct Fiber {
  void* sp = nullptr;  // saved stack pointer while not running
  Coordinates where;
  bool done = false;
  std::vector<AsyncCopy> open_copies;                // issued since the last commit
  std::vector<std::vector<AsyncCopy>> copy_groups;  // committed, oldest first
};

// Stacks for up to 1024 fibers, mapped once per OS thread and reused (pages are touched
// only as deep as the kernels go).
char* stacks() {
  thread_local std::unique_ptr<char, void (*)(char*)> memory(nullptr, [](char* p) {
    munmap(p, kStackBytes * kMaxThreadsPerBlock);
  });
  if (!memory) {
    void* p = mmap(nullptr, kStackBytes * kMaxThreadsPerBlock, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw Error("CUDA emulator: cannot map fiber stacks");
    memory.reset(static_cast<char*>(p));
  }
  return memory.get();
}

struct Block {
  const char* kernel = nullptr;
  const std::function<void()>* body = nullptr;
  unsigned index = 0;
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  Barrier block_barrier;
  int live = 0;                     // threads not yet returned
  std::vector<int> ready;           // a queue: fibers[ready[head..]] can run
  size_t head = 0;
  int current = -1;
  void* scheduler_sp = nullptr;     // the OS thread's own stack, while a fiber runs
  std::exception_ptr error;
};

// The order in which ready threads run: PIVOTMT_CUDA_EMULATOR_SCHEDULE = forward (the
// default: thread 0 first), reverse, or random:SEED. A kernel whose result depends on it
// reads shared or global memory another thread writes without a barrier between (a race
// on the hardware): the tests run the op harness under each order.
struct Schedule {
  enum Kind { Forward, Reverse, Random } kind = Forward;
  uint64_t state = 0;
};
Schedule parse_schedule(const std::string& text) {
  Schedule r;
  if (text == "reverse") {
      r.kind = Schedule::Reverse;
    } else if (text.rfind("random:", 0) == 0) {
      r.kind = Schedule::Random;
      r.state = std::stoull(text.substr(7)) * 0x9e3779b97f4a7c15ull + 1;
  } else if (text != "forward") {
    throw Error("CUDA emulator schedule '" + text + "' is not forward, reverse or random:SEED");
  }
  return r;
}
Schedule& schedule() {
  static Schedule s = [] {
    const char* v = std::getenv("PIVOTMT_CUDA_EMULATOR_SCHEDULE");
    return parse_schedule(v ? v : "forward");
  }();
  return s;
}
// Appends `threads` to the ready queue in the schedule's order.
void enqueue(std::vector<int>& ready, std::vector<int> threads) {
  Schedule& s = schedule();
  if (s.kind == Schedule::Reverse) std::reverse(threads.begin(), threads.end());
  if (s.kind == Schedule::Random) {
    for (size_t i = threads.size(); i > 1; --i) {  // Fisher-Yates over xorshift64
      s.state ^= s.state << 13, s.state ^= s.state >> 7, s.state ^= s.state << 17;
      std::swap(threads[i - 1], threads[s.state % i]);
    }
  }
  ready.insert(ready.end(), threads.begin(), threads.end());
}

thread_local Block* running = nullptr;
const Coordinates kHost{};

Block& block() {
  if (!running) throw Error("CUDA emulator: a device function was called outside a kernel");
  return *running;
}
Fiber& fiber() { return block().fibers[size_t(block().current)]; }

[[noreturn]] void fail(const std::string& what) {
  const Block& b = block();
  const Coordinates& c = b.fibers[size_t(b.current)].where;
  throw Error(fmt::format("CUDA emulator: kernel {}, block {}, thread {}: {}", b.kernel, c.block.x, c.thread.x, what));
}

// Leaves the current fiber (saving it in *save unless it is done) for the next ready one,
// or for the scheduler when none is ready.
void switch_away(void** save) {
  Block& b = *running;
  void* scratch = nullptr;
  if (b.head < b.ready.size()) {
    b.current = b.ready[b.head++];
    pivotmt_emu_switch(save ? save : &scratch, b.fibers[size_t(b.current)].sp);
  } else {
    b.current = -1;
    pivotmt_emu_switch(save ? save : &scratch, b.scheduler_sp);
  }
}

void make_ready(Barrier& barrier) {
  Block& b = block();
  enqueue(b.ready, std::move(barrier.waiting));
  barrier.waiting.clear();
  barrier.arrived = 0;
}

void arrive_and_wait(Barrier& barrier, int expected) {
  Block& b = block();
  if (++barrier.arrived >= expected) {
    make_ready(barrier);
    return;  // the last to arrive goes on
  }
  const int me = b.current;
  barrier.waiting.push_back(me);
  switch_away(&b.fibers[size_t(me)].sp);
  b.current = me;
  if (b.error) fail("stopped: another thread of the block failed");
}

Warp& own_warp() { return block().warps[fiber().where.thread.x / 32]; }

void fiber_main() {
  Block& b = *running;
  try {
    (*b.body)();
  } catch (...) {
    if (!b.error) b.error = std::current_exception();
  }
  Fiber& f = b.fibers[size_t(b.current)];
  // Copies never waited for still land (what a thread reads of them is undefined; the
  // kernel's later threads or launches may see them).
  for (auto& group : f.copy_groups)
    for (const AsyncCopy& c : group) std::memcpy(c.dst, c.src, c.bytes);
  for (const AsyncCopy& c : f.open_copies) std::memcpy(c.dst, c.src, c.bytes);
  f.copy_groups.clear();
  f.open_copies.clear();
  f.done = true;
  --b.live;
  Warp& w = b.warps[f.where.thread.x / 32];
  ++w.exited;
  if (!b.error && w.barrier.arrived > 0) {
    try {
      fail(fmt::format("returned while {} lane(s) of its warp wait at a shuffle or __syncwarp", w.barrier.arrived));
    } catch (...) {
      b.error = std::current_exception();
    }
  }
  // Exited threads no longer count at __syncthreads (as on the hardware since Volta).
  if (b.block_barrier.arrived > 0 && b.block_barrier.arrived >= b.live) make_ready(b.block_barrier);
  if (b.error) {
    b.current = -1;
    void* scratch = nullptr;
    pivotmt_emu_switch(&scratch, b.scheduler_sp);  // stop the block: the scheduler rethrows
  }
  switch_away(nullptr);  // never returns: a done fiber is not resumed
}

// A new fiber's first instructions: `ret` from pivotmt_emu_switch lands here.
[[noreturn]] void fiber_entry() {
  fiber_main();
  __builtin_unreachable();
}

void* prepare_stack(char* stack) {
  // Top 16-byte aligned; the entry's return address at top - 16 (so that at fiber_entry
  // rsp ≡ 8 mod 16, as after a call), a null fake return address above it, and six zeros
  // below for the registers the switch pops.
  auto* top = reinterpret_cast<uintptr_t*>(stack + kStackBytes);
  top[-1] = 0;
  top[-2] = reinterpret_cast<uintptr_t>(&fiber_entry);
  for (int i = 3; i <= 8; ++i) top[-i] = 0;
  return top - 8;
}

void run_block(Block& b, unsigned blocks, unsigned threads) {
  char* stack = stacks();
  b.fibers.assign(threads, Fiber{});
  b.warps.assign((threads + 31) / 32, Warp{});
  for (unsigned w = 0; w < b.warps.size(); ++w) b.warps[w].lanes = int(std::min(32u, threads - 32 * w));
  b.block_barrier = Barrier{};
  b.live = int(threads);
  b.ready.clear();
  b.head = 0;
  for (unsigned t = 0; t < threads; ++t) {
    Fiber& f = b.fibers[t];
    f.where.thread = uint3{t, 0, 0};
    f.where.block = uint3{b.index, 0, 0};
    f.where.block_dim = dim3(threads);
    f.where.grid_dim = dim3(blocks);
    f.sp = prepare_stack(stack + size_t(t) * kStackBytes);
  }
  std::vector<int> all(threads);
  for (unsigned t = 0; t < threads; ++t) all[t] = int(t);
  enqueue(b.ready, std::move(all));
  b.current = b.ready[b.head++];
  pivotmt_emu_switch(&b.scheduler_sp, b.fibers[size_t(b.current)].sp);
  // Back here when no fiber is ready: all returned, a failure, or a deadlock.
  if (b.error) std::rethrow_exception(b.error);
  if (b.live > 0) {
    int at_warps = 0;
    for (const Warp& w : b.warps) at_warps += w.barrier.arrived;
    throw Error(fmt::format("CUDA emulator: kernel {}, block {}: deadlock: {} thread(s) wait at __syncthreads and {} "
                            "at warp operations that can never complete (a barrier in divergent code?)",
                            b.kernel, b.index, b.block_barrier.arrived, at_warps));
  }
}

}  // namespace

void set_schedule(const std::string& order) { schedule() = parse_schedule(order); }

const Coordinates& coordinates() { return running ? running->fibers[size_t(running->current)].where : kHost; }

void sync_block() { arrive_and_wait(block().block_barrier, block().live); }

namespace {
// Returns the generation of the barrier it completed.
uint64_t warp_barrier(Warp& w) {
  if (w.lanes < 32)
    fail(fmt::format("a full-warp operation in a warp of {} threads (blockDim.x is not a multiple of 32)", w.lanes));
  if (w.exited > 0) fail(fmt::format("a full-warp operation after {} lane(s) of the warp returned", w.exited));
  const uint64_t generation = w.generation;
  if (w.barrier.arrived + 1 >= 32) ++w.generation;  // this arrival completes it
  arrive_and_wait(w.barrier, 32);
  return generation;
}
}  // namespace

void sync_warp() { warp_barrier(own_warp()); }

uint64_t warp_exchange(uint64_t value, int source_lane) {
  Warp& w = own_warp();
  // Written into this generation's buffer: a lane that runs ahead to the next shuffle
  // writes the other one, and cannot come back to this one before every lane has read
  // (it would have to pass the next barrier first).
  const int lane = int(fiber().where.thread.x % 32);
  w.slots[w.generation & 1][lane] = value;
  const uint64_t generation = warp_barrier(w);
  return w.slots[generation & 1][source_lane];
}

const unsigned char* warp_all_gather(const void* mine, size_t bytes) {
  if (bytes > kMaxGatherBytes) fail(fmt::format("warp_all_gather of {} bytes per lane", bytes));
  Warp& w = own_warp();
  const int lane = int(fiber().where.thread.x % 32);
  // Double-buffered as warp_exchange's slots: a lane that runs ahead writes the other
  // buffer, and cannot come back to this one before every lane has passed its next barrier.
  std::memcpy(w.gathered[w.generation & 1][lane], mine, bytes);
  const uint64_t generation = warp_barrier(w);
  return &w.gathered[generation & 1][0][0];
}

void async_copy(void* shared_dst, const void* global_src, size_t bytes) {
  if (reinterpret_cast<uintptr_t>(shared_dst) % bytes != 0 || reinterpret_cast<uintptr_t>(global_src) % bytes != 0)
    fail(fmt::format("cp.async of {} bytes from {} to {}: both addresses must be aligned to the size", bytes, global_src,
                     shared_dst));
  if (!device_range(global_src, bytes)) fail(fmt::format("cp.async from {}: not {} bytes of device memory", global_src, bytes));
  if (device_range(shared_dst, bytes)) fail(fmt::format("cp.async to {}: device memory, not shared memory", shared_dst));
  Schedule& s = schedule();
  bool now = s.kind == Schedule::Reverse;
  if (s.kind == Schedule::Random) {
    s.state ^= s.state << 13, s.state ^= s.state >> 7, s.state ^= s.state << 17;
    now = s.state & 1;
  }
  if (now)
    std::memcpy(shared_dst, global_src, bytes);
  else
    fiber().open_copies.push_back({shared_dst, global_src, bytes});
}

void async_commit() {
  Fiber& f = fiber();
  f.copy_groups.push_back(std::move(f.open_copies));
  f.open_copies.clear();
}

void async_wait(int pending_groups) {
  Fiber& f = fiber();
  if (pending_groups < 0) fail("cp.async.wait_group with a negative count");
  while (f.copy_groups.size() > size_t(pending_groups)) {
    for (const AsyncCopy& c : f.copy_groups.front()) std::memcpy(c.dst, c.src, c.bytes);
    f.copy_groups.erase(f.copy_groups.begin());
  }
}

void check_launch(const char* name, unsigned blocks, unsigned threads) {
  if (running) throw Error(fmt::format("CUDA emulator: kernel {} launched from inside kernel {}", name, running->kernel));
  if (blocks == 0 || threads == 0 || threads > unsigned(kMaxThreadsPerBlock) || blocks > 0x7fffffffu)
    throw Error(fmt::format("CUDA {}: cudaErrorInvalidConfiguration (invalid configuration argument: {} blocks of {} "
                            "threads)",
                            name, blocks, threads));
}

void run_grid(const char* name, unsigned blocks, unsigned threads, const std::function<void()>& kernel_body) {
  check_launch(name, blocks, threads);
  DeviceAccess access;  // kernels read and write device memory
  Block b;
  b.kernel = name;
  b.body = &kernel_body;
  running = &b;
  try {
    for (unsigned i = 0; i < blocks; ++i) {
      b.index = i;
      run_block(b, blocks, threads);
    }
  } catch (...) {
    running = nullptr;
    throw;
  }
  running = nullptr;
}

}  // namespace pivotmt::cuda::emu
