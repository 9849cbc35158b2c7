// Training sequences for `pivotmt finetune`: the study's corpora formatted as the original
// did (k retrieved examples + the row with its answer, through the same retriever, prompt
// builder and chat template as `ablate`), or a JSONL file of {"messages": [...]} chats or
// {"text": ...} strings. Loss on every token (the original) or on the answer only.
#pragma once
#include <string>
#include <vector>

#include "chat/chat_template.h"
#include "experiment/ablation.h"
#include "train/lora_llama.h"

namespace pivotmt {

class Tokenizer;

enum class LossOn { All, Response };
LossOn parse_loss_on(const std::string& s);  // "all" | "response"

struct SequenceLimits {
  size_t max_seq_len = 4096;
  bool drop_long = false;  // false: truncate to max_seq_len (keeping the start)
  LossOn loss_on = LossOn::All;
};

struct DataReport {
  size_t rows = 0;       // rows read
  size_t kept = 0;       // sequences made
  size_t truncated = 0;  // cut to max_seq_len
  size_t dropped_long = 0;
  size_t dropped_no_target = 0;  // nothing left to predict (e.g. the answer fell past the cut)
  std::string describe() const;
};

// A chat as one sequence: the template's rendering of all messages (no generation prompt),
// encoded as the study encodes prompts. With LossOn::Response the targets are the tokens
// after the rendering of the messages before the last assistant message with the
// generation prompt (the answer and what the template closes it with).
TrainSequence chat_sequence(const Tokenizer& tokenizer, const std::vector<ChatMessage>& messages, LossOn loss_on);

// JSONL: one object per line with "messages" or "text"; errors name the file and line.
std::vector<TrainSequence> sequences_from_jsonl(const std::string& path, const Tokenizer& tokenizer,
                                                const SequenceLimits& limits, DataReport& report);

// The study's train split (config.data / train_split / columns / labels / variant /
// retriever): each row with its k nearest other rows as examples and its own target as
// the answer. index_dir caches the retrieval index (build_index).
std::vector<TrainSequence> sequences_from_study(const AblationConfig& config, size_t k, const Tokenizer& tokenizer,
                                                const SequenceLimits& limits, const std::string& index_dir,
                                                DataReport& report);

// Applies the length limit (truncate or drop) and keeps sequences with a target.
void add_limited(std::vector<TrainSequence>& out, TrainSequence s, const SequenceLimits& limits, DataReport& report);

}  // namespace pivotmt
