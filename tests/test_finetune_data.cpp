// Fine-tuning data: chats rendered with the model's template, targets on the answer only
// with --loss-on response, JSONL errors naming file and line, the length limit (truncate
// or drop, counted), and the study's rows formatted as the original's few-shot prompts.
#include <gtest/gtest.h>

#include "chat/chat_template.h"
#include "core/error.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"
#include "retrieval/index.h"
#include "train/finetune_data.h"

namespace pivotmt {
namespace {

std::unique_ptr<Tokenizer> tower() { return load_tokenizer(test::fixture("models/tiny-tower")); }

TEST(FinetuneData, ResponseTargetsAreTheAnswerAndWhatClosesIt) {
  const auto tok = tower();
  const std::vector<ChatMessage> chat = {{"user", "Translate: namaste"}, {"assistant", "hello there"}};
  const auto all = chat_sequence(*tok, chat, LossOn::All);
  const auto resp = chat_sequence(*tok, chat, LossOn::Response);
  EXPECT_EQ(all.tokens, resp.tokens);
  EXPECT_EQ(all.target_count(), all.tokens.size() - 1);
  // The targets are exactly the tokens after the prompt with the generation prompt.
  const auto prompt = encode_rendered_prompt(*tok, apply_chat_template(*tok, {chat[0]}, true), DuplicateBos::Reproduce).ids;
  ASSERT_LT(prompt.size(), resp.tokens.size());
  for (size_t i = 0; i < resp.tokens.size(); ++i) EXPECT_EQ(resp.target[i], i >= prompt.size() ? 1 : 0) << i;
  const std::string answer = tok->decode(std::vector<TokenId>(resp.tokens.begin() + long(prompt.size()), resp.tokens.end()), true);
  EXPECT_NE(answer.find("hello there"), std::string::npos) << answer;
  EXPECT_THROW(chat_sequence(*tok, {{"user", "no answer"}}, LossOn::Response), Error);
}

TEST(FinetuneData, JsonlRowsLimitsAndErrorsNamingTheLine) {
  const auto tok = tower();
  test::TempDir dir;
  const std::string path = dir.str("data.jsonl");
  test::write_file(path,
                   "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}\n"
                   "\n"
                   "{\"text\": \"" + std::string(300, 'x') + "\"}\n"
                   "{\"text\": \"short\"}\n");
  SequenceLimits limits;
  limits.max_seq_len = 40;
  DataReport report;
  const auto seqs = sequences_from_jsonl(path, *tok, limits, report);
  EXPECT_EQ(report.rows, 3u);
  EXPECT_EQ(report.truncated, 1u);
  ASSERT_EQ(seqs.size(), 3u);
  for (const auto& s : seqs) EXPECT_LE(s.tokens.size(), 40u);
  limits.drop_long = true;
  DataReport dropped;
  EXPECT_EQ(sequences_from_jsonl(path, *tok, limits, dropped).size(), 2u);
  EXPECT_EQ(dropped.dropped_long, 1u);
  // A text row cannot train on a response; a broken line is named.
  limits.loss_on = LossOn::Response;
  try {
    DataReport r;
    sequences_from_jsonl(path, *tok, limits, r);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("data.jsonl:3"), std::string::npos) << e.what();
  }
  test::write_file(path, "{\"messages\": []}\n{not json\n");
  try {
    DataReport r;
    sequences_from_jsonl(path, *tok, SequenceLimits{}, r);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("data.jsonl:"), std::string::npos) << e.what();
  }
}

TEST(FinetuneData, StudyRowsAreTheOriginalPromptsWithTheirAnswers) {
  const auto tok = tower();
  AblationConfig c;
  c.data = std::string(PIVOTMT_SOURCE_DIR) + "/data/demo";
  c.pivot = "hin";
  c.source = "mar";
  c.target = "gom";
  c.retriever = "bm25";
  test::TempDir dir;
  DataReport report;
  SequenceLimits limits;
  limits.loss_on = LossOn::Response;
  const auto seqs = sequences_from_study(c, 2, *tok, limits, dir.str("index"), report);
  EXPECT_EQ(seqs.size(), report.kept);
  EXPECT_GT(seqs.size(), 10u);
  // The first row's sequence decodes to the few-shot prompt followed by its own target.
  const LoadedIndex index = build_index(study_index_spec(c), dir.str("index"));
  const auto& row = index.pool.rows.at(0);
  const std::string text = tok->decode(seqs[0].tokens, false);
  EXPECT_NE(text.find("Translate the following source text from Hin to Gom."), std::string::npos) << text;
  EXPECT_NE(text.find(row.target), std::string::npos);
  std::vector<TokenId> answer;
  for (size_t i = 0; i < seqs[0].tokens.size(); ++i)
    if (seqs[0].target[i]) answer.push_back(seqs[0].tokens[i]);
  EXPECT_NE(tok->decode(answer, true).find(row.target), std::string::npos);
}

}  // namespace
}  // namespace pivotmt
