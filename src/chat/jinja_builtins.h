// The builtins of the chat-template language that need no renderer state: the methods of
// str / dict / list values (obj.name), the tests (`is defined`, `is in`, ...), HTML
// escaping, and the argument helpers the filters share. Split from jinja_eval.cpp, which
// keeps scopes, control flow, operators and filters.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "chat/jinja_value.h"

namespace pivotmt::jinja {

using Args = std::vector<Value>;
using Kwargs = std::vector<std::pair<std::string, Value>>;

// Throws TemplateError naming the template line.
[[noreturn]] void fail(int line, const std::string& what);

const Value* kwarg(const Kwargs& kw, const char* name);
// Positional argument i, else keyword `name`, else nullptr.
const Value* arg(const Args& a, const Kwargs& kw, size_t i, const char* name);
// Python's str.strip / lstrip / rstrip (whitespace, or the characters of `chars`).
std::string strip_chars(const std::string& s, const Value* chars, bool left, bool right);
Value make_list(std::vector<Value> v);

// obj.name: methods of str/dict/list, else a dict item (Jinja's getattr order).
Value get_attribute(const Value& obj, const std::string& name, int line, bool from_dot);
// `v is t(a...)`.
bool run_test(const std::string& t, const Value& v, const Args& a, int line);
std::string escape_html(const std::string& s);

}  // namespace pivotmt::jinja
