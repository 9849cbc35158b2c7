// PyTorch checkpoints read without executing their pickles (tests/goldens/torch_ckpt, made
// by tests/goldens/make_torch_ckpt.py with torch.save): every tensor of a Lightning-style
// checkpoint and of a bare state dict (dtypes, views with offsets and strides, a shared
// storage, a parameter, a scalar) equal to the values torch holds; a pickle naming os.system
// refused by name; damaged archives refused with the file named.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "io/torch_checkpoint.h"
#include "test_util.h"
#include "torch_writer.h"

namespace pivotmt {
namespace {

std::string golden(const std::string& f) { return std::string(PIVOTMT_SOURCE_DIR) + "/tests/goldens/torch_ckpt/" + f; }

void expect_like_expected(const TorchCheckpoint& ckpt) {
  SafetensorsFile want(golden("expected.safetensors"));
  ASSERT_EQ(ckpt.tensors().size(), want.tensors().size());
  for (const auto& w : want.tensors()) {
    const auto& t = ckpt.at(w.name);
    EXPECT_EQ(t.dtype, w.dtype) << w.name;
    EXPECT_EQ(t.shape, w.shape) << w.name;
    const auto got = ckpt.contiguous_bytes(t);
    const auto bytes = want.data(w);
    ASSERT_EQ(got.size(), bytes.size()) << w.name;
    EXPECT_EQ(std::memcmp(got.data(), bytes.data(), got.size()), 0) << w.name;
  }
}

TEST(TorchCheckpoint, LightningCheckpointStateDict) {
  const TorchCheckpoint ckpt(golden("lightning.ckpt"));
  expect_like_expected(ckpt);
  // The view shares the weight's storage: same values through offset and strides.
  const auto w = ckpt.load_f32("encoder.weight"), v = ckpt.load_f32("encoder.view"), t = ckpt.load_f32("encoder.t");
  EXPECT_EQ(v[0], w[2 * 8 + 1]);
  EXPECT_EQ(t[1], w[8]);
  EXPECT_THROW(ckpt.load_f32("long"), FormatError);
  EXPECT_THROW(ckpt.at("missing"), FormatError);
}

TEST(TorchCheckpoint, BareStateDictAndSafetensorsConversion) {
  const TorchCheckpoint ckpt(golden("state_dict.bin"));
  expect_like_expected(ckpt);
  test::TempDir dir;
  ckpt.save_safetensors(dir.str("converted.safetensors"));
  SafetensorsFile conv(dir.str("converted.safetensors"));
  SafetensorsFile want(golden("expected.safetensors"));
  for (const auto& w : want.tensors()) {
    const auto& c = conv.at(w.name);
    EXPECT_EQ(c.shape, w.shape);
    EXPECT_EQ(std::memcmp(conv.data(c).data(), want.data(w).data(), w.nbytes()), 0) << w.name;
  }
}

TEST(TorchCheckpoint, PickleNamingOsSystemIsRefused) {
  try {
    TorchCheckpoint ckpt(golden("evil.ckpt"));
    FAIL() << "expected a refusal";
  } catch (const FormatError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("evil.ckpt"), std::string::npos) << what;
    EXPECT_TRUE(what.find("posix.system") != std::string::npos || what.find("os.system") != std::string::npos) << what;
    EXPECT_NE(what.find("refused"), std::string::npos) << what;
  }
}

TEST(TorchCheckpoint, DamagedArchivesAreNamed) {
  test::TempDir dir;
  const std::string good = test::read_file(golden("state_dict.bin"));
  const auto expect_error = [&](const std::string& bytes, const std::string& label) {
    const std::string p = dir.str(label);
    test::write_file(p, bytes);
    try {
      TorchCheckpoint ckpt(p);
      FAIL() << label << ": expected an error";
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(label), std::string::npos) << e.what();
    }
  };
  expect_error("not a zip file at all, just some bytes that go on for a while", "text.bin");
  expect_error(good.substr(0, good.size() / 2), "half.bin");
  std::string pickle_cut = good;
  const auto at = pickle_cut.find("_rebuild_tensor_v2");
  ASSERT_NE(at, std::string::npos);
  pickle_cut[at] = 'X';  // another global name: refused
  expect_error(pickle_cut, "renamed.bin");
  // A byte flipped inside a tensor's name: not UTF-8, refused naming the file (it was a JSON
  // library's "invalid UTF-8 byte" from the converter, with no file).
  std::string flipped = good;
  const auto name = flipped.find("encoder.weight");
  ASSERT_NE(name, std::string::npos);
  flipped[name + 2] = '\xff';
  expect_error(flipped, "flipped.bin");
}

// The crafted-checkpoint writer (tests/torch_writer.h) against the reader: a plain view
// with an offset and strides reads back the right elements.
TEST(TorchCheckpoint, CraftedCheckpointReadsBack) {
  test::TempDir dir;
  const std::string p = dir.str("crafted.bin");
  test::write_file(p, test::crafted_torch_checkpoint({{.storage_numel = 8, .storage_bytes = 32, .offset = 1,
                                                       .shape = {2, 2}, .stride = {3, 1}}}));
  TorchCheckpoint ckpt(p);
  const auto bytes = ckpt.contiguous_bytes(ckpt.at("w"));
  ASSERT_EQ(bytes.size(), 16u);
  for (size_t e = 0; e < 4; ++e) {  // elements 1, 2, 4, 5 of the storage
    const size_t element = 1 + (e / 2) * 3 + e % 2;
    for (size_t b = 0; b < 4; ++b) EXPECT_EQ(char(bytes[e * 4 + b]), char((element * 4 + b) * 37 + 11)) << e;
  }
}

// Sizes, strides and offsets whose products or sums wrap around 64 bits: each is refused
// with the file named, before any byte is read (they crashed pivotmt convert with a bus
// error or a segmentation fault: the wrapped values passed the bounds checks).
TEST(TorchCheckpoint, SizesThatWrapAroundAreRefused) {
  test::TempDir dir;
  const int64_t big = int64_t(1) << 62;
  const std::vector<std::pair<std::string, test::CraftedTensor>> cases = {
      // (2^62 + 4) floats: 2^64 + 16 bytes, 16 after the wrap, which the member holds.
      {"storage-bytes.bin", {.storage_numel = big + 4, .storage_bytes = 16, .shape = {int64_t(1) << 40}, .stride = {1}}},
      // The last element 2 (2^63 - 2^39) + 2^40 = 2^64 wraps to 0; element (0, 1) is at 2^40.
      {"end-offset.bin",
       {.storage_numel = 6, .storage_bytes = 24, .shape = {3, 2}, .stride = {INT64_MAX - (int64_t(1) << 39) + 1, int64_t(1) << 40}}},  // 2^63 − 2^39
      // 2^32 x 2^32 elements of stride 0: the count wraps to 0.
      {"numel.bin", {.shape = {int64_t(1) << 32, int64_t(1) << 32}, .stride = {0, 0}}},
      {"offset.bin", {.offset = -8}},
      {"negative-storage.bin", {.storage_numel = -4}},
  };
  for (const auto& [file, tensor] : cases) {
    const std::string p = dir.str(file);
    test::write_file(p, test::crafted_torch_checkpoint({tensor}));
    try {
      TorchCheckpoint ckpt(p);
      for (const auto& t : ckpt.tensors()) (void)ckpt.contiguous_bytes(t);
      FAIL() << file << ": read without an error";
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(file), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace pivotmt
