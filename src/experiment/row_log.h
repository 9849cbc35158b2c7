// The durable row log of a run (one per k, and the baseline's): one JSON object per line,
// each with "i" (the test row's index), appended and fsync'd as rows finish. Reading it
// back drops a torn last line (the process died mid-write).
#pragma once
#include <filesystem>
#include <map>
#include <vector>

#include <nlohmann/json.hpp>

namespace pivotmt {

class RowLog {
 public:
  // Reads the finished rows; a torn last line is cut off when the log is `writable`.
  // Throws FormatError naming the file and line of a damaged record.
  RowLog(std::filesystem::path path, bool writable);
  ~RowLog();
  RowLog(const RowLog&) = delete;
  RowLog& operator=(const RowLog&) = delete;

  const std::map<size_t, nlohmann::json>& rows() const { return rows_; }
  // Appends the records and makes them durable before returning.
  void append(const std::vector<nlohmann::json>& records);

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  std::map<size_t, nlohmann::json> rows_;
};

}  // namespace pivotmt
