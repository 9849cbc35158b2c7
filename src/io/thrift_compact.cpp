#include "io/thrift_compact.h"

#include <cstring>

#include <fmt/format.h>

#include "core/error.h"

namespace pivotmt::thrift {
namespace {

class Reader {
 public:
  Reader(const uint8_t* p, size_t n, const std::string& where) : p_(p), end_(p + n), begin_(p), where_(where) {}
  size_t offset() const { return size_t(p_ - begin_); }

  [[noreturn]] void fail(const std::string& what) const {
    throw FormatError(fmt::format("{}: corrupt Thrift data at byte {}: {}", where_, offset(), what));
  }
  uint8_t byte() {
    if (p_ >= end_) fail("unexpected end");
    return *p_++;
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
      const uint8_t b = byte();
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    fail("varint too long");
  }
  int64_t zigzag() {
    const uint64_t v = varint();
    return int64_t(v >> 1) ^ -int64_t(v & 1);
  }
  std::string binary() {
    const uint64_t n = varint();
    if (n > uint64_t(end_ - p_)) fail(fmt::format("string of {} bytes past the end", n));
    std::string s(reinterpret_cast<const char*>(p_), size_t(n));
    p_ += n;
    return s;
  }
  double dbl() {
    if (end_ - p_ < 8) fail("unexpected end in a double");
    double d;
    std::memcpy(&d, p_, 8);
    p_ += 8;
    return d;
  }

  Value value(int type, int depth) {
    if (depth > 64) fail("nesting too deep");
    Value v;
    switch (type) {
      case 1: v.kind = Value::Kind::Bool; v.b = true; return v;
      case 2: v.kind = Value::Kind::Bool; v.b = false; return v;
      case 3: v.kind = Value::Kind::Int; v.i = int8_t(byte()); return v;
      case 4: case 5: case 6: v.kind = Value::Kind::Int; v.i = zigzag(); return v;
      case 7: v.kind = Value::Kind::Double; v.d = dbl(); return v;
      case 8: v.kind = Value::Kind::Binary; v.bin = binary(); return v;
      case 9: case 10: {
        v.kind = Value::Kind::List;
        const uint8_t h = byte();
        uint64_t n = h >> 4;
        const int elem = h & 0x0f;
        if (n == 15) n = varint();
        if (n > uint64_t(end_ - p_)) fail(fmt::format("list of {} elements past the end", n));
        v.list.reserve(size_t(n));
        for (uint64_t i = 0; i < n; ++i) {
          if (elem == 1 || elem == 2) {  // booleans in lists take a byte each
            Value b;
            b.kind = Value::Kind::Bool;
            b.b = byte() == 1;
            v.list.push_back(b);
          } else {
            v.list.push_back(value(elem, depth + 1));
          }
        }
        return v;
      }
      case 11: {
        v.kind = Value::Kind::Map;
        const uint64_t n = varint();
        if (n == 0) return v;
        if (n > uint64_t(end_ - p_)) fail("map past the end");
        const uint8_t kv = byte();
        for (uint64_t i = 0; i < n; ++i) {
          v.list.push_back(value(kv >> 4, depth + 1));
          v.list.push_back(value(kv & 0x0f, depth + 1));
        }
        return v;
      }
      case 12: return structure(depth + 1);
      default: fail(fmt::format("unknown field type {}", type));
    }
  }

  Value structure(int depth) {
    if (depth > 64) fail("nesting too deep");
    Value v;
    v.kind = Value::Kind::Struct;
    int16_t last = 0;
    while (true) {
      const uint8_t h = byte();
      if (h == 0) return v;  // STOP
      const int type = h & 0x0f;
      const int delta = h >> 4;
      int64_t id = delta ? last + delta : zigzag();
      if (id < -32768 || id > 32767) fail("field id out of range");
      last = int16_t(id);
      v.fields[last] = value(type, depth);
    }
  }

 private:
  const uint8_t *p_, *end_, *begin_;
  std::string where_;
};
}  // namespace

const Value* Value::field(int16_t id) const {
  auto it = fields.find(id);
  return it == fields.end() ? nullptr : &it->second;
}
int64_t Value::int_field(int16_t id, int64_t fallback) const {
  const Value* v = field(id);
  return v && v->kind == Kind::Int ? v->i : fallback;
}
const std::string* Value::binary_field(int16_t id) const {
  const Value* v = field(id);
  return v && v->kind == Kind::Binary ? &v->bin : nullptr;
}

Value read_struct(const uint8_t* data, size_t size, size_t& consumed, const std::string& where) {
  Reader r(data, size, where);
  Value v = r.structure(0);
  consumed = r.offset();
  return v;
}

}  // namespace pivotmt::thrift
