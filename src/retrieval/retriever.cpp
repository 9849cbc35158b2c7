#include "retrieval/retriever.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>

#include <faiss/IndexHNSW.h>

#include "engine/sampling.h"
#include "metrics/chrf.h"
#include "metrics/corpus.h"
#include "models/bert_model.h"
#include "text/unicode.h"

namespace pivotmt {

std::vector<Neighbor> Retriever::nearest(const std::string& query_pivot, size_t n) const {
  const auto d = distances(query_pivot);
  std::vector<size_t> order(d.size());
  std::iota(order.begin(), order.end(), 0);
  // Ascending distance, row order on ties: stable_sort keeps pool order.
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return d[a] < d[b]; });
  std::vector<Neighbor> out;
  for (size_t i = 0; i < std::min(n, order.size()); ++i) out.push_back({order[i], d[order[i]]});
  return out;
}

std::vector<Neighbor> retrieve(const Retriever& r, const ParallelCorpus& pool, const std::string& query_pivot,
                               size_t k, size_t candidates) {
  std::vector<Neighbor> out;
  for (const auto& n : r.nearest(query_pivot, candidates)) {
    if (pool.rows[n.index].pivot == query_pivot) continue;  // the query itself (or a duplicate of it)
    out.push_back(n);
  }
  if (out.size() > k) out.resize(k);
  return out;
}

namespace {
class EmbeddingRetriever : public Retriever {
 public:
  EmbeddingRetriever(const BertEncoder& e, std::vector<float> vectors) : encoder_(e), vectors_(std::move(vectors)) {}
  std::string name() const override { return "minilm"; }
  std::vector<double> distances(const std::string& query) const override {
    const auto q = encoder_.embed({query});
    const size_t D = q.size(), n = vectors_.size() / D;
    std::vector<double> d(n);
    for (size_t i = 0; i < n; ++i) {
      double s = 0;
      for (size_t j = 0; j < D; ++j) {
        const double diff = double(vectors_[i * D + j]) - q[j];
        s += diff * diff;
      }
      d[i] = s;
    }
    return d;
  }

 private:
  const BertEncoder& encoder_;
  std::vector<float> vectors_;
};

std::vector<std::u32string> bm25_terms(const std::string& text, bool char_ngrams) {
  const std::u32string lower = py_lower(utf8_to_u32(text));
  if (!char_ngrams) return py_split(lower);
  const std::u32string s = py_normalize_spaces(lower);
  std::vector<std::u32string> out;
  constexpr size_t n = 3;
  if (s.size() < n && !s.empty()) out.push_back(s);
  for (size_t i = 0; i + n <= s.size(); ++i) out.push_back(s.substr(i, n));
  return out;
}

class HnswRetriever : public EmbeddingRetriever {
 public:
  HnswRetriever(const BertEncoder& e, std::vector<float> vectors)
      : EmbeddingRetriever(e, vectors), encoder_(e), index_(int(e.dimension()), 32) {
    index_.add(faiss::Index::idx_t(vectors.size() / e.dimension()), vectors.data());
  }
  std::string name() const override { return "minilm-hnsw"; }
  std::vector<Neighbor> nearest(const std::string& query, size_t n) const override {
    const auto q = encoder_.embed({query});
    n = std::min<size_t>(n, size_t(index_.ntotal));
    std::vector<float> dist(n);
    std::vector<faiss::Index::idx_t> ids(n);
    if (n) index_.search(1, q.data(), faiss::Index::idx_t(n), dist.data(), ids.data());
    std::vector<Neighbor> out;
    for (size_t i = 0; i < n; ++i)
      if (ids[i] >= 0) out.push_back({size_t(ids[i]), double(dist[i])});
    std::stable_sort(out.begin(), out.end(), [](const Neighbor& a, const Neighbor& b) {
      return a.distance != b.distance ? a.distance < b.distance : a.index < b.index;
    });
    return out;
  }

 private:
  const BertEncoder& encoder_;
  faiss::IndexHNSWFlat index_;
};

class Bm25Retriever : public Retriever {
 public:
  Bm25Retriever(const ParallelCorpus& pool, bool chars) : chars_(chars) {
    double total = 0;
    for (const auto& r : pool.rows) {
      std::unordered_map<std::u32string, int> tf;
      const auto terms = bm25_terms(r.pivot, chars_);
      for (const auto& t : terms) ++tf[t];
      for (const auto& [t, c] : tf) ++df_[t];
      lengths_.push_back(double(terms.size()));
      total += double(terms.size());
      docs_.push_back(std::move(tf));
    }
    avg_length_ = docs_.empty() ? 0 : total / double(docs_.size());
  }
  std::string name() const override { return chars_ ? "bm25-char" : "bm25"; }
  std::vector<double> distances(const std::string& query) const override {
    const double N = double(docs_.size()), k1 = 1.5, b = 0.75;
    std::vector<double> d(docs_.size(), 0.0);
    for (const auto& term : bm25_terms(query, chars_)) {
      auto df = df_.find(term);
      if (df == df_.end()) continue;
      const double idf = std::log(1.0 + (N - df->second + 0.5) / (df->second + 0.5));
      for (size_t i = 0; i < docs_.size(); ++i) {
        auto tf = docs_[i].find(term);
        if (tf == docs_[i].end()) continue;
        const double f = tf->second;
        d[i] -= idf * f * (k1 + 1) / (f + k1 * (1 - b + b * lengths_[i] / avg_length_));
      }
    }
    return d;
  }

 private:
  bool chars_;
  std::vector<std::unordered_map<std::u32string, int>> docs_;
  std::unordered_map<std::u32string, int> df_;
  std::vector<double> lengths_;
  double avg_length_ = 0;
};

class ChrfRetriever : public Retriever {
 public:
  explicit ChrfRetriever(const ParallelCorpus& pool) : metric_(metrics::ChrfOptions{}) {
    for (const auto& r : pool.rows) refs_.push_back(metric_.prepare_references({utf8_to_u32(r.pivot)}));
  }
  std::string name() const override { return "chrf"; }
  std::vector<double> distances(const std::string& query) const override {
    const auto q = utf8_to_u32(query);
    std::vector<double> d(refs_.size());
    for (size_t i = 0; i < refs_.size(); ++i)
      d[i] = -metric_.score_from_stats(metric_.segment_stats(q, *refs_[i]), metrics::StatsPrecision::Exact).score;
    return d;
  }

 private:
  metrics::Chrf metric_;
  std::vector<std::unique_ptr<metrics::ReferenceInfo>> refs_;
};

class RandomRetriever : public Retriever {
 public:
  RandomRetriever(size_t n, uint64_t seed) : n_(n), seed_(seed) {}
  std::string name() const override { return "random"; }
  std::vector<double> distances(const std::string& query) const override {
    uint64_t h = 1469598103934665603ull;  // FNV-1a of the query: a per-query stream
    for (unsigned char c : query) h = (h ^ c) * 1099511628211ull;
    SamplerRng rng(seed_ ^ h);
    std::vector<double> d(n_);
    for (auto& x : d) x = rng.uniform();
    return d;
  }

 private:
  size_t n_;
  uint64_t seed_;
};
}  // namespace

std::unique_ptr<Retriever> make_embedding_retriever(const BertEncoder& encoder, const ParallelCorpus& pool) {
  std::vector<std::string> texts;
  for (const auto& r : pool.rows) texts.push_back(r.pivot);
  return std::make_unique<EmbeddingRetriever>(encoder, encoder.embed(texts));
}
std::unique_ptr<Retriever> make_embedding_retriever(const BertEncoder& encoder, std::vector<float> pool_vectors) {
  return std::make_unique<EmbeddingRetriever>(encoder, std::move(pool_vectors));
}
std::unique_ptr<Retriever> make_hnsw_retriever(const BertEncoder& encoder, std::vector<float> pool_vectors) {
  return std::make_unique<HnswRetriever>(encoder, std::move(pool_vectors));
}
std::unique_ptr<Retriever> make_bm25_retriever(const ParallelCorpus& pool, bool char_ngrams) {
  return std::make_unique<Bm25Retriever>(pool, char_ngrams);
}
std::unique_ptr<Retriever> make_chrf_retriever(const ParallelCorpus& pool) { return std::make_unique<ChrfRetriever>(pool); }
std::unique_ptr<Retriever> make_random_retriever(const ParallelCorpus& pool, uint64_t seed) {
  return std::make_unique<RandomRetriever>(pool.rows.size(), seed);
}

}  // namespace pivotmt
