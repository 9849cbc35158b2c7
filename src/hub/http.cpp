#include "hub/http.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>

#include <fmt/format.h>

#include "core/error.h"

namespace pivotmt {
namespace {

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

size_t on_header(char* data, size_t size, size_t n, void* user) {
  auto* r = static_cast<HttpResponse*>(user);
  const std::string line(data, size * n);
  if (line.starts_with("HTTP/")) {
    r->headers.clear();  // a new response (e.g. after "100 Continue")
  } else if (auto colon = line.find(':'); colon != std::string::npos) {
    r->headers[lower(trim(line.substr(0, colon)))] = trim(line.substr(colon + 1));
  }
  return size * n;
}

struct StringSink {
  std::string* out;
  size_t max;
};
size_t on_string_body(char* data, size_t size, size_t n, void* user) {
  auto* sink = static_cast<StringSink*>(user);
  if (sink->out->size() + size * n > sink->max) return 0;  // aborts the transfer
  sink->out->append(data, size * n);
  return size * n;
}

struct FileSink {
  FILE* file = nullptr;
  std::string path;
  uint64_t offset = 0;  // bytes already in the file
  uint64_t written = 0;
  bool opened = false;
  bool failed = false;
  HttpResponse* response = nullptr;
  CURL* curl = nullptr;
  const std::function<void(uint64_t)>* progress = nullptr;
};

size_t on_file_body(char* data, size_t size, size_t n, void* user) {
  auto* s = static_cast<FileSink*>(user);
  if (!s->opened) {
    long status = 0;
    curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200 && status != 206) return size * n;  // an error body: ignore
    // 200 to a range request: the server sends the whole file, start over.
    const bool restart = status == 200;
    s->file = std::fopen(s->path.c_str(), restart ? "wb" : "ab");
    if (!s->file) {
      s->failed = true;
      return 0;
    }
    if (restart) s->offset = 0;
    s->opened = true;
  }
  if (std::fwrite(data, 1, size * n, s->file) != size * n) {
    s->failed = true;
    return 0;
  }
  s->written += size * n;
  if (s->progress && *s->progress) (*s->progress)(s->offset + s->written);
  return size * n;
}

using CurlPtr = std::unique_ptr<CURL, decltype(&curl_easy_cleanup)>;
using HeaderList = std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)>;

bool is_retryable(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return true;
    default:
      return false;
  }
}
}  // namespace

std::optional<std::string> HttpResponse::header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  if (it == headers.end()) return std::nullopt;
  return it->second;
}

std::string url_origin(const std::string& url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos) return {};
  const std::string scheme = lower(url.substr(0, scheme_end));
  const auto host_start = scheme_end + 3;
  auto host_end = url.find_first_of("/?#", host_start);
  std::string host = lower(url.substr(host_start, host_end == std::string::npos ? std::string::npos : host_end - host_start));
  if (auto at = host.rfind('@'); at != std::string::npos) host = host.substr(at + 1);  // drop userinfo
  const bool has_port = host.find(':') != std::string::npos && host.back() != ']';
  if (!has_port) host += scheme == "https" ? ":443" : ":80";
  return scheme + "://" + host;
}

std::string resolve_location(const std::string& base, const std::string& location) {
  if (location.find("://") != std::string::npos) return location;
  if (location.starts_with("//")) return base.substr(0, base.find("://") + 1) + location;
  const auto scheme_end = base.find("://");
  const auto path_start = base.find('/', scheme_end + 3);
  const std::string root = path_start == std::string::npos ? base : base.substr(0, path_start);
  if (location.starts_with('/')) return root + location;
  std::string dir = path_start == std::string::npos ? "/" : base.substr(path_start);
  dir = dir.substr(0, dir.find_first_of("?#"));
  dir = dir.substr(0, dir.rfind('/') + 1);
  return root + dir + location;
}

std::string url_encode_component(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') out += static_cast<char>(c);
    else out += fmt::format("%{:02X}", c);
  }
  return out;
}

std::string url_encode_path(const std::string& path) {
  std::string out;
  size_t start = 0;
  while (true) {
    const auto slash = path.find('/', start);
    out += url_encode_component(path.substr(start, slash == std::string::npos ? std::string::npos : slash - start));
    if (slash == std::string::npos) break;
    out += '/';
    start = slash + 1;
  }
  return out;
}

HttpClient::HttpClient(std::string auth_origin, std::optional<std::string> token)
    : auth_origin_(url_origin(auth_origin)), token_(std::move(token)) {
  global_init();
}

namespace {
// Performs one request (no redirect following). `configure` sets the body handling.
HttpResponse perform(const std::string& url, bool head, const std::optional<std::string>& auth_header,
                     const std::vector<std::string>& extra_headers, const std::function<void(CURL*)>& configure) {
  CurlPtr curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) throw HttpTransportError("curl_easy_init failed", false);
  HttpResponse r;
  r.url = url;
  HeaderList headers(nullptr, curl_slist_free_all);
  auto add = [&](const std::string& h) { headers.reset(curl_slist_append(headers.release(), h.c_str())); };
  add("User-Agent: pivotmt/0.1; hf_hub-compatible");
  if (auth_header) add(*auth_header);
  for (const auto& h : extra_headers) add(h);
  char error[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(curl.get(), CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(curl.get(), CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_CONNECTTIMEOUT, 20L);
  // A stalled transfer (under 1 kB/s for 60 s) is cut and retried rather than hanging.
  curl_easy_setopt(curl.get(), CURLOPT_LOW_SPEED_LIMIT, 1024L);
  curl_easy_setopt(curl.get(), CURLOPT_LOW_SPEED_TIME, 60L);
  curl_easy_setopt(curl.get(), CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(curl.get(), CURLOPT_HEADERDATA, &r);
  curl_easy_setopt(curl.get(), CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(curl.get(), CURLOPT_PROTOCOLS_STR, "http,https");
  if (head) curl_easy_setopt(curl.get(), CURLOPT_NOBODY, 1L);
  configure(curl.get());
  const CURLcode code = curl_easy_perform(curl.get());
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &r.status);
  if (code != CURLE_OK) {
    throw HttpTransportError(fmt::format("{} {}: {}", head ? "HEAD" : "GET", url, *error ? error : curl_easy_strerror(code)),
                             is_retryable(code));
  }
  return r;
}
}  // namespace

HttpResponse HttpClient::head(const std::string& url) const {
  std::string current = url;
  for (int hop = 0; hop < 10; ++hop) {
    const bool same_origin = url_origin(current) == auth_origin_;
    std::optional<std::string> auth;
    if (token_ && same_origin) auth = "Authorization: Bearer " + *token_;
    HttpResponse r = perform(current, true, auth, {}, [](CURL*) {});
    const auto location = r.header("location");
    if (r.status >= 300 && r.status < 400 && location && !location->empty() && location->front() == '/' &&
        !location->starts_with("//")) {
      current = resolve_location(current, *location);
      continue;
    }
    return r;
  }
  throw HttpTransportError(fmt::format("HEAD {}: too many redirects", url), false);
}

HttpResponse HttpClient::get_string(const std::string& url, size_t max_bytes) const {
  std::string current = url;
  for (int hop = 0; hop < 10; ++hop) {
    std::optional<std::string> auth;
    if (token_ && url_origin(current) == auth_origin_) auth = "Authorization: Bearer " + *token_;
    std::string body;
    StringSink sink{&body, max_bytes};
    HttpResponse r = perform(current, false, auth, {}, [&](CURL* c) {
      curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_string_body);
      curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
    });
    r.body = std::move(body);
    const auto location = r.header("location");
    if (r.status >= 300 && r.status < 400 && location) {
      current = resolve_location(current, *location);
      continue;
    }
    return r;
  }
  throw HttpTransportError(fmt::format("GET {}: too many redirects", url), false);
}

HttpResponse HttpClient::get_to_file(const std::string& url, const std::string& path, uint64_t offset,
                                     const std::function<void(uint64_t)>& on_progress) const {
  std::string current = url;
  for (int hop = 0; hop < 10; ++hop) {
    std::optional<std::string> auth;
    if (token_ && url_origin(current) == auth_origin_) auth = "Authorization: Bearer " + *token_;
    std::vector<std::string> extra;
    if (offset > 0) extra.push_back(fmt::format("Range: bytes={}-", offset));
    FileSink sink;
    sink.path = path;
    sink.offset = offset;
    sink.progress = &on_progress;
    HttpResponse r;
    try {
      r = perform(current, false, auth, extra, [&](CURL* c) {
        sink.curl = c;
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_file_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
      });
    } catch (...) {
      if (sink.file) std::fclose(sink.file);
      if (sink.failed) throw Error(fmt::format("{}: cannot write (disk full?)", path));
      throw;
    }
    if (sink.file && std::fclose(sink.file) != 0) throw Error(fmt::format("{}: cannot write (disk full?)", path));
    const auto location = r.header("location");
    if (r.status >= 300 && r.status < 400 && location) {
      current = resolve_location(current, *location);
      continue;
    }
    return r;
  }
  throw HttpTransportError(fmt::format("GET {}: too many redirects", url), false);
}

}  // namespace pivotmt
