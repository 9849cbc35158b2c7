#include "io/json_fields.h"

#include <cmath>

#include <fmt/format.h>

#include "core/error.h"

namespace pivotmt {
using json = nlohmann::json;

std::string json_excerpt(const json& value) {
  std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return text;
}

namespace {
[[noreturn]] void wrong(const json& value, std::string_view what, std::string_view expected) {
  throw FormatError(fmt::format("{} = {} must be {}", what, json_excerpt(value), expected));
}

const json* find_field(const json& object, std::string_view key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}
}  // namespace

std::string field_name(std::string_view where, std::string_view key) { return fmt::format("{}: field '{}'", where, key); }

int64_t json_integer(const json& value, std::string_view what, int64_t lo, int64_t hi) {
  auto expected = [&] {
    if (lo == std::numeric_limits<int64_t>::min() && hi == std::numeric_limits<int64_t>::max()) return std::string("an integer");
    if (hi == std::numeric_limits<int64_t>::max()) return fmt::format("an integer >= {}", lo);
    return fmt::format("an integer in [{}, {}]", lo, hi);
  };
  // nlohmann stores every non-negative integer unsigned: compared as such, a value above
  // INT64_MAX is refused rather than wrapped by get<int64_t>.
  if (value.is_number_unsigned()) {
    const uint64_t u = value.get<uint64_t>();
    if (hi < 0 || u > uint64_t(hi) || (lo > 0 && u < uint64_t(lo))) wrong(value, what, expected());
    return int64_t(u);
  }
  if (!value.is_number_integer()) wrong(value, what, expected());
  const int64_t v = value.get<int64_t>();
  if (v < lo || v > hi) wrong(value, what, expected());
  return v;
}

uint64_t json_unsigned(const json& value, std::string_view what) {
  if (!value.is_number_unsigned()) wrong(value, what, "an integer >= 0");
  return value.get<uint64_t>();
}

double json_number(const json& value, std::string_view what) {
  if (!value.is_number()) wrong(value, what, "a number");
  const double v = value.get<double>();
  if (!std::isfinite(v)) wrong(value, what, "a finite number");
  return v;
}

std::string json_string(const json& value, std::string_view what) {
  if (!value.is_string()) wrong(value, what, "a string");
  return value.get<std::string>();
}

bool json_bool(const json& value, std::string_view what) {
  if (!value.is_boolean()) wrong(value, what, "true or false");
  return value.get<bool>();
}

int64_t field_integer(const json& object, std::string_view key, std::string_view where, int64_t fallback, int64_t lo,
                      int64_t hi) {
  const json* v = find_field(object, key);
  return v ? json_integer(*v, field_name(where, key), lo, hi) : fallback;
}

double field_number(const json& object, std::string_view key, std::string_view where, double fallback) {
  const json* v = find_field(object, key);
  return v ? json_number(*v, field_name(where, key)) : fallback;
}

std::string field_string(const json& object, std::string_view key, std::string_view where, const std::string& fallback) {
  const json* v = find_field(object, key);
  return v ? json_string(*v, field_name(where, key)) : fallback;
}

bool field_bool(const json& object, std::string_view key, std::string_view where, bool fallback) {
  const json* v = find_field(object, key);
  return v ? json_bool(*v, field_name(where, key)) : fallback;
}

const json& required_field(const json& object, std::string_view key, std::string_view where) {
  if (!object.is_object()) throw FormatError(fmt::format("{} = {} must be a JSON object", where, json_excerpt(object)));
  const json* v = find_field(object, key);
  if (!v) throw FormatError(fmt::format("{}: missing required field '{}'", where, key));
  return *v;
}

}  // namespace pivotmt
