// Error types. Library code throws; only the CLI's main() turns an exception into a
// message and an exit code.
#pragma once
#include <new>
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

// Runs `read`, a reader of the file `path`, so that every error it lets out names the file:
// ours get "path: " in front unless they already name it; what a library underneath throws
// (a JSON type error, an allocation a crafted size asked for, a standard container's range
// check) becomes a FormatError naming the file. The error's type is kept.
template <class Read>
auto naming_file(const std::string& path, Read&& read) -> decltype(read()) {
  const auto named = [&](const std::exception& e) {
    const std::string what = e.what();
    return what.find(path) != std::string::npos ? what : path + ": " + what;
  };
  try {
    return read();
  } catch (const UnsupportedError& e) {
    throw UnsupportedError(named(e));
  } catch (const HubError&) {
    throw;
  } catch (const FormatError& e) {
    throw FormatError(named(e));
  } catch (const Error& e) {
    throw Error(named(e));
  } catch (const std::bad_alloc&) {
    throw FormatError(path + ": a size in the file asks for more memory than there is (damaged or crafted?)");
  } catch (const std::exception& e) {
    throw FormatError(named(e));
  }
}

}  // namespace pivotmt
