// Chat templates: the Jinja subset against the prompt formats of public models, and
// byte-for-byte parity with every prompt the original pipeline sent (4 runs, k = 0..10):
// the examples are read back out of each prompt, the query comes from the row's columns,
// the messages are rebuilt with the original's strings and rendered with the model's
// template.
#include <gtest/gtest.h>

#include "chat/chat_template.h"
#include "chat/jinja.h"
#include "experiment/prompt.h"
#include "io/table.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace pivotmt {
namespace {

const std::string kHermesTemplate =
    "{{bos_token}}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

std::string render(const std::string& tpl, const std::vector<ChatMessage>& m, bool gen = false,
                   const std::string& bos = "<s>", const std::string& eos = "</s>") {
  return render_chat_template(tpl, m, gen, bos, eos);
}

TEST(ChatTemplate, Llama2Chat) {
  const std::string tpl =
      "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
      "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif "
      "%}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
      "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
      "loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
      "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if "
      "message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] "
      "== 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";
  EXPECT_EQ(render(tpl, {{"system", "Be brief."}, {"user", "Hi "}, {"assistant", " Hello."}, {"user", " Bye "}}),
            "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello. </s><s>[INST] Bye [/INST]");
  try {
    render(tpl, {{"user", "a"}, {"user", "b"}});
    FAIL();
  } catch (const jinja::TemplateError& e) {
    EXPECT_NE(std::string(e.what()).find("Conversation roles must alternate"), std::string::npos) << e.what();
  }
}

TEST(ChatTemplate, MistralInstruct) {
  const std::string tpl =
      "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
      "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
      "message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == "
      "'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles "
      "are supported!') }}{% endif %}{% endfor %}";
  EXPECT_EQ(render(tpl, {{"user", "Q1"}, {"assistant", "A1"}, {"user", "Q2"}}), "<s>[INST] Q1 [/INST]A1</s>[INST] Q2 [/INST]");
}

// Zephyr's template spreads over lines: trim_blocks and lstrip_blocks decide the output.
TEST(ChatTemplate, ZephyrWhitespaceControl) {
  const std::string tpl =
      "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\\n' + message['content'] + "
      "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\\n' + message['content'] + eos_token "
      "}}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n{% "
      "endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";
  EXPECT_EQ(render(tpl, {{"system", "S"}, {"user", "U"}}, true),
            "<|system|>\nS</s>\n<|user|>\nU</s>\n<|assistant|>\n");
  const std::string indented = "{% for m in messages %}\n    {% if m.role == 'user' %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}";
  EXPECT_EQ(render(indented, {{"user", "a"}, {"assistant", "b"}}), "[a]\n");
  EXPECT_EQ(render("{%- if true -%}  x  {%- endif %} y", {}), "x y");
}

TEST(ChatTemplate, Llama3InstructFromTokenizerConfig) {
  const auto tok = load_tokenizer(test::fixture("tokenizers/llama-3"));
  ASSERT_FALSE(tok->chat_template.empty());
  EXPECT_EQ(apply_chat_template(*tok, {{"system", " Be kind. "}, {"user", "Hi"}}, true),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe kind.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplate, ChatMLAndDoubleBos) {
  const std::vector<ChatMessage> m = {{"user", "Hi"}};
  const std::string rendered = render(kHermesTemplate, m, false, "<|begin_of_text|>");
  EXPECT_EQ(rendered, "<|begin_of_text|><|im_start|>user\nHi<|im_end|>\n");
  const auto tok = load_tokenizer(test::fixture("tokenizers/llama-3"));
  const auto reproduced = encode_rendered_prompt(*tok, rendered, DuplicateBos::Reproduce);
  EXPECT_TRUE(reproduced.duplicate_bos);
  EXPECT_EQ(reproduced.ids[0], 128000);
  EXPECT_EQ(reproduced.ids[1], 128000);
  const auto avoided = encode_rendered_prompt(*tok, rendered, DuplicateBos::Avoid);
  EXPECT_TRUE(avoided.bos_dropped);
  EXPECT_EQ(avoided.ids.size(), reproduced.ids.size() - 1);
  EXPECT_NE(avoided.ids[1], 128000);
}

TEST(ChatTemplate, ExpressionsFiltersAndTests) {
  jinja::Dict ctx;
  ctx.set("xs", jinja::Value(jinja::List{jinja::Value(3), jinja::Value(1), jinja::Value(2)}));
  ctx.set("s", jinja::Value("  Hello World  "));
  auto run = [&](const std::string& t) { return jinja::Template(t).render(ctx); };
  EXPECT_EQ(run("{{ xs | length }} {{ xs[-1] }} {{ xs[1:] }} {{ xs[::-1] | join(',') }}"), "3 2 [1, 2] 2,1,3");
  EXPECT_EQ(run("{{ s | trim | lower }}|{{ s.strip().split(' ') }}|{{ 'a' ~ 1 ~ none }}"), "hello world|['Hello', 'World']|a1None");
  EXPECT_EQ(run("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 'ab' * 2 }}"), "3 -4 2 3.5 1024 abab");
  EXPECT_EQ(run("{{ missing is defined }} {{ xs is not none }} {{ 'ell' in s }} {{ 4 not in xs }} {{ true and 'x' or 'y' }}"),
            "False True True True x");
  EXPECT_EQ(run("{% set ns = namespace(n=0) %}{% for x in xs if x > 1 %}{% set ns.n = ns.n + x %}{{ loop.index }}/{{ loop.length }} {% endfor %}{{ ns.n }}"),
            "1/2 2/2 5");
  EXPECT_EQ(run("{% for x in xs %}{% if x == 1 %}{% break %}{% endif %}{{ x }}{% else %}empty{% endfor %}"), "3");
  EXPECT_EQ(run("{{ {'b': 1, 'a': [true, none, 'é']} | tojson }}"), "{\"b\": 1, \"a\": [true, null, \"é\"]}");
  EXPECT_EQ(run("{{ 'yes' if xs | length > 2 else 'no' }} {{ missing | default('d') }}"), "yes d");
  EXPECT_EQ(run("{% set block %}in{{ 1 + 1 }}{% endset %}{{ block }}"), "in2");
}

TEST(ChatTemplate, ErrorsNameLineAndConstruct) {
  auto expect_error = [](const std::string& tpl, const std::string& needle) {
    try {
      jinja::Template(tpl).render({});
      FAIL() << tpl;
    } catch (const jinja::TemplateError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error("line one\n{% macro m() %}x{% endmacro %}", "line 2: unsupported construct {% macro %}");
  expect_error("{{ 1 +  }}", "line 1");
  expect_error("{% if true %}x", "missing {% endif %}");
  expect_error("{{ x.y }}", "'x' is undefined");
  expect_error("{{ 'a' + 1 }}", "unsupported operand types");
  expect_error("{{ x | frobnicate }}", "unsupported filter 'frobnicate'");
  expect_error("{{ 'unterminated }}", "unterminated string");
  // Found by fuzz_tokenizer: a loop control with no loop escaped evaluation as an uncaught exception.
  expect_error("a\n{% if true %}{% break %}{% endif %}", "line 2: 'break' outside of a for loop");
  expect_error("{% for x in [1] %}{% else %}{% continue %}{% endfor %}", "'continue' outside of a for loop");
}

struct OriginalRun {
  const char* folder;
  bool hermes;
  PromptLabels labels;
  const char *pivot, *source;
};

// Reads the examples back out of a prompt: its user/assistant turns before the last.
std::vector<Example> examples_in(const std::string& prompt, const PromptLabels& labels, bool hermes) {
  std::vector<std::pair<std::string, std::string>> turns;
  size_t pos = hermes ? std::string("<|begin_of_text|>").size() : 0;
  const std::string start = "<|im_start|>", end = "<|im_end|>\n";
  while (pos < prompt.size()) {
    EXPECT_EQ(prompt.compare(pos, start.size(), start), 0);
    pos += start.size();
    const size_t nl = prompt.find('\n', pos);
    const std::string role = prompt.substr(pos, nl - pos);
    size_t stop = prompt.find(end, nl + 1);
    if (stop == std::string::npos) stop = prompt.size();
    turns.emplace_back(role, prompt.substr(nl + 1, stop - nl - 1));
    pos = stop == prompt.size() ? stop : stop + end.size();
  }
  const std::string prefix = pivot_user_message(labels, "", "").substr(0, pivot_user_message(labels, "", "").find("\nSource: "));
  std::vector<Example> examples;
  for (size_t i = 0; i + 1 < turns.size(); i += 2) {
    const std::string& user = turns[i].second;
    const size_t s = user.find("\nSource: "), t = user.find("\nTranslation: ");
    examples.push_back({user.substr(prefix.size(), s - prefix.size()), user.substr(s + 9, t - s - 9), turns[i + 1].second});
  }
  return examples;
}

TEST(ChatTemplate, OriginalPromptParity) {
  const std::string tower_template = load_tokenizer(test::fixture("models/tiny-tower"))->chat_template;
  ASSERT_FALSE(tower_template.empty());
  const OriginalRun runs[] = {{"konkani_full", false, {"Hin", "Gom"}, "hin", "mar"},
                      {"arabic_full", false, {"MSA", "TN"}, "msa", "en"},
                      {"konkani_hermes_600tokens", true, {"Hin", "Gom"}, "hin", "mar"},
                      {"arabic_hermes_20251126", true, {"Msa", "Tn"}, "msa", "en"}};
  size_t checked = 0;
  for (const auto& run : runs) {
    for (int k = 0; k <= 10; ++k) {
      const Table t = read_table(test::fixture(std::string("original/") + run.folder + "/k_" + std::to_string(k) +
                                               "/results_k" + std::to_string(k) + ".csv"));
      const size_t prompt = t.column("prompt"), pivot = t.column(run.pivot), source = t.column(run.source);
      for (size_t r = 0; r < t.rows.size(); ++r) {
        const std::string& original = *t.rows[r][prompt];
        const auto examples = examples_in(original, run.labels, run.hermes);
        // At most k: the original dropped retrieved rows equal to the query (REFERENCE §3).
        ASSERT_LE(examples.size(), size_t(k)) << run.folder << " k=" << k << " row " << r;
        if (k > 0) ASSERT_GE(examples.size(), 1u);
        const auto messages = build_messages(run.labels, examples, *t.rows[r][pivot], *t.rows[r][source]);
        const std::string rendered = run.hermes ? render(kHermesTemplate, messages, false, "<|begin_of_text|>")
                                                : render(tower_template, messages, false, "<s>", "<|im_end|>");
        ASSERT_EQ(rendered, original) << run.folder << " k=" << k << " row " << r;
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, size_t(11 * (205 + 100 + 205 + 100)));
}

}  // namespace
}  // namespace pivotmt
