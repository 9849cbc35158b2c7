#include "retrieval/index.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "core/error.h"
#include "hub/file_hash.h"
#include "io/json_fields.h"
#include "io/json_file.h"
#include "io/temp_path.h"

namespace pivotmt {
namespace fs = std::filesystem;
using json = nlohmann::json;

std::vector<std::string> resolve_split_files(const std::string& data, const std::string& split) {
  if (fs::is_regular_file(data)) return {data};
  if (!fs::is_directory(data)) throw Error(fmt::format("{}: no such file or directory", data));
  for (const char* ext : {".jsonl", ".csv", ".tsv", ".json", ".parquet"})
    for (const fs::path& p : {fs::path(data) / (split + ext), fs::path(data) / "data" / (split + ext)})
      if (fs::exists(p)) return {p.string()};
  std::vector<std::string> shards;
  for (const auto& e : fs::recursive_directory_iterator(data)) {
    if (e.path().extension() != ".parquet") continue;
    const std::string name = e.path().filename().string(), parent = e.path().parent_path().filename().string();
    if (name.starts_with(split + "-") || name.starts_with(split + ".") || parent == split) shards.push_back(e.path().string());
  }
  std::sort(shards.begin(), shards.end());
  if (shards.empty()) throw Error(fmt::format("{}: no '{}' split ({}.jsonl / .csv / .tsv / .parquet, data/{}-*.parquet, {}/*.parquet)", data, split, split, split, split));
  return shards;
}

std::string resolve_split_file(const std::string& data, const std::string& split) {
  return resolve_split_files(data, split).front();
}

Table read_split(const std::string& data, const std::string& split) {
  const auto files = resolve_split_files(data, split);
  Table all = read_table(files.front());
  for (size_t i = 1; i < files.size(); ++i) {
    Table t = read_table(files[i]);
    if (t.columns != all.columns) throw FormatError(fmt::format("{}: columns differ from {}", files[i], files.front()));
    for (auto& r : t.rows) all.rows.push_back(std::move(r));
    for (auto l : t.row_lines) all.row_lines.push_back(l);
  }
  return all;
}

namespace {
json expected_manifest(const IndexSpec& spec, const std::vector<std::string>& files) {
  std::string digest;
  for (const auto& f : files) digest += sha256_file_hex(f);
  json m = {{"format", "pivotmt-index/1"},
            {"data", fs::absolute(files.front()).string()},
            {"data_files", files.size()},
            {"data_sha256", files.size() == 1 ? digest : sha256_hex(digest)},
            {"split", spec.split},
            {"columns", {{"pivot", spec.pivot}, {"source", spec.source}, {"target", spec.target}}},
            {"retriever", spec.retriever}};
  if (spec.retriever == "minilm" || spec.retriever == "minilm-hnsw") {
    if (spec.model.empty()) throw Error("the minilm retriever needs --model (a sentence-transformers BERT directory)");
    const fs::path cfg = fs::path(spec.model) / "config.json", weights = fs::path(spec.model) / "model.safetensors";
    m["model"] = fs::absolute(spec.model).string();
    m["model_config_sha256"] = fs::exists(cfg) ? sha256_file_hex(cfg.string()) : "";
    m["model_weights_size"] = fs::exists(weights) ? fs::file_size(weights) : 0;
  }
  if (spec.retriever == "random") m["seed"] = spec.seed;
  return m;
}

std::unique_ptr<Retriever> make_retriever(const json& m, const ParallelCorpus& pool, const BertEncoder* encoder,
                                          std::vector<float> vectors) {
  const std::string r = json_string(m.at("retriever"), "index manifest: field 'retriever'");
  if (r == "minilm") return make_embedding_retriever(*encoder, std::move(vectors));
  if (r == "minilm-hnsw") return make_hnsw_retriever(*encoder, std::move(vectors));
  if (r == "bm25") return make_bm25_retriever(pool, false);
  if (r == "bm25-char") return make_bm25_retriever(pool, true);
  if (r == "chrf") return make_chrf_retriever(pool);
  if (r == "random") {
    const auto it = m.find("seed");
    const bool given = it != m.end() && !it->is_null();
    return make_random_retriever(pool, given ? json_unsigned(*it, "index manifest: field 'seed'") : 0);
  }
  throw Error(fmt::format("unknown retriever '{}' (expected minilm, minilm-hnsw, bm25, bm25-char, chrf or random)", r));
}
}  // namespace

LoadedIndex load_index(const std::string& dir) {
  LoadedIndex ix;
  ix.manifest = read_json_file((fs::path(dir) / "manifest.json").string());
  const auto& m = ix.manifest;
  const std::string manifest_path = (fs::path(dir) / "manifest.json").string();
  if (!m.is_object() || field_string(m, "format", manifest_path, "") != "pivotmt-index/1")
    throw FormatError(fmt::format("{}: not a pivotmt index", dir));
  const Table rows = read_table((fs::path(dir) / "rows.jsonl").string(), TableFormat::Jsonl);
  ix.pool = load_parallel(rows, "pivot", "source", "target");
  ix.pool.source = json_string(required_field(m, "data", manifest_path), field_name(manifest_path, "data"));
  std::vector<float> vectors;
  const std::string retriever = json_string(required_field(m, "retriever", manifest_path), field_name(manifest_path, "retriever"));
  if (retriever == "minilm" || retriever == "minilm-hnsw") {
    ix.encoder = std::make_unique<BertEncoder>(json_string(required_field(m, "model", manifest_path), field_name(manifest_path, "model")));
    const fs::path vf = fs::path(dir) / "vectors.f32";
    const size_t expect = ix.pool.rows.size() * ix.encoder->dimension() * 4;
    if (!fs::exists(vf) || fs::file_size(vf) != expect)
      throw FormatError(fmt::format("{}: vectors.f32 missing or not {} bytes (rebuild the index)", dir, expect));
    vectors.resize(expect / 4);
    std::ifstream in(vf, std::ios::binary);
    in.read(reinterpret_cast<char*>(vectors.data()), std::streamsize(expect));
  }
  ix.retriever = make_retriever(m, ix.pool, ix.encoder.get(), std::move(vectors));
  return ix;
}

LoadedIndex build_index(const IndexSpec& spec, const std::string& dir, bool* rebuilt) {
  const auto files = resolve_split_files(spec.data, spec.split);
  const std::string file = files.front();
  json manifest = expected_manifest(spec, files);
  const fs::path mpath = fs::path(dir) / "manifest.json";
  if (fs::exists(mpath)) {
    json old = read_json_file(mpath.string());
    old.erase("rows");
    old.erase("dropped");
    old.erase("dimension");
    if (old == manifest) {
      if (rebuilt) *rebuilt = false;
      return load_index(dir);
    }
  }
  if (rebuilt) *rebuilt = true;
  fs::create_directories(dir);
  const Table table = read_split(spec.data, spec.split);
  ParallelCorpus pool = load_parallel(table, spec.pivot, spec.source, spec.target);
  if (pool.rows.empty()) throw Error(fmt::format("{}: no row with pivot, source and target all present", file));
  {
    const std::string tmp = unique_temp_path((fs::path(dir) / "rows.jsonl").string());
    std::ofstream out(tmp, std::ios::binary);
    for (const auto& r : pool.rows)
      out << json{{"row", r.row}, {"pivot", r.pivot}, {"source", r.source}, {"target", r.target}}.dump() << '\n';
    if (!out) throw Error(fmt::format("{}: write failed", tmp));
    out.close();
    fs::rename(tmp, fs::path(dir) / "rows.jsonl");
  }
  if (spec.retriever == "minilm" || spec.retriever == "minilm-hnsw") {
    const BertEncoder encoder(spec.model, "", spec.device);
    std::vector<std::string> texts;
    for (const auto& r : pool.rows) texts.push_back(r.pivot);
    const auto vectors = encoder.embed(texts);
    const std::string tmp = unique_temp_path((fs::path(dir) / "vectors.f32").string());
    std::ofstream out(tmp, std::ios::binary);
    out.write(reinterpret_cast<const char*>(vectors.data()), std::streamsize(vectors.size() * 4));
    if (!out) throw Error(fmt::format("{}: write failed", tmp));
    out.close();
    fs::rename(tmp, fs::path(dir) / "vectors.f32");
    manifest["dimension"] = encoder.dimension();
  }
  manifest["rows"] = pool.rows.size();
  manifest["dropped"] = pool.dropped;
  write_json_file(mpath.string(), manifest);  // last: an index without it is rebuilt
  return load_index(dir);
}

}  // namespace pivotmt
