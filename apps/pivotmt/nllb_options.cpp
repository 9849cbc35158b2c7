#include "nllb_options.h"

#include <filesystem>

#include <fmt/format.h>

#include "core/error.h"
#include "experiment/nllb_translate.h"
#include "hub/hub_client.h"

namespace pivotmt::cli {
namespace fs = std::filesystem;

void add_nllb_options(CLI::App* cmd, NllbArgs& a, const std::string& prefix) {
  const std::string p = "--" + prefix;
  a.options.push_back(cmd->add_option(p + "src-lang", a.src_lang,
                                      "NLLB source language code, e.g. mar_Deva (default: from the source column: " +
                                          std::string("hin hin_Deva, mar mar_Deva, gom gom_Deva, eng/en eng_Latn, msa "
                                                      "arb_Arab, tn aeb_Arab)")));
  a.options.push_back(cmd->add_option(p + "tgt-lang", a.tgt_lang, "NLLB target language code, e.g. gom_Deva (default: from the target column)"));
  a.options.push_back(cmd->add_option(p + "beams", a.beams, "Beam search with this many beams (default: the model's generation_config, 1 for NLLB-200)"));
  a.options.push_back(cmd->add_option(p + "max-length", a.max_length, "Decoder tokens at most, its start token included (default: generation_config, 200)"));
  a.options.push_back(cmd->add_option(p + "length-penalty", a.length_penalty, "Beam scores: sum / length^penalty (default 1.0)"));
  a.options.push_back(cmd->add_option(p + "no-repeat-ngram-size", a.no_repeat_ngram_size, "Never repeat an n-gram of this size (default 0: off)"));
  a.options.push_back(cmd->add_option(p + "early-stopping", a.early_stopping, "Beam search stops: true | false | never (as transformers; default false)")
                          ->check(CLI::IsMember({"true", "false", "never"})));
  a.options.push_back(cmd->add_flag(p + "from-pivot", a.from_pivot, "Translate the pivot sentence instead of the source"));
  a.options.push_back(cmd->add_option(p + "batch", a.batch, "Sentences decoded together (speed only)")->capture_default_str());
}

bool any_nllb_option_given(const NllbArgs& a) {
  for (const auto* o : a.options)
    if (o->count() > 0) return true;
  return false;
}

std::string resolve_nllb_model(const std::string& arg, std::string* weights_dir) {
  std::string dir = arg;
  if (!fs::is_directory(arg)) {
    if (!RepoRef::looks_like_repo_id(arg))
      throw Error(fmt::format("'{}' is neither a directory nor a hub id (org/name[@revision])", arg));
    HubClient client(HubConfig::from_env());
    const RepoRef repo = RepoRef::parse(arg, RepoType::Model);
    dir = client.download_snapshot(repo, {"*.json", "*.safetensors", "sentencepiece.bpe.model"});
    bool has_safetensors = false;
    for (const auto& e : fs::directory_iterator(dir)) has_safetensors = has_safetensors || e.path().extension() == ".safetensors";
    // facebook/nllb-200-* ship pytorch_model.bin only.
    if (!has_safetensors) client.download_file(repo, "pytorch_model.bin");
  }
  if (weights_dir) {
    const HubConfig hub = HubConfig::from_env();
    *weights_dir = nllb_weights_dir(dir, (fs::path(hub.hf_home) / "pivotmt" / "nllb").string());
    if (*weights_dir == dir) weights_dir->clear();
  }
  return dir;
}

std::optional<EarlyStopping> parse_early_stopping(const std::string& text) {
  if (text.empty()) return std::nullopt;
  return text == "true" ? EarlyStopping::True : text == "never" ? EarlyStopping::Never : EarlyStopping::False;
}

void apply_nllb_overrides(const NllbArgs& a, Seq2SeqSettings& s) {
  if (a.beams) s.num_beams = *a.beams;
  if (a.max_length) s.max_length = *a.max_length;
  if (a.no_repeat_ngram_size) s.no_repeat_ngram_size = *a.no_repeat_ngram_size;
  if (a.length_penalty) s.length_penalty = *a.length_penalty;
  if (const auto e = parse_early_stopping(a.early_stopping)) s.early_stopping = *e;
  s.batch_size = a.batch;
}

BaselineConfig baseline_config(const std::string& model, const std::string& weights, const NllbArgs& a) {
  BaselineConfig b;
  b.model = resolve_nllb_model(model, &b.weights_dir);
  if (!is_m2m100_model(b.model))
    throw Error(fmt::format("--baseline-model {}: not an NLLB-200 / M2M100 model (config.json's model_type is not "
                            "\"m2m_100\")",
                            model));
  b.weights = weights;
  b.src_lang = a.src_lang;
  b.tgt_lang = a.tgt_lang;
  b.from_pivot = a.from_pivot;
  b.num_beams = a.beams;
  b.max_length = a.max_length;
  b.no_repeat_ngram_size = a.no_repeat_ngram_size;
  b.length_penalty = a.length_penalty;
  b.early_stopping = parse_early_stopping(a.early_stopping);
  b.batch = a.batch;
  return b;
}

}  // namespace pivotmt::cli
