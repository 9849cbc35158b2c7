// A small libcurl client for the hub protocol: HEAD without following redirects, GET to a
// string or appended to a file (for Range resume). Redirects are followed by hand so the
// Authorization header is only ever sent to the origin it belongs to.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>

namespace pivotmt {

struct HttpResponse {
  long status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased; last value wins
  std::string body;                            // for get_string only
  std::string url;                             // the URL that answered (after redirects)

  std::optional<std::string> header(const std::string& lower_name) const;
};

// Thrown for transport failures (no HTTP answer, or an answer cut short). `retryable`
// separates timeouts/cuts/refusals from e.g. a bad URL.
struct HttpTransportError : std::runtime_error {
  HttpTransportError(const std::string& what, bool retryable) : std::runtime_error(what), retryable(retryable) {}
  bool retryable;
};

// "scheme://host:port" of a URL (default ports made explicit), for same-origin checks.
std::string url_origin(const std::string& url);
// Resolves a Location header against the URL that sent it.
std::string resolve_location(const std::string& base, const std::string& location);
// Percent-encodes a path, keeping '/'.
std::string url_encode_path(const std::string& path);
std::string url_encode_component(const std::string& s);

class HttpClient {
 public:
  // `auth_origin`/`token`: the Authorization header is attached only to requests whose
  // origin equals auth_origin.
  HttpClient(std::string auth_origin, std::optional<std::string> token);

  // HEAD; follows only relative redirects (as huggingface_hub does: a renamed repo),
  // returns absolute ones (the CDN) with their Location header.
  HttpResponse head(const std::string& url) const;
  // GET, following redirects, body into memory (API calls; size-capped).
  HttpResponse get_string(const std::string& url, size_t max_bytes = 64 << 20) const;
  // GET with "Range: bytes=offset-" when offset > 0, body appended to `path` (truncated
  // first when the server ignores the range). `on_progress(bytes_in_file)`.
  HttpResponse get_to_file(const std::string& url, const std::string& path, uint64_t offset,
                           const std::function<void(uint64_t)>& on_progress) const;

 private:
  std::string auth_origin_;
  std::optional<std::string> token_;
};

}  // namespace pivotmt
