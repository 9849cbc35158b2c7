// Rendering: scopes, loops, Python-semantics operators and filters (methods and tests are
// in jinja_builtins.cpp).
#include <chrono>
#include <cmath>
#include <ctime>

#include <fmt/format.h>

#include "chat/jinja.h"
#include "chat/jinja_ast.h"
#include "chat/jinja_builtins.h"
#include "text/unicode.h"

namespace pivotmt::jinja {
namespace {

struct LoopControl {
  enum class Kind { Break, Continue } kind;
};


int64_t py_floordiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

class Renderer {
 public:
  explicit Renderer(const Dict& globals) {
    scopes_.push_back(globals);
    install_globals();
  }

  void render(const std::vector<std::unique_ptr<Node>>& nodes, std::string& out) {
    for (const auto& n : nodes) render(*n, out);
  }

 private:
  std::vector<Dict> scopes_;

  void install_globals() {
    Dict& g = scopes_.front();
    if (!g.find("raise_exception"))
      g.set("raise_exception", Value::function([](Args& a, Kwargs&) -> Value {
              throw TemplateError("chat template raised an exception: " + (a.empty() ? std::string() : to_display(a[0])));
            }));
    g.set("namespace", Value::function([](Args& a, Kwargs& kw) -> Value {
            Dict d;
            if (!a.empty() && a[0].is_dict()) d = a[0].dict();
            for (auto& [k, v] : kw) d.set(k, v);
            Value ns(std::move(d));
            ns.is_namespace = true;
            return ns;
          }));
    g.set("range", Value::function([](Args& a, Kwargs&) -> Value {
            int64_t start = 0, stop = 0, step = 1;
            if (a.size() == 1) stop = a[0].integer();
            else if (a.size() >= 2) {
              start = a[0].integer();
              stop = a[1].integer();
              if (a.size() > 2) step = a[2].integer();
            }
            if (step == 0) throw TemplateError("range() step must not be zero");
            List l;
            for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) l.push_back(Value(i));
            return Value(std::move(l));
          }));
    g.set("dict", Value::function([](Args&, Kwargs& kw) -> Value {
            Dict d;
            for (auto& [k, v] : kw) d.set(k, v);
            return Value(std::move(d));
          }));
    if (!g.find("strftime_now"))
      g.set("strftime_now", Value::function([](Args& a, Kwargs&) -> Value {
              const std::time_t t = std::time(nullptr);
              std::tm tm{};
              localtime_r(&t, &tm);
              char buf[256];
              std::strftime(buf, sizeof(buf), a.empty() ? "%Y-%m-%d" : to_display(a[0]).c_str(), &tm);
              return Value(std::string(buf));
            }));
  }

  Value lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it)
      if (const Value* v = it->find(name)) return *v;
    return Value::undefined(name);
  }

  void render(const Node& n, std::string& out) {
    switch (n.kind) {
      case Node::Kind::Text: out += n.text; return;
      case Node::Kind::Output: {
        const Value v = eval(*n.expr);
        out += v.is_undefined() ? std::string() : to_display(v);
        return;
      }
      case Node::Kind::If:
        for (const auto& [cond, body] : n.branches)
          if (!cond || eval(*cond).truthy()) {
            render(body, out);
            return;
          }
        return;
      case Node::Kind::For: return render_for(n, out);
      case Node::Kind::Set: return assign(n, eval(*n.expr));
      case Node::Kind::SetBlock: {
        std::string captured;
        render(n.body, captured);
        return assign(n, Value(captured));
      }
      case Node::Kind::Break: throw LoopControl{LoopControl::Kind::Break};
      case Node::Kind::Continue: throw LoopControl{LoopControl::Kind::Continue};
      case Node::Kind::Generation: return render(n.body, out);
    }
  }

  void assign(const Node& n, Value v) {
    if (n.attr.empty()) {
      scopes_.back().set(n.target, std::move(v));
      return;
    }
    Value ns = lookup(n.target);
    if (!ns.is_dict() || !ns.is_namespace)
      fail(n.line, fmt::format("cannot set attribute '{}' of '{}': not a namespace", n.attr, n.target));
    ns.dict().set(n.attr, std::move(v));  // shared: visible in the outer scope too
  }

  std::vector<Value> iterate(const Value& v, int line) {
    if (v.is_list()) return v.list();
    if (v.is_dict()) {
      std::vector<Value> keys;
      for (const auto& [k, x] : v.dict().items) keys.push_back(Value(k));
      return keys;
    }
    if (v.is_string()) {
      std::vector<Value> chars;
      for (char32_t c : utf8_to_u32(v.str())) chars.push_back(Value(u32_to_utf8(std::u32string(1, c))));
      return chars;
    }
    if (v.is_undefined() || v.is_none()) return {};
    fail(line, fmt::format("'{}' object is not iterable", v.type_name()));
  }

  void render_for(const Node& n, std::string& out) {
    std::vector<Value> items = iterate(eval(*n.expr), n.line);
    auto bind = [&](Dict& scope, const Value& item) {
      if (n.targets.size() == 1) {
        scope.set(n.targets[0], item);
        return;
      }
      if (!item.is_list() || item.list().size() != n.targets.size())
        fail(n.line, fmt::format("cannot unpack {} into {} names", to_repr(item), n.targets.size()));
      for (size_t k = 0; k < n.targets.size(); ++k) scope.set(n.targets[k], item.list()[k]);
    };
    if (n.filter) {
      std::vector<Value> kept;
      for (const auto& item : items) {
        scopes_.emplace_back();
        bind(scopes_.back(), item);
        const bool keep = eval(*n.filter).truthy();
        scopes_.pop_back();
        if (keep) kept.push_back(item);
      }
      items.swap(kept);
    }
    if (items.empty()) {
      render(n.else_body, out);
      return;
    }
    const int64_t length = int64_t(items.size());
    for (int64_t i = 0; i < length; ++i) {
      Dict scope;
      bind(scope, items[size_t(i)]);
      Dict loop;
      loop.set("index", Value(i + 1));
      loop.set("index0", Value(i));
      loop.set("revindex", Value(length - i));
      loop.set("revindex0", Value(length - i - 1));
      loop.set("first", Value(i == 0));
      loop.set("last", Value(i == length - 1));
      loop.set("length", Value(length));
      loop.set("previtem", i > 0 ? items[size_t(i - 1)] : Value::undefined("loop.previtem"));
      loop.set("nextitem", i + 1 < length ? items[size_t(i + 1)] : Value::undefined("loop.nextitem"));
      loop.set("cycle", Value::function([i](Args& a, Kwargs&) -> Value {
                 return a.empty() ? Value(None{}) : a[size_t(i) % a.size()];
               }));
      scope.set("loop", Value(std::move(loop)));
      scopes_.push_back(std::move(scope));
      try {
        render(n.body, out);
      } catch (const LoopControl& c) {
        scopes_.pop_back();
        if (c.kind == LoopControl::Kind::Break) break;
        continue;
      }
      scopes_.pop_back();
    }
  }

  // ---- expressions ----
  Value eval(const Expr& e) {
    switch (e.kind) {
      case Expr::Kind::Literal: return e.literal;
      case Expr::Kind::Name: return lookup(e.name);
      case Expr::Kind::ListLit: {
        List l;
        for (const auto& a : e.args) l.push_back(eval(*a));
        return Value(std::move(l));
      }
      case Expr::Kind::DictLit: {
        Dict d;
        for (size_t i = 0; i < e.keys.size(); ++i) d.set(to_display(eval(*e.keys[i])), eval(*e.args[i]));
        return Value(std::move(d));
      }
      case Expr::Kind::Attr: return get_attribute(eval(*e.args[0]), e.name, e.line, true);
      case Expr::Kind::Item: return get_item(eval(*e.args[0]), eval(*e.args[1]), e.line);
      case Expr::Kind::Slice: return slice(e);
      case Expr::Kind::Call: {
        const Value f = eval(*e.args[0]);
        if (!f.is_function()) fail(e.line, fmt::format("'{}' is not callable", f.is_undefined() ? std::get<Undefined>(f.v).name : f.type_name()));
        Args args;
        for (size_t i = 1; i < e.args.size(); ++i) args.push_back(eval(*e.args[i]));
        Kwargs kw;
        for (const auto& [k, v] : e.kwargs) kw.emplace_back(k, eval(*v));
        try {
          return (*std::get<std::shared_ptr<Function>>(f.v))(args, kw);
        } catch (const TemplateError&) {
          throw;
        } catch (const std::exception& ex) {
          fail(e.line, ex.what());
        }
      }
      case Expr::Kind::Filter: return filter(e);
      case Expr::Kind::Test: {
        const bool r = test(e);
        return Value(e.negated ? !r : r);
      }
      case Expr::Kind::Unary: {
        const Value v = eval(*e.args[0]);
        if (e.name == "not") return Value(!v.truthy());
        if (!v.is_number() && !v.is_bool()) fail(e.line, fmt::format("bad operand type for unary {}: '{}'", e.name, v.type_name()));
        if (e.name == "-") return v.is_float() ? Value(-v.number()) : Value(-v.integer());
        return v;
      }
      case Expr::Kind::Conditional:
        return eval(*e.args[0]).truthy() ? eval(*e.args[1]) : eval(*e.args[2]);
      case Expr::Kind::Binary: return binary(e);
    }
    fail(e.line, "unknown expression");
  }

  Value binary(const Expr& e) {
    const std::string& op = e.name;
    if (op == "and") {
      Value a = eval(*e.args[0]);
      return a.truthy() ? eval(*e.args[1]) : a;
    }
    if (op == "or") {
      Value a = eval(*e.args[0]);
      return a.truthy() ? a : eval(*e.args[1]);
    }
    const Value a = eval(*e.args[0]), b = eval(*e.args[1]);
    if (op == "~") return Value(to_display(a) + to_display(b));
    if (op == "==") return Value(equals(a, b));
    if (op == "!=") return Value(!equals(a, b));
    if (op == "in" || op == "not in") {
      bool found = false;
      if (b.is_string() && a.is_string()) found = b.str().find(a.str()) != std::string::npos;
      else if (b.is_list())
        for (const auto& x : b.list()) found = found || equals(a, x);
      else if (b.is_dict()) found = a.is_string() && b.dict().find(a.str()) != nullptr;
      else if (b.is_undefined()) fail(e.line, fmt::format("'{}' is undefined", std::get<Undefined>(b.v).name));
      else fail(e.line, fmt::format("argument of type '{}' is not iterable", b.type_name()));
      return Value(op == "in" ? found : !found);
    }
    for (const Value* v : {&a, &b})
      if (v->is_undefined()) fail(e.line, fmt::format("'{}' is undefined", std::get<Undefined>(v->v).name));
    try {
      if (op == "<") return Value(compare(a, b) < 0);
      if (op == ">") return Value(compare(a, b) > 0);
      if (op == "<=") return Value(compare(a, b) <= 0);
      if (op == ">=") return Value(compare(a, b) >= 0);
    } catch (const std::exception& ex) {
      fail(e.line, ex.what());
    }
    const bool numbers = (a.is_number() || a.is_bool()) && (b.is_number() || b.is_bool());
    const bool ints = numbers && !a.is_float() && !b.is_float();
    if (op == "+") {
      if (numbers) return ints ? Value(a.integer() + b.integer()) : Value(a.number() + b.number());
      if (a.is_string() && b.is_string()) return Value(a.str() + b.str());
      if (a.is_list() && b.is_list()) {
        List l = a.list();
        l.insert(l.end(), b.list().begin(), b.list().end());
        return Value(std::move(l));
      }
    } else if (op == "-" && numbers) {
      return ints ? Value(a.integer() - b.integer()) : Value(a.number() - b.number());
    } else if (op == "*") {
      if (numbers) return ints ? Value(a.integer() * b.integer()) : Value(a.number() * b.number());
      const Value* s = a.is_string() || a.is_list() ? &a : &b;
      const Value* n = s == &a ? &b : &a;
      if ((s->is_string() || s->is_list()) && n->is_int()) {
        if (s->is_string()) {
          std::string r;
          for (int64_t i = 0; i < n->integer(); ++i) r += s->str();
          return Value(r);
        }
        List l;
        for (int64_t i = 0; i < n->integer(); ++i) l.insert(l.end(), s->list().begin(), s->list().end());
        return Value(std::move(l));
      }
    } else if (numbers && (op == "/" || op == "//" || op == "%" || op == "**")) {
      if ((op != "**") && b.number() == 0) fail(e.line, "division by zero");
      if (op == "/") return Value(a.number() / b.number());
      if (op == "//") return ints ? Value(py_floordiv(a.integer(), b.integer())) : Value(std::floor(a.number() / b.number()));
      if (op == "%") {
        if (ints) return Value(a.integer() - b.integer() * py_floordiv(a.integer(), b.integer()));
        const double r = std::fmod(a.number(), b.number());
        return Value(r != 0 && ((r < 0) != (b.number() < 0)) ? r + b.number() : r);
      }
      if (ints && b.integer() >= 0) {
        int64_t r = 1;
        for (int64_t i = 0; i < b.integer(); ++i) r *= a.integer();
        return Value(r);
      }
      return Value(std::pow(a.number(), b.number()));
    }
    fail(e.line, fmt::format("unsupported operand types for {}: '{}' and '{}'", op, a.type_name(), b.type_name()));
  }

  Value get_item(const Value& obj, const Value& key, int line) {
    if (obj.is_undefined()) fail(line, fmt::format("'{}' is undefined", std::get<Undefined>(obj.v).name));
    if (obj.is_dict() && key.is_string()) {
      if (const Value* v = obj.dict().find(key.str())) return *v;
      return get_attribute(obj, key.str(), line, false);
    }
    if ((obj.is_list() || obj.is_string()) && (key.is_int() || key.is_bool())) {
      if (obj.is_list()) {
        const int64_t n = int64_t(obj.list().size());
        int64_t i = key.integer();
        if (i < 0) i += n;
        if (i < 0 || i >= n) return Value::undefined("list index out of range");
        return obj.list()[size_t(i)];
      }
      const std::u32string u = utf8_to_u32(obj.str());
      int64_t i = key.integer();
      if (i < 0) i += int64_t(u.size());
      if (i < 0 || i >= int64_t(u.size())) return Value::undefined("string index out of range");
      return Value(u32_to_utf8(std::u32string(1, u[size_t(i)])));
    }
    if (key.is_string()) return get_attribute(obj, key.str(), line, false);
    return Value::undefined(to_display(key));
  }

  Value slice(const Expr& e) {
    const Value obj = eval(*e.args[0]);
    auto bound = [&](const std::unique_ptr<Expr>& x) -> std::optional<int64_t> {
      if (!x) return std::nullopt;
      const Value v = eval(*x);
      if (v.is_none() || v.is_undefined()) return std::nullopt;
      return v.integer();
    };
    const auto start = bound(e.args[1]), stop = bound(e.args[2]), step_opt = bound(e.args[3]);
    const int64_t step = step_opt.value_or(1);
    if (step == 0) fail(e.line, "slice step cannot be zero");
    std::vector<Value> items;
    std::u32string chars;
    if (obj.is_list()) items = obj.list();
    else if (obj.is_string()) chars = utf8_to_u32(obj.str());
    else fail(e.line, fmt::format("'{}' object is not subscriptable", obj.type_name()));
    const int64_t n = obj.is_list() ? int64_t(items.size()) : int64_t(chars.size());
    // Python's slice.indices().
    auto clamp = [&](std::optional<int64_t> v, int64_t def) {
      if (!v) return def;
      int64_t x = *v;
      if (x < 0) x += n;
      if (step > 0) return std::clamp<int64_t>(x, 0, n);
      return std::clamp<int64_t>(x, -1, n - 1);
    };
    const int64_t b = clamp(start, step > 0 ? 0 : n - 1), en = clamp(stop, step > 0 ? n : -1);
    List out;
    std::u32string sout;
    for (int64_t i = b; step > 0 ? i < en : i > en; i += step) {
      if (obj.is_list()) out.push_back(items[size_t(i)]);
      else sout.push_back(chars[size_t(i)]);
    }
    return obj.is_list() ? Value(std::move(out)) : Value(u32_to_utf8(sout));
  }

  Value filter(const Expr& e) {
    Value v = eval(*e.args[0]);
    Args a;
    for (size_t i = 1; i < e.args.size(); ++i) a.push_back(eval(*e.args[i]));
    Kwargs kw;
    for (const auto& [k, x] : e.kwargs) kw.emplace_back(k, eval(*x));
    const std::string& f = e.name;
    auto need = [&](bool ok, const char* what) {
      if (!ok) fail(e.line, fmt::format("filter '{}' expects {}, got '{}'", f, what, v.type_name()));
    };
    if (f == "trim") {
      need(v.is_string(), "a string");
      return Value(strip_chars(v.str(), arg(a, kw, 0, "chars"), true, true));
    }
    if (f == "length" || f == "count") {
      if (v.is_string()) return Value(int64_t(utf8_to_u32(v.str()).size()));
      if (v.is_list()) return Value(int64_t(v.list().size()));
      if (v.is_dict()) return Value(int64_t(v.dict().items.size()));
      need(false, "a sequence");
    }
    if (f == "tojson") {
      const Value* indent = arg(a, kw, 0, "indent");
      const Value* sort = kwarg(kw, "sort_keys");
      return Value(to_json(v, indent && !indent->is_none() ? int(indent->integer()) : -1, sort && sort->truthy()));
    }
    if (f == "default" || f == "d") {
      const Value* def = arg(a, kw, 0, "default_value");
      const Value* boolean = arg(a, kw, 1, "boolean");
      if (v.is_undefined() || (boolean && boolean->truthy() && !v.truthy())) return def ? *def : Value("");
      return v;
    }
    if (f == "join") {
      const Value* sep = arg(a, kw, 0, "d");
      const Value* attribute = arg(a, kw, 1, "attribute");
      std::string out;
      bool first = true;
      for (const auto& x : iterate(v, e.line)) {
        if (!first) out += sep ? to_display(*sep) : "";
        first = false;
        out += to_display(attribute ? get_item(x, *attribute, e.line) : x);
      }
      return Value(out);
    }
    if (f == "upper" || f == "lower" || f == "capitalize" || f == "title") {
      need(v.is_string(), "a string");
      return (*std::get<std::shared_ptr<Function>>(get_attribute(v, f, e.line, true).v))(a, kw);
    }
    if (f == "first" || f == "last") {
      const auto items = iterate(v, e.line);
      if (items.empty()) return Value::undefined(f);
      return f == "first" ? items.front() : items.back();
    }
    if (f == "list") return Value(List(iterate(v, e.line)));
    if (f == "string") return Value(v.is_undefined() ? std::string() : to_display(v));
    if (f == "int") {
      if (v.is_string()) {
        try {
          return Value(int64_t(std::stoll(v.str())));
        } catch (const std::exception&) {
          return Value(int64_t(0));
        }
      }
      return Value(v.is_number() || v.is_bool() ? v.integer() : int64_t(0));
    }
    if (f == "float") return Value(v.is_number() || v.is_bool() ? v.number() : 0.0);
    if (f == "abs") {
      need(v.is_number(), "a number");
      return v.is_int() ? Value(int64_t(std::llabs(v.integer()))) : Value(std::fabs(v.number()));
    }
    if (f == "reverse") {
      if (v.is_string()) {
        std::u32string u = utf8_to_u32(v.str());
        std::reverse(u.begin(), u.end());
        return Value(u32_to_utf8(u));
      }
      auto items = iterate(v, e.line);
      std::reverse(items.begin(), items.end());
      return Value(List(std::move(items)));
    }
    if (f == "items") {
      need(v.is_dict(), "a mapping");
      return (*std::get<std::shared_ptr<Function>>(get_attribute(v, "items", e.line, false).v))(a, kw);
    }
    if (f == "replace") {
      need(v.is_string(), "a string");
      return (*std::get<std::shared_ptr<Function>>(get_attribute(v, "replace", e.line, false).v))(a, kw);
    }
    if (f == "safe" || f == "e" || f == "escape") return f == "safe" ? v : Value(escape_html(to_display(v)));
    if (f == "selectattr" || f == "rejectattr") {
      if (a.empty()) fail(e.line, f + " needs an attribute name");
      List out;
      for (const auto& x : iterate(v, e.line)) {
        const Value attr = get_item(x, a[0], e.line);
        bool ok = a.size() > 1 ? run_test(to_display(a[1]), attr, Args(a.begin() + 2, a.end()), e.line) : attr.truthy();
        if ((f == "selectattr") == ok) out.push_back(x);
      }
      return Value(std::move(out));
    }
    if (f == "map") {
      List out;
      const Value* attribute = kwarg(kw, "attribute");
      for (const auto& x : iterate(v, e.line)) {
        if (attribute) out.push_back(get_item(x, *attribute, e.line));
        else if (!a.empty() && to_display(a[0]) == "string") out.push_back(Value(to_display(x)));
        else if (!a.empty() && to_display(a[0]) == "trim" && x.is_string()) out.push_back(Value(strip_chars(x.str(), nullptr, true, true)));
        else fail(e.line, "map: only attribute=..., 'string' and 'trim' are supported");
      }
      return Value(std::move(out));
    }
    fail(e.line, fmt::format("unsupported filter '{}'", f));
  }

  bool test(const Expr& e) {
    const Value v = eval(*e.args[0]);
    Args a;
    for (size_t i = 1; i < e.args.size(); ++i) a.push_back(eval(*e.args[i]));
    return run_test(e.name, v, a, e.line);
  }

};
}  // namespace

Template::Template(const std::string& source) : body_(parse_template(source)) {}
Template::~Template() = default;
Template::Template(Template&&) noexcept = default;

std::string Template::render(const Dict& context) const {
  Renderer r(context);
  std::string out;
  r.render(body_, out);
  return out;
}

}  // namespace pivotmt::jinja
