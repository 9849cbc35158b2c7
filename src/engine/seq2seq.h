// Generation for encoder–decoder models (NLLB-200 / M2M100) as Hugging Face's `generate`
// does it, so the same settings give the same tokens:
//   - the decoder starts with decoder_start_token_id (</s>), the target language is forced
//     as the first generated token (forced_bos_token_id), and forced_eos_token_id, when
//     set, is forced at max_length − 1;
//   - greedy (num_beams 1): the first maximum of the processed logits; a finished sentence
//     stops (transformers pads it; nothing else changes);
//   - beam search (transformers ≥ 4.50's vectorised beam search): log-softmax, running
//     scores, the top 2 · num_beams continuations, finished hypotheses scored by
//     sum / generated_length^length_penalty, early_stopping true / false (the heuristic of
//     transformers) / "never", no_repeat_ngram_size over the whole decoder sequence;
//   - max_length counts the decoder's tokens, the start token included.
// Each source is encoded once; its cross-attention keys and values are shared by its beams;
// beams are rows of one decoder batch, and the rows of all sentences in flight are decoded
// together.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "models/m2m100_model.h"

namespace pivotmt {

enum class EarlyStopping { False, True, Never };

struct Seq2SeqSettings {
  size_t max_length = 200;  // decoder tokens, the start token included (NLLB's generation_config)
  size_t num_beams = 1;
  double length_penalty = 1.0;
  EarlyStopping early_stopping = EarlyStopping::False;
  size_t no_repeat_ngram_size = 0;
  std::optional<int32_t> forced_bos_token_id;  // the target language code
  std::optional<int32_t> forced_eos_token_id;
  // Sources decoded together (their beams are the decoder's rows): larger batches run the
  // GEMMs faster and hold more keys and values (each source's cross-attention cache is
  // layers · 2 · S · d floats).
  size_t batch_size = 16;
};

struct Seq2SeqResult {
  std::vector<int32_t> ids;  // the decoder sequence: start token, language code, ..., </s>
  float score = 0.0f;        // beam search: the hypothesis' score (sum / length^penalty); greedy: 0
  bool hit_max_length = false;  // ended at max_length without </s>
};

// Generates for each source (token ids from NllbTokenizer::encode_source). on_done(i, r),
// when given, sees each source's result as soon as it is final (any order), e.g. to log it.
std::vector<Seq2SeqResult> generate_seq2seq(const M2M100Model& model, const std::vector<std::vector<int32_t>>& sources,
                                            const Seq2SeqSettings& settings,
                                            const std::function<void(size_t, const Seq2SeqResult&)>& on_done = {});

// The tokens no_repeat_ngram_size = n bans after `seq` (transformers' _get_ngrams /
// _get_generated_ngrams): the continuations of every earlier n-gram whose first n − 1
// tokens equal the last n − 1 of seq.
std::vector<int32_t> banned_ngram_tokens(const std::vector<int32_t>& seq, size_t n);

}  // namespace pivotmt
