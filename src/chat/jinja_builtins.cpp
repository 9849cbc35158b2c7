#include "chat/jinja_builtins.h"

#include <cctype>

#include <fmt/format.h>

#include "chat/jinja.h"
#include "text/unicode.h"

namespace pivotmt::jinja {

[[noreturn]] void fail(int line, const std::string& what) {
  throw TemplateError(fmt::format("chat template line {}: {}", line, what));
}

const Value* kwarg(const Kwargs& kw, const char* name) {
  for (const auto& [k, v] : kw)
    if (k == name) return &v;
  return nullptr;
}
// Positional argument i, else keyword `name`, else nullptr.
const Value* arg(const Args& a, const Kwargs& kw, size_t i, const char* name) {
  if (i < a.size()) return &a[i];
  return kwarg(kw, name);
}

std::string strip_chars(const std::string& s, const Value* chars, bool left, bool right) {
  std::u32string u = utf8_to_u32(s);
  std::u32string set = chars && chars->is_string() ? utf8_to_u32(chars->str()) : std::u32string();
  auto strip = [&](char32_t c) { return chars && chars->is_string() ? set.find(c) != std::u32string::npos : py_isspace(c); };
  size_t b = 0, e = u.size();
  if (left)
    while (b < e && strip(u[b])) ++b;
  if (right)
    while (e > b && strip(u[e - 1])) --e;
  return u32_to_utf8(u.substr(b, e - b));
}

Value make_list(std::vector<Value> v) { return Value(List(std::move(v))); }

// obj.name: methods of str/dict/list, else a dict item (Jinja's getattr order).
Value get_attribute(const Value& obj, const std::string& name, int line, bool from_dot) {
  if (obj.is_undefined()) fail(line, fmt::format("'{}' is undefined", std::get<Undefined>(obj.v).name));
  if (obj.is_dict() && from_dot)
    if (const Value* v = obj.dict().find(name)) return *v;
  if (obj.is_string()) {
    const std::string s = obj.str();
    if (name == "strip" || name == "lstrip" || name == "rstrip")
      return Value::function([s, name](Args& a, Kwargs&) -> Value {
        return Value(strip_chars(s, a.empty() ? nullptr : &a[0], name != "rstrip", name != "lstrip"));
      });
    if (name == "upper" || name == "lower")
      return Value::function([s, name](Args&, Kwargs&) -> Value {
        std::u32string u = utf8_to_u32(s);
        if (name == "lower") return Value(u32_to_utf8(py_lower(u)));
        std::string r = s;
        for (auto& c : r) c = char(std::toupper(static_cast<unsigned char>(c)));
        return Value(r);
      });
    if (name == "title" || name == "capitalize")
      return Value::function([s, name](Args&, Kwargs&) -> Value {
        std::string r = s;
        bool start = true;
        for (auto& c : r) {
          const bool alpha = std::isalpha(static_cast<unsigned char>(c));
          if (name == "capitalize") c = char(start ? std::toupper(static_cast<unsigned char>(c)) : std::tolower(static_cast<unsigned char>(c)));
          else c = char(start && alpha ? std::toupper(static_cast<unsigned char>(c)) : alpha ? std::tolower(static_cast<unsigned char>(c)) : c);
          start = name == "capitalize" ? false : !alpha;
        }
        return Value(r);
      });
    if (name == "startswith" || name == "endswith")
      return Value::function([s, name](Args& a, Kwargs&) -> Value {
        if (a.empty()) throw TemplateError(name + "() needs an argument");
        std::vector<std::string> options;
        if (a[0].is_list())
          for (const auto& x : a[0].list()) options.push_back(to_display(x));
        else options.push_back(to_display(a[0]));
        for (const auto& o : options)
          if (name == "startswith" ? s.starts_with(o) : s.ends_with(o)) return Value(true);
        return Value(false);
      });
    if (name == "split")
      return Value::function([s](Args& a, Kwargs& kw) -> Value {
        const Value* sep = arg(a, kw, 0, "sep");
        const Value* maxv = arg(a, kw, 1, "maxsplit");
        int64_t maxsplit = maxv ? maxv->integer() : -1;
        List out;
        if (!sep || sep->is_none()) {
          for (auto& w : py_split(utf8_to_u32(s))) out.push_back(Value(u32_to_utf8(w)));
          return Value(std::move(out));
        }
        const std::string d = sep->str();
        if (d.empty()) throw TemplateError("split(): empty separator");
        size_t pos = 0;
        while (maxsplit != 0) {
          const size_t hit = s.find(d, pos);
          if (hit == std::string::npos) break;
          out.push_back(Value(s.substr(pos, hit - pos)));
          pos = hit + d.size();
          --maxsplit;
        }
        out.push_back(Value(s.substr(pos)));
        return Value(std::move(out));
      });
    if (name == "replace")
      return Value::function([s](Args& a, Kwargs&) -> Value {
        if (a.size() < 2) throw TemplateError("replace() needs two arguments");
        const std::string from = to_display(a[0]), to = to_display(a[1]);
        int64_t count = a.size() > 2 ? a[2].integer() : -1;
        std::string out;
        size_t pos = 0;
        if (from.empty()) return Value(s);
        while (count != 0) {
          const size_t hit = s.find(from, pos);
          if (hit == std::string::npos) break;
          out.append(s, pos, hit - pos);
          out += to;
          pos = hit + from.size();
          --count;
        }
        out.append(s, pos);
        return Value(out);
      });
    if (name == "find" || name == "count")
      return Value::function([s, name](Args& a, Kwargs&) -> Value {
        if (a.empty()) throw TemplateError(name + "() needs an argument");
        const std::string sub = to_display(a[0]);
        if (name == "find") {
          const size_t hit = s.find(sub);
          return Value(hit == std::string::npos ? int64_t(-1) : int64_t(utf8_to_u32(s.substr(0, hit)).size()));
        }
        int64_t n = 0;
        for (size_t pos = 0; !sub.empty() && (pos = s.find(sub, pos)) != std::string::npos; pos += sub.size()) ++n;
        return Value(n);
      });
  }
  if (obj.is_dict() && !obj.is_namespace) {
    const auto d = std::get<std::shared_ptr<Dict>>(obj.v);
    if (name == "items")
      return Value::function([d](Args&, Kwargs&) -> Value {
        List l;
        for (const auto& [k, v] : d->items) l.push_back(make_list({Value(k), v}));
        return Value(std::move(l));
      });
    if (name == "keys" || name == "values")
      return Value::function([d, name](Args&, Kwargs&) -> Value {
        List l;
        for (const auto& [k, v] : d->items) l.push_back(name == "keys" ? Value(k) : v);
        return Value(std::move(l));
      });
    if (name == "get")
      return Value::function([d](Args& a, Kwargs&) -> Value {
        if (a.empty()) throw TemplateError("get() needs a key");
        if (const Value* v = d->find(to_display(a[0]))) return *v;
        return a.size() > 1 ? a[1] : Value(None{});
      });
  }
  if (obj.is_dict())
    if (const Value* v = obj.dict().find(name)) return *v;
  return Value::undefined(name);
}

bool run_test(const std::string& t, const Value& v, const Args& a, int line) {
  if (t == "defined") return !v.is_undefined();
  if (t == "undefined") return v.is_undefined();
  if (t == "none") return v.is_none();
  if (t == "boolean") return v.is_bool();
  if (t == "true") return v.is_bool() && std::get<bool>(v.v);
  if (t == "false") return v.is_bool() && !std::get<bool>(v.v);
  if (t == "string") return v.is_string();
  if (t == "number") return v.is_number();
  if (t == "integer") return v.is_int();
  if (t == "float") return v.is_float();
  if (t == "mapping") return v.is_dict();
  if (t == "sequence" || t == "iterable") return v.is_list() || v.is_string() || v.is_dict();
  if (t == "callable") return v.is_function();
  if (t == "even" || t == "odd") return v.is_int() && (v.integer() % 2 == 0) == (t == "even");
  if (t == "lower" || t == "upper") {
    if (!v.is_string()) return false;
    for (char c : v.str())
      if (std::isalpha(static_cast<unsigned char>(c)) && (t == "lower" ? std::isupper(static_cast<unsigned char>(c)) : std::islower(static_cast<unsigned char>(c)))) return false;
    return true;
  }
  if (a.empty()) fail(line, fmt::format("test '{}' is unsupported or needs an argument", t));
  if (t == "divisibleby") return a[0].integer() != 0 && v.integer() % a[0].integer() == 0;
  if (t == "equalto" || t == "eq" || t == "==" || t == "sameas") return equals(v, a[0]);
  if (t == "ne" || t == "!=") return !equals(v, a[0]);
  try {
    if (t == "lt" || t == "<") return compare(v, a[0]) < 0;
    if (t == "gt" || t == ">") return compare(v, a[0]) > 0;
    if (t == "le" || t == "<=") return compare(v, a[0]) <= 0;
    if (t == "ge" || t == ">=") return compare(v, a[0]) >= 0;
  } catch (const std::exception& ex) {
    fail(line, ex.what());
  }
  if (t == "in") {
    const Value& c = a[0];
    if (c.is_list())
      for (const auto& x : c.list())
        if (equals(v, x)) return true;
    if (c.is_string() && v.is_string()) return c.str().find(v.str()) != std::string::npos;
    if (c.is_dict() && v.is_string()) return c.dict().find(v.str()) != nullptr;
    return false;
  }
  fail(line, fmt::format("unsupported test '{}'", t));
}

std::string escape_html(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

}  // namespace pivotmt::jinja
