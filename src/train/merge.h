// `pivotmt merge`: a base checkpoint plus a LoRA adapter → a Hugging Face checkpoint with
// the adapter folded in (W += scaling · B A, as PEFT's merge_and_unload), each tensor kept
// in the base's stored dtype, with the base's config and tokenizer files beside it.
#pragma once
#include <string>

namespace pivotmt {

struct MergeReport {
  size_t tensors = 0, merged = 0;
  size_t bytes = 0;
};

// Writes out_dir atomically (a temporary folder renamed at the end). Throws Error when
// out_dir already exists and is not empty: nothing is overwritten.
MergeReport merge_adapter(const std::string& model_dir, const std::string& adapter_dir, const std::string& out_dir);

}  // namespace pivotmt
