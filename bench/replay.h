// The original Tower study as a workload (GPU.md, issue 27 §3): every request of
// ../shared/fixtures/original's konkani_full and arabic_full (k = 0..10) as the exact prompt
// token ids TowerInstruct's tokenizer gives its rendered prompt, with the length of the
// response it produced as a forced output length. Stored in the repository
// (bench/data/tower_study.replay.zst; ../shared is not on the GPU machine) in a compact form:
// each prompt names the earlier request it shares the longest prefix with (the k-variants of
// a row share their system prompt and first examples) and stores only the rest, and the
// whole is zstd-compressed with long-distance matching (the examples recur across rows).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace pivotmt {

struct ReplayRequest {
  uint8_t corpus = 0;  // 0 konkani_full, 1 arabic_full
  uint8_t k = 0;
  uint16_t row = 0;    // in the corpus's results_k{k}.csv
  std::vector<TokenId> prompt;
  uint32_t response_tokens = 0;
};

// Reads the study from `original_dir` (../shared/fixtures/original): each results CSV's
// `prompt` encoded with special tokens (as the ablation encodes its prompts), `response`
// without.
std::vector<ReplayRequest> make_replay(const std::string& original_dir, const Tokenizer& tokenizer);

void write_replay(const std::string& path, const std::vector<ReplayRequest>& requests);
// Throws naming the file and what is wrong (magic, counts, references, truncation, sizes).
std::vector<ReplayRequest> read_replay(const std::string& path);
// The same from the file's bytes (zstd frame); `label` names it in errors.
std::vector<ReplayRequest> parse_replay(std::string_view packed, const std::string& label);
// The same from the uncompressed records (the fuzzer's way in).
std::vector<ReplayRequest> parse_replay_records(const std::string& raw, const std::string& label);

}  // namespace pivotmt
