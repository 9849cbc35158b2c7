// A GGUF writer for tests and the fuzzer: well-formed files from metadata and tensors,
// and, through the raw hooks, files that lie (counts, offsets, types, versions).
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace pivotmt::test {

class GgufWriter {
 public:
  uint32_t version = 3;
  uint64_t alignment = 32;  // where tensors are placed (general.alignment is written only when asked)

  template <class T>
  static void put(std::string& out, T v) {
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    out.append(b, sizeof(T));
  }
  static void put_string(std::string& out, std::string_view s) {
    put<uint64_t>(out, s.size());
    out.append(s);
  }

  // A metadata entry whose value (after the u32 type) is `value` as encoded bytes.
  void kv_raw(std::string_view key, uint32_t type, const std::string& value) {
    put_string(kv_, key);
    put<uint32_t>(kv_, type);
    kv_ += value;
    ++n_kv_;
  }
  template <class T>
  void kv(std::string_view key, uint32_t type, T v) {
    std::string b;
    put<T>(b, v);
    kv_raw(key, type, b);
  }
  void kv_u32(std::string_view key, uint32_t v) { kv(key, 4, v); }
  void kv_i32(std::string_view key, int32_t v) { kv(key, 5, v); }
  void kv_f32(std::string_view key, float v) { kv(key, 6, v); }
  void kv_bool(std::string_view key, bool v) { kv(key, 7, uint8_t(v)); }
  void kv_u64(std::string_view key, uint64_t v) { kv(key, 10, v); }
  void kv_string(std::string_view key, std::string_view v) {
    std::string b;
    put_string(b, v);
    kv_raw(key, 8, b);
  }
  void kv_strings(std::string_view key, const std::vector<std::string>& v) {
    std::string b;
    put<uint32_t>(b, 8);
    put<uint64_t>(b, v.size());
    for (const auto& s : v) put_string(b, s);
    kv_raw(key, 9, b);
  }
  template <class T>
  void kv_array(std::string_view key, uint32_t element_type, const std::vector<T>& v) {
    std::string b;
    put<uint32_t>(b, element_type);
    put<uint64_t>(b, v.size());
    for (const auto& x : v) put<T>(b, x);
    kv_raw(key, 9, b);
  }

  // A tensor with dims innermost first and its bytes; `offset` overrides where the info
  // says it is (else the next aligned place after the previous tensor).
  void tensor(std::string_view name, const std::vector<uint64_t>& dims, uint32_t type, const std::string& bytes,
              int64_t offset = -1) {
    while (data_.size() % alignment) data_ += '\0';
    put_string(infos_, name);
    put<uint32_t>(infos_, uint32_t(dims.size()));
    for (auto d : dims) put<uint64_t>(infos_, d);
    put<uint32_t>(infos_, type);
    put<uint64_t>(infos_, offset >= 0 ? uint64_t(offset) : data_.size());
    data_ += bytes;
    ++n_tensors_;
  }

  std::string bytes(uint64_t claimed_tensors = ~0ull, uint64_t claimed_kv = ~0ull) const {
    std::string out = "GGUF";
    put<uint32_t>(out, version);
    put<uint64_t>(out, claimed_tensors != ~0ull ? claimed_tensors : n_tensors_);
    put<uint64_t>(out, claimed_kv != ~0ull ? claimed_kv : n_kv_);
    out += kv_;
    out += infos_;
    while (out.size() % alignment) out += '\0';
    out += data_;
    return out;
  }

 private:
  std::string kv_, infos_, data_;
  uint64_t n_kv_ = 0, n_tensors_ = 0;
};

}  // namespace pivotmt::test
