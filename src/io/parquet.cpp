#include "io/parquet.h"

#include <snappy.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "core/error.h"
#include "io/mapped_file.h"
#include "io/thrift_compact.h"

namespace pivotmt {
namespace {
using thrift::Value;

enum PhysicalType { kBoolean = 0, kInt32 = 1, kInt64 = 2, kInt96 = 3, kFloat = 4, kDouble = 5, kByteArray = 6, kFixed = 7 };
constexpr size_t kMaxPage = size_t(1) << 30;

struct Leaf {
  std::string name;  // dotted path
  int type = kByteArray;
  int type_length = 0;
  int max_def = 0, max_rep = 0;
};

struct Context {
  std::string label;
  [[noreturn]] void fail(const std::string& what) const {
    throw FormatError(fmt::format("{}: invalid Parquet file: {}", label, what));
  }
};

void walk_schema(const std::vector<Value>& schema, size_t& i, const std::string& prefix, int def, int rep,
                 std::vector<Leaf>& leaves, const Context& ctx, int depth) {
  if (depth > 64) ctx.fail("schema nesting too deep");
  if (i >= schema.size()) ctx.fail("schema ends inside a group");
  const Value& e = schema[i++];
  const std::string* name = e.binary_field(4);
  if (!name) ctx.fail(fmt::format("schema element {} has no name", i - 1));
  const int64_t repetition = e.int_field(3, 0);
  if (repetition == 1) ++def;
  if (repetition == 2) {
    ++def;
    ++rep;
  }
  const std::string path = prefix.empty() ? *name : prefix + "." + *name;
  const int64_t children = e.int_field(5, 0);
  if (children < 0 || size_t(children) > schema.size()) ctx.fail(fmt::format("schema element '{}' has {} children", path, children));
  if (children > 0) {
    for (int64_t c = 0; c < children; ++c) walk_schema(schema, i, path, def, rep, leaves, ctx, depth + 1);
    return;
  }
  Leaf l;
  l.name = path;
  l.type = int(e.int_field(1, -1));
  if (l.type < 0 || l.type > 7) ctx.fail(fmt::format("column '{}' has unknown physical type {}", path, l.type));
  l.type_length = int(e.int_field(2, 0));
  if (l.type == kFixed && (l.type_length <= 0 || l.type_length > (1 << 20)))
    ctx.fail(fmt::format("column '{}' has FIXED_LEN_BYTE_ARRAY length {}", path, l.type_length));
  l.max_def = def;
  l.max_rep = rep;
  leaves.push_back(l);
}

std::vector<uint8_t> decompress(int codec, const uint8_t* data, size_t size, size_t expected, const std::string& where,
                                const Context& ctx) {
  if (expected > kMaxPage) ctx.fail(fmt::format("{}: page of {} bytes", where, expected));
  // No codec expands data more than ~2^17 times (zstd's best is about 2^15): a few bytes
  // claiming up to kMaxPage are refused before that much is allocated.
  if (codec != 0 && expected > size * (size_t(1) << 17) + (size_t(1) << 16))
    ctx.fail(fmt::format("{}: {} compressed bytes cannot hold the {} the page header claims", where, size, expected));
  // The output is allocated once the data's own header agrees with the page's (SNAPPY, ZSTD)
  // or grown as GZIP produces it: a crafted header alone never takes `expected` bytes.
  std::vector<uint8_t> out;
  switch (codec) {
    case 0:
      if (size != expected) ctx.fail(fmt::format("{}: uncompressed page is {} bytes, header says {}", where, size, expected));
      out.assign(data, data + size);
      return out;
    case 1: {
      size_t n = 0;
      if (!snappy::GetUncompressedLength(reinterpret_cast<const char*>(data), size, &n) || n != expected)
        ctx.fail(fmt::format("{}: corrupt SNAPPY data", where));
      out.resize(expected);
      if (!snappy::RawUncompress(reinterpret_cast<const char*>(data), size, reinterpret_cast<char*>(out.data())))
        ctx.fail(fmt::format("{}: corrupt SNAPPY data", where));
      return out;
    }
    case 2: {  // GZIP, possibly several concatenated members
      z_stream z{};
      if (inflateInit2(&z, 15 + 32) != Z_OK) ctx.fail("zlib init failed");
      z.next_in = const_cast<Bytef*>(data);
      z.avail_in = uInt(size);
      out.resize(std::min(expected, 4 * size + (size_t(1) << 16)));  // doubled as needed, never past `expected`
      size_t produced = 0;
      int rc;
      while (true) {
        if (produced == out.size() && out.size() < expected) out.resize(std::min(expected, 2 * out.size()));
        z.next_out = out.data() + produced;
        z.avail_out = uInt(out.size() - produced);
        rc = inflate(&z, Z_NO_FLUSH);
        produced = out.size() - z.avail_out;
        if (rc == Z_STREAM_END && z.avail_in > 0 && produced < expected) {
          inflateReset(&z);
          continue;
        }
        if (rc == Z_OK && z.avail_out == 0 && out.size() < expected) continue;  // room wanted
        break;
      }
      inflateEnd(&z);
      if ((rc != Z_STREAM_END && rc != Z_OK) || produced != expected) ctx.fail(fmt::format("{}: corrupt GZIP data", where));
      return out;
    }
    case 6: {
      const unsigned long long stated = ZSTD_getFrameContentSize(data, size);
      if (stated == ZSTD_CONTENTSIZE_ERROR || (stated != ZSTD_CONTENTSIZE_UNKNOWN && stated != expected))
        ctx.fail(fmt::format("{}: corrupt ZSTD data", where));
      out.resize(expected);
      const size_t n = ZSTD_decompress(out.data(), expected, data, size);
      if (ZSTD_isError(n) || n != expected) ctx.fail(fmt::format("{}: corrupt ZSTD data", where));
      return out;
    }
    default: {
      static const char* names[] = {"UNCOMPRESSED", "SNAPPY", "GZIP", "LZO", "BROTLI", "LZ4", "ZSTD", "LZ4_RAW"};
      throw UnsupportedError(fmt::format("{}: {}: compression {} is not supported (uncompressed, SNAPPY, GZIP, ZSTD)",
                                         ctx.label, where, codec >= 0 && codec < 8 ? names[codec] : std::to_string(codec)));
    }
  }
}

// RLE / bit-packed hybrid: `count` values of `bit_width` bits.
std::vector<uint32_t> rle_hybrid(const uint8_t* p, const uint8_t* end, int bit_width, size_t count,
                                 const std::string& where, const Context& ctx) {
  if (bit_width < 0 || bit_width > 32) ctx.fail(fmt::format("{}: bit width {}", where, bit_width));
  std::vector<uint32_t> out;
  out.reserve(count);
  auto varint = [&]() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p >= end) ctx.fail(fmt::format("{}: RLE data ends early", where));
      const uint8_t b = *p++;
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    ctx.fail(fmt::format("{}: RLE varint too long", where));
  };
  const size_t byte_width = size_t((bit_width + 7) / 8);
  while (out.size() < count) {
    const uint64_t header = varint();
    if (header & 1) {  // bit-packed groups of 8
      const uint64_t groups = header >> 1;
      if (groups > size_t(end - p) + 1) ctx.fail(fmt::format("{}: bit-packed run past the data", where));
      // Writers may stop the last run at the bytes its values need: accept that, and
      // require only those bytes.
      const size_t values = std::min<size_t>(size_t(groups) * 8, count - out.size());
      const size_t needed = (values * size_t(bit_width) + 7) / 8;
      if (needed > size_t(end - p)) ctx.fail(fmt::format("{}: bit-packed run past the data", where));
      const uint8_t* run_end = p + std::min<size_t>(size_t(groups) * size_t(bit_width), size_t(end - p));
      uint64_t buffer = 0;
      int bits = 0;
      for (size_t i = 0; i < values; ++i) {
        while (bits < bit_width) {
          buffer |= uint64_t(p < run_end ? *p++ : 0) << bits;
          bits += 8;
        }
        const uint32_t v = bit_width == 0 ? 0 : uint32_t(buffer & ((uint64_t(1) << bit_width) - 1));
        buffer >>= bit_width;
        bits -= bit_width;
        out.push_back(v);
      }
      p = run_end;
    } else {
      const uint64_t run = header >> 1;
      if (size_t(end - p) < byte_width) ctx.fail(fmt::format("{}: RLE run past the data", where));
      uint32_t v = 0;
      for (size_t b = 0; b < byte_width; ++b) v |= uint32_t(*p++) << (8 * b);
      if (run > count - out.size()) ctx.fail(fmt::format("{}: RLE run of {} exceeds the {} values left", where, run, count - out.size()));
      out.insert(out.end(), size_t(run), v);
    }
  }
  return out;
}

int bit_width_of(int max_level) {
  int w = 0;
  while ((1 << w) <= max_level) ++w;
  return w;
}

std::string format_value(const Leaf& leaf, const uint8_t* p) {
  switch (leaf.type) {
    case kInt32: {
      int32_t v;
      std::memcpy(&v, p, 4);
      return std::to_string(v);
    }
    case kInt64: {
      int64_t v;
      std::memcpy(&v, p, 8);
      return std::to_string(v);
    }
    case kFloat: {
      float v;
      std::memcpy(&v, p, 4);
      return fmt::format("{}", v);
    }
    case kDouble: {
      double v;
      std::memcpy(&v, p, 8);
      return fmt::format("{}", v);
    }
    case kInt96: {
      std::string hex;
      for (int i = 0; i < 12; ++i) hex += fmt::format("{:02x}", p[i]);
      return hex;
    }
    default: return std::string(reinterpret_cast<const char*>(p), size_t(leaf.type_length));
  }
}

// PLAIN-encoded values.
std::vector<std::string> plain_values(const Leaf& leaf, const uint8_t* p, const uint8_t* end, size_t count,
                                      const std::string& where, const Context& ctx) {
  std::vector<std::string> out;
  out.reserve(count);
  if (leaf.type == kBoolean) {
    if (size_t(end - p) * 8 < count) ctx.fail(fmt::format("{}: booleans past the data", where));
    for (size_t i = 0; i < count; ++i) out.push_back((p[i / 8] >> (i % 8)) & 1 ? "true" : "false");
    return out;
  }
  for (size_t i = 0; i < count; ++i) {
    if (leaf.type == kByteArray) {
      if (end - p < 4) ctx.fail(fmt::format("{}: value {} past the data", where, i));
      uint32_t n;
      std::memcpy(&n, p, 4);
      p += 4;
      if (n > size_t(end - p)) ctx.fail(fmt::format("{}: value {} of {} bytes past the data", where, i, n));
      out.emplace_back(reinterpret_cast<const char*>(p), n);
      p += n;
      continue;
    }
    const size_t width = leaf.type == kInt32 || leaf.type == kFloat ? 4
                         : leaf.type == kInt96                      ? 12
                         : leaf.type == kFixed                      ? size_t(leaf.type_length)
                                                                    : 8;
    if (size_t(end - p) < width) ctx.fail(fmt::format("{}: value {} past the data", where, i));
    out.push_back(format_value(leaf, p));
    p += width;
  }
  return out;
}

void read_column_chunk(const Leaf& leaf, const Value& chunk, size_t rows, std::span<const uint8_t> file,
                       std::vector<std::vector<std::optional<std::string>>>& table_rows, size_t col, size_t row0,
                       const Context& ctx) {
  const Value* meta = chunk.field(3);
  if (!meta || meta->kind != Value::Kind::Struct) ctx.fail(fmt::format("column '{}': no column metadata", leaf.name));
  const int codec = int(meta->int_field(4, 0));
  const int64_t num_values = meta->int_field(5, -1);
  const int64_t data_offset = meta->int_field(9, -1), dict_offset = meta->int_field(11, 0),
                total = meta->int_field(7, -1);
  int64_t start = dict_offset > 0 && dict_offset < data_offset ? dict_offset : data_offset;
  if (num_values < 0 || start < 4 || total < 0 || uint64_t(start) + uint64_t(total) > file.size())
    ctx.fail(fmt::format("column '{}': chunk range [{}, +{}) outside the file", leaf.name, start, total));
  const uint8_t* p = file.data() + start;
  const uint8_t* end = p + total;
  std::vector<std::string> dictionary;
  size_t done = 0, page = 0;
  const size_t want = size_t(num_values);
  while (done < want) {
    const std::string where = fmt::format("column '{}' page {}", leaf.name, page++);
    if (p >= end) ctx.fail(fmt::format("{}: the chunk ends after {} of {} values", where, done, want));
    size_t header_len = 0;
    const Value header = thrift::read_struct(p, size_t(end - p), header_len, ctx.label + " " + where);
    p += header_len;
    const int type = int(header.int_field(1, -1));
    const int64_t uncompressed = header.int_field(2, -1), compressed = header.int_field(3, -1);
    if (uncompressed < 0 || compressed < 0 || compressed > end - p)
      ctx.fail(fmt::format("{}: page sizes {} / {} outside the chunk", where, compressed, uncompressed));
    const uint8_t* body = p;
    p += compressed;
    if (type == 2) {  // dictionary page
      const Value* dh = header.field(7);
      const int64_t n = dh ? dh->int_field(1, -1) : -1;
      if (n < 0 || size_t(n) > size_t(uncompressed) * 8 + 1) ctx.fail(fmt::format("{}: bad dictionary size {}", where, n));
      const auto data = decompress(codec, body, size_t(compressed), size_t(uncompressed), where, ctx);
      dictionary = plain_values(leaf, data.data(), data.data() + data.size(), size_t(n), where, ctx);
      continue;
    }
    if (type != 0 && type != 3) continue;  // index pages and unknown kinds carry no values
    const bool v2 = type == 3;
    const Value* dh = header.field(v2 ? 8 : 5);
    if (!dh) ctx.fail(fmt::format("{}: data page without its header", where));
    const int64_t n = dh->int_field(1, -1);
    if (n < 0 || size_t(n) > want - done) ctx.fail(fmt::format("{}: {} values but only {} expected", where, n, want - done));
    const int encoding = int(dh->int_field(v2 ? 4 : 2, 0));
    std::vector<uint8_t> data;
    const uint8_t *levels = nullptr, *levels_end = nullptr, *values = nullptr, *values_end = nullptr;
    std::vector<uint32_t> defs;
    if (v2) {
      const int64_t def_len = dh->int_field(5, 0), rep_len = dh->int_field(6, 0);
      const bool compressed_values = !dh->field(7) || dh->field(7)->b;
      if (def_len < 0 || rep_len < 0 || def_len > compressed || rep_len > compressed - def_len)
        ctx.fail(fmt::format("{}: level lengths {} / {} in a page of {} bytes", where, def_len, rep_len, compressed));
      levels = body + rep_len;
      levels_end = levels + def_len;
      const size_t values_compressed = size_t(compressed - def_len - rep_len);
      const size_t values_uncompressed = size_t(uncompressed) - size_t(def_len + rep_len);
      if (uncompressed < def_len + rep_len) ctx.fail(fmt::format("{}: page sizes", where));
      data = compressed_values ? decompress(codec, levels_end, values_compressed, values_uncompressed, where, ctx)
                               : std::vector<uint8_t>(levels_end, levels_end + values_compressed);
      values = data.data();
      values_end = data.data() + data.size();
      if (leaf.max_def > 0) defs = rle_hybrid(levels, levels_end, bit_width_of(leaf.max_def), size_t(n), where, ctx);
    } else {
      data = decompress(codec, body, size_t(compressed), size_t(uncompressed), where, ctx);
      const uint8_t* q = data.data();
      const uint8_t* qend = q + data.size();
      if (leaf.max_def > 0) {
        if (qend - q < 4) ctx.fail(fmt::format("{}: no definition levels", where));
        uint32_t len;
        std::memcpy(&len, q, 4);
        q += 4;
        if (len > size_t(qend - q)) ctx.fail(fmt::format("{}: definition levels past the page", where));
        defs = rle_hybrid(q, q + len, bit_width_of(leaf.max_def), size_t(n), where, ctx);
        q += len;
      }
      values = q;
      values_end = qend;
    }
    size_t present = size_t(n);
    if (leaf.max_def > 0) {
      present = 0;
      for (uint32_t d : defs) present += d == uint32_t(leaf.max_def);
    }
    std::vector<std::string> vals;
    if (encoding == 0) {
      vals = plain_values(leaf, values, values_end, present, where, ctx);
    } else if (encoding == 2 || encoding == 8) {
      if (values >= values_end && present > 0) ctx.fail(fmt::format("{}: no dictionary indices", where));
      if (present > 0) {
        const int width = *values;
        const auto idx = rle_hybrid(values + 1, values_end, width, present, where, ctx);
        for (uint32_t i : idx) {
          if (i >= dictionary.size()) ctx.fail(fmt::format("{}: dictionary index {} of {}", where, i, dictionary.size()));
          vals.push_back(dictionary[i]);
        }
      }
    } else if (encoding == 3 && leaf.type == kBoolean) {  // RLE booleans: a 4-byte length, then the runs
      const uint8_t* q = values;
      if (values_end - q < 4) ctx.fail(fmt::format("{}: RLE booleans without their length", where));
      uint32_t len;
      std::memcpy(&len, q, 4);
      q += 4;
      if (len > size_t(values_end - q)) ctx.fail(fmt::format("{}: RLE booleans past the page", where));
      for (uint32_t b : rle_hybrid(q, q + len, 1, present, where, ctx)) vals.push_back(b ? "true" : "false");
    } else {
      throw UnsupportedError(fmt::format("{}: {}: value encoding {} is not supported (PLAIN, dictionary)", ctx.label,
                                         where, encoding));
    }
    size_t v = 0;
    for (size_t i = 0; i < size_t(n); ++i) {
      const bool has = leaf.max_def == 0 || defs[i] == uint32_t(leaf.max_def);
      const size_t r = row0 + done + i;
      if (r >= table_rows.size()) ctx.fail(fmt::format("{}: more values than the row group's {} rows", where, rows));
      if (has) table_rows[r][col] = std::move(vals[v++]);
    }
    done += size_t(n);
  }
  if (done != rows) ctx.fail(fmt::format("column '{}': {} values for {} rows", leaf.name, done, rows));
}
}  // namespace

namespace {
Table parse_parquet_unnamed(std::span<const uint8_t> file, const std::string& label) {
  const Context ctx{label};
  if (file.size() < 12 || std::memcmp(file.data(), "PAR1", 4) != 0 || std::memcmp(file.data() + file.size() - 4, "PAR1", 4) != 0)
    ctx.fail("missing PAR1 magic (not a Parquet file, or truncated)");
  uint32_t footer_len;
  std::memcpy(&footer_len, file.data() + file.size() - 8, 4);
  if (footer_len > file.size() - 12) ctx.fail(fmt::format("footer length {} past the file", footer_len));
  const uint8_t* footer = file.data() + file.size() - 8 - footer_len;
  size_t used = 0;
  const Value meta = thrift::read_struct(footer, footer_len, used, label + " footer");
  const Value* schema = meta.field(2);
  if (!schema || schema->kind != Value::Kind::List || schema->list.empty()) ctx.fail("no schema");
  std::vector<Leaf> leaves;
  size_t i = 0;
  const Value& root = schema->list[0];
  ++i;
  const int64_t children = root.int_field(5, 0);
  for (int64_t c = 0; c < children; ++c) walk_schema(schema->list, i, "", 0, 0, leaves, ctx, 1);
  Table t;
  t.source = label;
  std::vector<size_t> kept;  // leaf index -> table column, for non-repeated leaves
  for (size_t l = 0; l < leaves.size(); ++l)
    if (leaves[l].max_rep == 0) {
      kept.push_back(l);
      t.columns.push_back(leaves[l].name);
    }
  const Value* groups = meta.field(4);
  if (groups && groups->kind != Value::Kind::List) ctx.fail("row groups are not a list");
  size_t row0 = 0;
  for (size_t g = 0; groups && g < groups->list.size(); ++g) {
    const Value& rg = groups->list[g];
    const int64_t rows = rg.int_field(3, -1);
    const Value* columns = rg.field(1);
    if (rows < 0 || rows > int64_t(file.size()) * 8 + 1024 || !columns || columns->kind != Value::Kind::List ||
        columns->list.size() != leaves.size())
      ctx.fail(fmt::format("row group {}: {} rows, {} column chunks for {} columns", g, rows,
                           columns ? columns->list.size() : 0, leaves.size()));
    t.rows.resize(row0 + size_t(rows), std::vector<std::optional<std::string>>(t.columns.size()));
    for (size_t k = 0; k < kept.size(); ++k)
      read_column_chunk(leaves[kept[k]], columns->list[kept[k]], size_t(rows), file, t.rows, k, row0, ctx);
    row0 += size_t(rows);
  }
  t.row_lines.resize(t.rows.size());
  for (size_t r = 0; r < t.rows.size(); ++r) t.row_lines[r] = r + 1;  // row numbers (1-based)
  return t;
}

}  // namespace

Table parse_parquet(std::span<const uint8_t> file, const std::string& label) {
  return naming_file(label, [&] { return parse_parquet_unnamed(file, label); });
}

Table read_parquet(const std::string& path) {
  const MappedFile f(path);
  return parse_parquet(std::span(reinterpret_cast<const uint8_t*>(f.bytes().data()), f.size()), path);
}

}  // namespace pivotmt
