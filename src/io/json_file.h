// Reading JSON files with errors that name the file and the position.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace pivotmt {

// Throws Error("PATH: cannot open") or FormatError("PATH: invalid JSON at byte N: ...").
nlohmann::json read_json_file(const std::string& path);

// Writes `value` (pretty-printed, trailing newline) atomically: PATH.tmp then rename.
void write_json_file(const std::string& path, const nlohmann::json& value);

}  // namespace pivotmt
