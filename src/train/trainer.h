// The training loop of `pivotmt finetune`: the original recipe's schedule (batch ×
// gradient accumulation, a true token mean over each window, clipping, AdamW, cosine
// schedule) over a LoraLlama, with crash-safe checkpoints. The data order and the dropout
// masks are functions of (seed, step) alone, so a run resumed from a checkpoint (adapter,
// optimiser moments, step) computes exactly what the uninterrupted run computes.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "train/lora_llama.h"
#include "train/optimizer.h"

namespace pivotmt {

struct TrainOptions {
  int64_t steps = 400;
  int64_t warmup = 100;
  int64_t batch_size = 2;
  int64_t grad_accum = 4;
  double lr = 5e-5;
  double max_grad_norm = 1.0;
  train::AdamWConfig adam;
  bool shuffle = true;
  uint64_t seed = 42;
  int64_t save_every = 50;   // checkpoint every N steps (0: only at the end)
  int64_t keep_checkpoints = 2;
  int64_t eval_every = 0;    // evaluation loss on `eval` every N steps (0: never)
  std::string out_dir;       // empty: nothing written (tests)
  bool progress = true;
  // The loss's denominator. Predicted (the default, as transformers >= 5 and PEFT's
  // examples): the window's target tokens that are predicted — every target but a
  // sequence's first token, which nothing predicts. FirstTokenCounted: transformers'
  // Trainer up to 4.57 also counted each sequence's first token when it is a target (the
  // original pipeline's logs: with --loss-on all its loss reads ~1% lower for ~100-token
  // prompts); for comparing with those logs. It scales the gradients alike, as Trainer did.
  enum class LossNormalization { Predicted, FirstTokenCounted } loss_normalization = LossNormalization::Predicted;
  // What a resumed run must match (options, data fingerprint); stored as finetune.json.
  nlohmann::json identity;
};

struct StepRecord {
  int64_t step = 0;  // 1-based: the number of optimiser steps done
  double loss = 0;   // summed cross-entropy / target tokens of the window
  double lr = 0;     // the learning rate this step used
  double grad_norm = 0;  // before clipping
  size_t tokens = 0;     // tokens processed (all positions of the window's sequences)
  size_t target_tokens = 0;
  double seconds = 0, tokens_per_second = 0;
  size_t peak_rss_bytes = 0;
  std::optional<double> eval_loss;
  nlohmann::json to_json() const;
};

class Trainer {
 public:
  // train_log.jsonl's first line: how the logged loss is normalised.
  nlohmann::json log_header() const;
  Trainer(LoraLlama& model, std::vector<TrainSequence> data, std::vector<TrainSequence> eval, TrainOptions options);
  // Trains from the latest checkpoint in out_dir (or from the model's current adapter) up
  // to options.steps; on_step sees each step's record as it completes. Returns every
  // step's record, those of a resumed run's earlier steps read back from train_log.jsonl.
  std::vector<StepRecord> run(const std::function<void(const StepRecord&)>& on_step = {});
  int64_t resumed_from() const { return resumed_from_; }

  // The sequence indices of optimiser step `step` (0-based), batch_size × grad_accum of them.
  std::vector<size_t> window(int64_t step) const;

 private:
  void save_checkpoint(int64_t step);  // the adapter and the model's optimiser state
  int64_t load_latest_checkpoint();    // restores both; the step reached (0: none)
  double eval_loss();

  LoraLlama& model_;
  std::vector<TrainSequence> data_, eval_;
  TrainOptions o_;
  int64_t resumed_from_ = 0;
};

// A fingerprint of training data (token ids and target flags), for the resume check.
std::string data_fingerprint(const std::vector<TrainSequence>& data);
size_t peak_rss_bytes();

}  // namespace pivotmt
