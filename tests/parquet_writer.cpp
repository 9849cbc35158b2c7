#include "parquet_writer.h"

#include <snappy.h>

#include <cstdint>

namespace pivotmt::test {
namespace {

// Thrift compact protocol, just what the metadata needs.
class Compact {
 public:
  std::string out;
  void varint(uint64_t v) {
    while (v >= 0x80) {
      out.push_back(char((v & 0x7f) | 0x80));
      v >>= 7;
    }
    out.push_back(char(v));
  }
  void zigzag(int64_t v) { varint(uint64_t((v << 1) ^ (v >> 63))); }
  void field(int id, int type) {
    out.push_back(char(((id - last_.back()) << 4) | type));
    last_.back() = id;
  }
  void i32(int id, int64_t v) { field(id, 5), zigzag(v); }
  void i64(int id, int64_t v) { field(id, 6), zigzag(v); }
  void binary(int id, const std::string& s) { field(id, 8), varint(s.size()), out += s; }
  void begin_struct(int id) { field(id, 12), last_.push_back(0); }
  void begin_struct_element() { last_.push_back(0); }
  void end_struct() { out.push_back(0), last_.pop_back(); }
  void list_header(int id, size_t n, int type) {
    field(id, 9);
    if (n < 15) out.push_back(char((n << 4) | type));
    else out.push_back(char(0xf0 | type)), varint(n);
  }
  void begin_root() { last_.assign(1, 0); }

 private:
  std::vector<int> last_ = {0};
};

void le32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(char((v >> (8 * i)) & 0xff));
}
}  // namespace

std::string write_parquet(const std::vector<ParquetColumn>& columns, const std::string& group, bool snappy,
                          int64_t claimed_uncompressed) {
  const size_t rows = columns.empty() ? 0 : columns[0].values.size();
  const int max_def = group.empty() ? 1 : 2;
  std::string file = "PAR1";
  struct Chunk {
    size_t offset, size;
  };
  std::vector<Chunk> chunks;
  for (const auto& c : columns) {
    // Definition levels: one RLE run of length 1 per value (valid, if not compact).
    std::string levels;
    for (const auto& v : c.values) {
      levels.push_back(char(1 << 1));
      levels.push_back(char(v ? max_def : max_def - 1));
    }
    std::string page;
    le32(page, uint32_t(levels.size()));
    page += levels;
    for (const auto& v : c.values)
      if (v) {
        le32(page, uint32_t(v->size()));
        page += *v;
      }
    std::string body = page;
    if (snappy) snappy::Compress(page.data(), page.size(), &body);
    Compact h;
    h.begin_root();
    h.i32(1, 0);  // DATA_PAGE
    h.i32(2, claimed_uncompressed >= 0 ? claimed_uncompressed : int64_t(page.size()));
    h.i32(3, int64_t(body.size()));
    h.begin_struct(5);
    h.i32(1, int64_t(c.values.size()));
    h.i32(2, 0);  // PLAIN
    h.i32(3, 3);  // RLE levels
    h.i32(4, 3);
    h.end_struct();
    h.out.push_back(0);
    chunks.push_back({file.size(), h.out.size() + body.size()});
    file += h.out + body;
  }
  Compact m;
  m.begin_root();
  m.i32(1, 1);
  const size_t n_schema = 1 + (group.empty() ? 0 : 1) + columns.size();
  m.list_header(2, n_schema, 12);
  auto element = [&](const std::string& name, int children, int repetition, bool leaf) {
    m.begin_struct_element();
    if (leaf) m.i32(1, 6);  // BYTE_ARRAY
    if (repetition >= 0) m.i32(3, repetition);
    m.binary(4, name);
    if (children > 0) m.i32(5, children);
    if (leaf) m.i32(6, 0);  // UTF8
    m.end_struct();
  };
  element("schema", group.empty() ? int(columns.size()) : 1, -1, false);
  if (!group.empty()) element(group, int(columns.size()), 1, false);
  for (const auto& c : columns) element(c.name, 0, 1, true);
  m.i64(3, int64_t(rows));
  m.list_header(4, 1, 12);
  m.begin_struct_element();
  m.list_header(1, columns.size(), 12);
  for (size_t i = 0; i < columns.size(); ++i) {
    m.begin_struct_element();
    m.i64(2, int64_t(chunks[i].offset));
    m.begin_struct(3);
    m.i32(1, 6);
    m.list_header(2, 2, 5);
    m.zigzag(0);
    m.zigzag(3);
    std::vector<std::string> path;
    if (!group.empty()) path.push_back(group);
    path.push_back(columns[i].name);
    m.list_header(3, path.size(), 8);
    for (const auto& p : path) m.varint(p.size()), m.out += p;
    m.i32(4, snappy ? 1 : 0);
    m.i64(5, int64_t(rows));
    m.i64(6, int64_t(chunks[i].size));
    m.i64(7, int64_t(chunks[i].size));
    m.i64(9, int64_t(chunks[i].offset));
    m.end_struct();
    m.end_struct();
  }
  m.i64(2, int64_t(file.size()));
  m.i64(3, int64_t(rows));
  m.end_struct();
  m.out.push_back(0);
  file += m.out;
  le32(file, uint32_t(m.out.size()));
  file += "PAR1";
  return file;
}

}  // namespace pivotmt::test
