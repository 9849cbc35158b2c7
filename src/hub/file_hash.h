// Checksums the hub publishes as ETags: sha256 for LFS files, git's blob sha1 otherwise.
#pragma once
#include <string>

namespace pivotmt {

std::string sha256_file_hex(const std::string& path);
// sha1("blob <size>\0" + content): the git object id the hub uses as a small file's ETag.
std::string git_blob_sha1_file_hex(const std::string& path);
std::string sha256_hex(const std::string& data);

}  // namespace pivotmt
