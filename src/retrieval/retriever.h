// Few-shot example retrieval with the original's query semantics (REFERENCE §3): take the
// 10 nearest train rows, drop those whose pivot text equals the query's, keep them in
// ascending distance (ties by row order), use the first k — so fewer than k examples can
// come back, as in the original runs.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "retrieval/corpus.h"

namespace pivotmt {

class BertEncoder;

struct Neighbor {
  size_t index = 0;       // into ParallelCorpus::rows
  double distance = 0.0;  // lower is closer (similarities are negated)
};

class Retriever {
 public:
  virtual ~Retriever() = default;
  virtual std::string name() const = 0;
  // Every pool row with its distance to the query, in pool order.
  virtual std::vector<double> distances(const std::string& query_pivot) const = 0;
  // The n nearest rows, ascending (ties by row order). Approximate indexes override it.
  virtual std::vector<Neighbor> nearest(const std::string& query_pivot, size_t n) const;
};

// The study's query: candidates = the `candidates` nearest, then the filters, then first k.
std::vector<Neighbor> retrieve(const Retriever& r, const ParallelCorpus& pool, const std::string& query_pivot,
                               size_t k, size_t candidates = 10);

// Sentence embeddings (all-MiniLM-L12-v2 in the original), exact squared L2 over the pool —
// computed here rather than by a vector library so that exact ties (common when an English
// encoder sees mostly [UNK] pieces in Devanagari) are ordered by row, deterministically.
std::unique_ptr<Retriever> make_embedding_retriever(const BertEncoder& encoder, const ParallelCorpus& pool);
std::unique_ptr<Retriever> make_embedding_retriever(const BertEncoder& encoder, std::vector<float> pool_vectors);
// The same embeddings searched with a FAISS HNSW graph (M = 32): approximate, for pools
// too large to scan per query.
std::unique_ptr<Retriever> make_hnsw_retriever(const BertEncoder& encoder, std::vector<float> pool_vectors);
// Okapi BM25 (k1 1.5, b 0.75) over lowercased words, or over character n-grams (n = 3,
// spaces kept) for scripts an English encoder cannot read.
std::unique_ptr<Retriever> make_bm25_retriever(const ParallelCorpus& pool, bool char_ngrams);
// sacrebleu sentence chrF between the query's pivot and each row's pivot.
std::unique_ptr<Retriever> make_chrf_retriever(const ParallelCorpus& pool);
// A seeded random order of the pool, different per query text, reproducible.
std::unique_ptr<Retriever> make_random_retriever(const ParallelCorpus& pool, uint64_t seed);

}  // namespace pivotmt
