// An exclusive advisory lock on a lock file (flock), held for the object's lifetime, so
// two processes downloading the same blob never write it at the same time.
#pragma once
#include <string>

namespace pivotmt {

class FileLock {
 public:
  // Blocks until the lock is held; calls `on_wait` once if it has to wait.
  explicit FileLock(const std::string& path, void (*on_wait)(const std::string&) = nullptr);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace pivotmt
