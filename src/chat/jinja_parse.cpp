// Lexing (with transformers' trim_blocks / lstrip_blocks and -/+ whitespace control) and
// recursive-descent parsing of the Jinja subset.
#include <algorithm>
#include <cctype>
#include <cstring>

#include <fmt/format.h>

#include "chat/jinja.h"
#include "chat/jinja_ast.h"

namespace pivotmt::jinja {
namespace {

[[noreturn]] void fail(int line, const std::string& what) {
  throw TemplateError(fmt::format("chat template line {}: {}", line, what));
}

struct Part {
  enum class Kind { Text, Expr, Stmt } kind;
  std::string content;
  int line;
};

int line_at(const std::string& s, size_t pos) { return 1 + int(std::count(s.begin(), s.begin() + long(pos), '\n')); }

// Splits the source into text and tags, applying whitespace control.
std::vector<Part> split_parts(const std::string& src) {
  std::vector<Part> parts;
  size_t pos = 0;
  bool strip_next_ws = false, trim_next_newline = false;
  while (pos <= src.size()) {
    size_t open = src.find('{', pos);
    while (open != std::string::npos && open + 1 < src.size() && src[open + 1] != '{' && src[open + 1] != '%' &&
           src[open + 1] != '#')
      open = src.find('{', open + 1);
    if (open != std::string::npos && open + 1 >= src.size()) open = std::string::npos;
    std::string text = src.substr(pos, open == std::string::npos ? std::string::npos : open - pos);
    if (strip_next_ws) {
      size_t k = 0;
      while (k < text.size() && std::isspace(static_cast<unsigned char>(text[k]))) ++k;
      text.erase(0, k);
    } else if (trim_next_newline && !text.empty() && text[0] == '\n') {
      text.erase(0, 1);
    }
    strip_next_ws = trim_next_newline = false;
    if (open == std::string::npos) {
      if (!text.empty()) parts.push_back({Part::Kind::Text, text, line_at(src, pos)});
      break;
    }
    const char type = src[open + 1];
    const std::string close = type == '{' ? "}}" : type == '%' ? "%}" : "#}";
    size_t body = open + 2;
    const bool strip_before = body < src.size() && src[body] == '-';
    const bool keep_before = body < src.size() && src[body] == '+';
    if (strip_before || keep_before) ++body;
    const size_t end = src.find(close, body);
    if (end == std::string::npos) fail(line_at(src, open), fmt::format("'{}' tag never closes", src.substr(open, 2)));
    size_t content_end = end;
    const bool strip_after = content_end > body && src[content_end - 1] == '-';
    const bool keep_after = content_end > body && src[content_end - 1] == '+';
    if (strip_after || keep_after) --content_end;
    if (strip_before) {
      size_t k = text.size();
      while (k > 0 && std::isspace(static_cast<unsigned char>(text[k - 1]))) --k;
      text.erase(k);
    } else if (type != '{' && !keep_before) {
      // lstrip_blocks: when only spaces/tabs stand between the start of the tag's line
      // and the tag, they go.
      const size_t line_start = open == 0 ? 0 : src.rfind('\n', open - 1) + 1;  // npos + 1 == 0
      bool blank = line_start >= pos;
      for (size_t k = line_start; blank && k < open; ++k) blank = src[k] == ' ' || src[k] == '\t';
      if (blank) text.erase(text.size() - std::min(text.size(), open - line_start));
    }
    if (!text.empty()) parts.push_back({Part::Kind::Text, text, line_at(src, pos)});
    if (type != '#')
      parts.push_back({type == '{' ? Part::Kind::Expr : Part::Kind::Stmt, src.substr(body, content_end - body),
                       line_at(src, open)});
    pos = end + 2;
    if (strip_after) strip_next_ws = true;
    else if (type != '{' && !keep_after) trim_next_newline = true;  // trim_blocks
  }
  return parts;
}

// ---- expression tokens ----
struct Tok {
  enum class Kind { Name, Number, String, Op, End } kind;
  std::string text;
  Value value;
};

std::vector<Tok> lex_expr(const std::string& s, int line) {
  std::vector<Tok> out;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
      continue;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      out.push_back({Tok::Kind::Name, s.substr(i, j - i), {}});
      i = j;
      continue;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      bool is_float = false;
      if (j + 1 < s.size() && s[j] == '.' && std::isdigit(static_cast<unsigned char>(s[j + 1]))) {
        is_float = true;
        ++j;
        while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      }
      std::string digits = s.substr(i, j - i);
      digits.erase(std::remove(digits.begin(), digits.end(), '_'), digits.end());
      Value number;
      try {
        number = is_float ? Value(std::stod(digits)) : Value(int64_t(std::stoll(digits)));
      } catch (const std::exception&) {
        fail(line, fmt::format("number {} is out of range", digits));
      }
      out.push_back({Tok::Kind::Number, digits, number});
      i = j;
      continue;
    }
    if (c == '\'' || c == '"') {
      std::string v;
      size_t j = i + 1;
      for (; j < s.size() && s[j] != c; ++j) {
        if (s[j] == '\\' && j + 1 < s.size()) {
          const char e = s[++j];
          switch (e) {
            case 'n': v.push_back('\n'); break;
            case 't': v.push_back('\t'); break;
            case 'r': v.push_back('\r'); break;
            case '\\': v.push_back('\\'); break;
            case '\'': v.push_back('\''); break;
            case '"': v.push_back('"'); break;
            default: v.push_back('\\'); v.push_back(e);
          }
        } else {
          v.push_back(s[j]);
        }
      }
      if (j >= s.size()) fail(line, "unterminated string literal");
      out.push_back({Tok::Kind::String, v, Value(v)});
      i = j + 1;
      continue;
    }
    static const char* ops[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "|", ".", ",",
                                ":", "(", ")", "[", "]", "{", "}", "<", ">", "="};
    bool matched = false;
    for (const char* op : ops) {
      const size_t n = std::strlen(op);
      if (s.compare(i, n, op) == 0) {
        out.push_back({Tok::Kind::Op, op, {}});
        i += n;
        matched = true;
        break;
      }
    }
    if (!matched) fail(line, fmt::format("unexpected character '{}'", c));
  }
  out.push_back({Tok::Kind::End, "", {}});
  return out;
}

class ExprParser {
 public:
  ExprParser(const std::string& s, int line) : toks_(lex_expr(s, line)), line_(line) {}

  std::unique_ptr<Expr> parse_all() {
    auto e = expression();
    if (!at_end()) fail(line_, fmt::format("unexpected '{}' in expression", peek().text));
    return e;
  }
  std::unique_ptr<Expr> expression() { return conditional(); }
  bool at_end() const { return toks_[pos_].kind == Tok::Kind::End; }
  const Tok& peek(size_t k = 0) const { return toks_[std::min(pos_ + k, toks_.size() - 1)]; }
  bool is_name(const char* n, size_t k = 0) const { return peek(k).kind == Tok::Kind::Name && peek(k).text == n; }
  bool is_op(const char* o) const { return peek().kind == Tok::Kind::Op && peek().text == o; }
  Tok next() { return toks_[pos_ < toks_.size() - 1 ? pos_++ : pos_]; }
  void expect_op(const char* o) {
    if (!is_op(o)) fail(line_, fmt::format("expected '{}' but found '{}'", o, peek().text.empty() ? "end" : peek().text));
    ++pos_;
  }
  std::string expect_name() {
    if (peek().kind != Tok::Kind::Name) fail(line_, fmt::format("expected a name but found '{}'", peek().text));
    return next().text;
  }
  // Only an "or"-level expression (for "for ... in X if cond" and similar).
  std::unique_ptr<Expr> or_only() { return or_expr(); }

 private:
  std::unique_ptr<Expr> make(Expr::Kind k) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->line = line_;
    return e;
  }
  std::unique_ptr<Expr> binary(const std::string& op, std::unique_ptr<Expr> a, std::unique_ptr<Expr> b) {
    auto e = make(Expr::Kind::Binary);
    e->name = op;
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return e;
  }

  std::unique_ptr<Expr> conditional() {
    auto value = or_expr();
    if (is_name("if")) {
      ++pos_;
      auto e = make(Expr::Kind::Conditional);
      auto cond = or_expr();
      std::unique_ptr<Expr> otherwise;
      if (is_name("else")) {
        ++pos_;
        otherwise = conditional();
      } else {
        otherwise = make(Expr::Kind::Literal);  // undefined
      }
      e->args.push_back(std::move(cond));
      e->args.push_back(std::move(value));
      e->args.push_back(std::move(otherwise));
      return e;
    }
    return value;
  }
  std::unique_ptr<Expr> or_expr() {
    auto a = and_expr();
    while (is_name("or")) {
      ++pos_;
      a = binary("or", std::move(a), and_expr());
    }
    return a;
  }
  std::unique_ptr<Expr> and_expr() {
    auto a = not_expr();
    while (is_name("and")) {
      ++pos_;
      a = binary("and", std::move(a), not_expr());
    }
    return a;
  }
  std::unique_ptr<Expr> not_expr() {
    if (is_name("not")) {
      ++pos_;
      auto e = make(Expr::Kind::Unary);
      e->name = "not";
      e->args.push_back(not_expr());
      return e;
    }
    return compare();
  }
  std::unique_ptr<Expr> compare() {
    auto a = concat();
    while (true) {
      std::string op;
      if (peek().kind == Tok::Kind::Op && (peek().text == "==" || peek().text == "!=" || peek().text == "<" ||
                                           peek().text == ">" || peek().text == "<=" || peek().text == ">=")) {
        op = next().text;
      } else if (is_name("in")) {
        ++pos_;
        op = "in";
      } else if (is_name("not") && is_name("in", 1)) {
        pos_ += 2;
        op = "not in";
      } else {
        return a;
      }
      a = binary(op, std::move(a), concat());
    }
  }
  std::unique_ptr<Expr> concat() {
    auto a = add();
    while (is_op("~")) {
      ++pos_;
      a = binary("~", std::move(a), add());
    }
    return a;
  }
  std::unique_ptr<Expr> add() {
    auto a = mul();
    while (is_op("+") || is_op("-")) {
      const std::string op = next().text;
      a = binary(op, std::move(a), mul());
    }
    return a;
  }
  std::unique_ptr<Expr> mul() {
    auto a = power();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const std::string op = next().text;
      a = binary(op, std::move(a), power());
    }
    return a;
  }
  std::unique_ptr<Expr> power() {
    auto a = unary();
    while (is_op("**")) {
      ++pos_;
      a = binary("**", std::move(a), unary());
    }
    return a;
  }
  std::unique_ptr<Expr> unary() {
    if (is_op("-") || is_op("+")) {
      const std::string op = next().text;
      auto e = make(Expr::Kind::Unary);
      e->name = op;
      e->args.push_back(unary());
      return e;
    }
    return filtered(postfix(primary()));
  }
  void call_args(Expr& e) {
    expect_op("(");
    while (!is_op(")")) {
      if (peek().kind == Tok::Kind::Name && peek(1).kind == Tok::Kind::Op && peek(1).text == "=") {
        const std::string key = next().text;
        ++pos_;
        e.kwargs.emplace_back(key, expression());
      } else {
        e.args.push_back(expression());
      }
      if (!is_op(")")) expect_op(",");
    }
    expect_op(")");
  }
  std::unique_ptr<Expr> postfix(std::unique_ptr<Expr> e) {
    while (true) {
      if (is_op(".")) {
        ++pos_;
        auto a = make(Expr::Kind::Attr);
        a->name = peek().kind == Tok::Kind::Number ? next().text : expect_name();
        a->args.push_back(std::move(e));
        e = std::move(a);
      } else if (is_op("[")) {
        ++pos_;
        std::unique_ptr<Expr> start, stop, step;
        bool slice = false;
        if (!is_op(":")) start = expression();
        if (is_op(":")) {
          slice = true;
          ++pos_;
          if (!is_op(":") && !is_op("]")) stop = expression();
          if (is_op(":")) {
            ++pos_;
            if (!is_op("]")) step = expression();
          }
        }
        expect_op("]");
        auto a = make(slice ? Expr::Kind::Slice : Expr::Kind::Item);
        a->args.push_back(std::move(e));
        a->args.push_back(std::move(start));
        if (slice) {
          a->args.push_back(std::move(stop));
          a->args.push_back(std::move(step));
        }
        e = std::move(a);
      } else if (is_op("(")) {
        auto c = make(Expr::Kind::Call);
        c->args.push_back(std::move(e));
        call_args(*c);
        e = std::move(c);
      } else {
        return e;
      }
    }
  }
  std::unique_ptr<Expr> filtered(std::unique_ptr<Expr> e) {
    while (true) {
      if (is_op("|")) {
        ++pos_;
        auto f = make(Expr::Kind::Filter);
        f->name = expect_name();
        f->args.push_back(std::move(e));
        if (is_op("(")) call_args(*f);
        e = std::move(f);
      } else if (is_name("is")) {
        ++pos_;
        auto t = make(Expr::Kind::Test);
        if (is_name("not")) {
          ++pos_;
          t->negated = true;
        }
        t->name = peek().kind == Tok::Kind::Op ? next().text : expect_name();
        t->args.push_back(std::move(e));
        if (is_op("(")) {
          call_args(*t);
        } else if (!at_end() && (peek().kind == Tok::Kind::String || peek().kind == Tok::Kind::Number ||
                                 (peek().kind == Tok::Kind::Name && !is_name("and") && !is_name("or") &&
                                  !is_name("else") && !is_name("if")))) {
          t->args.push_back(primary());  // "is divisibleby 3", "is sameas x"
        }
        e = std::move(t);
      } else {
        return e;
      }
    }
  }
  std::unique_ptr<Expr> primary() {
    const Tok t = next();
    if (t.kind == Tok::Kind::Number || t.kind == Tok::Kind::String) {
      auto e = make(Expr::Kind::Literal);
      e->literal = t.value;
      // Adjacent string literals concatenate, as in Python.
      while (t.kind == Tok::Kind::String && peek().kind == Tok::Kind::String)
        e->literal = Value(e->literal.str() + next().text);
      return e;
    }
    if (t.kind == Tok::Kind::Name) {
      auto e = make(Expr::Kind::Literal);
      if (t.text == "true" || t.text == "True") e->literal = Value(true);
      else if (t.text == "false" || t.text == "False") e->literal = Value(false);
      else if (t.text == "none" || t.text == "None") e->literal = Value(None{});
      else {
        e->kind = Expr::Kind::Name;
        e->name = t.text;
      }
      return e;
    }
    if (t.kind == Tok::Kind::Op && t.text == "(") {
      auto e = expression();
      if (is_op(",")) {  // a tuple: treat as a list
        auto l = make(Expr::Kind::ListLit);
        l->args.push_back(std::move(e));
        while (is_op(",")) {
          ++pos_;
          if (is_op(")")) break;
          l->args.push_back(expression());
        }
        e = std::move(l);
      }
      expect_op(")");
      return e;
    }
    if (t.kind == Tok::Kind::Op && t.text == "[") {
      auto l = make(Expr::Kind::ListLit);
      while (!is_op("]")) {
        l->args.push_back(expression());
        if (!is_op("]")) expect_op(",");
      }
      expect_op("]");
      return l;
    }
    if (t.kind == Tok::Kind::Op && t.text == "{") {
      auto d = make(Expr::Kind::DictLit);
      while (!is_op("}")) {
        d->keys.push_back(expression());
        expect_op(":");
        d->args.push_back(expression());
        if (!is_op("}")) expect_op(",");
      }
      expect_op("}");
      return d;
    }
    fail(line_, fmt::format("unexpected '{}' in expression", t.text.empty() ? "end" : t.text));
  }

  std::vector<Tok> toks_;
  size_t pos_ = 0;
  int line_;
};

// ---- statements ----
class StmtParser {
 public:
  explicit StmtParser(std::vector<Part> parts) : parts_(std::move(parts)) {}

  std::vector<std::unique_ptr<Node>> parse_body(const std::vector<std::string>& terminators, std::string* ended_by) {
    std::vector<std::unique_ptr<Node>> nodes;
    while (pos_ < parts_.size()) {
      const Part& p = parts_[pos_];
      if (p.kind == Part::Kind::Text) {
        auto n = node(Node::Kind::Text, p.line);
        n->text = p.content;
        nodes.push_back(std::move(n));
        ++pos_;
        continue;
      }
      if (p.kind == Part::Kind::Expr) {
        auto n = node(Node::Kind::Output, p.line);
        n->expr = ExprParser(p.content, p.line).parse_all();
        nodes.push_back(std::move(n));
        ++pos_;
        continue;
      }
      const std::string keyword = first_word(p.content);
      if (std::find(terminators.begin(), terminators.end(), keyword) != terminators.end()) {
        if (ended_by) *ended_by = keyword;
        return nodes;
      }
      ++pos_;
      nodes.push_back(statement(p, keyword));
    }
    if (!terminators.empty())
      fail(parts_.empty() ? 1 : parts_.back().line, fmt::format("missing {{% {} %}}", terminators.back()));
    return nodes;
  }

 private:
  static std::string first_word(const std::string& s) {
    size_t i = 0;
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    size_t j = i;
    while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
    return s.substr(i, j - i);
  }
  static std::string rest_after(const std::string& s, const std::string& word) {
    return s.substr(s.find(word) + word.size());
  }
  std::unique_ptr<Node> node(Node::Kind k, int line) {
    auto n = std::make_unique<Node>();
    n->kind = k;
    n->line = line;
    return n;
  }

  std::unique_ptr<Node> statement(const Part& p, const std::string& keyword) {
    if (keyword == "if") {
      auto n = node(Node::Kind::If, p.line);
      auto cond = ExprParser(rest_after(p.content, "if"), p.line).parse_all();
      while (true) {
        std::string ended;
        auto body = parse_body({"elif", "else", "endif"}, &ended);
        n->branches.emplace_back(std::move(cond), std::move(body));
        const Part& end = parts_[pos_++];
        if (ended == "endif") break;
        if (ended == "else") {
          std::string e2;
          auto else_body = parse_body({"endif"}, &e2);
          ++pos_;
          n->branches.emplace_back(nullptr, std::move(else_body));
          break;
        }
        cond = ExprParser(rest_after(end.content, "elif"), end.line).parse_all();
      }
      return n;
    }
    if (keyword == "for") {
      auto n = node(Node::Kind::For, p.line);
      ExprParser e(rest_after(p.content, "for"), p.line);
      n->targets.push_back(e.expect_name());
      while (e.is_op(",")) {
        e.expect_op(",");
        n->targets.push_back(e.expect_name());
      }
      if (!e.is_name("in")) fail(p.line, "expected 'in' in for loop");
      e.next();
      n->expr = e.or_only();
      if (e.is_name("if")) {
        e.next();
        n->filter = e.or_only();
      }
      if (e.is_name("recursive")) fail(p.line, "recursive for loops are not supported");
      if (!e.at_end()) fail(p.line, fmt::format("unexpected '{}' in for loop", e.peek().text));
      std::string ended;
      ++loop_depth_;
      n->body = parse_body({"else", "endfor"}, &ended);
      --loop_depth_;
      ++pos_;
      if (ended == "else") {  // runs when nothing was iterated: not inside the loop
        n->else_body = parse_body({"endfor"}, &ended);
        ++pos_;
      }
      return n;
    }
    if (keyword == "set") {
      const std::string rest = rest_after(p.content, "set");
      ExprParser e(rest, p.line);
      auto n = node(Node::Kind::Set, p.line);
      n->target = e.expect_name();
      if (e.is_op(".")) {
        e.expect_op(".");
        n->attr = e.expect_name();
      }
      if (e.at_end()) {  // {% set x %}...{% endset %}
        n->kind = Node::Kind::SetBlock;
        std::string ended;
        n->body = parse_body({"endset"}, &ended);
        ++pos_;
        return n;
      }
      e.expect_op("=");
      n->expr = e.expression();
      if (!e.at_end()) fail(p.line, fmt::format("unexpected '{}' in set", e.peek().text));
      return n;
    }
    if (keyword == "break" || keyword == "continue") {
      // Checked here so that evaluation never has a loop control with no loop to catch it.
      if (loop_depth_ == 0) fail(p.line, fmt::format("'{}' outside of a for loop", keyword));
      return node(keyword == "break" ? Node::Kind::Break : Node::Kind::Continue, p.line);
    }
    if (keyword == "generation") {  // transformers' assistant-mask marker: renders its body
      auto n = node(Node::Kind::Generation, p.line);
      std::string ended;
      n->body = parse_body({"endgeneration"}, &ended);
      ++pos_;
      return n;
    }
    fail(p.line, fmt::format("unsupported construct {{% {} %}}", keyword.empty() ? p.content : keyword));
  }

  std::vector<Part> parts_;
  size_t pos_ = 0;
  int loop_depth_ = 0;  // for-loop bodies enclosing the statement being parsed
};
}  // namespace

std::vector<std::unique_ptr<Node>> parse_template(const std::string& source) {
  StmtParser parser(split_parts(source));
  return parser.parse_body({}, nullptr);
}

}  // namespace pivotmt::jinja
