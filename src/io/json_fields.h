// Typed reads from JSON files that pivotmt did not write (config.json, tokenizer.json,
// tokenizer_config.json, adapter_config.json, sentence-transformers' configs, ...).
//
// Why not nlohmann's own get<T>() / value(): its type_error names no field ("type must be
// string, but is number"), and it converts any number to the type asked for, so an id written
// as 1e300 or 1.5 became undefined behaviour (a double cast out of int's range) or a silent
// truncation. These readers accept only the JSON type the field has in the Hugging Face
// libraries, check integer ranges before converting, and throw a FormatError that names the
// file, the field and what was expected.
#pragma once
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace pivotmt {

// A value as it appears in an error message, shortened to ~60 characters.
std::string json_excerpt(const nlohmann::json& value);

// One value. `what` names it in errors, e.g. "PATH/tokenizer.json: model.vocab['hello']".
int64_t json_integer(const nlohmann::json& value, std::string_view what,
                     int64_t lo = std::numeric_limits<int64_t>::min(), int64_t hi = std::numeric_limits<int64_t>::max());
// The whole uint64 range (seeds): json_integer stops at INT64_MAX.
uint64_t json_unsigned(const nlohmann::json& value, std::string_view what);
double json_number(const nlohmann::json& value, std::string_view what);  // an integer or a finite float
std::string json_string(const nlohmann::json& value, std::string_view what);
bool json_bool(const nlohmann::json& value, std::string_view what);

// Fields of an object. `where` names the object ("PATH/config.json", "PATH/tokenizer.json:
// model"); a field that is absent or null gives `fallback`.
int64_t field_integer(const nlohmann::json& object, std::string_view key, std::string_view where, int64_t fallback,
                      int64_t lo = std::numeric_limits<int64_t>::min(), int64_t hi = std::numeric_limits<int64_t>::max());
double field_number(const nlohmann::json& object, std::string_view key, std::string_view where, double fallback);
std::string field_string(const nlohmann::json& object, std::string_view key, std::string_view where,
                         const std::string& fallback);
bool field_bool(const nlohmann::json& object, std::string_view key, std::string_view where, bool fallback);

// A field that must be there (null counts as missing).
const nlohmann::json& required_field(const nlohmann::json& object, std::string_view key, std::string_view where);

// "WHERE: field 'KEY'": the name a field's value gets in errors.
std::string field_name(std::string_view where, std::string_view key);

}  // namespace pivotmt
