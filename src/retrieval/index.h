// A persistent retrieval index: the filtered pool (rows.jsonl), the pool's embeddings for
// the embedding retriever (vectors.f32, little-endian float32 [rows, dim]) and a
// manifest naming the data (path and sha256), columns, retriever and model. Building
// again with the same inputs reuses the index; a change rebuilds it.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "models/bert_model.h"
#include "retrieval/retriever.h"

namespace pivotmt {

struct IndexSpec {
  std::string data;  // a table file, or a directory holding {split}.csv / .tsv / .jsonl
  std::string split = "train";
  std::string pivot, source, target;
  std::string retriever = "minilm";  // minilm | minilm-hnsw | bm25 | bm25-char | chrf | random
  std::string model;                 // the encoder directory (minilm)
  uint64_t seed = 0;                 // random
  // Where the encoder embeds the pool (not part of the manifest: the vectors agree to the
  // last bits across devices; the study's own indexes stay on the CPU, whose vectors decide
  // near-ties as the original's did).
  Device device;
};

struct LoadedIndex {
  nlohmann::json manifest;
  ParallelCorpus pool;
  std::unique_ptr<BertEncoder> encoder;
  std::unique_ptr<Retriever> retriever;
};

// The table files a (data, split) pair names: the file itself, or in a directory
// {split}.jsonl/.csv/.tsv, or the hub's Parquet layouts data/{split}-*.parquet,
// {split}/*.parquet, {config}/{split}/*.parquet (several shards, in name order).
std::vector<std::string> resolve_split_files(const std::string& data, const std::string& split);
std::string resolve_split_file(const std::string& data, const std::string& split);
// The rows of all of a split's files, as one table.
Table read_split(const std::string& data, const std::string& split);

// Builds the index in `dir`, or reuses it when its manifest matches; `rebuilt` says which.
LoadedIndex build_index(const IndexSpec& spec, const std::string& dir, bool* rebuilt = nullptr);
LoadedIndex load_index(const std::string& dir);

}  // namespace pivotmt
