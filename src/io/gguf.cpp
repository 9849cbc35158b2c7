#include "io/gguf.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "core/checked.h"
#include "core/error.h"

namespace pivotmt {
namespace {

constexpr uint32_t kMaxArrayDepth = 8;        // nested arrays (no real file nests at all)
constexpr uint64_t kMaxStringBytes = 1 << 30;  // a chat template is kilobytes; a token a few bytes
constexpr uint32_t kMaxDims = 4;               // GGML_MAX_DIMS
constexpr size_t kMaxNameBytes = 63;           // GGML_MAX_NAME - 1, as llama.cpp refuses longer names

// The smallest encoding of one value of each type: counts read from the file are checked
// against the bytes left divided by it, so no count can make us allocate more than the
// file could describe.
uint64_t min_value_bytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8: case GgufValueType::I8: case GgufValueType::Bool: return 1;
    case GgufValueType::U16: case GgufValueType::I16: return 2;
    case GgufValueType::U32: case GgufValueType::I32: case GgufValueType::F32: return 4;
    case GgufValueType::U64: case GgufValueType::I64: case GgufValueType::F64: case GgufValueType::String: return 8;
    case GgufValueType::Array: return 12;
  }
  return 1;
}

class Reader {
 public:
  Reader(std::span<const std::byte> bytes, const std::string& label) : b_(bytes), label_(label) {}
  uint64_t pos() const { return pos_; }
  uint64_t left() const { return b_.size() - pos_; }
  const std::string& label() const { return label_; }

  void need(uint64_t n, std::string_view what) const {
    if (n > left())
      throw FormatError(fmt::format("{}: {} needs {} bytes at offset {}, the file has {} left", label_, what, n, pos_,
                                    left()));
  }
  template <class T>
  T scalar(std::string_view what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string string(std::string_view what) {
    const uint64_t n = scalar<uint64_t>(what);
    if (n > kMaxStringBytes) throw FormatError(fmt::format("{}: {} is {} bytes long (limit {})", label_, what, n, kMaxStringBytes));
    need(n, what);
    std::string s(reinterpret_cast<const char*>(b_.data() + pos_), n);
    pos_ += n;
    return s;
  }
  GgufValueType value_type(std::string_view what) {
    const uint32_t t = scalar<uint32_t>(what);
    if (t > uint32_t(GgufValueType::F64))
      throw FormatError(fmt::format("{}: {} has value type {}, not one GGUF defines (0..12)", label_, what, t));
    return GgufValueType(t);
  }
  GgufValue value(GgufValueType type, std::string_view what, uint32_t depth) {
    GgufValue v;
    v.type = type;
    switch (type) {
      case GgufValueType::U8: v.u = scalar<uint8_t>(what); break;
      case GgufValueType::I8: v.i = scalar<int8_t>(what); break;
      case GgufValueType::U16: v.u = scalar<uint16_t>(what); break;
      case GgufValueType::I16: v.i = scalar<int16_t>(what); break;
      case GgufValueType::U32: v.u = scalar<uint32_t>(what); break;
      case GgufValueType::I32: v.i = scalar<int32_t>(what); break;
      case GgufValueType::U64: v.u = scalar<uint64_t>(what); break;
      case GgufValueType::I64: v.i = scalar<int64_t>(what); break;
      case GgufValueType::F32: v.f = scalar<float>(what); break;
      case GgufValueType::F64: v.f = scalar<double>(what); break;
      case GgufValueType::Bool: {
        const uint8_t b = scalar<uint8_t>(what);
        if (b > 1) throw FormatError(fmt::format("{}: {} is a bool stored as {}, not 0 or 1", label_, what, b));
        v.u = b;
        break;
      }
      case GgufValueType::String: v.s = string(what); break;
      case GgufValueType::Array: {
        if (depth >= kMaxArrayDepth)
          throw FormatError(fmt::format("{}: {} nests arrays deeper than {}", label_, what, kMaxArrayDepth));
        v.element_type = value_type(what);
        const uint64_t count = scalar<uint64_t>(what);
        const uint64_t smallest = min_value_bytes(v.element_type);
        if (count > left() / smallest)
          throw FormatError(fmt::format("{}: {} claims {} elements of type {}, more than the {} bytes left can hold",
                                        label_, what, count, gguf_value_type_name(v.element_type), left()));
        v.array.reserve(count);
        for (uint64_t k = 0; k < count; ++k) v.array.push_back(value(v.element_type, what, depth + 1));
        break;
      }
    }
    return v;
  }

 private:
  std::span<const std::byte> b_;
  const std::string& label_;
  uint64_t pos_ = 0;
};

}  // namespace

const char* gguf_value_type_name(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8: return "u8";
    case GgufValueType::I8: return "i8";
    case GgufValueType::U16: return "u16";
    case GgufValueType::I16: return "i16";
    case GgufValueType::U32: return "u32";
    case GgufValueType::I32: return "i32";
    case GgufValueType::F32: return "f32";
    case GgufValueType::Bool: return "bool";
    case GgufValueType::String: return "string";
    case GgufValueType::Array: return "array";
    case GgufValueType::U64: return "u64";
    case GgufValueType::I64: return "i64";
    case GgufValueType::F64: return "f64";
  }
  return "?";
}

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufValueType::U8: case GgufValueType::I8: case GgufValueType::U16: case GgufValueType::I16:
    case GgufValueType::U32: case GgufValueType::I32: case GgufValueType::U64: case GgufValueType::I64: return true;
    default: return false;
  }
}

std::string GgufValue::describe() const {
  switch (type) {
    case GgufValueType::String: return fmt::format("string '{}'", s.size() > 60 ? s.substr(0, 60) + "…" : s);
    case GgufValueType::Array: return fmt::format("array of {} {}", array.size(), gguf_value_type_name(element_type));
    case GgufValueType::Bool: return u ? "bool true" : "bool false";
    case GgufValueType::F32: case GgufValueType::F64: return fmt::format("{} {}", gguf_value_type_name(type), f);
    case GgufValueType::I8: case GgufValueType::I16: case GgufValueType::I32: case GgufValueType::I64:
      return fmt::format("{} {}", gguf_value_type_name(type), i);
    default: return fmt::format("{} {}", gguf_value_type_name(type), u);
  }
}

uint64_t GgufTensorInfo::numel() const {
  uint64_t n = 1;
  for (const auto d : dims) n *= d;  // checked when the file was parsed
  return n;
}

std::vector<int64_t> GgufTensorInfo::torch_shape() const {
  return std::vector<int64_t>(dims.rbegin(), dims.rend());
}

bool looks_like_gguf(std::span<const std::byte> prefix) {
  return prefix.size() >= 4 && std::memcmp(prefix.data(), "GGUF", 4) == 0;
}

bool is_gguf_path(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return false;
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

GgufHeader parse_gguf(std::span<const std::byte> file, const std::string& label) {
  Reader r(file, label);
  if (!looks_like_gguf(file)) throw FormatError(fmt::format("{}: not a GGUF file (no 'GGUF' magic)", label));
  r.scalar<uint32_t>("magic");
  GgufHeader h;
  h.version = r.scalar<uint32_t>("version");
  if (h.version == 0 || (h.version & 0xFFFF) == 0)
    throw FormatError(fmt::format("{}: GGUF version {:#x} reads as big-endian; pivotmt reads little-endian GGUF files",
                                  label, h.version));
  if (h.version == 1)
    throw FormatError(fmt::format("{}: GGUF version 1 (32-bit counts, 2023) is not supported; convert it again with "
                                  "a current llama.cpp", label));
  if (h.version > 3) throw FormatError(fmt::format("{}: GGUF version {}; pivotmt reads versions 2 and 3", label, h.version));
  const uint64_t n_tensors = r.scalar<uint64_t>("tensor count");
  const uint64_t n_kv = r.scalar<uint64_t>("metadata count");
  // A key-value pair takes at least 8 + 4 + 1 bytes, a tensor info 8 + 4 + 8 + 4 + 8.
  if (n_kv > r.left() / 13)
    throw FormatError(fmt::format("{}: {} metadata entries cannot fit in the {} bytes left", label, n_kv, r.left()));
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = r.string(fmt::format("metadata key {}", k));
    const std::string what = fmt::format("metadata '{}'", key);
    const GgufValueType type = r.value_type(what);
    GgufValue v = r.value(type, what, 0);
    if (!h.metadata_index.emplace(key, h.metadata.size()).second)
      throw FormatError(fmt::format("{}: metadata key '{}' appears twice", label, key));
    h.metadata.emplace_back(std::move(key), std::move(v));
  }
  if (auto it = h.metadata_index.find("general.alignment"); it != h.metadata_index.end()) {
    const GgufValue& a = h.metadata[it->second].second;
    if (a.type != GgufValueType::U32 || a.u == 0 || (a.u & (a.u - 1)) != 0)
      throw FormatError(fmt::format("{}: general.alignment is {}; expected a u32 power of two", label, a.describe()));
    h.alignment = a.u;
  }
  if (n_tensors > r.left() / 32)
    throw FormatError(fmt::format("{}: {} tensors cannot fit in the {} bytes left", label, n_tensors, r.left()));
  std::map<std::string, size_t, std::less<>> names;
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo t;
    t.name = r.string(fmt::format("tensor {}'s name", k));
    const std::string what = fmt::format("tensor '{}'", t.name);
    if (t.name.size() > kMaxNameBytes)
      throw FormatError(fmt::format("{}: {} has a name of {} bytes (ggml's limit is {})", label, what, t.name.size(), kMaxNameBytes));
    if (!names.emplace(t.name, k).second) throw FormatError(fmt::format("{}: {} appears twice", label, what));
    const uint32_t rank = r.scalar<uint32_t>(what);
    if (rank == 0 || rank > kMaxDims)
      throw FormatError(fmt::format("{}: {} has {} dimensions; ggml tensors have 1 to {}", label, what, rank, kMaxDims));
    for (uint32_t d = 0; d < rank; ++d) t.dims.push_back(r.scalar<uint64_t>(what));
    const uint32_t type_id = r.scalar<uint32_t>(what);
    const auto traits = ggml_type_traits(type_id);
    if (!traits) throw FormatError(fmt::format("{}: {} has ggml type {}, which ggml does not define", label, what, type_id));
    t.type = GgmlType(type_id);
    t.offset = r.scalar<uint64_t>(what);
    const uint64_t n = checked_numel(std::vector<uint64_t>(t.dims), fmt::format("{}: {}'s element count", label, what));
    if (n > uint64_t(INT64_MAX)) throw FormatError(fmt::format("{}: {} has {} elements, past 2^63", label, what, n));
    if (t.dims[0] % traits->block_size)
      throw FormatError(fmt::format("{}: {}'s rows hold {} values, not whole {} blocks of {}", label, what, t.dims[0],
                                    traits->name, traits->block_size));
    t.nbytes = checked_mul(n / traits->block_size, traits->block_bytes, fmt::format("{}: {}'s byte size", label, what));
    if (t.offset % h.alignment)
      throw FormatError(fmt::format("{}: {} starts at offset {}, not a multiple of the alignment {}", label, what,
                                    t.offset, h.alignment));
    h.tensors.push_back(std::move(t));
  }
  const uint64_t end_of_infos = r.pos();
  h.data_start = checked_add(end_of_infos, (h.alignment - end_of_infos % h.alignment) % h.alignment,
                             label + ": data section start");
  const uint64_t data_bytes = h.data_start <= file.size() ? file.size() - h.data_start : 0;
  if (!h.tensors.empty() && h.data_start > file.size())
    throw FormatError(fmt::format("{}: the data section would start at {}, past the file's end ({})", label,
                                  h.data_start, file.size()));
  // Ranges inside the data section, sorted by offset, none overlapping the next.
  std::vector<const GgufTensorInfo*> by_offset;
  for (const auto& t : h.tensors) {
    const uint64_t end = checked_add(t.offset, t.nbytes, fmt::format("{}: tensor '{}'s end", label, t.name));
    if (end > data_bytes)
      throw FormatError(fmt::format("{}: tensor '{}' ({} {} bytes at offset {}) runs past the data section's {} bytes "
                                    "(file truncated?)", label, t.name, ggml_type_name(t.type), t.nbytes, t.offset,
                                    data_bytes));
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t k = 1; k < by_offset.size(); ++k) {
    const auto* prev = by_offset[k - 1];
    if (prev->offset + prev->nbytes > by_offset[k]->offset)
      throw FormatError(fmt::format("{}: tensors '{}' and '{}' overlap in the data section", label, prev->name,
                                    by_offset[k]->name));
  }
  return h;
}

GgufFile::GgufFile(const std::string& path) : file_(path), header_(parse_gguf(file_.bytes(), path)) {
  for (size_t k = 0; k < header_.tensors.size(); ++k) tensor_index_.emplace(header_.tensors[k].name, k);
}

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = header_.metadata_index.find(key);
  return it == header_.metadata_index.end() ? nullptr : &header_.metadata[it->second].second;
}

const GgufValue& GgufFile::at(std::string_view key) const {
  if (const auto* v = find(key)) return *v;
  throw FormatError(fmt::format("{}: no metadata '{}'", path(), key));
}

namespace {
[[noreturn]] void wrong_type(const std::string& path, std::string_view key, const GgufValue& v, const char* expected) {
  throw FormatError(fmt::format("{}: metadata '{}' is {}; expected {}", path, key, v.describe(), expected));
}
}  // namespace

std::optional<std::string> GgufFile::get_string(std::string_view key) const {
  const auto* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != GgufValueType::String) wrong_type(path(), key, *v, "a string");
  return v->s;
}

std::optional<uint64_t> GgufFile::get_uint(std::string_view key) const {
  const auto* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_integer()) wrong_type(path(), key, *v, "an integer");
  switch (v->type) {
    case GgufValueType::I8: case GgufValueType::I16: case GgufValueType::I32: case GgufValueType::I64:
      if (v->i < 0) wrong_type(path(), key, *v, "a non-negative integer");
      return uint64_t(v->i);
    default: return v->u;
  }
}

std::optional<double> GgufFile::get_float(std::string_view key) const {
  const auto* v = find(key);
  if (!v) return std::nullopt;
  if (v->type == GgufValueType::F32 || v->type == GgufValueType::F64) return v->f;
  if (!v->is_integer()) wrong_type(path(), key, *v, "a number");
  switch (v->type) {
    case GgufValueType::I8: case GgufValueType::I16: case GgufValueType::I32: case GgufValueType::I64: return double(v->i);
    default: return double(v->u);
  }
}

std::optional<bool> GgufFile::get_bool(std::string_view key) const {
  const auto* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != GgufValueType::Bool) wrong_type(path(), key, *v, "a bool");
  return v->u != 0;
}

std::vector<std::string> GgufFile::get_strings(std::string_view key) const {
  const auto* v = find(key);
  if (!v) return {};
  if (v->type != GgufValueType::Array || v->element_type != GgufValueType::String)
    wrong_type(path(), key, *v, "an array of strings");
  std::vector<std::string> out;
  out.reserve(v->array.size());
  for (const auto& e : v->array) out.push_back(e.s);
  return out;
}

std::vector<double> GgufFile::get_numbers(std::string_view key) const {
  const auto* v = find(key);
  if (!v) return {};
  const auto e = v->element_type;
  const bool numbers = e != GgufValueType::String && e != GgufValueType::Array && e != GgufValueType::Bool;
  if (v->type != GgufValueType::Array || !numbers) wrong_type(path(), key, *v, "an array of numbers");
  std::vector<double> out;
  out.reserve(v->array.size());
  for (const auto& e : v->array) {
    if (e.type == GgufValueType::F32 || e.type == GgufValueType::F64) out.push_back(e.f);
    else if (e.type == GgufValueType::U8 || e.type == GgufValueType::U16 || e.type == GgufValueType::U32 || e.type == GgufValueType::U64) out.push_back(double(e.u));
    else out.push_back(double(e.i));
  }
  return out;
}

std::vector<int64_t> GgufFile::get_integers(std::string_view key) const {
  const auto* v = find(key);
  if (!v) return {};
  const auto e = v->element_type;
  const bool integers = e != GgufValueType::String && e != GgufValueType::Array && e != GgufValueType::Bool &&
                        e != GgufValueType::F32 && e != GgufValueType::F64;
  if (v->type != GgufValueType::Array || !integers) wrong_type(path(), key, *v, "an array of integers");
  std::vector<int64_t> out;
  out.reserve(v->array.size());
  for (const auto& e : v->array) {
    if (e.type == GgufValueType::U64 && e.u > uint64_t(INT64_MAX)) wrong_type(path(), key, e, "an integer below 2^63");
    const bool is_unsigned = e.type == GgufValueType::U8 || e.type == GgufValueType::U16 || e.type == GgufValueType::U32 || e.type == GgufValueType::U64;
    out.push_back(is_unsigned ? int64_t(e.u) : e.i);
  }
  return out;
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &header_.tensors[it->second];
}

const GgufTensorInfo& GgufFile::tensor(std::string_view name) const {
  if (const auto* t = find_tensor(name)) return *t;
  throw FormatError(fmt::format("{}: no tensor '{}'", path(), name));
}

std::span<const std::byte> GgufFile::data(const GgufTensorInfo& t) const {
  return file_.bytes().subspan(header_.data_start + t.offset, t.nbytes);
}

}  // namespace pivotmt
