#include "replay.h"

#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>

#include <fmt/format.h>

#include "core/error.h"
#include "io/table.h"

namespace pivotmt {
namespace {

constexpr char kMagic[8] = {'P', 'V', 'R', 'E', 'P', 'L', 'A', 'Y'};
constexpr uint32_t kVersion = 1;
const char* const kCorpora[] = {"konkani_full", "arabic_full"};

// Little-endian fields (the machines we run on are; the file says so by its magic's order).
template <class T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}

class Reader {
 public:
  Reader(const std::string& bytes, const std::string& path) : bytes_(bytes), path_(path) {}
  template <class T>
  T get(const char* what) {
    if (bytes_.size() - at_ < sizeof(T))
      throw Error(fmt::format("{}: truncated at byte {} (reading {})", path_, at_, what));
    T v;
    std::memcpy(&v, bytes_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return v;
  }
  size_t left() const { return bytes_.size() - at_; }

 private:
  const std::string& bytes_;
  const std::string& path_;
  size_t at_ = 0;
};

}  // namespace

std::vector<ReplayRequest> make_replay(const std::string& original_dir, const Tokenizer& tokenizer) {
  std::vector<ReplayRequest> out;
  for (uint8_t corpus = 0; corpus < 2; ++corpus)
    for (uint8_t k = 0; k <= 10; ++k) {
      const std::string path = fmt::format("{}/{}/k_{}/results_k{}.csv", original_dir, kCorpora[corpus], k, k);
      const Table t = read_table(path);
      const size_t prompt = t.column("prompt"), response = t.column("response");
      for (size_t r = 0; r < t.rows.size(); ++r) {
        ReplayRequest q;
        q.corpus = corpus;
        q.k = k;
        q.row = uint16_t(r);
        q.prompt = tokenizer.encode(t.rows[r][prompt].value_or(""), true);
        q.response_tokens = uint32_t(tokenizer.encode(t.rows[r][response].value_or(""), false).size());
        out.push_back(std::move(q));
      }
    }
  return out;
}

void write_replay(const std::string& path, const std::vector<ReplayRequest>& requests) {
  std::string raw(kMagic, sizeof(kMagic));
  put<uint32_t>(raw, kVersion);
  put<uint32_t>(raw, uint32_t(requests.size()));
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto& q = requests[i];
    // The earlier request sharing the longest prefix: the same row's other k, or the last 16.
    int32_t ref = -1;
    size_t shared = 0;
    for (size_t j = 0; j < i; ++j) {
      const auto& e = requests[j];
      if (!(e.corpus == q.corpus && e.row == q.row) && i - j > 16) continue;
      const size_t n = size_t(std::mismatch(e.prompt.begin(), e.prompt.end(), q.prompt.begin(), q.prompt.end()).first -
                              e.prompt.begin());
      if (n > shared) shared = n, ref = int32_t(j);
    }
    put<uint8_t>(raw, q.corpus);
    put<uint8_t>(raw, q.k);
    put<uint16_t>(raw, q.row);
    put<uint32_t>(raw, uint32_t(q.prompt.size()));
    put<uint32_t>(raw, q.response_tokens);
    put<int32_t>(raw, ref);
    put<uint32_t>(raw, uint32_t(shared));
    for (size_t p = shared; p < q.prompt.size(); ++p) {
      if (q.prompt[p] < 0 || q.prompt[p] > 0xffff) throw Error(fmt::format("replay: token id {} does not fit 16 bits", q.prompt[p]));
      put<uint16_t>(raw, uint16_t(q.prompt[p]));
    }
  }
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 19);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_enableLongDistanceMatching, 1);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, 27);  // the decoder's default limit
  std::string packed(ZSTD_compressBound(raw.size()), '\0');
  const size_t n = ZSTD_compress2(cctx, packed.data(), packed.size(), raw.data(), raw.size());
  ZSTD_freeCCtx(cctx);
  if (ZSTD_isError(n)) throw Error(fmt::format("replay: zstd: {}", ZSTD_getErrorName(n)));
  packed.resize(n);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(packed.data(), std::streamsize(packed.size()));
  if (!f) throw Error(fmt::format("{}: cannot write", path));
}

std::vector<ReplayRequest> read_replay(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(fmt::format("{}: cannot open the replay file", path));
  const std::string packed((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return parse_replay(packed, path);
}

std::vector<ReplayRequest> parse_replay(std::string_view packed, const std::string& path) {
  // The study is ~5 MB uncompressed: far under these limits, which keep a damaged or crafted
  // file from asking for gigabytes.
  constexpr unsigned long long kMaxRawBytes = 256ull << 20;
  const unsigned long long size = ZSTD_getFrameContentSize(packed.data(), packed.size());
  if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > kMaxRawBytes)
    throw Error(fmt::format("{}: not a zstd frame of a known size under {} MiB", path, kMaxRawBytes >> 20));
  std::string raw(size, '\0');
  const size_t n = ZSTD_decompress(raw.data(), raw.size(), packed.data(), packed.size());
  if (ZSTD_isError(n) || n != size) throw Error(fmt::format("{}: zstd: {}", path, ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short"));
  return parse_replay_records(raw, path);
}

std::vector<ReplayRequest> parse_replay_records(const std::string& raw, const std::string& path) {
  constexpr size_t kMaxTokens = size_t(100) << 20;  // prompts rebuilt in all (the study: 7.8 M)
  Reader r(raw, path);
  for (char c : kMagic)
    if (r.get<char>("the magic") != c) throw Error(fmt::format("{}: not a pivotmt replay file", path));
  if (const uint32_t v = r.get<uint32_t>("the version"); v != kVersion)
    throw Error(fmt::format("{}: replay format version {} (this build reads {})", path, v, kVersion));
  const uint32_t count = r.get<uint32_t>("the count");
  if (count > r.left() / 20) throw Error(fmt::format("{}: {} requests cannot fit in {} bytes", path, count, r.left()));
  std::vector<ReplayRequest> out(count);
  size_t tokens = 0;
  for (uint32_t i = 0; i < count; ++i) {
    auto& q = out[i];
    q.corpus = r.get<uint8_t>("a corpus");
    q.k = r.get<uint8_t>("a k");
    q.row = r.get<uint16_t>("a row");
    const uint32_t length = r.get<uint32_t>("a prompt length");
    q.response_tokens = r.get<uint32_t>("a response length");
    const int32_t ref = r.get<int32_t>("a prefix reference");
    const uint32_t shared = r.get<uint32_t>("a shared length");
    if (ref >= int32_t(i) || ref < -1 || shared > length || (ref < 0 && shared > 0) ||
        (ref >= 0 && shared > out[size_t(ref)].prompt.size()) || size_t(length - shared) * 2 > r.left())
      throw Error(fmt::format("{}: request {}: prefix of {} tokens from request {} for a prompt of {}", path, i, shared,
                              ref, length));
    if ((tokens += length) > kMaxTokens)
      throw Error(fmt::format("{}: more than {} prompt tokens in all (request {})", path, kMaxTokens, i));
    q.prompt.reserve(length);
    if (ref >= 0) q.prompt.assign(out[size_t(ref)].prompt.begin(), out[size_t(ref)].prompt.begin() + shared);
    for (uint32_t p = shared; p < length; ++p) q.prompt.push_back(TokenId(r.get<uint16_t>("a token")));
  }
  if (r.left() != 0) throw Error(fmt::format("{}: {} bytes after the last request", path, r.left()));
  return out;
}

}  // namespace pivotmt
