// PyTorch checkpoints read without executing their pickles (tests/goldens/torch_ckpt, made
// by tests/goldens/make_torch_ckpt.py with torch.save): every tensor of a Lightning-style
// checkpoint and of a bare state dict (dtypes, views with offsets and strides, a shared
// storage, a parameter, a scalar) equal to the values torch holds; a pickle naming os.system
// refused by name; damaged archives refused with the file named.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "io/torch_checkpoint.h"
#include "test_util.h"

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
}

}  // namespace
}  // namespace pivotmt
