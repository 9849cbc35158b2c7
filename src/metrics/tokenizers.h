// The tokenizers sacrebleu 2.6 applies before BLEU and TER, reproduced exactly
// (including its quirks: see tokenizers.cpp). All work on code points.
#pragma once
#include <memory>
#include <string>

namespace pivotmt::metrics {

class BleuTokenizer {
 public:
  virtual ~BleuTokenizer() = default;
  virtual std::u32string operator()(const std::u32string& line) const = 0;
  virtual std::string signature() const = 0;  // the "tok:" value of BLEU's signature
};

// name: 13a | intl | char | zh | none | flores101 | flores200 | spm (= flores101).
// The flores tokenizers need the SentencePiece model file (`spm_model`): pivotmt never
// downloads it; fetch it once (e.g. with `pivotmt download`) and pass its path.
std::unique_ptr<BleuTokenizer> make_bleu_tokenizer(const std::string& name, const std::string& spm_model = "");

// The individual steps, exposed for tests.
std::u32string tokenize_13a(const std::u32string& line);
std::u32string tokenize_intl(const std::u32string& line);
std::u32string tokenize_char(const std::u32string& line);
std::u32string tokenize_zh(const std::u32string& line);

struct TercomOptions {
  bool normalized = false;
  bool no_punct = false;
  bool asian_support = false;
  bool case_sensitive = false;
};
// sacrebleu's TercomTokenizer: the string whose split() gives TER's words.
std::u32string tokenize_tercom(const std::u32string& line, const TercomOptions& o);

}  // namespace pivotmt::metrics
