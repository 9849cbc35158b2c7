// NLLB-200 as a translator: the model folder (model.safetensors, or pytorch_model.bin
// converted once into a cache), the tokenizer, the generation settings of the model's
// generation_config.json, and sentences in, translations out. `pivotmt translate` with an
// NLLB model and the ablation's baseline (experiment/baseline.h) both use it.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/seq2seq.h"
#include "models/m2m100_model.h"
#include "tokenizer/nllb_tokenizer.h"

namespace pivotmt {

// The study's corpus columns and their NLLB-200 codes (the defaults of --src-lang /
// --tgt-lang and of the baseline's languages): hin hin_Deva, mar mar_Deva, gom mar_Deva (a
// proxy: Goan Konkani is not one of NLLB-200's languages; Marathi has the same script),
// eng / en eng_Latn, msa arb_Arab, tn aeb_Arab, eg arz_Arab, jo / pa ajp_Arab (South
// Levantine), sy apc_Arab (North Levantine). A nested name ("translation.tn") is looked up by
// its last part. "" when the column is not in the table.
std::string nllb_code_for_column(const std::string& column);
const std::vector<std::pair<std::string, std::string>>& nllb_column_codes();
// For a column whose language NLLB-200 lacks: the language's name ("Goan Konkani"); else "".
std::string nllb_missing_language(const std::string& column);

// The languages of an NLLB translation of a study's columns: the codes given, else the
// columns' codes. When the target column's language is not an NLLB-200 language, the code
// used stands in for it and `proxy_note` says so (every output names it); when the source
// column is then the proxy's language itself (Konkani's source is Marathi, its proxy
// Marathi) and no source code was given, the pivot column is translated instead, as
// translating Marathi into Marathi would measure nothing.
struct NllbLanguages {
  std::string column;  // the column translated
  bool from_pivot = false;
  std::string src_lang, tgt_lang;
  std::string proxy_note;  // "" unless the target code stands in for another language
};
NllbLanguages nllb_study_languages(const std::string& pivot, const std::string& source, const std::string& target,
                                   const std::string& given_src, const std::string& given_tgt, bool from_pivot,
                                   const std::string& src_option, const std::string& tgt_option);

// The folder with the weights to load for an NLLB model folder: itself when it holds
// safetensors, else `cache_dir`/<key of its pytorch_model.bin> after a one-time conversion
// (the tied copies of the shared embedding are not written twice). Throws naming what is
// missing.
std::string nllb_weights_dir(const std::string& model_dir, const std::string& cache_dir);

struct NllbTranslation {
  std::string text;
  std::vector<int32_t> ids;   // the decoder's tokens (start, language code, ..., </s>)
  size_t source_tokens = 0;   // after truncation
  bool truncated = false;     // the source was cut to the tokenizer's maximum
  bool hit_max_length = false;
  double seconds = 0;         // this sentence's share of its batch's time
};

// generation_config.json's max_length, num_beams, length_penalty, early_stopping,
// no_repeat_ngram_size and forced_eos_token_id (transformers' defaults where absent; the
// model config's forced_eos_token_id otherwise), the target language forced first.
Seq2SeqSettings nllb_generation_settings(const std::string& model_dir, const NllbTokenizer& tokenizer,
                                         const std::string& tgt_lang);

// The storage NLLB's weights get on `device` when `weights` is asked for: as asked, but a
// GPU keeps INT8 (per-row scales, a CPU format) as F16. On a GPU F32 weights give the CPU's
// F32 tokens; F16 weights run the products on the tensor cores (inputs rounded to F16, F32
// sums: PyTorch's F16 numerics), tokens that may differ from the F32 ones where two
// continuations are within F16's rounding.
DType stored_weights(DType weights, const Device& device);

class NllbTranslator {
 public:
  // `model_dir`: config.json, generation_config.json, the tokenizer; `weights_dir`: where
  // the safetensors are (nllb_weights_dir; empty: model_dir); `weights`: see stored_weights.
  NllbTranslator(const std::string& model_dir, const std::string& weights_dir = "", DType weights = DType::F32,
                 OpsImpl impl = OpsImpl::Fast, const Device& device = Device{});
  const NllbTokenizer& tokenizer() const { return *tokenizer_; }
  const M2M100Model& model() const { return *model_; }
  Seq2SeqSettings settings(const std::string& tgt_lang) const { return nllb_generation_settings(dir_, *tokenizer_, tgt_lang); }
  // Sources longer than the tokenizer's model_max_length (1024) are cut as transformers
  // does with truncation=True; 0 here: the tokenizer's maximum.
  std::vector<NllbTranslation> translate(const std::vector<std::string>& texts, const std::string& src_lang,
                                         const Seq2SeqSettings& settings, size_t max_source_tokens = 0,
                                         const std::function<void(size_t, const NllbTranslation&)>& on_done = {}) const;

 private:
  std::string dir_;
  std::unique_ptr<NllbTokenizer> tokenizer_;
  std::unique_ptr<M2M100Model> model_;
};

}  // namespace pivotmt
