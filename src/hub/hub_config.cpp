#include "hub/hub_config.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "core/error.h"

namespace pivotmt {
namespace fs = std::filesystem;

const char* repo_type_name(RepoType t) { return t == RepoType::Model ? "model" : "dataset"; }

std::optional<RepoType> parse_repo_type(std::string_view s) {
  if (s == "model") return RepoType::Model;
  if (s == "dataset") return RepoType::Dataset;
  return std::nullopt;
}

namespace {
bool valid_part(std::string_view s) {
  if (s.empty() || s.size() > 96 || s.starts_with('.') || s.starts_with('-') || s.ends_with('.')) return false;
  if (s.find("..") != std::string_view::npos || s.find("--") != std::string_view::npos) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}
}  // namespace

bool RepoRef::looks_like_repo_id(std::string_view text) {
  const auto at = text.find('@');
  const std::string_view id = text.substr(0, at);
  const auto slash = id.find('/');
  if (slash == std::string_view::npos || id.find('/', slash + 1) != std::string_view::npos) return false;
  return valid_part(id.substr(0, slash)) && valid_part(id.substr(slash + 1)) &&
         (at == std::string_view::npos || at + 1 < text.size());
}

RepoRef RepoRef::parse(std::string_view text, RepoType type) {
  if (!looks_like_repo_id(text))
    throw Error(fmt::format("'{}' is not a hub repository id (expected org/name or org/name@revision)", text));
  RepoRef r;
  r.type = type;
  const auto at = text.find('@');
  r.id = std::string(text.substr(0, at));
  if (at != std::string_view::npos) r.revision = std::string(text.substr(at + 1));
  return r;
}

std::string RepoRef::cache_folder() const {
  std::string folder = type == RepoType::Model ? "models--" : "datasets--";
  for (char c : id) {
    if (c == '/') folder += "--";
    else folder += c;
  }
  return folder;
}

bool env_truthy(const char* value) {
  if (!value) return false;
  std::string v(value);
  std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return std::toupper(c); });
  return v == "1" || v == "ON" || v == "YES" || v == "TRUE";
}

HubConfig HubConfig::from_env() {
  HubConfig c;
  auto env = [](const char* name) -> std::optional<std::string> {
    const char* v = std::getenv(name);
    if (!v || !*v) return std::nullopt;
    return std::string(v);
  };
  auto expand = [](std::string p) {  // "~/x" as os.path.expanduser would
    if (p.starts_with("~/") || p == "~") {
      const char* home = std::getenv("HOME");
      if (home) p = std::string(home) + p.substr(1);
    }
    return p;
  };
  if (auto home = env("HF_HOME")) {
    c.hf_home = expand(*home);
  } else {
    const auto xdg = env("XDG_CACHE_HOME");
    const auto home_dir = env("HOME");
    c.hf_home = xdg ? (fs::path(expand(*xdg)) / "huggingface").string()
                    : (fs::path(home_dir.value_or("/root")) / ".cache" / "huggingface").string();
  }
  if (auto cache = env("HF_HUB_CACHE")) c.cache_dir = expand(*cache);
  else if (auto legacy = env("HUGGINGFACE_HUB_CACHE")) c.cache_dir = expand(*legacy);
  else c.cache_dir = (fs::path(c.hf_home) / "hub").string();
  if (auto ep = env("HF_ENDPOINT")) {
    c.endpoint = *ep;
    while (c.endpoint.ends_with('/')) c.endpoint.pop_back();
  }
  c.offline = env_truthy(std::getenv("HF_HUB_OFFLINE"));
  if (auto token = env("HF_TOKEN")) {
    c.token = *token;
  } else if (auto legacy = env("HUGGING_FACE_HUB_TOKEN")) {
    c.token = *legacy;
  } else {
    const std::string path = env("HF_TOKEN_PATH").value_or((fs::path(c.hf_home) / "token").string());
    std::ifstream in(expand(path));
    std::string t;
    if (in && std::getline(in, t)) {
      while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
      if (!t.empty()) c.token = t;
    }
  }
  if (auto r = env("PIVOTMT_HUB_RETRIES")) c.max_retries = std::max(0, std::atoi(r->c_str()));
  if (auto b = env("PIVOTMT_HUB_RETRY_BASE_MS")) c.retry_base_ms = std::max(0, std::atoi(b->c_str()));
  return c;
}

}  // namespace pivotmt
