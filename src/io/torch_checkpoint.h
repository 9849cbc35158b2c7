// PyTorch checkpoints (torch.save's zip format: `pytorch_model.bin`, Lightning's
// `model.ckpt`) read without executing their pickles. The pickle is interpreted by a small
// stack machine that knows the opcodes torch.save writes and builds values itself: it only
// accepts the globals a dictionary of tensors needs (tensor and parameter rebuilds, storage
// types, OrderedDict) plus a few inert metadata classes of Lightning checkpoints, which it
// keeps as opaque values; any other global (os.system, builtins.eval, ...) is refused with
// an error naming it. Nothing in the file is ever called. Tensor data is read in place from
// the memory-mapped archive (stored, uncompressed entries, as torch.save writes them).
// Written here because Debian has no library that reads this format without Python.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "io/mapped_file.h"

namespace pivotmt {

struct TorchTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape, strides;  // strides in elements
  uint64_t offset = 0;                  // storage offset in elements
  std::string storage;                  // the storage's key in the archive (data/<key>)
  uint64_t numel() const;
};

class TorchCheckpoint {
 public:
  // Reads the archive and its pickle. The tensors are those of the top-level dictionary,
  // or of its "state_dict" entry when it has one (Lightning); throws FormatError naming the
  // file and what is wrong (not a zip, a compressed entry, a refused global, a tensor
  // outside its storage, ...).
  explicit TorchCheckpoint(const std::string& path);
  const std::string& path() const { return path_; }
  const std::vector<TorchTensor>& tensors() const { return tensors_; }
  const TorchTensor* find(const std::string& name) const;
  const TorchTensor& at(const std::string& name) const;  // throws naming the tensor
  // The tensor's elements in row-major order (strides applied) as raw little-endian bytes
  // of its dtype, or converted to F32 (float types).
  std::vector<std::byte> contiguous_bytes(const TorchTensor& t) const;
  std::vector<float> load_f32(const std::string& name) const;
  // Every tensor (or those `keep` accepts), contiguous, into a safetensors file (the
  // cache's converted copy).
  void save_safetensors(const std::string& out_path, const std::function<bool(const std::string&)>& keep = {}) const;

 private:
  struct Entry {
    uint64_t offset = 0, size = 0;  // the data's bytes in the file
  };
  std::span<const std::byte> entry(const std::string& name) const;
  std::string path_;
  MappedFile file_;
  std::map<std::string, Entry> entries_;  // zip member name -> data
  std::string prefix_;                    // "archive/" or the folder torch.save named
  std::vector<TorchTensor> tensors_;
};

// A folder name for a converted copy of the checkpoint at `path` that changes when the file
// does: the hub cache's blob name (its SHA-256) when `path` is a cache symlink, else a hash
// of the absolute path, size and modification time.
std::string converted_checkpoint_key(const std::string& path);

// `target_dir`/model.safetensors converted from the torch checkpoint `ckpt` unless it is
// there already (written under a temporary name and renamed: a crash leaves no half file a
// later run would take for the weights). `what` names the model in the one-line notice.
void convert_checkpoint_once(const std::string& ckpt, const std::string& target_dir, const std::string& what,
                             const std::function<bool(const std::string&)>& keep = {});

}  // namespace pivotmt
