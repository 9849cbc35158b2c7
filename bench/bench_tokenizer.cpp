// Tokenizer encode throughput on mixed Devanagari, Arabic and English text (the original
// study's columns), one thread. Target (issue): >= 5 MB/s with the Llama-2 vocabulary.
#include <chrono>
#include <filesystem>

#include <fmt/format.h>

#include "io/table.h"
#include "tokenizer/tokenizer.h"

using namespace pivotmt;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

int main(int argc, char** argv) {
  const std::string shared = argc > 1 ? argv[1] : "../shared/fixtures";
  if (!fs::exists(shared + "/original")) {
    fmt::print(stderr, "usage: bench_tokenizer [FIXTURES_DIR] (default ../shared/fixtures)\n");
    return 2;
  }
  // Mixed text: Konkani, Hindi, Marathi, English, MSA and Tunisian lines, one per input.
  std::vector<std::string> lines;
  const Table konkani = read_table(shared + "/original/konkani_full/k_0/results_k0.csv");
  const Table arabic = read_table(shared + "/original/arabic_full/k_0/results_k0.csv");
  for (const auto* t : {&konkani, &arabic})
    for (const auto& col : t == &konkani ? std::vector<std::string>{"gom", "hin", "mar", "eng"}
                                         : std::vector<std::string>{"msa", "tn", "en"})
      for (const auto& row : t->rows)
        if (row[t->column(col)]) lines.push_back(*row[t->column(col)]);
  size_t bytes = 0;
  for (const auto& l : lines) bytes += l.size();

  // Model directories for each tokenizer kind.
  const fs::path tmp = fs::temp_directory_path() / "pivotmt-bench-tokenizer";
  fs::create_directories(tmp / "llama2-json");
  fs::create_directories(tmp / "llama2-spm");
  fs::copy_file(shared + "/tokenizers/llama-2/llama_tokenizer.json", tmp / "llama2-json/tokenizer.json", fs::copy_options::overwrite_existing);
  fs::copy_file(shared + "/tokenizers/llama-2/tokenizer.model", tmp / "llama2-spm/tokenizer.model", fs::copy_options::overwrite_existing);
  const std::vector<std::pair<std::string, std::string>> kinds = {
      {"llama-2 tokenizer.json (BPE, byte fallback)", (tmp / "llama2-json").string()},
      {"llama-2 tokenizer.model (libsentencepiece)", (tmp / "llama2-spm").string()},
      {"llama-3 tiktoken (byte-level BPE)", shared + "/tokenizers/llama-3"},
      {"MiniLM tokenizer.json (WordPiece)", shared + "/tokenizers/all-MiniLM-L6-v2"}};
  fmt::print("{} lines, {:.2f} MB of mixed Devanagari / Arabic / Latin text\n", lines.size(), bytes / 1e6);
  fmt::print("{:<46} {:>10} {:>10} {:>12}\n", "tokenizer", "MB/s", "tokens", "tokens/s");
  for (const auto& [name, dir] : kinds) {
    const auto tok = load_tokenizer(dir);
    size_t tokens = 0;
    int rounds = 0;
    const auto t0 = Clock::now();
    double seconds = 0;
    do {
      for (const auto& l : lines) tokens += tok->encode(l, false).size();
      ++rounds;
      seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    } while (seconds < 1.0);
    const double mbs = double(bytes) * rounds / seconds / 1e6;
    fmt::print("{:<46} {:>10.2f} {:>10} {:>12.0f}{}\n", name, mbs, tokens / size_t(rounds), double(tokens) / seconds,
               name.starts_with("llama-2 tokenizer.json") ? (mbs >= 5.0 ? "  (target 5 MB/s: met)" : "  (target 5 MB/s: MISSED)") : "");
  }
  return 0;
}
