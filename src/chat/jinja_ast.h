// Syntax tree of the Jinja subset (internal to chat/).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "chat/jinja_value.h"

namespace pivotmt::jinja {

struct Expr {
  enum class Kind {
    Literal, Name, Attr, Item, Slice, Call, Filter, Test, Unary, Binary, Conditional, ListLit, DictLit
  } kind;
  int line = 0;
  Value literal;                                   // Literal
  std::string name;                                // Name, Attr, Filter, Test, Unary/Binary op
  std::vector<std::unique_ptr<Expr>> args;         // operands / call args / list items
  std::vector<std::pair<std::string, std::unique_ptr<Expr>>> kwargs;  // Call / Filter / Test keyword args
  bool negated = false;                            // Test: "is not"
  std::vector<std::unique_ptr<Expr>> keys;         // DictLit keys
};

struct Node {
  enum class Kind { Text, Output, If, For, Set, SetBlock, Break, Continue, Generation } kind;
  int line = 0;
  std::string text;                              // Text
  std::unique_ptr<Expr> expr;                    // Output, Set value, For iterable
  // If: branches (condition, body); a null condition is else.
  std::vector<std::pair<std::unique_ptr<Expr>, std::vector<std::unique_ptr<Node>>>> branches;
  // For
  std::vector<std::string> targets;
  std::unique_ptr<Expr> filter;                  // "for x in y if cond"
  std::vector<std::unique_ptr<Node>> body, else_body;
  // Set: target name, or namespace attribute (target.attr)
  std::string target, attr;
};

std::vector<std::unique_ptr<Node>> parse_template(const std::string& source);

}  // namespace pivotmt::jinja
