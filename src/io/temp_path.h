// Names for files written beside their final path and renamed into place. Unique per
// process and call, so concurrent writers (threads or processes sharing a cache) never
// collide on the temporary, and a reader only ever sees a complete file.
#pragma once
#include <string>

namespace pivotmt {

std::string unique_temp_path(const std::string& final_path);

}  // namespace pivotmt
