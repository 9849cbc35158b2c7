#include "train/finetune_data.h"

#include <fmt/format.h>

#include <fstream>

#include "chat/chat_template.h"
#include "core/error.h"
#include "io/table.h"
#include "retrieval/corpus.h"
#include "retrieval/index.h"
#include "retrieval/retriever.h"
#include "experiment/prompt.h"
#include "tokenizer/tokenizer.h"

namespace pivotmt {

LossOn parse_loss_on(const std::string& s) {
  if (s == "all") return LossOn::All;
  if (s == "response") return LossOn::Response;
  throw Error(fmt::format("--loss-on {}: expected all or response", s));
}

std::string DataReport::describe() const {
  std::string s = fmt::format("{} rows -> {} training sequences", rows, kept);
  if (truncated) s += fmt::format("; {} truncated to the length limit", truncated);
  if (dropped_long) s += fmt::format("; {} dropped as too long", dropped_long);
  if (dropped_no_target) s += fmt::format("; {} dropped with nothing to predict", dropped_no_target);
  return s;
}

TrainSequence chat_sequence(const Tokenizer& tokenizer, const std::vector<ChatMessage>& messages, LossOn loss_on) {
  if (messages.empty()) throw Error("a chat without messages");
  TrainSequence s;
  s.tokens = encode_rendered_prompt(tokenizer, apply_chat_template(tokenizer, messages, false), DuplicateBos::Reproduce).ids;
  s.target.assign(s.tokens.size(), 1);
  if (loss_on == LossOn::All) return s;
  size_t last = messages.size();
  while (last > 0 && messages[last - 1].role != "assistant") --last;
  if (last == 0) throw Error("--loss-on response: the chat has no assistant message");
  const std::vector<ChatMessage> before(messages.begin(), messages.begin() + long(last - 1));
  const auto prefix =
      encode_rendered_prompt(tokenizer, apply_chat_template(tokenizer, before, true), DuplicateBos::Reproduce).ids;
  // The prompt's tokens are normally a prefix of the whole chat's; where a tokenizer merges
  // across the boundary, the common prefix is the prompt.
  size_t n = 0;
  while (n < prefix.size() && n < s.tokens.size() && prefix[n] == s.tokens[n]) ++n;
  for (size_t i = 0; i < n; ++i) s.target[i] = 0;
  return s;
}

void add_limited(std::vector<TrainSequence>& out, TrainSequence s, const SequenceLimits& limits, DataReport& report) {
  if (s.tokens.size() > limits.max_seq_len) {
    if (limits.drop_long) {
      ++report.dropped_long;
      return;
    }
    s.tokens.resize(limits.max_seq_len);
    s.target.resize(limits.max_seq_len);
    ++report.truncated;
  }
  if (s.target_count() == 0) {
    ++report.dropped_no_target;
    return;
  }
  out.push_back(std::move(s));
  ++report.kept;
}

std::vector<TrainSequence> sequences_from_jsonl(const std::string& path, const Tokenizer& tokenizer,
                                                const SequenceLimits& limits, DataReport& report) {
  std::ifstream in(path);
  if (!in) throw Error(fmt::format("{}: cannot open", path));
  std::vector<TrainSequence> out;
  std::string line;
  size_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}", path, number);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw FormatError(fmt::format("{}: invalid JSON ({})", where, e.what()));
    }
    ++report.rows;
    TrainSequence s;
    if (j.is_object() && j.contains("messages")) {
      try {
        s = chat_sequence(tokenizer, messages_from_json(j["messages"], where), limits.loss_on);
      } catch (const FormatError&) {
        throw;  // already names the line
      } catch (const NoChatTemplateError&) {
        throw;  // the model's, not this line's
      } catch (const Error& e) {
        throw FormatError(fmt::format("{}: {}", where, e.what()));
      }
    } else if (j.is_object() && j.contains("text") && j["text"].is_string()) {
      if (limits.loss_on == LossOn::Response)
        throw Error(fmt::format("{}: a \"text\" row has no response: --loss-on response needs \"messages\" chats", where));
      s.tokens = tokenizer.encode(j["text"].get<std::string>(), true);
      s.target.assign(s.tokens.size(), 1);
    } else {
      throw FormatError(fmt::format("{}: expected an object with \"messages\" (a chat) or \"text\" (a string)", where));
    }
    add_limited(out, std::move(s), limits, report);
  }
  if (out.empty()) throw Error(fmt::format("{}: no training sequences ({})", path, report.describe()));
  return out;
}

std::vector<TrainSequence> sequences_from_study(const AblationConfig& config, size_t k, const Tokenizer& tokenizer,
                                                const SequenceLimits& limits, const std::string& index_dir,
                                                DataReport& report) {
  if (k > 10) throw Error(fmt::format("--k {}: the study retrieves at most 10 examples", k));
  const LoadedIndex index = build_index(study_index_spec(config), index_dir);
  std::vector<TrainSequence> out;
  for (const auto& row : index.pool.rows) {
    ++report.rows;
    // The retriever leaves out rows whose pivot equals the query's: the row never sees
    // itself as an example.
    auto messages = build_messages(config.labels, study_examples(config, index, row.pivot, row.source, k), row.pivot,
                                   row.source, config.variant);
    messages.push_back({"assistant", row.target});
    add_limited(out, chat_sequence(tokenizer, messages, limits.loss_on), limits, report);
  }
  if (out.empty()) throw Error(fmt::format("{} ({}): no training sequences ({})", config.data, config.train_split, report.describe()));
  return out;
}

}  // namespace pivotmt
