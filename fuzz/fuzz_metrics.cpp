// libFuzzer target: arbitrary bytes as (hypothesis, reference) text — invalid UTF-8,
// random Unicode, control characters — through every tokenizer and all four metrics,
// including TER's shift search. Must never crash or trip a sanitizer.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "metrics/corpus.h"
#include "metrics/scoring.h"
#include "metrics/tokenizers.h"
#include "text/unicode.h"

using namespace pivotmt;
using namespace pivotmt::metrics;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return 0;  // TER is quadratic and more: keep iterations fast
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  // First byte: options; the rest split at the first NUL into hypothesis and reference.
  const uint8_t flags = size ? data[0] : 0;
  const std::string_view body = size ? bytes.substr(1) : bytes;
  const size_t cut = body.find('\0');
  const auto hyp = utf8_to_u32(body.substr(0, cut));
  const auto ref = utf8_to_u32(cut == std::string_view::npos ? std::string_view() : body.substr(cut + 1));

  (void)tokenize_13a(hyp);
  (void)tokenize_intl(hyp);
  (void)tokenize_char(hyp);
  (void)tokenize_zh(hyp);
  (void)py_lower(hyp);
  (void)u32_to_utf8(hyp);

  ScoringOptions o;
  static const char* kTokenizers[] = {"13a", "intl", "char", "zh", "none"};
  o.tokenize = kTokenizers[flags % 5];
  o.lowercase = flags & 0x08;
  o.chrf_whitespace = flags & 0x10;
  o.ter = {bool(flags & 0x20), bool(flags & 0x40), bool(flags & 0x80), bool(flags & 0x08)};
  for (const char* name : {"bleu", "chrf", "chrf++", "ter"}) {
    const auto metric = make_metric(name, o, flags & 1);
    const PreparedReferences refs(*metric, std::vector<std::vector<std::u32string>>{{ref}});
    const auto stats = system_statistics(*metric, refs, {hyp});
    (void)corpus_score(*metric, stats);
    (void)metric->score_from_stats(stats[0], StatsPrecision::Float32);
  }
  return 0;
}
