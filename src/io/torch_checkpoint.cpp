#include "io/torch_checkpoint.h"

#include <fmt/format.h>

#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <set>

#include <filesystem>

#include "core/error.h"
#include "hub/file_hash.h"
#include "core/checked.h"
#include "text/unicode.h"
#include "io/safetensors.h"
#include "io/temp_path.h"

namespace pivotmt {

uint64_t TorchTensor::numel() const { return checked_numel(shape, "tensor " + name + "'s size"); }

namespace {

template <typename T>
T read_le(std::span<const std::byte> b, uint64_t at, const std::string& path) {
  if (at > b.size() || sizeof(T) > b.size() - at) throw FormatError(fmt::format("{}: truncated zip structure at byte {}", path, at));
  T v;
  std::memcpy(&v, b.data() + at, sizeof(T));
  return v;
}

// ---- The zip container (stored entries, zip64 where sizes or offsets need it). ----
std::map<std::string, std::pair<uint64_t, uint64_t>> read_zip(std::span<const std::byte> b, const std::string& path) {
  if (b.size() < 22) throw FormatError(fmt::format("{}: not a PyTorch zip checkpoint (too short)", path));
  // End of central directory: the last signature within 64 KiB + 22 bytes of the end.
  uint64_t eocd = UINT64_MAX;
  for (uint64_t i = b.size() - 22;; --i) {
    if (read_le<uint32_t>(b, i, path) == 0x06054b50) {
      eocd = i;
      break;
    }
    if (i == 0 || b.size() - i > 65536 + 22) break;
  }
  if (eocd == UINT64_MAX)
    throw FormatError(fmt::format("{}: not a zip archive (a legacy, pre-1.6 torch.save file or something else): "
                                  "re-save it with a recent PyTorch or use safetensors",
                                  path));
  uint64_t count = read_le<uint16_t>(b, eocd + 10, path);
  uint64_t cd_size = read_le<uint32_t>(b, eocd + 12, path);
  uint64_t cd_offset = read_le<uint32_t>(b, eocd + 16, path);
  if (eocd >= 20 && read_le<uint32_t>(b, eocd - 20, path) == 0x07064b50) {  // zip64 locator
    const uint64_t z64 = read_le<uint64_t>(b, eocd - 20 + 8, path);
    if (read_le<uint32_t>(b, z64, path) != 0x06064b50) throw FormatError(fmt::format("{}: broken zip64 record", path));
    count = read_le<uint64_t>(b, z64 + 32, path);
    cd_size = read_le<uint64_t>(b, z64 + 40, path);
    cd_offset = read_le<uint64_t>(b, z64 + 48, path);
  }
  if (cd_offset > b.size() || cd_size > b.size() - cd_offset)
    throw FormatError(fmt::format("{}: the zip directory lies outside the file", path));
  std::map<std::string, std::pair<uint64_t, uint64_t>> out;
  uint64_t p = cd_offset;
  for (uint64_t e = 0; e < count; ++e) {
    if (read_le<uint32_t>(b, p, path) != 0x02014b50) throw FormatError(fmt::format("{}: broken zip directory entry {}", path, e));
    const uint16_t method = read_le<uint16_t>(b, p + 10, path);
    uint64_t csize = read_le<uint32_t>(b, p + 20, path), usize = read_le<uint32_t>(b, p + 24, path);
    const uint16_t name_len = read_le<uint16_t>(b, p + 28, path), extra_len = read_le<uint16_t>(b, p + 30, path),
                   comment_len = read_le<uint16_t>(b, p + 32, path);
    uint64_t local = read_le<uint32_t>(b, p + 42, path);
    if (p + 46 + name_len > b.size()) throw FormatError(fmt::format("{}: truncated zip directory", path));
    const std::string name(reinterpret_cast<const char*>(b.data() + p + 46), name_len);
    // zip64 extra field: the 64-bit values of the fields that read 0xFFFFFFFF, in order.
    for (uint64_t x = p + 46 + name_len; x + 4 <= p + 46 + name_len + extra_len;) {
      const uint16_t id = read_le<uint16_t>(b, x, path), len = read_le<uint16_t>(b, x + 2, path);
      if (id == 0x0001) {
        uint64_t q = x + 4;
        if (usize == 0xFFFFFFFF) usize = read_le<uint64_t>(b, q, path), q += 8;
        if (csize == 0xFFFFFFFF) csize = read_le<uint64_t>(b, q, path), q += 8;
        if (local == 0xFFFFFFFF) local = read_le<uint64_t>(b, q, path);
      }
      x += 4 + uint64_t(len);
    }
    if (method != 0)
      throw FormatError(fmt::format("{}: zip member {} is compressed (method {}); torch.save stores members uncompressed", path,
                                    name, method));
    if (read_le<uint32_t>(b, local, path) != 0x04034b50) throw FormatError(fmt::format("{}: broken local header of {}", path, name));
    const uint64_t data = local + 30 + read_le<uint16_t>(b, local + 26, path) + read_le<uint16_t>(b, local + 28, path);
    if (data > b.size() || usize > b.size() - data || csize != usize)
      throw FormatError(fmt::format("{}: zip member {} lies outside the file", path, name));
    out[name] = {data, usize};
    p += 46 + uint64_t(name_len) + extra_len + comment_len;
  }
  return out;
}

// ---- The restricted unpickler. ----
struct Value;
using Ref = std::shared_ptr<Value>;
struct Value {
  enum Kind { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Set, Global, Storage, Tensor, Opaque, Mark } kind = None;
  int64_t i = 0;
  double f = 0;
  std::string s;  // Str, Bytes; Global: "module name"
  std::vector<Ref> items;                    // Tuple, List, Set
  std::vector<std::pair<Ref, Ref>> entries;  // Dict
  TorchTensor tensor;                        // Tensor; Storage: dtype, storage key, shape = {numel}
};
Ref make(Value::Kind k) {
  auto v = std::make_shared<Value>();
  v->kind = k;
  return v;
}

std::optional<DType> storage_dtype(const std::string& global) {
  static const std::map<std::string, DType> types = {
      {"torch FloatStorage", DType::F32},  {"torch HalfStorage", DType::F16}, {"torch BFloat16Storage", DType::BF16},
      {"torch DoubleStorage", DType::F64}, {"torch LongStorage", DType::I64}, {"torch IntStorage", DType::I32},
      {"torch ShortStorage", DType::I16},  {"torch CharStorage", DType::I8},  {"torch ByteStorage", DType::U8},
      {"torch BoolStorage", DType::BOOL}};
  const auto it = types.find(global);
  if (it == types.end()) return std::nullopt;
  return it->second;
}

bool allowed_global(const std::string& g) {
  static const std::set<std::string> tensors = {"collections OrderedDict", "torch._utils _rebuild_tensor_v2",
                                                "torch._utils _rebuild_parameter"};
  return tensors.count(g) || storage_dtype(g) || g == "torch._utils _rebuild_parameter_with_state";
}
// Inert classes of Lightning metadata (hyper-parameters): kept as opaque values, never built.
bool inert_global(const std::string& g) {
  static const std::set<std::string> inert = {"argparse Namespace", "pytorch_lightning.utilities.parsing AttributeDict",
                                              "lightning_fabric.utilities.data AttributeDict",
                                              "lightning.fabric.utilities.data AttributeDict", "torch.torch_version TorchVersion",
                                              "builtins set", "builtins frozenset", "collections defaultdict"};
  return inert.count(g);
}

// A string for a message: bytes outside printable ASCII as \xNN, at most 60 of them.
std::string printable(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < 60; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    out += c >= 0x20 && c < 0x7f ? std::string(1, char(c)) : fmt::format("\\x{:02x}", c);
  }
  return s.size() > 60 ? out + "..." : out;
}

class Unpickler {
 public:
  Unpickler(std::span<const std::byte> data, const std::string& where,
            const std::function<void(const Value& storage)>& check_storage)
      : d_(data), where_(where), check_storage_(check_storage) {}

  Ref run() {
    while (true) {
      const uint8_t op = u8();
      switch (op) {
        case 0x80: u8(); break;                 // PROTO
        case 0x95: take(8); break;              // FRAME (its length: nothing to do)
        case '.': return pop();                 // STOP
        case '(': stack_.push_back(make(Value::Mark)); break;
        case '}': stack_.push_back(make(Value::Dict)); break;
        case ']': stack_.push_back(make(Value::List)); break;
        case ')': stack_.push_back(make(Value::Tuple)); break;
        case 0x8f: stack_.push_back(make(Value::Set)); break;  // EMPTY_SET
        case 't': {
          auto t = make(Value::Tuple);
          t->items = pop_to_mark();
          stack_.push_back(t);
          break;
        }
        case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
          const size_t n = op - 0x84;
          auto t = make(Value::Tuple);
          if (stack_.size() < n) fail("tuple of more items than the stack holds");
          t->items.assign(stack_.end() - long(n), stack_.end());
          stack_.resize(stack_.size() - n);
          stack_.push_back(t);
          break;
        }
        case 'X': push_str(Value::Str, u32()); break;
        case 0x8c: push_str(Value::Str, u8()); break;   // SHORT_BINUNICODE
        case 0x8d: push_str(Value::Str, u64()); break;  // BINUNICODE8
        case 'B': push_str(Value::Bytes, u32()); break;
        case 'C': push_str(Value::Bytes, u8()); break;
        case 0x8e: push_str(Value::Bytes, u64()); break;  // BINBYTES8
        case 'J': push_int(int32_t(u32())); break;
        case 'K': push_int(u8()); break;
        case 'M': push_int(uint16_t(u8() | (u8() << 8))); break;
        case 0x8a: {  // LONG1: little-endian two's complement of n bytes
          const size_t n = u8();
          if (n > 8) fail("an integer wider than 64 bits");
          uint64_t v = 0;
          const auto b = take(n);
          for (size_t k = 0; k < n; ++k) v |= uint64_t(uint8_t(b[k])) << (8 * k);
          if (n > 0 && n < 8 && (uint8_t(b[n - 1]) & 0x80)) v |= ~uint64_t(0) << (8 * n);
          push_int(int64_t(v));
          break;
        }
        case 'N': stack_.push_back(make(Value::None)); break;
        case 0x88: case 0x89: {
          auto v = make(Value::Bool);
          v->i = op == 0x88;
          stack_.push_back(v);
          break;
        }
        case 'G': {  // BINFLOAT: big-endian double
          const auto b = take(8);
          uint64_t bits = 0;
          for (size_t k = 0; k < 8; ++k) bits = bits << 8 | uint8_t(b[k]);
          auto v = make(Value::Float);
          std::memcpy(&v->f, &bits, 8);
          stack_.push_back(v);
          break;
        }
        case 'q': memo_[u8()] = top(); break;
        case 'r': memo_[u32()] = top(); break;
        case 0x94: memo_[memo_.size()] = top(); break;  // MEMOIZE
        case 'h': push_memo(u8()); break;
        case 'j': push_memo(u32()); break;
        case 'c': {  // GLOBAL "module\nname\n"
          const std::string module = line(), name = line();
          push_global(module + " " + name);
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          const Ref name = pop(), module = pop();
          if (module->kind != Value::Str || name->kind != Value::Str) fail("STACK_GLOBAL without two strings");
          push_global(module->s + " " + name->s);
          break;
        }
        case 'Q': {  // BINPERSID: a storage reference ('storage', type, key, location, numel)
          const Ref pid = pop();
          stack_.push_back(storage_of(*pid));
          break;
        }
        case 'R': {
          const Ref args = pop(), fn = pop();
          stack_.push_back(call(*fn, *args));
          break;
        }
        case 0x81: {  // NEWOBJ cls args: only inert classes
          const Ref args = pop(), cls = pop();
          stack_.push_back(call(*cls, *args));
          break;
        }
        case 'b': {  // BUILD: set state; kept only for dicts (OrderedDict state), else ignored
          const Ref state = pop();
          (void)state;
          if (stack_.empty()) fail("BUILD on an empty stack");
          break;
        }
        case 's': {
          const Ref v = pop(), k = pop();
          dict_of(top())->entries.push_back({k, v});
          break;
        }
        case 'u': {
          auto items = pop_to_mark();
          if (items.size() % 2) fail("SETITEMS with an odd number of items");
          auto d = dict_of(top());
          for (size_t k = 0; k < items.size(); k += 2) d->entries.push_back({items[k], items[k + 1]});
          break;
        }
        case 'a': {
          const Ref v = pop();
          list_of(top())->items.push_back(v);
          break;
        }
        case 'e': case 0x90: {  // APPENDS, ADDITEMS
          auto items = pop_to_mark();
          auto l = list_of(top());
          l->items.insert(l->items.end(), items.begin(), items.end());
          break;
        }
        case 0x91: {  // FROZENSET
          auto s = make(Value::Set);
          s->items = pop_to_mark();
          stack_.push_back(s);
          break;
        }
        case '0': pop(); break;
        case '1': pop_to_mark(); break;
        case '2': stack_.push_back(top()); break;
        default: fail(fmt::format("pickle opcode 0x{:02x} is not one torch.save writes for weights", op));
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw FormatError(fmt::format("{}: {} (pickle byte {})", where_, what, pos_));
  }
  std::span<const std::byte> take(size_t n) {
    if (n > d_.size() - pos_) fail("the pickle ends early");
    const auto s = d_.subspan(pos_, n);
    pos_ += n;
    return s;
  }
  uint8_t u8() { return uint8_t(take(1)[0]); }
  uint32_t u32() {
    uint32_t v;
    std::memcpy(&v, take(4).data(), 4);
    return v;
  }
  uint64_t u64() {
    uint64_t v;
    std::memcpy(&v, take(8).data(), 8);
    return v;
  }
  std::string line() {
    std::string s;
    while (true) {
      const char c = char(u8());
      if (c == '\n') return s;
      if (s.size() > 256) fail("a global name longer than 256 bytes");
      s += c;
    }
  }
  void push_str(Value::Kind k, uint64_t n) {
    auto v = make(k);
    const auto b = take(n);
    v->s.assign(reinterpret_cast<const char*>(b.data()), b.size());
    // A pickled str is UTF-8; invalid bytes are damage (and would fail later, nameless, in
    // the JSON of a safetensors header).
    if (k == Value::Str) {
      if (const size_t bad = utf8_invalid_offset(v->s); bad != std::string::npos)
        fail(fmt::format("a string that is not UTF-8 (byte {} of \"{}\")", bad, printable(v->s)));
    }
    stack_.push_back(v);
  }
  void push_int(int64_t i) {
    auto v = make(Value::Int);
    v->i = i;
    stack_.push_back(v);
  }
  void push_memo(uint64_t k) {
    const auto it = memo_.find(k);
    if (it == memo_.end()) fail(fmt::format("memo entry {} read before it was written", k));
    stack_.push_back(it->second);
  }
  void push_global(const std::string& g) {
    if (!allowed_global(g) && !inert_global(g)) {
      std::string dotted = g;
      dotted[dotted.find(' ')] = '.';
      fail(fmt::format("the pickle names {}, which a checkpoint of weights does not need: refused (pivotmt never runs "
                       "code from a checkpoint)",
                       dotted));
    }
    auto v = make(Value::Global);
    v->s = g;
    stack_.push_back(v);
  }
  Ref top() {
    if (stack_.empty()) fail("the stack is empty");
    return stack_.back();
  }
  Ref pop() {
    Ref v = top();
    stack_.pop_back();
    if (v->kind == Value::Mark) fail("an item expected where a mark is");
    return v;
  }
  std::vector<Ref> pop_to_mark() {
    size_t m = stack_.size();
    while (m > 0 && stack_[m - 1]->kind != Value::Mark) --m;
    if (m == 0) fail("no mark on the stack");
    std::vector<Ref> items(stack_.begin() + long(m), stack_.end());
    stack_.resize(m - 1);
    return items;
  }
  Ref dict_of(const Ref& v) {
    if (v->kind != Value::Dict && v->kind != Value::Opaque) fail("items set on something that is not a dictionary");
    return v;
  }
  Ref list_of(const Ref& v) {
    if (v->kind != Value::List && v->kind != Value::Set && v->kind != Value::Opaque) fail("items appended to something that is not a list");
    return v;
  }
  static int64_t int_of(const Value& v, const char* what, const Unpickler& u) {
    if (v.kind != Value::Int) u.fail(fmt::format("{} should be an integer", what));
    return v.i;
  }
  std::vector<int64_t> ints_of(const Value& v, const char* what) const {
    if (v.kind != Value::Tuple) fail(fmt::format("{} should be a tuple", what));
    std::vector<int64_t> out;
    for (const auto& x : v.items) out.push_back(int_of(*x, what, *this));
    return out;
  }

  Ref storage_of(const Value& pid) {
    if (pid.kind != Value::Tuple || pid.items.size() != 5 || pid.items[0]->kind != Value::Str || pid.items[0]->s != "storage" ||
        pid.items[1]->kind != Value::Global || pid.items[2]->kind != Value::Str)
      fail("a persistent id that is not a torch storage reference");
    const auto dtype = storage_dtype(pid.items[1]->s);
    if (!dtype) fail(fmt::format("storage type {} is not a tensor storage", pid.items[1]->s));
    auto s = make(Value::Storage);
    s->tensor.dtype = *dtype;
    s->tensor.storage = pid.items[2]->s;
    s->tensor.shape = {int_of(*pid.items[4], "a storage's size", *this)};
    check_storage_(*s);
    return s;
  }

  Ref call(const Value& fn, const Value& args) {
    if (fn.kind != Value::Global) fail("a call of something that is not a global");
    if (args.kind != Value::Tuple) fail("call arguments that are not a tuple");
    const std::string& g = fn.s;
    if (g == "collections OrderedDict") return make(Value::Dict);
    if (g == "torch._utils _rebuild_tensor_v2") {
      if (args.items.size() < 4 || args.items[0]->kind != Value::Storage) fail("_rebuild_tensor_v2 without a storage");
      auto t = make(Value::Tensor);
      t->tensor = args.items[0]->tensor;
      t->tensor.offset = uint64_t(int_of(*args.items[1], "a storage offset", *this));
      t->tensor.shape = ints_of(*args.items[2], "a tensor's size");
      t->tensor.strides = ints_of(*args.items[3], "a tensor's stride");
      if (t->tensor.shape.size() != t->tensor.strides.size()) fail("a tensor whose size and stride differ in length");
      if (int_of(*args.items[1], "a storage offset", *this) < 0) fail("a negative storage offset");
      // Every element inside its storage, in overflow-checked arithmetic: a size times a
      // stride that wraps around 64 bits must not pass for a small offset.
      const std::string what = where_ + ": a tensor's size and stride";
      uint64_t last = t->tensor.offset;
      bool empty = false;
      for (size_t k = 0; k < t->tensor.shape.size(); ++k) {
        if (t->tensor.shape[k] < 0 || t->tensor.strides[k] < 0) fail("a negative size or stride");
        if (t->tensor.shape[k] == 0) empty = true;
      }
      for (size_t k = 0; k < t->tensor.shape.size() && !empty; ++k)
        last = checked_add(last, checked_mul(uint64_t(t->tensor.shape[k] - 1), uint64_t(t->tensor.strides[k]), what), what);
      const uint64_t storage_numel = uint64_t(args.items[0]->tensor.shape[0]);
      if (!empty && last >= storage_numel)
        fail(fmt::format("a tensor reaching element {} of a storage of {}", last, storage_numel));
      // Weights never repeat elements (stride 0 would let a small file claim a huge tensor).
      const uint64_t numel = checked_numel(t->tensor.shape, what);
      if (numel > storage_numel) fail(fmt::format("a tensor of {} elements over a storage of {}", numel, storage_numel));
      return t;
    }
    if (g == "torch._utils _rebuild_parameter" || g == "torch._utils _rebuild_parameter_with_state") {
      if (args.items.empty() || args.items[0]->kind != Value::Tensor) fail("_rebuild_parameter without a tensor");
      return args.items[0];
    }
    if (inert_global(g)) return make(Value::Opaque);
    fail(fmt::format("{} called: it builds no tensor", g));
  }

  std::span<const std::byte> d_;
  size_t pos_ = 0;
  std::string where_;
  std::function<void(const Value&)> check_storage_;
  std::vector<Ref> stack_;
  std::map<uint64_t, Ref> memo_;
};

}  // namespace

TorchCheckpoint::TorchCheckpoint(const std::string& path) : path_(path), file_(path) {
  naming_file(path, [&] {
    const auto b = file_.bytes();
    for (const auto& [name, range] : read_zip(b, path)) entries_[name] = {range.first, range.second};
    std::string pkl;
    for (const auto& [name, e] : entries_)
      if (name == "data.pkl" || (name.size() > 9 && name.compare(name.size() - 9, 9, "/data.pkl") == 0 &&
                                 name.find('/') == name.size() - 9)) {
        pkl = name;
        break;
      }
    if (pkl.empty()) throw FormatError(fmt::format("{}: no data.pkl in the archive: not a torch.save checkpoint", path));
    prefix_ = pkl.substr(0, pkl.size() - 8);
    Unpickler u(entry(pkl), path + " (" + pkl + ")", [&](const Value& s) {
      const auto it = entries_.find(prefix_ + "data/" + s.tensor.storage);
      if (it == entries_.end()) throw FormatError(fmt::format("{}: storage {} is missing from the archive", path, s.tensor.storage));
      if (s.tensor.shape[0] < 0)
        throw FormatError(fmt::format("{}: storage {} has a negative size ({})", path, s.tensor.storage, s.tensor.shape[0]));
      const uint64_t need = checked_mul(uint64_t(s.tensor.shape[0]), dtype_size(s.tensor.dtype),
                                        fmt::format("{}: storage {}'s size in bytes", path, s.tensor.storage));
      if (it->second.size < need)
        throw FormatError(fmt::format("{}: storage {} holds {} bytes, {} needed", path, s.tensor.storage, it->second.size, need));
    });
    const Ref top = u.run();
    const Value* dict = top.get();
    if (dict->kind == Value::Dict)
      for (const auto& [k, v] : dict->entries)
        if (k->kind == Value::Str && k->s == "state_dict" && v->kind == Value::Dict) dict = v.get();
    if (dict->kind != Value::Dict) throw FormatError(fmt::format("{}: the checkpoint is not a dictionary of tensors", path));
    std::set<std::string> seen;
    for (const auto& [k, v] : dict->entries) {
      if (v->kind != Value::Tensor || k->kind != Value::Str) continue;
      if (!seen.insert(k->s).second) throw FormatError(fmt::format("{}: tensor {} appears twice", path, k->s));
      TorchTensor t = v->tensor;
      t.name = k->s;
      tensors_.push_back(std::move(t));
    }
    if (tensors_.empty()) throw FormatError(fmt::format("{}: no tensors in the checkpoint", path));
  });
}

std::span<const std::byte> TorchCheckpoint::entry(const std::string& name) const {
  const auto& e = entries_.at(name);
  return file_.bytes().subspan(e.offset, e.size);
}

const TorchTensor* TorchCheckpoint::find(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

const TorchTensor& TorchCheckpoint::at(const std::string& name) const {
  if (const auto* t = find(name)) return *t;
  throw FormatError(fmt::format("{}: no tensor {}", path_, name));
}

std::vector<std::byte> TorchCheckpoint::contiguous_bytes(const TorchTensor& t) const {
  const auto data = entry(prefix_ + "data/" + t.storage);
  const size_t es = dtype_size(t.dtype), n = size_t(t.numel());
  std::vector<std::byte> out(n * es);
  std::vector<int64_t> index(t.shape.size(), 0);
  for (size_t i = 0; i < n; ++i) {  // row-major walk over the strided view (bounds checked when read)
    uint64_t e = t.offset;
    for (size_t k = 0; k < index.size(); ++k) e += uint64_t(index[k]) * uint64_t(t.strides[k]);
    std::memcpy(&out[i * es], data.data() + e * es, es);
    for (size_t k = index.size(); k-- > 0;) {
      if (++index[k] < t.shape[k]) break;
      index[k] = 0;
    }
  }
  return out;
}

std::vector<float> TorchCheckpoint::load_f32(const std::string& name) const {
  const auto& t = at(name);
  if (!dtype_is_float(t.dtype) || t.dtype == DType::F8_E4M3 || t.dtype == DType::F8_E5M2)
    throw FormatError(fmt::format("{}: tensor {} is {}, not a float type", path_, name, dtype_name(t.dtype)));
  const auto raw = contiguous_bytes(t);
  std::vector<float> out(t.numel());
  convert_floats(t.dtype, raw.data(), DType::F32, out.data(), out.size());
  return out;
}

void TorchCheckpoint::save_safetensors(const std::string& out_path, const std::function<bool(const std::string&)>& keep) const {
  std::vector<TensorSpec> specs;
  for (const auto& t : tensors_)
    if (!keep || keep(t.name)) specs.push_back({t.name, t.dtype, t.shape});
  write_safetensors(out_path, specs, {{"format", "pt"}}, [&](const TensorSpec& spec, std::span<std::byte> out) {
    const auto bytes = contiguous_bytes(at(spec.name));
    std::memcpy(out.data(), bytes.data(), out.size());
  });
}

std::string converted_checkpoint_key(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path ckpt(path);
  if (fs::is_symlink(ckpt)) {  // the hub cache: snapshots/<rev>/... -> blobs/<sha256>
    const std::string blob = fs::read_symlink(ckpt).filename().string();
    if (blob.size() == 64 && blob.find_first_not_of("0123456789abcdef") == std::string::npos) return blob;
  }
  const auto abs = fs::weakly_canonical(ckpt).string();
  const auto size = fs::file_size(ckpt);
  const auto time = fs::last_write_time(ckpt).time_since_epoch().count();
  return sha256_hex(fmt::format("{}\n{}\n{}", abs, size, time)).substr(0, 32);
}

void convert_checkpoint_once(const std::string& ckpt, const std::string& target_dir, const std::string& what,
                             const std::function<bool(const std::string&)>& keep) {
  namespace fs = std::filesystem;
  const fs::path target = fs::path(target_dir) / "model.safetensors";
  if (fs::exists(target)) return;
  fs::create_directories(target_dir);
  fmt::print(stderr, "{}: converting {} to safetensors in {} (once)\n", what, ckpt, target_dir);
  const std::string tmp = unique_temp_path(target.string());
  try {
    TorchCheckpoint(ckpt).save_safetensors(tmp, keep);
    fs::rename(tmp, target);
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
}

}  // namespace pivotmt
