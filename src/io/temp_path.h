// Files written beside their final path and renamed into place. Unique per
// process and call, so concurrent writers (threads or processes sharing a cache) never
// collide on the temporary, and a reader only ever sees a complete file.
#pragma once
#include <string>

namespace pivotmt {

std::string unique_temp_path(const std::string& final_path);

// Writes `text` to a unique temporary beside `path` and renames it over `path`; throws
// naming the file when it cannot.
void write_file_atomically(const std::string& path, const std::string& text);

}  // namespace pivotmt
