#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/temp_path.h"

namespace pivotmt {
namespace {
using json = nlohmann::json;

[[noreturn]] void fail(const std::string& label, const std::string& what) {
  throw FormatError(fmt::format("{}: invalid safetensors file: {}", label, what));
}

uint64_t read_u64_le(std::span<const std::byte> b) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | std::to_integer<uint64_t>(b[size_t(i)]);
  return v;
}

// Parses the JSON, refusing duplicate top-level keys (JSON allows them, nlohmann keeps
// the last, and a writer that emits two entries for one tensor is broken).
json parse_header_json(std::string_view text, const std::string& label) {
  if (text.empty() || text.front() != '{') fail(label, "header does not start with '{'");
  std::set<std::string> seen;
  std::string duplicate;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth == 1 && event == json::parse_event_t::key) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  json header;
  try {
    header = json::parse(text.begin(), text.end(), callback);
  } catch (const json::exception& e) {
    fail(label, fmt::format("header is not valid JSON ({})", e.what()));
  }
  if (!duplicate.empty()) fail(label, fmt::format("tensor '{}' appears twice in the header", duplicate));
  if (!header.is_object()) fail(label, "header is not a JSON object");
  return header;
}

TensorInfo parse_entry(const std::string& name, const json& entry, const std::string& label) {
  auto bad = [&](const std::string& what) { fail(label, fmt::format("tensor '{}': {}", name, what)); };
  if (!entry.is_object()) bad("entry is not an object");
  TensorInfo t;
  t.name = name;
  auto dt = entry.find("dtype");
  if (dt == entry.end() || !dt->is_string()) bad("missing string field 'dtype'");
  auto parsed = dtype_from_name(dt->get_ref<const std::string&>());
  if (!parsed) bad(fmt::format("unknown dtype '{}'", dt->get_ref<const std::string&>()));
  t.dtype = *parsed;

  auto sh = entry.find("shape");
  if (sh == entry.end() || !sh->is_array()) bad("missing array field 'shape'");
  if (sh->size() > 16) bad(fmt::format("shape has {} dimensions (at most 16 accepted)", sh->size()));
  uint64_t numel = 1;
  for (const auto& d : *sh) {
    if (!d.is_number_unsigned()) bad("shape holds a value that is not a non-negative integer");
    const uint64_t v = d.get<uint64_t>();
    if (v > uint64_t(std::numeric_limits<int64_t>::max())) bad("shape dimension too large");
    if (v != 0 && numel > std::numeric_limits<uint64_t>::max() / v) bad("shape product overflows");
    numel *= v;
    t.shape.push_back(static_cast<int64_t>(v));
  }
  auto off = entry.find("data_offsets");
  if (off == entry.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned())
    bad("'data_offsets' must be an array of two non-negative integers");
  t.begin = (*off)[0].get<uint64_t>();
  t.end = (*off)[1].get<uint64_t>();
  if (t.end < t.begin) bad(fmt::format("data_offsets [{}, {}] end before they begin", t.begin, t.end));
  const uint64_t size = dtype_size(t.dtype);
  if (numel > std::numeric_limits<uint64_t>::max() / size) bad("byte size overflows");
  if (numel * size != t.end - t.begin)
    bad(fmt::format("shape {} of {} needs {} bytes but data_offsets [{}, {}] hold {}", shape_to_string(t.shape),
                    dtype_name(t.dtype), numel * size, t.begin, t.end, t.end - t.begin));
  return t;
}
}  // namespace

uint64_t TensorInfo::numel() const {
  uint64_t n = 1;
  for (auto d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

std::string shape_to_string(std::span<const int64_t> shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

SafetensorsHeader parse_safetensors(std::span<const std::byte> prefix, uint64_t file_size, const std::string& label) {
  if (file_size < 8 || prefix.size() < 8)
    fail(label, fmt::format("file is {} bytes, shorter than the 8-byte header length", file_size));
  const uint64_t n = read_u64_le(prefix.first(8));
  if (n > kMaxSafetensorsHeader)
    fail(label, fmt::format("header length {} exceeds the limit of {} bytes", n, kMaxSafetensorsHeader));
  if (n > file_size - 8)
    fail(label, fmt::format("header length {} runs past the end of the file ({} bytes)", n, file_size));
  if (n > prefix.size() - 8) fail(label, "header not fully available");  // caller passed too short a prefix

  SafetensorsHeader h;
  h.data_start = 8 + n;
  const uint64_t data_size = file_size - h.data_start;
  const json header =
      parse_header_json(std::string_view(reinterpret_cast<const char*>(prefix.data() + 8), size_t(n)), label);

  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) fail(label, "__metadata__ is not an object");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) fail(label, fmt::format("__metadata__ value of '{}' is not a string", mk));
        h.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    h.tensors.push_back(parse_entry(key, value, label));
  }

  // The tensors must tile the data section exactly: sort by range and walk it.
  std::sort(h.tensors.begin(), h.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  const TensorInfo* previous = nullptr;
  for (const auto& t : h.tensors) {
    if (t.end > data_size)
      fail(label, fmt::format("tensor '{}': data_offsets [{}, {}] run past the data section ({} bytes; file "
                              "truncated?)",
                              t.name, t.begin, t.end, data_size));
    if (t.begin < expected)
      fail(label, fmt::format("tensor '{}' [{}, {}] overlaps tensor '{}' [{}, {}]", t.name, t.begin, t.end,
                              previous->name, previous->begin, previous->end));
    if (t.begin > expected)
      fail(label, fmt::format("hole of {} bytes in the data section before tensor '{}' (offset {})",
                              t.begin - expected, t.name, t.begin));
    expected = t.end;
    previous = &t;
  }
  if (expected != data_size)
    fail(label, fmt::format("data section is {} bytes but the tensors cover {}", data_size, expected));
  return h;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path) {
  naming_file(path, [&] {
    header_ = parse_safetensors(file_.bytes(), file_.size(), path);
    for (size_t i = 0; i < header_.tensors.size(); ++i) index_.emplace(header_.tensors[i].name, i);
  });
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

const TensorInfo& SafetensorsFile::at(std::string_view name) const {
  if (const auto* t = find(name)) return *t;
  throw Error(fmt::format("{}: no tensor named '{}'", path(), name));
}

std::span<const std::byte> SafetensorsFile::data(const TensorInfo& t) const {
  return file_.bytes().subspan(header_.data_start + t.begin, t.nbytes());
}

void write_safetensors(const std::string& path, const std::vector<TensorSpec>& tensors,
                       const std::map<std::string, std::string>& metadata, const TensorFill& fill) {
  // Widest dtypes first, then by name: every tensor stays aligned to its element size
  // (the order the Hugging Face library itself writes).
  std::vector<const TensorSpec*> order;
  std::set<std::string> names;
  for (const auto& t : tensors) {
    if (t.name == "__metadata__") throw Error(fmt::format("{}: '__metadata__' is not a valid tensor name", path));
    if (!names.insert(t.name).second) throw Error(fmt::format("{}: tensor '{}' given twice", path, t.name));
    for (auto d : t.shape)
      if (d < 0) throw Error(fmt::format("{}: tensor '{}' has a negative dimension", path, t.name));
    order.push_back(&t);
  }
  std::stable_sort(order.begin(), order.end(), [](const TensorSpec* a, const TensorSpec* b) {
    const auto sa = dtype_size(a->dtype), sb = dtype_size(b->dtype);
    return sa != sb ? sa > sb : a->name < b->name;
  });

  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::vector<uint64_t> sizes;
  for (const auto* t : order) {
    uint64_t numel = 1;
    for (auto d : t->shape) numel *= static_cast<uint64_t>(d);
    const uint64_t bytes = numel * dtype_size(t->dtype);
    header[t->name] = {{"dtype", dtype_name(t->dtype)}, {"shape", t->shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    sizes.push_back(bytes);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data section starts 8-byte aligned

  const std::string tmp = unique_temp_path(path);
  try {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error(fmt::format("{}: cannot create", tmp));
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((uint64_t(text.size()) >> (8 * i)) & 0xff);
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    std::vector<std::byte> buffer;
    for (size_t i = 0; i < order.size(); ++i) {
      buffer.assign(sizes[i], std::byte{0});
      fill(*order[i], buffer);
      out.write(reinterpret_cast<const char*>(buffer.data()), static_cast<std::streamsize>(buffer.size()));
      if (!out) throw Error(fmt::format("{}: write failed (disk full?)", tmp));
    }
    out.flush();
    if (!out) throw Error(fmt::format("{}: write failed (disk full?)", tmp));
    out.close();
    std::filesystem::rename(tmp, path);
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);  // never leave a half-written file behind
    throw;
  }
}

void write_safetensors(const std::string& path, const std::vector<TensorData>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<TensorSpec> specs;
  std::map<std::string, const std::vector<std::byte>*> bytes;
  for (const auto& t : tensors) {
    specs.push_back(t.spec);
    bytes[t.spec.name] = &t.bytes;
  }
  write_safetensors(path, specs, metadata, [&](const TensorSpec& spec, std::span<std::byte> out) {
    const auto& src = *bytes.at(spec.name);
    if (src.size() != out.size())
      throw Error(fmt::format("{}: tensor '{}' has {} bytes, its shape needs {}", path, spec.name, src.size(),
                              out.size()));
    std::memcpy(out.data(), src.data(), out.size());
  });
}

}  // namespace pivotmt
