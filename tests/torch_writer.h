// Crafted torch.save checkpoints for the tests and the fuzzer: a zip archive of stored
// members (archive/data.pkl and one archive/data/KEY per storage) whose pickle is written
// here opcode by opcode, so that any storage size, offset, shape or stride can be put in —
// including the ones torch.save never writes (sizes near 2^63, strides that wrap). The CRCs
// are left 0 (pivotmt's reader does not need them).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace pivotmt::test {

struct CraftedTensor {
  std::string name = "w";
  std::string storage_type = "FloatStorage";  // torch.<type>
  std::string storage_key = "0";
  int64_t storage_numel = 4;   // what the pickle claims
  size_t storage_bytes = 16;   // what the archive member holds
  int64_t offset = 0;
  std::vector<int64_t> shape = {4}, stride = {1};
};

namespace torch_writer_detail {
inline void put_u16(std::string& s, uint16_t v) { s += char(v & 0xff), s += char(v >> 8); }
inline void put_u32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s += char((v >> (8 * i)) & 0xff);
}
inline void put_str(std::string& p, const std::string& v) {  // BINUNICODE
  p += 'X';
  put_u32(p, uint32_t(v.size()));
  p += v;
}
inline void put_int(std::string& p, int64_t v) {  // LONG1 with 8 bytes: any int64
  p += char(0x8a);
  p += char(8);
  for (int i = 0; i < 8; ++i) p += char((uint64_t(v) >> (8 * i)) & 0xff);
}
}  // namespace torch_writer_detail

inline std::string crafted_pickle(const std::vector<CraftedTensor>& tensors) {
  using namespace torch_writer_detail;
  std::string p = "\x80\x02}";  // PROTO 2, EMPTY_DICT
  for (const auto& t : tensors) {
    put_str(p, t.name);
    p += "ctorch._utils\n_rebuild_tensor_v2\n(";
    p += '(';  // the persistent id: ('storage', type, key, location, numel)
    put_str(p, "storage");
    p += "ctorch\n" + t.storage_type + "\n";
    put_str(p, t.storage_key);
    put_str(p, "cpu");
    put_int(p, t.storage_numel);
    p += "tQ";  // TUPLE, BINPERSID
    put_int(p, t.offset);
    p += '(';
    for (int64_t d : t.shape) put_int(p, d);
    p += "t(";
    for (int64_t d : t.stride) put_int(p, d);
    p += "t\x89tRs";  // False (requires_grad), TUPLE, REDUCE, SETITEM
  }
  p += '.';
  return p;
}

// The archive: members stored in order, then the central directory and its end record.
inline std::string crafted_torch_checkpoint(const std::vector<CraftedTensor>& tensors) {
  using namespace torch_writer_detail;
  std::vector<std::pair<std::string, std::string>> members = {{"archive/data.pkl", crafted_pickle(tensors)}};
  for (const auto& t : tensors) {
    bool seen = false;
    for (const auto& m : members) seen |= m.first == "archive/data/" + t.storage_key;
    if (!seen) {
      std::string bytes(t.storage_bytes, '\0');
      for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = char(i * 37 + 11);
      members.emplace_back("archive/data/" + t.storage_key, bytes);
    }
  }
  std::string zip, directory;
  for (const auto& [name, data] : members) {
    const uint32_t local = uint32_t(zip.size());
    put_u32(zip, 0x04034b50);
    put_u16(zip, 20), put_u16(zip, 0), put_u16(zip, 0), put_u16(zip, 0), put_u16(zip, 0);  // version, flags, stored, time, date
    put_u32(zip, 0), put_u32(zip, uint32_t(data.size())), put_u32(zip, uint32_t(data.size()));
    put_u16(zip, uint16_t(name.size())), put_u16(zip, 0);
    zip += name + data;
    put_u32(directory, 0x02014b50);
    put_u16(directory, 20), put_u16(directory, 20), put_u16(directory, 0), put_u16(directory, 0);
    put_u16(directory, 0), put_u16(directory, 0);
    put_u32(directory, 0), put_u32(directory, uint32_t(data.size())), put_u32(directory, uint32_t(data.size()));
    put_u16(directory, uint16_t(name.size())), put_u16(directory, 0), put_u16(directory, 0);
    put_u16(directory, 0), put_u16(directory, 0), put_u32(directory, 0), put_u32(directory, local);
    directory += name;
  }
  const uint32_t at = uint32_t(zip.size());
  zip += directory;
  put_u32(zip, 0x06054b50);
  put_u16(zip, 0), put_u16(zip, 0), put_u16(zip, uint16_t(members.size())), put_u16(zip, uint16_t(members.size()));
  put_u32(zip, uint32_t(directory.size())), put_u32(zip, at), put_u16(zip, 0);
  return zip;
}

}  // namespace pivotmt::test
