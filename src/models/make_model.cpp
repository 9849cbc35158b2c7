#include "models/make_model.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <thread>

#include <fmt/format.h>

#include "core/error.h"
#include "core/progress.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "models/weights.h"

namespace pivotmt {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
struct Shape {
  int64_t layers, hidden, heads, kv_heads, ffn, vocab, context;
  double rope_theta;
};

Shape preset_shape(const MakeModelOptions& o) {
  const bool gqa = o.arch != "llama";
  // Vocabularies of the real models: TowerInstruct 32007, Mistral 32000, Hermes-2-Pro 128288.
  const int64_t vocab = o.arch == "llama" ? 32007 : o.arch == "mistral" ? 32000 : 128288;
  const double theta = o.arch == "llama3" ? 500000.0 : o.arch == "mistral" ? 1000000.0 : 10000.0;
  const int64_t ctx = o.arch == "llama" ? 4096 : o.arch == "mistral" ? 32768 : 8192;
  if (o.preset == "tiny") return {2, 64, 4, gqa ? 2 : 4, 172, vocab, ctx, theta};
  // ~110M parameters with the Llama-2 vocabulary.
  if (o.preset == "small") return {8, 768, 12, gqa ? 4 : 12, 2304, vocab, ctx, theta};
  if (o.preset == "7b-shape") {
    if (o.arch == "llama") return {32, 4096, 32, 32, 11008, vocab, ctx, theta};
    return {32, 4096, 32, 8, 14336, vocab, ctx, theta};
  }
  throw Error(fmt::format("unknown preset '{}' (expected tiny, small or 7b-shape)", o.preset));
}

Shape model_shape(const MakeModelOptions& o) {
  Shape s = preset_shape(o);
  if (o.layers) {
    if (*o.layers < 1) throw Error(fmt::format("--layers {}: at least 1", *o.layers));
    s.layers = *o.layers;
  }
  return s;
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Fills `count` normal(mean, std) values (Box-Muller) from a chunk-specific stream.
void fill_normal(uint64_t seed, float mean, float std, float* out, size_t count) {
  uint64_t state = seed;
  for (size_t i = 0; i < count; i += 2) {
    const double u1 = (double(splitmix64(state) >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
    const double u2 = double(splitmix64(state) >> 11) * 0x1.0p-53;
    const double r = std::sqrt(-2.0 * std::log(u1));
    out[i] = mean + std * float(r * std::cos(2.0 * M_PI * u2));
    if (i + 1 < count) out[i + 1] = mean + std * float(r * std::sin(2.0 * M_PI * u2));
  }
}

constexpr int64_t kByteTokenizerImEnd = 260, kByteTokenizerVocab = 262;

// See MakeModelOptions::byte_tokenizer. The structure (normalizer, decoder, post-processor)
// is Llama-2's tokenizer.json with an empty merge list.
void write_byte_tokenizer(const std::string& dir) {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) vocab[fmt::format("<0x{:02X}>", b)] = 3 + b;
  vocab["\u2581"] = 259;
  const auto added = [](int id, const char* text) {
    return json{{"id", id}, {"content", text}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                {"normalized", false}, {"special", true}};
  };
  const json tokenizer = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", {added(0, "<unk>"), added(1, "<s>"), added(2, "</s>"), added(260, "<|im_end|>"), added(261, "<|im_start|>")}},
      {"normalizer", {{"type", "Sequence"}, {"normalizers", {{{"type", "Prepend"}, {"prepend", "\u2581"}},
                                                             {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}}}}},
      {"pre_tokenizer", nullptr},
      {"post_processor", {{"type", "TemplateProcessing"},
                          {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
                          {"pair", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                    {{"SpecialToken", {{"id", "<s>"}, {"type_id", 1}}}}, {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
                          {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder", {{"type", "Sequence"}, {"decoders", {{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                                                       {{"type", "ByteFallback"}}, {{"type", "Fuse"}},
                                                       {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", "<unk>"}, {"continuing_subword_prefix", nullptr},
                 {"end_of_word_suffix", nullptr}, {"fuse_unk", true}, {"byte_fallback", true}, {"vocab", vocab},
                 {"merges", json::array()}}},
  };
  write_json_file((fs::path(dir) / "tokenizer.json").string(), tokenizer);
  const json config = {
      {"add_bos_token", true},
      {"add_eos_token", false},
      {"bos_token", "<s>"},
      {"eos_token", "<|im_end|>"},
      {"unk_token", "<unk>"},
      {"legacy", true},
      {"model_max_length", 4096},
      {"tokenizer_class", "LlamaTokenizer"},
      {"clean_up_tokenization_spaces", false},
      // TowerInstruct's template (REFERENCE §4).
      {"chat_template",
       "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']}}{% if (loop.last "
       "and add_generation_prompt) or not loop.last %}{{ '<|im_end|>' + '\n'}}{% endif %}{% endfor %}{% if "
       "add_generation_prompt and messages[-1]['role'] != 'assistant' %}{{ '<|im_start|>assistant\n' }}{% endif %}"},
  };
  write_json_file((fs::path(dir) / "tokenizer_config.json").string(), config);
}

void copy_tokenizer(const std::string& from, const std::string& to) {
  if (!fs::is_directory(from)) throw Error(fmt::format("{}: tokenizer directory not found", from));
  size_t copied = 0;
  for (const auto& e : fs::directory_iterator(from)) {
    const std::string name = e.path().filename().string();
    const bool tokenizer_file = name.starts_with("tokenizer") || name == "special_tokens_map.json" ||
                                name == "added_tokens.json" || name.starts_with("vocab.") || name == "merges.txt";
    if (e.is_regular_file() && tokenizer_file) {
      fs::copy_file(e.path(), fs::path(to) / name, fs::copy_options::overwrite_existing);
      ++copied;
    }
  }
  if (copied == 0) throw Error(fmt::format("{}: no tokenizer files (tokenizer.json, tokenizer.model, ...)", from));
}
}  // namespace

json make_model_config_json(const MakeModelOptions& o) {
  if (o.arch != "llama" && o.arch != "mistral" && o.arch != "llama3")
    throw Error(fmt::format("unknown --arch '{}' (expected llama, mistral or llama3)", o.arch));
  const Shape s = model_shape(o);
  const int64_t vocab = o.vocab_size.value_or(o.byte_tokenizer ? kByteTokenizerVocab : s.vocab);
  const char* dtype = o.dtype == DType::F32 ? "float32" : o.dtype == DType::BF16 ? "bfloat16" : "float16";
  json c = {
      {"architectures", {o.arch == "mistral" ? "MistralForCausalLM" : "LlamaForCausalLM"}},
      {"model_type", o.arch == "mistral" ? "mistral" : "llama"},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"bos_token_id", o.arch == "llama3" ? 128000 : 1},
      {"eos_token_id", o.arch == "llama" ? 32005 : o.arch == "llama3" ? 128003 : 2},
      {"hidden_act", "silu"},
      {"hidden_size", s.hidden},
      {"initializer_range", o.std},
      {"intermediate_size", s.ffn},
      {"max_position_embeddings", s.context},
      {"num_attention_heads", s.heads},
      {"num_hidden_layers", s.layers},
      {"num_key_value_heads", s.kv_heads},
      {"rms_norm_eps", 1e-5},
      {"rope_scaling", nullptr},
      {"rope_theta", s.rope_theta},
      {"tie_word_embeddings", false},
      {"torch_dtype", dtype},
      {"use_cache", true},
      {"vocab_size", vocab},
  };
  if (o.arch == "mistral") c["sliding_window"] = nullptr;
  if (vocab <= std::max(c["bos_token_id"].get<int64_t>(), c["eos_token_id"].get<int64_t>())) {
    // A reduced vocabulary cannot hold the real special ids: use Llama-2's <s>=1, </s>=2.
    if (vocab <= 2) throw Error(fmt::format("--vocab {} is too small (bos 1 and eos 2 need at least 3)", vocab));
    c["bos_token_id"] = 1;
    c["eos_token_id"] = 2;
  }
  if (o.byte_tokenizer) {
    if (vocab < kByteTokenizerVocab)
      throw Error(fmt::format("--vocab {} cannot hold the byte tokenizer's {} tokens", vocab, kByteTokenizerVocab));
    c["eos_token_id"] = kByteTokenizerImEnd;  // chat turns end with <|im_end|>, as in TowerInstruct
  }
  return c;
}

uint64_t make_model(const MakeModelOptions& o) {
  if (o.out_dir.empty()) throw Error("make-model: --out is required");
  if (o.dtype != DType::F32 && o.dtype != DType::F16 && o.dtype != DType::BF16)
    throw Error("make-model: --dtype must be f32, bf16 or f16");
  if (o.shards < 1) throw Error("make-model: --shards must be at least 1");
  const json config = make_model_config_json(o);
  const ModelConfig cfg = parse_model_config(config, "generated config");
  const auto weights = llama_weights(cfg);
  if (static_cast<size_t>(o.shards) > weights.size())
    throw Error(fmt::format("make-model: --shards {} exceeds the {} tensors", o.shards, weights.size()));

  fs::create_directories(o.out_dir);
  write_json_file((fs::path(o.out_dir) / "config.json").string(), config);
  json gen = {{"bos_token_id", config["bos_token_id"]}, {"eos_token_id", config["eos_token_id"]}, {"do_sample", false}};
  write_json_file((fs::path(o.out_dir) / "generation_config.json").string(), gen);
  if (!o.tokenizer_dir.empty() && o.byte_tokenizer) throw Error("make-model: --tokenizer and --byte-tokenizer exclude each other");
  if (!o.tokenizer_dir.empty()) copy_tokenizer(o.tokenizer_dir, o.out_dir);
  if (o.byte_tokenizer) write_byte_tokenizer(o.out_dir);

  // Shards: consecutive tensors, balanced by bytes.
  uint64_t total_bytes = 0;
  for (const auto& w : weights) total_bytes += w.numel() * dtype_size(o.dtype);
  std::vector<std::vector<TensorSpec>> shards(static_cast<size_t>(o.shards));
  std::map<std::string, WeightRole> roles;
  uint64_t running = 0;
  size_t previous = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    const auto& w = weights[i];
    roles[w.name] = w.role;
    size_t shard = std::min<size_t>(shards.size() - 1, running * shards.size() / std::max<uint64_t>(1, total_bytes));
    // No shard left empty: advance at most one shard a tensor, and leave at least one
    // tensor for every later shard.
    shard = std::clamp(shard, previous, i == 0 ? size_t{0} : previous + 1);
    shard = std::max(shard, shards.size() - std::min(shards.size(), weights.size() - i));
    previous = shard;
    shards[shard].push_back({w.name, o.dtype, w.shape});
    running += w.numel() * dtype_size(o.dtype);
  }

  Progress progress("make-model", total_bytes, ProgressUnit::Bytes);
  uint64_t written = 0;
  const unsigned threads = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  auto fill = [&](const TensorSpec& spec, std::span<std::byte> out) {
    const size_t n = out.size() / dtype_size(spec.dtype);
    const bool norm = roles.at(spec.name) == WeightRole::Norm;
    const uint64_t base = fnv1a(spec.name) ^ (o.seed * 0x9e3779b97f4a7c15ull);
    constexpr size_t kChunk = 1 << 16;  // values per independent stream
    const size_t chunks = (n + kChunk - 1) / kChunk;
    auto work = [&](unsigned t) {
      std::vector<float> tmp(kChunk);
      for (size_t c = t; c < chunks; c += threads) {
        const size_t begin = c * kChunk, count = std::min(kChunk, n - begin);
        fill_normal(base + c * 0x632be59bd9b4e019ull, norm ? 1.0f : 0.0f, o.std, tmp.data(), count);
        convert_floats(DType::F32, tmp.data(), spec.dtype, out.data() + begin * dtype_size(spec.dtype), count);
      }
    };
    std::vector<std::thread> pool;
    for (unsigned t = 1; t < threads && t < chunks; ++t) pool.emplace_back(work, t);
    work(0);
    for (auto& th : pool) th.join();
    written += out.size();
    progress.set(written);
  };

  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  if (o.shards == 1) {
    write_safetensors((fs::path(o.out_dir) / "model.safetensors").string(), shards[0], metadata, fill);
  } else {
    json weight_map = json::object();
    for (size_t s = 0; s < shards.size(); ++s) {
      const std::string name = fmt::format("model-{:05}-of-{:05}.safetensors", s + 1, shards.size());
      for (const auto& t : shards[s]) weight_map[t.name] = name;
      write_safetensors((fs::path(o.out_dir) / name).string(), shards[s], metadata, fill);
    }
    write_json_file((fs::path(o.out_dir) / "model.safetensors.index.json").string(),
                    {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}});
  }
  progress.finish();
  return parameter_count(weights);
}

}  // namespace pivotmt
