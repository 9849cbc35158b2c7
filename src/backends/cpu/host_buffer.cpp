#include "backends/cpu/host_buffer.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "core/error.h"

namespace pivotmt::cpu {
namespace {
constexpr size_t kHugePage = size_t(2) << 20;
}

// Why not std::vector or new[]: a KV cache is written position by position right after it
// is made, and each first touch of a 4 KiB page traps into the kernel (~2 µs per page on
// this CI's VM, measured: 1.7 ms of every layer of a 512-token prefill of the small model,
// 4% of the prefill). MADV_POPULATE_WRITE (Linux 5.14) faults the whole range in one call;
// where the kernel lacks it the pages fault on first touch as before. Buffers of 2 MiB and
// more are aligned to and ask for transparent huge pages (THP "madvise" mode, Debian's
// default), which also spares attention's TLB as it streams the cache.
HostBuffer::HostBuffer(size_t bytes) {
  if (bytes == 0) return;
  const bool huge = bytes >= kHugePage;
  mapped_ = huge ? bytes + kHugePage : bytes;
  void* p = mmap(nullptr, mapped_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    throw Error(fmt::format("cannot allocate {:.1f} MiB of host memory for the KV cache: {}", double(bytes) / (1 << 20),
                            std::strerror(errno)));
  mapping_ = p;
  data_ = p;
  if (huge) {
    const uintptr_t aligned = (reinterpret_cast<uintptr_t>(p) + kHugePage - 1) & ~uintptr_t(kHugePage - 1);
    data_ = reinterpret_cast<void*>(aligned);
    madvise(data_, bytes, MADV_HUGEPAGE);  // advice: ignored where THP is off
  }
  bytes_ = bytes;
  madvise(data_, bytes_, MADV_POPULATE_WRITE);  // best effort: EINVAL before Linux 5.14
}

HostBuffer::~HostBuffer() { release(); }

void HostBuffer::release() {
  if (mapping_) munmap(mapping_, mapped_);
  data_ = mapping_ = nullptr;
  bytes_ = mapped_ = 0;
}

HostBuffer::HostBuffer(HostBuffer&& other) noexcept { *this = std::move(other); }

HostBuffer& HostBuffer::operator=(HostBuffer&& other) noexcept {
  if (this != &other) {
    release();
    std::swap(data_, other.data_);
    std::swap(bytes_, other.bytes_);
    std::swap(mapping_, other.mapping_);
    std::swap(mapped_, other.mapped_);
  }
  return *this;
}

}  // namespace pivotmt::cpu
