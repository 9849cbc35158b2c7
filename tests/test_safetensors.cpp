// safetensors reader and writer. Malformed files are built byte by byte here, not with the
// writer under test.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace pivotmt {
namespace {
using test::TempDir;
namespace fs = std::filesystem;

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char((n >> (8 * i)) & 0xff);
  return s;
}

// A file: 8-byte length (given or true), header text, data bytes.
std::string raw_file(const std::string& header, size_t data_bytes, std::optional<uint64_t> length = std::nullopt) {
  return le64(length.value_or(header.size())) + header + std::string(data_bytes, '\x01');
}

// Expects opening `content` to fail with a message holding the path and `needle`.
void expect_rejected(const std::string& content, const std::string& needle) {
  TempDir dir;
  const std::string path = dir.str("bad.safetensors");
  test::write_file(path, content);
  try {
    SafetensorsFile f(path);
    FAIL() << "accepted a file that should fail with: " << needle;
  } catch (const FormatError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << "message: " << msg << "\nexpected to contain: " << needle;
  }
}

const char* kTwo =
    R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"F16","shape":[4],"data_offsets":[24,32]}})";

TEST(Safetensors, ReadsHandBuiltFile) {
  TempDir dir;
  std::string data(32, '\0');
  const float a[6] = {1, 2, 3, 4, 5, 6};
  std::memcpy(data.data(), a, 24);
  test::write_file(dir.str("x.safetensors"), le64(std::strlen(kTwo)) + kTwo + data);
  SafetensorsFile f(dir.str("x.safetensors"));
  ASSERT_EQ(f.tensors().size(), 2u);
  const auto& t = f.at("a");
  EXPECT_EQ(t.dtype, DType::F32);
  EXPECT_EQ(t.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(t.numel(), 6u);
  float back[6];
  std::memcpy(back, f.data(t).data(), 24);
  EXPECT_EQ(back[5], 6.0f);
  EXPECT_EQ(f.find("c"), nullptr);
  EXPECT_THROW(f.at("c"), Error);
}

TEST(Safetensors, ReadsHuggingFaceWrittenFixture) {
  SafetensorsFile f(test::fixture("models/tiny-tower/model.safetensors"));
  EXPECT_EQ(f.metadata().at("format"), "pt");
  const auto& emb = f.at("model.embed_tokens.weight");
  EXPECT_EQ(emb.dtype, DType::F16);
  EXPECT_EQ(emb.shape, (std::vector<int64_t>{32007, 64}));
  EXPECT_EQ(f.tensors().size(), 2u + 2u * 9u + 1u);
}

TEST(Safetensors, RejectsTruncatedFiles) {
  expect_rejected("", "shorter than the 8-byte header length");
  expect_rejected("abc", "shorter than the 8-byte header length");
  // Header fine, data cut short: the last tensor runs past the end.
  expect_rejected(raw_file(kTwo, 20), "run past the data section");
}

TEST(Safetensors, RejectsHeaderLengthPastEnd) {
  expect_rejected(raw_file(kTwo, 32, 100000), "runs past the end of the file");
  expect_rejected(raw_file(kTwo, 32, ~0ull), "exceeds the limit");
}

TEST(Safetensors, RejectsOverlapsAndHoles) {
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                           16),
                  "overlaps tensor");
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
                           20),
                  "hole of 4 bytes");
  expect_rejected(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 12),
                  "data section is 12 bytes but the tensors cover 8");
}

TEST(Safetensors, RejectsShapeSizeMismatch) {
  expect_rejected(raw_file(R"({"w":{"dtype":"F16","shape":[3,3],"data_offsets":[0,16]}})", 16),
                  "tensor 'w': shape [3, 3] of F16 needs 18 bytes but data_offsets [0, 16] hold 16");
  expect_rejected(raw_file(R"({"w":{"dtype":"F16","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,16]}})", 16),
                  "overflows");
}

TEST(Safetensors, RejectsUnknownDtypeAndBadFields) {
  expect_rejected(raw_file(R"({"w":{"dtype":"Q4_K","shape":[4],"data_offsets":[0,4]}})", 4), "unknown dtype 'Q4_K'");
  expect_rejected(raw_file(R"({"w":{"dtype":"U8","shape":[-4],"data_offsets":[0,4]}})", 4), "non-negative integer");
  expect_rejected(raw_file(R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[4,0]}})", 4), "end before they begin");
  expect_rejected(raw_file(R"({"w":{"dtype":"U8","shape":[4]}})", 4), "data_offsets");
  expect_rejected(raw_file(R"({"w":{"shape":[4],"data_offsets":[0,4]}})", 4), "dtype");
  expect_rejected(raw_file(R"({"w":[1,2]})", 4), "not an object");
  expect_rejected(raw_file(R"({"__metadata__":{"format":1}})", 0), "not a string");
  expect_rejected(raw_file(R"([1,2,3])", 0), "does not start with '{'");
  expect_rejected(raw_file(R"({"w":)", 0), "not valid JSON");
  expect_rejected(raw_file(R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"w":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})", 4),
                  "appears twice");
  expect_rejected(raw_file("{\"\xff\xfe\":{}}", 0), "not valid JSON");
}

TEST(Safetensors, AcceptsEmptyAndZeroSizedTensors) {
  TempDir dir;
  test::write_file(dir.str("e.safetensors"), raw_file("{}", 0));
  EXPECT_TRUE(SafetensorsFile(dir.str("e.safetensors")).tensors().empty());
  const std::string h = R"({"z":{"dtype":"F32","shape":[0,5],"data_offsets":[0,0]},"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}})";
  test::write_file(dir.str("z.safetensors"), raw_file(h, 3));
  EXPECT_EQ(SafetensorsFile(dir.str("z.safetensors")).at("z").numel(), 0u);
}

uint64_t header_length(const std::string& path) {
  const std::string raw = test::read_file(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(raw[size_t(i)]);
  return n;
}

TEST(Safetensors, WriterRoundTripAndLayout) {
  TempDir dir;
  std::vector<TensorData> tensors;
  auto add = [&](std::string name, DType dt, std::vector<int64_t> shape, size_t nbytes) {
    std::vector<std::byte> b(nbytes);
    for (size_t i = 0; i < nbytes; ++i) b[i] = std::byte(uint8_t(i * 7 + name.size()));
    tensors.push_back({{name, dt, shape}, b});
  };
  add("small.bias", DType::F16, {3}, 6);
  add("big.weight", DType::F32, {2, 5}, 40);
  add("flags", DType::BOOL, {5}, 5);
  add("ids", DType::I64, {2}, 16);
  const std::string path = dir.str("w.safetensors");
  write_safetensors(path, tensors, {{"format", "pt"}, {"note", "ünïcode"}});
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);  // no temporaries

  SafetensorsFile f(path);
  EXPECT_EQ(f.metadata().at("note"), "ünïcode");
  for (const auto& t : tensors) {
    const auto& info = f.at(t.spec.name);
    EXPECT_EQ(info.dtype, t.spec.dtype);
    EXPECT_EQ(info.shape, t.spec.shape);
    auto bytes = f.data(info);
    ASSERT_EQ(bytes.size(), t.bytes.size());
    EXPECT_EQ(std::memcmp(bytes.data(), t.bytes.data(), bytes.size()), 0) << t.spec.name;
    // Each tensor is aligned to its element size within the file (what readers that
    // map tensors in place rely on).
    EXPECT_EQ((8 + header_length(path) + info.begin) % dtype_size(info.dtype), 0u) << t.spec.name;
  }
  // Header: u64 length, JSON starting with '{', padded with spaces to a multiple of 8.
  const std::string raw = test::read_file(path);
  const uint64_t n = header_length(path);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(raw[8], '{');
  const auto header = nlohmann::json::parse(raw.substr(8, n));
  EXPECT_EQ(header["__metadata__"]["format"], "pt");
  EXPECT_EQ(header["ids"]["data_offsets"][0], 0);  // widest dtype first
  EXPECT_EQ(header["big.weight"]["data_offsets"][0], 16);
}

TEST(Safetensors, WriterRejectsBadInput) {
  TempDir dir;
  std::vector<TensorData> dup = {{{"a", DType::U8, {1}}, {std::byte(1)}}, {{"a", DType::U8, {1}}, {std::byte(2)}}};
  EXPECT_THROW(write_safetensors(dir.str("d.safetensors"), dup), Error);
  std::vector<TensorData> wrong = {{{"a", DType::F32, {2}}, {std::byte(1)}}};
  EXPECT_THROW(write_safetensors(dir.str("w.safetensors"), wrong), Error);
  EXPECT_FALSE(fs::exists(dir.str("w.safetensors")));
  EXPECT_TRUE(fs::is_empty(dir.path()));  // the failed write left nothing behind
}

}  // namespace
}  // namespace pivotmt
