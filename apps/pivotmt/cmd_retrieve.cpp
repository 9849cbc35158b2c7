// index / retrieve / data describe: corpora and few-shot example retrieval.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backends/backend.h"
#include "commands.h"
#include <filesystem>

#include "core/error.h"
#include "hub/hub_client.h"
#include "io/table.h"
#include "retrieval/index.h"

namespace pivotmt::cli {

void register_retrieval(CLI::App& app) {
  {
    auto* cmd = app.add_subcommand("index", "Build (or reuse) a retrieval index of a corpus split");
    static IndexSpec spec;
    static std::string out;
    cmd->add_option("--data", spec.data, "A CSV/TSV/JSONL/Parquet file, a directory of splits, or a hub dataset id")->required();
    cmd->add_option("--split", spec.split, "Split")->capture_default_str();
    cmd->add_option("--pivot", spec.pivot, "Pivot column (e.g. hin, msa or translation.msa)")->required();
    cmd->add_option("--source", spec.source, "Source column")->required();
    cmd->add_option("--target", spec.target, "Target column")->required();
    cmd->add_option("--retriever", spec.retriever, "minilm (exact L2) | minilm-hnsw (FAISS HNSW) | bm25 | bm25-char | chrf | random")
        ->check(CLI::IsMember({"minilm", "minilm-hnsw", "bm25", "bm25-char", "chrf", "random"}))
        ->capture_default_str();
    cmd->add_option("--model", spec.model, "Sentence encoder for minilm (directory or hub id, e.g. "
                                           "sentence-transformers/all-MiniLM-L12-v2)");
    cmd->add_option("--seed", spec.seed, "Seed of the random retriever");
    static std::string device = "cpu";
    cmd->add_option("--device", device, "Where minilm embeds the pool: cpu | cuda[:N] | auto (F32 on every device)")
        ->capture_default_str();
    cmd->add_option("--out", out, "Index directory")->required();
    cmd->callback([] {
      IndexSpec s = spec;
      s.device = resolve_device(device);
      if (!s.model.empty()) s.model = resolve_repo_path(s.model, RepoType::Model);
      // A hub dataset id: its Parquet / JSON / CSV files, fetched into the cache.
      if (!std::filesystem::exists(s.data))
        s.data = resolve_repo_path(s.data, RepoType::Dataset, {"*.parquet", "*.jsonl", "*.json", "*.csv", "*.tsv"});
      bool rebuilt = false;
      const auto ix = build_index(s, out, &rebuilt);
      fmt::print("{} {}: {} rows ({} dropped with an empty pivot, source or target), retriever {}\n",
                 rebuilt ? "built" : "up to date", out, ix.pool.rows.size(), ix.manifest.value("dropped", 0),
                 ix.retriever->name());
    });
  }
  {
    auto* cmd = app.add_subcommand("retrieve", "The k examples the study would show for a query");
    static std::string index, query;
    static size_t k = 5;
    static bool as_json = false;
    cmd->add_option("--index", index, "Index directory")->required();
    cmd->add_option("--query", query, "The query's pivot text")->required();
    cmd->add_option("-k", k, "Examples (at most 10 in the study's semantics)")->capture_default_str();
    cmd->add_flag("--json", as_json, "Print JSON");
    cmd->callback([] {
      const auto ix = load_index(index);
      const auto found = retrieve(*ix.retriever, ix.pool, query, k, std::max<size_t>(10, k));
      nlohmann::json out = nlohmann::json::array();
      for (const auto& n : found) {
        const auto& r = ix.pool.rows[n.index];
        if (as_json)
          out.push_back({{"row", r.row}, {"distance", n.distance}, {"pivot", r.pivot}, {"source", r.source}, {"target", r.target}});
        else
          fmt::print("{:.4f}\t{}\t{}\t{}\n", n.distance, r.pivot, r.source, r.target);
      }
      if (as_json) fmt::print("{}\n", out.dump(2));
    });
  }
  {
    auto* data = app.add_subcommand("data", "Datasets");
    data->require_subcommand(1);
    auto* describe = data->add_subcommand("describe", "Columns, row counts and sample rows of a dataset file");
    static std::string path;
    static size_t samples = 3;
    describe->add_option("DATA", path, "CSV / TSV / JSONL / Parquet file, a directory of splits, or a hub dataset id")->required();
    describe->add_option("--samples", samples, "Rows to show")->capture_default_str();
    describe->callback([] {
      if (!std::filesystem::exists(path))
        path = resolve_repo_path(path, RepoType::Dataset, {"*.parquet", "*.jsonl", "*.json", "*.csv", "*.tsv"});
      std::vector<std::pair<std::string, std::string>> splits;
      if (std::filesystem::is_directory(path)) {
        for (const char* s : {"train", "validation", "dev", "test"}) {
          try {
            resolve_split_files(path, s);
            splits.emplace_back(s, s);
          } catch (const Error&) {
          }
        }
      } else {
        splits.emplace_back("(file)", path);
      }
      if (splits.empty()) throw Error(fmt::format("{}: no split files found", path));
      for (const auto& [name, file] : splits) {
        const Table t = name == "(file)" ? read_table(file) : read_split(path, name);
        fmt::print("split {}: {} — {} rows\ncolumns: {}\n", name, name == "(file)" ? file : path, t.rows.size(), fmt::join(t.columns, ", "));
        for (size_t r = 0; r < std::min(samples, t.rows.size()); ++r) {
          fmt::print("  row {}:\n", r);
          for (size_t c = 0; c < t.columns.size(); ++c) {
            std::string v = t.rows[r][c].value_or("(missing)");
            if (v.size() > 120) v = v.substr(0, 117) + "...";
            fmt::print("    {}: {}\n", t.columns[c], v);
          }
        }
      }
    });
  }
}

}  // namespace pivotmt::cli
