// Where the Hugging Face cache lives and how the hub is reached, resolved from the same
// environment variables huggingface_hub reads, so both tools share one cache.
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace pivotmt {

enum class RepoType { Model, Dataset };
const char* repo_type_name(RepoType t);           // "model" / "dataset"
std::optional<RepoType> parse_repo_type(std::string_view s);

struct RepoRef {
  std::string id;               // "org/name"
  std::string revision = "main";
  RepoType type = RepoType::Model;

  // "org/name[@revision]"; throws Error on anything else.
  static RepoRef parse(std::string_view text, RepoType type = RepoType::Model);
  // True when `text` has the shape of a hub id (and so is not meant as a local path).
  static bool looks_like_repo_id(std::string_view text);
  // "models--org--name" / "datasets--org--name".
  std::string cache_folder() const;
};

struct HubConfig {
  std::string endpoint = "https://huggingface.co";  // HF_ENDPOINT, no trailing slash
  std::string cache_dir;                            // HF_HUB_CACHE, else $HF_HOME/hub
  std::string hf_home;                              // HF_HOME, else $XDG_CACHE_HOME/huggingface
  bool offline = false;                             // HF_HUB_OFFLINE
  std::optional<std::string> token;                 // HF_TOKEN, else the token file; never printed
  int max_retries = 5;
  int retry_base_ms = 1000;  // backoff: base, 2 x base, 4 x base, ...

  // Reads the environment (a null getter argument means the process environment).
  static HubConfig from_env();
};

// True for "1", "ON", "YES", "TRUE" (any case), as huggingface_hub's env parsing.
bool env_truthy(const char* value);

}  // namespace pivotmt
