// `pivotmt generate`: run the engine on a prompt, a chat or token ids.
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "chat/chat_template.h"
#include "commands.h"
#include "study_options.h"
#include "backends/backend.h"
#include "core/device.h"
#include "core/error.h"
#include "engine/generate.h"
#include "hub/hub_client.h"
#include "io/json_fields.h"
#include "io/json_file.h"
#include "models/model_config.h"

namespace pivotmt::cli {

void register_generate(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Generate text with a Llama-family model on the CPU or a GPU");
  static std::string model, prompt, messages, ids_file, context = "allow", dtype = "f16", device = "auto", adapter;
  static bool greedy = false, ignore_eos = false, as_json = false;
  static size_t max_new = 600, max_batch = 32;
  static uint64_t seed = 0;
  static std::optional<float> temperature, top_p;
  static std::optional<int> top_k;
  static std::vector<std::string> stops;
  cmd->add_option("--model,-m", model, "Model directory or hub id")->required();
  auto* p = cmd->add_option("--prompt", prompt, "Prompt text (tokenized with special tokens)");
  auto* m = cmd->add_option("--messages", messages, "Chat messages JSON, rendered with the chat template");
  auto* i = cmd->add_option("--ids", ids_file, "JSON: [[ids...], ...] or [{\"name\", \"ids\"}, ...]");
  p->excludes(m)->excludes(i);
  m->excludes(i);
  cmd->add_flag("--greedy", greedy, "Greedy decoding (default: the model's generation_config)");
  cmd->add_option("--max-new-tokens", max_new, "Tokens to generate at most")->capture_default_str();
  cmd->add_flag("--ignore-eos", ignore_eos, "Do not stop at EOS");
  cmd->add_option("--seed", seed, "Sampling seed")->capture_default_str();
  check_sampling_options(cmd->add_option("--temperature", temperature, "Sampling temperature"),
                         cmd->add_option("--top-k", top_k, "Top-k"), cmd->add_option("--top-p", top_p, "Top-p"));
  cmd->add_option("--stop", stops, "Stop string (repeatable)");
  cmd->add_option("--context-policy", context, "error | truncate-left | allow")
      ->check(CLI::IsMember({"error", "truncate-left", "allow"}))
      ->capture_default_str();
  cmd->add_option("--weights,--dtype", dtype,
                  "Weight storage: f32 | f16 | int8 (weight-only, per output channel) | q8 (int8 weights and activations) "
                  "| nf4 (bitsandbytes' 4-bit) | gguf (a GGUF model's Q8_0/Q4_0/Q4_1/Q4_K/Q5_K/Q6_K blocks as stored, F32 "
                  "activations) | gguf-q8 (the Q8_0/Q4_0/Q4_1 blocks times int8 activations, as llama.cpp computes: "
                  "faster, less exact; K-quants as with gguf); the same "
                  "option as ablate's and translate's")
      ->check(CLI::IsMember({"f32", "f16", "int8", "q8", "nf4", "gguf", "gguf-q8"}))
      ->capture_default_str();
  cmd->add_option("--adapter", adapter, "A PEFT LoRA adapter directory, applied unmerged (CPU)");
  cmd->add_option("--device", device, "auto | cpu | cuda[:N] (auto: cuda:0 when a GPU is visible and --weights is f16)")->capture_default_str();
  cmd->add_option("--max-batch", max_batch, "Sequences decoded together")->capture_default_str();
  cmd->add_flag("--json", as_json, "One JSON object per prompt");
  cmd->callback([] {
    const Device where = resolve_device(device, dtype == "f16");
    const std::string dir = resolve_repo_path(model, RepoType::Model);
    const ModelConfig cfg = load_model_config(dir);
    const GenerationConfig gen = load_generation_config(dir, cfg);
    std::unique_ptr<Tokenizer> tok;
    try {
      tok = load_tokenizer(dir);
    } catch (const Error& e) {
      if (ids_file.empty()) throw;
    }
    std::vector<std::string> names;
    std::vector<std::vector<TokenId>> inputs;
    if (!ids_file.empty()) {
      const auto j = read_json_file(ids_file);
      if (!j.is_array()) throw FormatError(ids_file + ": expected a JSON array");
      for (size_t k = 0; k < j.size(); ++k) {
        // Each entry: a list of ids, or {"name": ..., "ids": [...]}. Ids through the typed
        // reader: a float id had been a cast out of int's range.
        const std::string where = fmt::format("{}: entry {}", ids_file, k);
        const auto& e = j[k];
        names.push_back(e.is_object() ? field_string(e, "name", where, std::to_string(k)) : std::to_string(k));
        const auto& list = e.is_object() ? required_field(e, "ids", where) : e;
        if (!list.is_array()) throw FormatError(fmt::format("{}: expected a list of token ids", where));
        std::vector<TokenId> ids;
        for (const auto& id : list) ids.push_back(TokenId(json_integer(id, where + ": id", 0, std::numeric_limits<TokenId>::max())));
        inputs.push_back(std::move(ids));
      }
    } else if (!messages.empty()) {
      const auto rendered = apply_chat_template(*tok, messages_from_json(read_json_file(messages), messages), true);
      const auto enc = encode_rendered_prompt(*tok, rendered, DuplicateBos::Reproduce);
      if (enc.duplicate_bos) fmt::print(stderr, "warning: the chat template writes BOS and the tokenizer adds one: two BOS tokens\n");
      names.push_back("messages");
      inputs.push_back(enc.ids);
    } else if (!prompt.empty()) {
      names.push_back("prompt");
      inputs.push_back(tok->encode(prompt, true));
    } else {
      throw Error("give --prompt, --messages or --ids");
    }
    LoadOptions load;
    load.weights = dtype == "f32"                      ? DType::F32
                   : dtype == "int8" || dtype == "q8" ? DType::I8
                   : dtype == "nf4"                   ? DType::NF4
                   : dtype == "gguf" || dtype == "gguf-q8" ? DType::GGML
                                                           : DType::F16;
    load.int8_activations = dtype == "q8" || dtype == "gguf-q8";
    load.adapter = adapter;
    load.device = where;
    LlamaModel lm(dir, load);
    if (!as_json) fmt::print(stderr, "loaded on {} in {:.2f} s\n", lm.describe_device(), lm.load_seconds());
    std::vector<GenerationRequest> requests;
    for (const auto& ids : inputs) {
      GenerationRequest r;
      r.prompt = ids;
      r.max_new_tokens = max_new;
      r.sampling.greedy = greedy || (!gen.do_sample && !temperature && !top_k && !top_p);
      r.sampling.temperature = float(temperature.value_or(float(gen.temperature)));
      r.sampling.top_k = top_k.value_or(int(gen.top_k));
      r.sampling.top_p = top_p.value_or(float(gen.top_p));
      r.sampling.seed = seed;
      r.eos_ids.assign(gen.eos_token_ids.begin(), gen.eos_token_ids.end());
      r.ignore_eos = ignore_eos;
      r.stop_strings = stops;
      requests.push_back(r);
    }
    EngineOptions options;
    options.max_batch = max_batch;
    options.context = context == "error" ? ContextPolicy::Error : context == "truncate-left" ? ContextPolicy::TruncateLeft : ContextPolicy::Allow;
    const bool stream = !as_json && requests.size() == 1 && tok;
    std::vector<TokenId> streamed;
    std::string printed;
    GenerationHooks hooks;
    hooks.on_token = [&](size_t, TokenId t) {
      if (!stream) return;
      streamed.push_back(t);
      const std::string text = tok->decode(streamed, true);
      if (text.size() > printed.size() && text.compare(0, printed.size(), printed) == 0 &&
          text.find("\xEF\xBF\xBD", printed.size()) == std::string::npos) {  // wait for whole characters
        fmt::print("{}", text.substr(printed.size()));
        std::fflush(stdout);
        printed = text;
      }
    };
    const auto results = Engine(lm, tok.get()).generate(requests, options, hooks);
    for (size_t k = 0; k < results.size(); ++k) {
      const auto& r = results[k];
      if (results[k].context_overflow)
        fmt::print(stderr, "warning: {}: prompt + max_new_tokens exceed the model's {} positions (policy allow)\n",
                   names[k], cfg.max_position_embeddings);
      if (as_json) {
        nlohmann::json j = {{"name", names[k]}, {"ids", r.tokens}, {"text", r.text},
                            {"finish_reason", finish_reason_name(r.finish)}, {"prompt_tokens", r.prompt_tokens},
                            {"context_overflow", r.context_overflow}, {"truncated_tokens", r.truncated_tokens},
                            {"prefill_seconds", r.prefill_seconds}, {"decode_seconds", r.decode_seconds},
                            {"device", lm.device().to_string()}, {"device_name", lm.describe_device()},
                            {"load_seconds", lm.load_seconds()}, {"preemptions", r.preemptions}};
        if (lm.device().kind == DeviceKind::CUDA) j["peak_device_memory_bytes"] = cuda::peak_allocated_bytes(lm.device().index);
        fmt::print("{}\n", j.dump());
      } else if (stream) {
        fmt::print("{}\n", r.text.substr(std::min(printed.size(), r.text.size())));
        fmt::print(stderr, "[{} tokens, {}; prefill {:.3f} s, decode {:.3f} s]\n", r.tokens.size(),
                   finish_reason_name(r.finish), r.prefill_seconds, r.decode_seconds);
      } else {
        fmt::print("{}\t{}\n", names[k], r.text);
      }
    }
  });
}

}  // namespace pivotmt::cli
