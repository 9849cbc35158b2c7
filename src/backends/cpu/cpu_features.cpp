#include "backends/cpu/cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <string_view>

#include <fmt/format.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "core/error.h"

namespace pivotmt::cpu {
namespace {

struct Hardware {
  Isa level = Isa::Portable;
  bool bf16 = false;
};

Hardware detect() {
  Hardware h;
#if defined(__x86_64__)
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return h;
  const bool fma = c & (1u << 12), f16c = c & (1u << 29), osxsave = c & (1u << 27), avx = c & (1u << 28);
  if (!(fma && f16c && osxsave && avx)) return h;
  unsigned lo, hi;
  __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if ((lo & 6) != 6) return h;  // the OS saves XMM and YMM state
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return h;
  if (!(b & (1u << 5))) return h;  // AVX2
  h.level = Isa::Avx2;
  const bool f512 = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31);
  const bool vnni = c & (1u << 11);
  if (!(f512 && dq && bw && vl) || (lo & 0xe0) != 0xe0) return h;  // + opmask and ZMM state
  h.level = vnni ? Isa::Avx512Vnni : Isa::Avx512;
  unsigned a1, b1, c1, d1;
  if (__get_cpuid_count(7, 1, &a1, &b1, &c1, &d1)) h.bf16 = a1 & (1u << 5);
#endif
  return h;
}

const Hardware& hardware() {
  static const Hardware h = detect();
  return h;
}

Isa parse_cap(std::string_view s) {
  if (s == "portable") return Isa::Portable;
  if (s == "avx2") return Isa::Avx2;
  if (s == "avx512") return Isa::Avx512;
  if (s == "avx512vnni") return Isa::Avx512Vnni;
  throw Error(fmt::format("PIVOTMT_CPU_ISA={}: expected portable, avx2, avx512 or avx512vnni", s));
}

std::atomic<int> cap_override{-1};

Isa env_cap() {
  static const Isa cap = [] {
    const char* s = std::getenv("PIVOTMT_CPU_ISA");
    return s && *s ? parse_cap(s) : Isa::Avx512Vnni;
  }();
  return cap;
}

}  // namespace

Isa hardware_isa() { return hardware().level; }

Isa isa() {
  const int forced = cap_override.load(std::memory_order_relaxed);
  const Isa cap = forced >= 0 ? Isa(forced) : env_cap();
  return std::min(cap, hardware().level);
}

void set_isa_cap(Isa cap) { cap_override.store(int(cap), std::memory_order_relaxed); }

const char* isa_name(Isa i) {
  switch (i) {
    case Isa::Portable: return "portable";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Avx512Vnni: return "avx512vnni";
  }
  return "?";
}

std::string describe_isa() {
  return fmt::format("{} (hardware: {}{})", isa_name(isa()), isa_name(hardware().level), hardware().bf16 ? ", bf16" : "");
}

}  // namespace pivotmt::cpu
