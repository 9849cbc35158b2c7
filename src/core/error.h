// Error types. Library code throws; only the CLI's main() turns an exception into a
// message and an exit code.
#pragma once
#include <stdexcept>
#include <string>

namespace pivotmt {

// Any failure the user can act on: bad input, missing file, unsupported value.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A file (or one of its parts) is malformed. The message names the file and the problem.
class FormatError : public Error {
 public:
  using Error::Error;
};

// Network / hub failures (HTTP status, connection, checksum).
class HubError : public Error {
 public:
  HubError(const std::string& what, int http_status = 0) : Error(what), http_status_(http_status) {}
  int http_status() const { return http_status_; }

 private:
  int http_status_;
};

// Unsupported architecture, field value or device.
class UnsupportedError : public Error {
 public:
  using Error::Error;
};

}  // namespace pivotmt
