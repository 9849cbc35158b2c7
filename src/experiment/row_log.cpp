#include "experiment/row_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "core/error.h"

namespace pivotmt {
namespace fs = std::filesystem;

RowLog::RowLog(fs::path path, bool writable) : path_(std::move(path)) {
  std::ifstream in(path_, std::ios::binary);
  if (in) {
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    size_t start = 0, line = 1, good_end = 0;
    while (start < text.size()) {
      const size_t nl = text.find('\n', start);
      if (nl == std::string::npos) break;  // torn: no newline yet
      const auto entry = nlohmann::json::parse(text.begin() + long(start), text.begin() + long(nl), nullptr, false);
      if (entry.is_discarded() || !entry.contains("i") || !entry["i"].is_number_unsigned())
        throw FormatError(fmt::format("{}:{}: not a row record (the log is damaged; delete it to regenerate these rows)",
                                      path_.string(), line));
      rows_[entry["i"].get<size_t>()] = entry;
      start = nl + 1;
      good_end = start;
      ++line;
    }
    if (writable && good_end < text.size()) fs::resize_file(path_, good_end);
  }
  if (!writable) return;
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd_ < 0) throw Error("cannot open " + path_.string() + " for appending");
}

RowLog::~RowLog() {
  if (fd_ >= 0) ::close(fd_);
}

void RowLog::append(const std::vector<nlohmann::json>& records) {
  std::string text;
  for (const auto& r : records) text += r.dump() + "\n";
  size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = ::write(fd_, text.data() + written, text.size() - written);
    if (n < 0) throw Error("cannot append to " + path_.string());
    written += size_t(n);
  }
  if (::fsync(fd_) != 0) throw Error("cannot fsync " + path_.string());
  for (const auto& r : records) rows_[r["i"].get<size_t>()] = r;
}

}  // namespace pivotmt
