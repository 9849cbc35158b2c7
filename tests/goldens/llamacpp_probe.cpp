// What llama.cpp itself computes for a GGUF file: reads prompts as token ids (one prompt
// per line, ids separated by spaces) from stdin and prints, per prompt, one JSON line with
// the logits after the prompt and `steps` greedy tokens (with the logits at each step).
// Built and run by make_smollm2_llamacpp_golden.py against a llama.cpp source tree; not
// part of pivotmt's build. Caches in F32 and flash attention off, so what differs from
// pivotmt is the activations' Q8 rounding and the order of sums, nothing else.
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "llama.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: llamacpp_probe MODEL.gguf STEPS THREADS < prompts\n");
    return 2;
  }
  const int steps = std::atoi(argv[2]);
  llama_log_set([](ggml_log_level, const char*, void*) {}, nullptr);
  llama_backend_init();
  llama_model* model = llama_model_load_from_file(argv[1], llama_model_default_params());
  if (!model) return 1;
  const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
  std::string line;
  while (std::getline(std::cin, line)) {
    std::vector<llama_token> ids;
    std::istringstream in(line);
    for (llama_token t; in >> t;) ids.push_back(t);
    if (ids.empty()) continue;
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = uint32_t(ids.size() + steps + 8);
    cp.n_batch = cp.n_ubatch = uint32_t(ids.size());
    cp.n_threads = cp.n_threads_batch = std::atoi(argv[3]);
    cp.type_k = cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    llama_context* ctx = llama_init_from_model(model, cp);
    if (!ctx || llama_decode(ctx, llama_batch_get_one(ids.data(), int32_t(ids.size()))) != 0) return 1;
    std::printf("{\"prompt\": %zu, \"steps\": [", ids.size());
    for (int s = 0; s <= steps; ++s) {
      const float* logits = llama_get_logits_ith(ctx, -1);
      int best = 0;
      for (int v = 1; v < n_vocab; ++v)
        if (logits[v] > logits[best]) best = v;
      std::printf("%s{\"token\": %d, \"logits\": [", s ? ", " : "", best);
      for (int v = 0; v < n_vocab; ++v) std::printf("%s%.9g", v ? "," : "", logits[v]);
      std::printf("]}");
      if (s == steps) break;
      llama_token next = best;
      if (llama_decode(ctx, llama_batch_get_one(&next, 1)) != 0) return 1;
    }
    std::printf("]}\n");
    std::fflush(stdout);
    llama_free(ctx);
  }
  llama_model_free(model);
  return 0;
}
