// `pivotmt translate [CONFIG.toml] [options]`: ad-hoc translation with the study's retrieval
// and prompts. Input lines come from a file or stdin: "pivot<TAB>source" when the prompt
// shows the pivot sentence, else the source sentence alone; a table file (.csv, .tsv,
// .jsonl, .parquet) is read by its pivot and source columns instead. Translations go out one
// per line in input order (line breaks inside one become spaces; --json keeps them).
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backends/backend.h"
#include "commands.h"
#include "core/error.h"
#include "core/progress.h"
#include "hub/file_hash.h"
#include "io/table.h"
#include "experiment/translate.h"
#include "models/m2m100_model.h"
#include "models/model_config.h"
#include "retrieval/corpus.h"
#include "study_options.h"
#include "nllb_options.h"
#include "experiment/nllb_translate.h"
#include "hub/hub_client.h"

namespace pivotmt::cli {
namespace {
namespace fs = std::filesystem;

struct Query {
  std::string pivot, source;
  std::string where;  // "file:line", for messages
};


bool is_table_file(const std::string& path) {
  for (const char* ext : {".csv", ".tsv", ".jsonl", ".json", ".parquet"})
    if (path.ends_with(ext)) return true;
  return false;
}

Query parse_line(const std::string& line, const std::string& where, bool needs_pivot) {
  std::string text = line;
  if (!text.empty() && text.back() == '\r') text.pop_back();
  const auto tab = text.find('\t');
  if (needs_pivot) {
    if (tab == std::string::npos)
      throw Error(fmt::format("{}: expected 'pivot<TAB>source' (this prompt shows the pivot sentence)", where));
    return {text.substr(0, tab), text.substr(tab + 1), where};
  }
  return {"", tab == std::string::npos ? text : text.substr(tab + 1), where};
}

std::string default_index_dir(const IndexSpec& spec) {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  const char* home = std::getenv("HOME");
  const fs::path cache = xdg && *xdg ? fs::path(xdg) : fs::path(home && *home ? home : ".") / ".cache";
  const nlohmann::json key = {spec.data, spec.split, spec.pivot, spec.source, spec.target, spec.retriever, spec.model, spec.seed};
  return (cache / "pivotmt" / "indexes" / sha256_hex(key.dump()).substr(0, 16)).string();
}

// Every line of a file, or of stdin for "-".
std::vector<std::string> read_lines(const std::string& input) {
  std::ifstream file;
  if (input != "-") {
    file.open(input, std::ios::binary);
    if (!file) throw Error(fmt::format("cannot read {}", input));
  }
  std::istream& in = input == "-" ? std::cin : file;
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// One translation per output line, as soon as it is there (to the file, else stdout): a
// translation's own line breaks become spaces unless the line is JSON.
void write_output_line(std::ofstream& file, std::string line, bool is_json) {
  if (!is_json)
    for (char& c : line)
      if (c == '\n' || c == '\r') c = ' ';
  if (file.is_open()) {
    file << line << '\n';
    file.flush();
  } else {
    fmt::print("{}\n", line);
    std::fflush(stdout);
  }
}

// The NLLB path: a dedicated MT model, no retrieval, no prompt. Each input line is the text
// to translate ("pivot<TAB>source": the source, or the pivot with --from-pivot); a table
// file gives its source (or pivot) column.
void translate_nllb(const AblationConfig& config, const std::string& model_arg, const NllbArgs& nllb,
                    const std::string& input, const std::string& output, bool as_json) {
  // auto: a GPU when one is visible.
  const Device device = resolve_device(config.device);
  const DType weights = config.weights == "f32"   ? DType::F32
                        : config.weights == "f16" ? DType::F16
                        : config.weights == "int8" ? DType::I8
                                                   : throw Error(fmt::format("--weights {}: NLLB takes f32, f16 or int8", config.weights));
  const NllbLanguages languages = nllb_study_languages(config.pivot, config.source, config.target, nllb.src_lang,
                                                       nllb.tgt_lang, nllb.from_pivot, "--src-lang", "--tgt-lang");
  const std::string& src_lang = languages.src_lang;
  const std::string& tgt_lang = languages.tgt_lang;
  const bool from_pivot = languages.from_pivot;
  const std::string& column = languages.column;
  if (!languages.proxy_note.empty() && !Progress::quiet()) fmt::print(stderr, "note: {}\n", languages.proxy_note);

  std::string weights_dir;
  const std::string dir = resolve_nllb_model(model_arg, &weights_dir);
  const NllbTranslator translator(dir, weights_dir, weights, OpsImpl::Fast, device);
  if (stored_weights(weights, device) != weights && !Progress::quiet())
    fmt::print(stderr, "note: NLLB on {} stores its weights as {} (--weights {} is a CPU storage format)\n",
               translator.model().describe_device(), dtype_name(stored_weights(weights, device)), config.weights);
  (void)translator.tokenizer().language_id(src_lang);  // unknown codes fail before any work
  Seq2SeqSettings settings = translator.settings(tgt_lang);
  apply_nllb_overrides(nllb, settings);

  std::ofstream out_file;
  if (!output.empty()) {
    out_file.open(output, std::ios::binary);
    if (!out_file) throw Error(fmt::format("cannot write {}", output));
  }
  auto emit = [&](const std::string& text, const NllbTranslation& t) {
    std::string line;
    if (as_json) {
      line = nlohmann::json{{"text", text},
                            {"translation", t.text},
                            {"src_lang", src_lang},
                            {"tgt_lang", tgt_lang},
                            {"proxy", languages.proxy_note.empty() ? nlohmann::json() : nlohmann::json(languages.proxy_note)},
                            {"source_tokens", t.source_tokens},
                            {"truncated", t.truncated},
                            {"new_tokens", t.ids.size() > 1 ? t.ids.size() - 1 : 0},
                            {"finish", t.hit_max_length ? "length" : "eos"}}
                 .dump();
    } else {
      line = t.text;
    }
    write_output_line(out_file, std::move(line), as_json);
  };
  auto text_of = [&](const std::string& line) {
    std::string t = line;
    if (!t.empty() && t.back() == '\r') t.pop_back();
    const auto tab = t.find('\t');
    if (tab == std::string::npos) return t;
    return from_pivot ? t.substr(0, tab) : t.substr(tab + 1);
  };
  auto run = [&](const std::vector<std::string>& texts) {
    Progress bar("translate", texts.size(), ProgressUnit::Items);
    size_t done = 0;
    const auto results = translator.translate(texts, src_lang, settings, 0, [&](size_t, const NllbTranslation&) {
      if (texts.size() > 1) bar.set(++done);
    });
    if (texts.size() > 1) bar.finish();
    size_t truncated = 0;
    for (size_t i = 0; i < texts.size(); ++i) {
      emit(texts[i], results[i]);
      truncated += results[i].truncated ? 1 : 0;
    }
    if (truncated)
      fmt::print(stderr, "warning: {} of {} inputs were longer than {} tokens and were cut (as transformers truncates)\n",
                 truncated, texts.size(), translator.tokenizer().model_max_length());
  };
  std::vector<std::string> texts;
  if (input != "-" && is_table_file(input)) {
    const Table t = read_table(input);
    const size_t col = find_column(t, column);
    for (const auto& row : t.rows) texts.push_back(row[col].value_or(""));
  } else if (input == "-" && isatty(STDIN_FILENO)) {  // one line at a time, as typed
    std::string line;
    while (std::getline(std::cin, line)) run({text_of(line)});
    return;
  } else {
    for (const auto& line : read_lines(input)) texts.push_back(text_of(line));
  }
  if (texts.empty()) throw Error(fmt::format("{}: nothing to translate", input == "-" ? "stdin" : input));
  run(texts);
}

}  // namespace

void register_translate(CLI::App& app) {
  auto* cmd = app.add_subcommand("translate", "Translate lines (stdin or a file) with retrieved examples and the study's prompt");
  static StudyArgs args;
  static std::string input = "-", output, index_dir;
  static size_t shots = 5;
  static bool as_json = false;
  cmd->add_option("CONFIG", args.config_file, "TOML file of options (an ablate config works; its k and out are ignored)");
  add_study_options(cmd, args);
  add_generation_options(cmd, args);
  cmd->add_option("--input,-i", input, "Lines to translate ('-': stdin), or a table file with pivot/source columns")
      ->capture_default_str();
  cmd->add_option("--output,-o", output, "Write translations here instead of stdout");
  cmd->add_option("--shots,-k", shots, "Examples per prompt")->capture_default_str()->check(CLI::Range(0, 10));
  cmd->add_option("--index", index_dir, "Index folder (default: under ~/.cache/pivotmt/indexes, keyed by the corpus and retriever)");
  cmd->add_flag("--json", as_json, "One JSON object per line: pivot, source, translation, examples, finish, tokens");
  static NllbArgs nllb;
  add_nllb_options(cmd, nllb, "");
  cmd->callback([cmd] {
    // An ablate config works: its keys translate has no use for (k, out, ...) are skipped.
    if (!args.config_file.empty()) apply_config_file(*cmd, args.config_file, cmd->get_parent()->get_subcommand("ablate"));
    if (args.models.size() > 1) throw Error("translate: one --model at a time");
    // An NLLB-200 model translates directly (no corpus, no prompt).
    if (args.models.size() == 1) {
      const std::string dir = resolve_repo_path(args.models[0], RepoType::Model);
      if (is_m2m100_model(dir)) {
        translate_nllb(args.config, args.models[0], nllb, input, output, as_json);
        return;
      }
      if (any_nllb_option_given(nllb))
        throw Error(fmt::format("--src-lang, --tgt-lang, --beams and the other NLLB options need an NLLB-200 model; {} "
                                "is a {} model",
                                args.models[0], load_model_config(dir).model_type));
    }
    AblationConfig config = resolve_study(args, {"data", "model"});
    const bool needs_pivot = retrieves_by_pivot(config);  // the prompt shows the pivot sentence

    // The queries.
    std::vector<Query> queries;
    const bool interactive = input == "-" && isatty(STDIN_FILENO);
    if (input != "-" && is_table_file(input)) {
      const Table t = read_table(input);
      const size_t src = find_column(t, config.source);
      const size_t piv = needs_pivot ? find_column(t, config.pivot) : src;
      for (size_t r = 0; r < t.rows.size(); ++r)
        queries.push_back({t.rows[r][piv].value_or(""), t.rows[r][src].value_or(""),
                           fmt::format("{}:{}", input, t.row_lines[r])});
    } else if (!interactive) {
      const auto lines = read_lines(input);
      for (size_t n = 0; n < lines.size(); ++n)
        queries.push_back(parse_line(lines[n], fmt::format("{}:{}", input == "-" ? "stdin" : input, n + 1), needs_pivot));
    }

    const IndexSpec spec = study_index_spec(config);
    Translator translator(config, index_dir.empty() ? default_index_dir(spec) : index_dir);

    std::ofstream out_file;
    if (!output.empty()) {
      out_file.open(output, std::ios::binary);
      if (!out_file) throw Error(fmt::format("cannot write {}", output));
    }
    auto emit = [&](const Query& q, const Translation& t) {
      const auto& r = t.result;
      const auto& examples = t.examples;
      const std::string& text = t.text;
      std::string line;
      if (as_json) {
        nlohmann::json ex = nlohmann::json::array();
        for (const auto& e : examples) ex.push_back({{"pivot", e.pivot}, {"source", e.source}, {"target", e.target}});
        line = nlohmann::json{{"pivot", q.pivot}, {"source", q.source}, {"translation", text}, {"examples", ex},
                              {"finish", finish_reason_name(r.finish)}, {"prompt_tokens", r.prompt_tokens},
                              {"new_tokens", r.tokens.size()}, {"context_overflow", r.context_overflow}}
                   .dump();
      } else {
        line = text;
      }
      write_output_line(out_file, std::move(line), as_json);
    };
    auto translate = [&](const std::vector<Query>& batch, size_t first_seed) {
      std::vector<TranslationQuery> queries;
      for (const auto& q : batch) queries.push_back({q.pivot, q.source});
      Progress bar("translate", batch.size(), ProgressUnit::Items);
      size_t done = 0;
      GenerationHooks hooks;
      hooks.on_finished = [&](const std::vector<size_t>& finished, const std::vector<GenerationResult>&) {
        done += finished.size();
        if (batch.size() > 1) bar.set(done);
      };
      const auto translations = translator.translate(queries, shots, first_seed, hooks);
      if (batch.size() > 1) bar.finish();
      for (size_t j = 0; j < batch.size(); ++j) {
        if (translations[j].result.context_overflow)
          fmt::print(stderr, "warning: {}: prompt + max_new_tokens exceed the model's {} positions\n", batch[j].where,
                     translator.model_config().max_position_embeddings);
        emit(batch[j], translations[j]);
      }
    };
    if (interactive) {  // one line at a time, as typed
      std::string line;
      for (size_t n = 0; std::getline(std::cin, line); ++n) {
        try {
          translate({parse_line(line, fmt::format("stdin:{}", n + 1), needs_pivot)}, n);
        } catch (const Error& e) {
          fmt::print(stderr, "error: {}\n", e.what());
        }
      }
      return;
    }
    if (queries.empty()) throw Error(fmt::format("{}: nothing to translate", input == "-" ? "stdin" : input));
    translate(queries, 0);
  });
}

}  // namespace pivotmt::cli
