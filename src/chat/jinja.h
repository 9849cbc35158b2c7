// A Jinja2 interpreter for the subset real chat templates use (Llama-2/3, Mistral, Zephyr,
// ChatML, TowerInstruct, Hermes): for / if / elif / else, set (also namespace attributes),
// loop.* variables, break / continue, expressions with Python semantics (comparisons,
// `in`, `~`, slicing, string and dict methods), filters (trim, length, tojson, default,
// join, upper, lower, ...) and tests (defined, none, string, ...). Rendered the way
// transformers renders chat templates: trim_blocks and lstrip_blocks on.
// Anything outside the subset fails at parse time with the template line and construct.
#pragma once
#include <memory>
#include <string>

#include "chat/jinja_value.h"

namespace pivotmt::jinja {

struct Node;

class Template {
 public:
  explicit Template(const std::string& source);  // throws TemplateError
  ~Template();
  Template(Template&&) noexcept;
  std::string render(const Dict& context) const;

 private:
  std::vector<std::unique_ptr<Node>> body_;
};

// Parse and render errors carry the template line.
class TemplateError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace pivotmt::jinja
