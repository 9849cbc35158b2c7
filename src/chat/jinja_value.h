// Values of the Jinja subset used by chat templates, with Python's semantics where
// templates can see them: truthiness, str() formatting (True, None, ['a']), comparisons
// and json.dumps-style tojson.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

namespace pivotmt::jinja {

struct Value;
using List = std::vector<Value>;
// Insertion-ordered dictionary (Python dicts keep order).
struct Dict {
  std::vector<std::pair<std::string, Value>> items;
  const Value* find(const std::string& key) const;
  Value* find(const std::string& key);
  void set(const std::string& key, Value v);
};
using Function = std::function<Value(std::vector<Value>& args, std::vector<std::pair<std::string, Value>>& kwargs)>;

struct Undefined {
  std::string name;  // what was looked up, for messages
};
struct None {};

struct Value {
  // Lists and dicts are shared (Python reference semantics: namespace attributes mutate).
  std::variant<Undefined, None, bool, int64_t, double, std::string, std::shared_ptr<List>, std::shared_ptr<Dict>,
               std::shared_ptr<Function>>
      v;
  bool is_namespace = false;  // a namespace() object: attributes assignable with set

  Value() : v(Undefined{}) {}
  Value(None) : v(None{}) {}
  Value(bool b) : v(b) {}
  Value(int64_t i) : v(i) {}
  Value(int i) : v(int64_t(i)) {}
  Value(double d) : v(d) {}
  Value(std::string s) : v(std::move(s)) {}
  Value(const char* s) : v(std::string(s)) {}
  Value(List l) : v(std::make_shared<List>(std::move(l))) {}
  Value(Dict d) : v(std::make_shared<Dict>(std::move(d))) {}
  static Value undefined(std::string name) {
    Value x;
    x.v = Undefined{std::move(name)};
    return x;
  }
  static Value function(Function f) {
    Value x;
    x.v = std::make_shared<Function>(std::move(f));
    return x;
  }

  bool is_undefined() const { return std::holds_alternative<Undefined>(v); }
  bool is_none() const { return std::holds_alternative<None>(v); }
  bool is_bool() const { return std::holds_alternative<bool>(v); }
  bool is_int() const { return std::holds_alternative<int64_t>(v); }
  bool is_float() const { return std::holds_alternative<double>(v); }
  bool is_number() const { return is_int() || is_float(); }
  bool is_string() const { return std::holds_alternative<std::string>(v); }
  bool is_list() const { return std::holds_alternative<std::shared_ptr<List>>(v); }
  bool is_dict() const { return std::holds_alternative<std::shared_ptr<Dict>>(v); }
  bool is_function() const { return std::holds_alternative<std::shared_ptr<Function>>(v); }

  const std::string& str() const { return std::get<std::string>(v); }
  List& list() const { return *std::get<std::shared_ptr<List>>(v); }
  Dict& dict() const { return *std::get<std::shared_ptr<Dict>>(v); }
  double number() const { return is_int() ? double(std::get<int64_t>(v)) : is_bool() ? double(std::get<bool>(v)) : std::get<double>(v); }
  int64_t integer() const { return is_int() ? std::get<int64_t>(v) : is_bool() ? int64_t(std::get<bool>(v)) : int64_t(std::get<double>(v)); }

  bool truthy() const;
  std::string type_name() const;
};

// Python's str() of a value (what {{ x }} prints; undefined prints nothing).
std::string to_display(const Value& v);
// Python's repr() (inside containers: 'a', True, None).
std::string to_repr(const Value& v);
// json.dumps(v, ensure_ascii=False, indent=indent, sort_keys=sort_keys).
std::string to_json(const Value& v, int indent = -1, bool sort_keys = false);
bool equals(const Value& a, const Value& b);
// -1, 0, 1; throws when Python would (e.g. str < int).
int compare(const Value& a, const Value& b);

Value from_json(const nlohmann::json& j);

}  // namespace pivotmt::jinja
