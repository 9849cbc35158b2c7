#include "chat/jinja_value.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "core/error.h"

namespace pivotmt::jinja {

const Value* Dict::find(const std::string& key) const {
  for (const auto& [k, v] : items)
    if (k == key) return &v;
  return nullptr;
}
Value* Dict::find(const std::string& key) {
  for (auto& [k, v] : items)
    if (k == key) return &v;
  return nullptr;
}
void Dict::set(const std::string& key, Value v) {
  if (Value* existing = find(key)) *existing = std::move(v);
  else items.emplace_back(key, std::move(v));
}

bool Value::truthy() const {
  if (is_undefined() || is_none()) return false;
  if (is_bool()) return std::get<bool>(v);
  if (is_int()) return std::get<int64_t>(v) != 0;
  if (is_float()) return std::get<double>(v) != 0.0;
  if (is_string()) return !str().empty();
  if (is_list()) return !list().empty();
  if (is_dict()) return is_namespace || !dict().items.empty();
  return true;
}

std::string Value::type_name() const {
  if (is_undefined()) return "undefined";
  if (is_none()) return "NoneType";
  if (is_bool()) return "bool";
  if (is_int()) return "int";
  if (is_float()) return "float";
  if (is_string()) return "str";
  if (is_list()) return "list";
  if (is_dict()) return is_namespace ? "Namespace" : "dict";
  return "function";
}

namespace {
// Python's float repr: shortest round-trip, with ".0" for integral values.
std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  std::string s = fmt::format("{}", d);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

std::string py_quote(const std::string& s) {
  // repr(): single quotes unless the string holds ' and no ".
  const bool use_double = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char q = use_double ? '"' : '\'';
  std::string out(1, q);
  for (unsigned char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == q) out += std::string("\\") + char(q);
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) out += fmt::format("\\x{:02x}", c);
    else out.push_back(char(c));
  }
  return out + q;
}

void json_string(std::string& out, const std::string& s) {
  out.push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) out += fmt::format("\\u{:04x}", c);
        else out.push_back(char(c));
    }
  }
  out.push_back('"');
}

void json_dump(std::string& out, const Value& v, int indent, bool sort_keys, int depth) {
  auto newline = [&](int d) {
    if (indent < 0) return;
    out.push_back('\n');
    out.append(size_t(indent * d), ' ');
  };
  if (v.is_undefined() || v.is_none()) out += "null";
  else if (v.is_bool()) out += std::get<bool>(v.v) ? "true" : "false";
  else if (v.is_int()) out += std::to_string(std::get<int64_t>(v.v));
  else if (v.is_float()) out += std::isnan(v.number()) ? "NaN" : std::isinf(v.number()) ? (v.number() > 0 ? "Infinity" : "-Infinity") : float_repr(v.number());
  else if (v.is_string()) json_string(out, v.str());
  else if (v.is_list()) {
    const auto& l = v.list();
    out.push_back('[');
    for (size_t i = 0; i < l.size(); ++i) {
      if (i) out += indent >= 0 ? "," : ", ";
      newline(depth + 1);
      json_dump(out, l[i], indent, sort_keys, depth + 1);
    }
    if (!l.empty()) newline(depth);
    out.push_back(']');
  } else if (v.is_dict()) {
    auto items = v.dict().items;
    if (sort_keys) std::stable_sort(items.begin(), items.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    out.push_back('{');
    for (size_t i = 0; i < items.size(); ++i) {
      if (i) out += indent >= 0 ? "," : ", ";
      newline(depth + 1);
      json_string(out, items[i].first);
      out += ": ";
      json_dump(out, items[i].second, indent, sort_keys, depth + 1);
    }
    if (!items.empty()) newline(depth);
    out.push_back('}');
  } else {
    throw Error("tojson: a function is not JSON serializable");
  }
}
}  // namespace

std::string to_repr(const Value& v) {
  if (v.is_string()) return py_quote(v.str());
  if (v.is_undefined()) return "";
  if (v.is_none()) return "None";
  if (v.is_bool()) return std::get<bool>(v.v) ? "True" : "False";
  if (v.is_int()) return std::to_string(std::get<int64_t>(v.v));
  if (v.is_float()) return float_repr(v.number());
  if (v.is_list()) {
    std::string s = "[";
    const auto& l = v.list();
    for (size_t i = 0; i < l.size(); ++i) s += (i ? ", " : "") + to_repr(l[i]);
    return s + "]";
  }
  if (v.is_dict()) {
    if (v.is_namespace) return "<Namespace>";
    std::string s = "{";
    const auto& items = v.dict().items;
    for (size_t i = 0; i < items.size(); ++i)
      s += (i ? ", " : "") + py_quote(items[i].first) + ": " + to_repr(items[i].second);
    return s + "}";
  }
  return "<function>";
}

std::string to_display(const Value& v) {
  if (v.is_string()) return v.str();
  return to_repr(v);
}

std::string to_json(const Value& v, int indent, bool sort_keys) {
  std::string out;
  json_dump(out, v, indent, sort_keys, 0);
  return out;
}

bool equals(const Value& a, const Value& b) {
  if ((a.is_number() || a.is_bool()) && (b.is_number() || b.is_bool())) return a.number() == b.number();
  if (a.is_string() && b.is_string()) return a.str() == b.str();
  if ((a.is_none() || a.is_undefined()) && (b.is_none() || b.is_undefined())) return a.is_none() == b.is_none();
  if (a.is_list() && b.is_list()) {
    const auto &x = a.list(), &y = b.list();
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i)
      if (!equals(x[i], y[i])) return false;
    return true;
  }
  if (a.is_dict() && b.is_dict()) {
    const auto &x = a.dict().items, &y = b.dict().items;
    if (x.size() != y.size()) return false;
    for (const auto& [k, v] : x) {
      const Value* o = b.dict().find(k);
      if (!o || !equals(v, *o)) return false;
    }
    return true;
  }
  return false;
}

int compare(const Value& a, const Value& b) {
  if ((a.is_number() || a.is_bool()) && (b.is_number() || b.is_bool())) {
    const double x = a.number(), y = b.number();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) return a.str() < b.str() ? -1 : a.str() > b.str() ? 1 : 0;
  if (a.is_list() && b.is_list()) {
    const auto &x = a.list(), &y = b.list();
    for (size_t i = 0; i < std::min(x.size(), y.size()); ++i)
      if (int c = compare(x[i], y[i])) return c;
    return x.size() < y.size() ? -1 : x.size() > y.size() ? 1 : 0;
  }
  throw Error(fmt::format("'<' not supported between '{}' and '{}'", a.type_name(), b.type_name()));
}

Value from_json(const nlohmann::json& j) {
  if (j.is_null()) return Value(None{});
  if (j.is_boolean()) return Value(j.get<bool>());
  if (j.is_number_integer()) return Value(j.get<int64_t>());
  if (j.is_number()) return Value(j.get<double>());
  if (j.is_string()) return Value(j.get<std::string>());
  if (j.is_array()) {
    List l;
    for (const auto& e : j) l.push_back(from_json(e));
    return Value(std::move(l));
  }
  Dict d;
  for (const auto& [k, e] : j.items()) d.items.emplace_back(k, from_json(e));
  return Value(std::move(d));
}

}  // namespace pivotmt::jinja
