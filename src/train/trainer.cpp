#include "train/trainer.h"

#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "backends/random_fill.h"
#include "core/error.h"
#include "core/progress.h"
#include "experiment/plots.h"
#include "io/json_fields.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "io/temp_path.h"

namespace pivotmt {

namespace fs = std::filesystem;
using random_fill::splitmix64;

nlohmann::json StepRecord::to_json() const {
  nlohmann::json j = {{"step", step},           {"loss", loss},
                      {"learning_rate", lr},    {"grad_norm", grad_norm},
                      {"tokens", tokens},       {"target_tokens", target_tokens},
                      {"seconds", seconds},     {"tokens_per_second", tokens_per_second},
                      {"peak_rss_bytes", peak_rss_bytes}};
  if (eval_loss) j["eval_loss"] = *eval_loss;
  return j;
}

namespace {

StepRecord record_from_json(const nlohmann::json& j, const std::string& where) {
  StepRecord r;
  r.step = json_integer(required_field(j, "step", where), field_name(where, "step"), 0);
  r.loss = json_number(required_field(j, "loss", where), field_name(where, "loss"));
  r.lr = json_number(required_field(j, "learning_rate", where), field_name(where, "learning_rate"));
  r.grad_norm = json_number(required_field(j, "grad_norm", where), field_name(where, "grad_norm"));
  r.tokens = size_t(field_integer(j, "tokens", where, 0, 0));
  r.target_tokens = size_t(field_integer(j, "target_tokens", where, 0, 0));
  r.seconds = field_number(j, "seconds", where, 0.0);
  r.tokens_per_second = field_number(j, "tokens_per_second", where, 0.0);
  r.peak_rss_bytes = size_t(field_integer(j, "peak_rss_bytes", where, 0, 0));
  if (j.contains("eval_loss") && !j["eval_loss"].is_null()) r.eval_loss = json_number(j["eval_loss"], field_name(where, "eval_loss"));
  return r;
}

// The order of the data in epoch e: a Fisher-Yates shuffle drawn from (seed, epoch)
// (our own, not std::shuffle, whose algorithm differs between standard libraries).
std::vector<size_t> epoch_order(size_t n, uint64_t seed, uint64_t epoch, bool shuffle) {
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  if (!shuffle) return order;
  const uint64_t s = splitmix64(seed ^ splitmix64(0x5eed0000ull + epoch));
  for (size_t i = n; i > 1; --i) {
    const uint64_t r = splitmix64(s + i);
    std::swap(order[i - 1], order[size_t(r % i)]);
  }
  return order;
}

uint64_t dropout_key(uint64_t seed, int64_t step, size_t j) {
  return splitmix64(seed ^ splitmix64(uint64_t(step) * 1024 + j + 1));
}

std::string step_dir_name(int64_t step) { return fmt::format("step-{:06d}", step); }

void write_optimizer(const std::string& path, const LoraAdapter& params, const train::AdamWState& st, const ModelConfig& c) {
  const auto modules = llama_lora_modules(c);
  std::vector<TensorData> tensors;
  auto add = [&](const std::string& name, const std::vector<float>& v) {
    TensorData t;
    t.spec = {name, DType::F32, {int64_t(v.size())}};
    t.bytes.resize(v.size() * 4);
    std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
    tensors.push_back(std::move(t));
  };
  for (const auto& [key, p] : params.weights) {
    const auto& m = modules.at(lora_module_index(modules, key.second));
    const std::string k = lora_key(key.first, m);
    add(k + ".lora_A.exp_avg", st.m.weights.at(key).A);
    add(k + ".lora_B.exp_avg", st.m.weights.at(key).B);
    add(k + ".lora_A.exp_avg_sq", st.v.weights.at(key).A);
    add(k + ".lora_B.exp_avg_sq", st.v.weights.at(key).B);
  }
  write_safetensors(path, tensors, {{"format", "pivotmt-adamw"}, {"step", std::to_string(st.step)}});
}

void read_optimizer(const std::string& path, train::AdamWState& st, const ModelConfig& c) {
  SafetensorsFile f(path);
  const auto modules = llama_lora_modules(c);
  auto read = [&](const std::string& name, std::vector<float>& v) {
    const auto& t = f.at(name);
    if (t.dtype != DType::F32 || t.numel() != v.size())
      throw FormatError(fmt::format("{}: tensor {} should be F32 with {} values", path, name, v.size()));
    std::memcpy(v.data(), f.data(t).data(), v.size() * 4);
  };
  for (auto& [key, m] : st.m.weights) {
    const auto& mod = modules.at(lora_module_index(modules, key.second));
    const std::string k = lora_key(key.first, mod);
    read(k + ".lora_A.exp_avg", m.A);
    read(k + ".lora_B.exp_avg", m.B);
    read(k + ".lora_A.exp_avg_sq", st.v.weights.at(key).A);
    read(k + ".lora_B.exp_avg_sq", st.v.weights.at(key).B);
  }
  const auto it = f.metadata().find("step");
  if (it == f.metadata().end()) throw FormatError(fmt::format("{}: the optimiser step is missing from the metadata", path));
  st.step = std::stoll(it->second);
}

std::vector<StepRecord> read_log(const std::string& path, int64_t up_to) {
  std::vector<StepRecord> out;
  std::ifstream in(path);
  std::string line;
  size_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    try {
      const auto j = nlohmann::json::parse(line);
      if (!j.contains("step")) continue;  // the header
      auto r = record_from_json(j, fmt::format("{}:{}", path, n));
      if (r.step <= up_to) out.push_back(r);
    } catch (const std::exception&) {
      // A line cut short by a kill is the only thing a crash can leave; anything past the
      // checkpoint is recomputed anyway.
      continue;
    }
  }
  return out;
}

void append_line(const std::string& path, const std::string& line) {
  std::ofstream out(path, std::ios::app);
  out << line << '\n';
  out.flush();
  if (!out) throw Error(fmt::format("{}: cannot append", path));
}

}  // namespace

std::string data_fingerprint(const std::vector<TrainSequence>& data) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over ids and flags
  auto mix = [&](uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (8 * i)) & 0xff;
      h *= 1099511628211ull;
    }
  };
  mix(data.size());
  for (const auto& s : data) {
    mix(s.tokens.size());
    for (size_t i = 0; i < s.tokens.size(); ++i) mix(uint64_t(uint32_t(s.tokens[i])) << 1 | s.target[i]);
  }
  return fmt::format("{:016x}", h);
}

size_t peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return size_t(u.ru_maxrss) * 1024;
}

Trainer::Trainer(LoraLlama& model, std::vector<TrainSequence> data, std::vector<TrainSequence> eval, TrainOptions o)
    : model_(model), data_(std::move(data)), eval_(std::move(eval)), o_(std::move(o)) {
  if (data_.empty()) throw Error("fine-tuning: no training sequences");
  if (o_.steps <= 0 || o_.batch_size <= 0 || o_.grad_accum <= 0)
    throw Error(fmt::format("fine-tuning: steps ({}), batch size ({}) and gradient accumulation ({}) must be positive",
                            o_.steps, o_.batch_size, o_.grad_accum));
  if (o_.warmup < 0) throw Error("fine-tuning: warmup must be >= 0");
  // A negative or NaN learning rate trains away from the data without a word; these are
  // refused at the start.
  if (!(o_.lr > 0) || !std::isfinite(o_.lr)) throw Error(fmt::format("fine-tuning: the learning rate ({}) must be positive", o_.lr));
  if (std::isnan(o_.max_grad_norm)) throw Error("fine-tuning: max_grad_norm is NaN (0 or less: no clipping)");
  if (o_.save_every < 0 || o_.eval_every < 0)
    throw Error(fmt::format("fine-tuning: save_every ({}) and eval_every ({}) must be >= 0", o_.save_every, o_.eval_every));
  for (size_t i = 0; i < data_.size(); ++i)
    if (data_[i].target_count() == 0)
      throw Error(fmt::format("fine-tuning: training sequence {} has no target token", i));
}

std::vector<size_t> Trainer::window(int64_t step) const {
  const size_t W = size_t(o_.batch_size * o_.grad_accum), N = data_.size();
  std::vector<size_t> out;
  std::vector<size_t> order;
  uint64_t have_epoch = ~uint64_t(0);
  for (size_t j = 0; j < W; ++j) {
    const size_t pos = size_t(step) * W + j;
    const uint64_t epoch = pos / N;
    if (epoch != have_epoch) {
      order = epoch_order(N, o_.seed, epoch, o_.shuffle);
      have_epoch = epoch;
    }
    out.push_back(order[pos % N]);
  }
  return out;
}

double Trainer::eval_loss() {
  double sum = 0;
  size_t n = 0;
  for (const auto& s : eval_) {
    sum += model_.loss(s);
    n += s.target_count();
  }
  return n ? sum / double(n) : 0.0;
}

void Trainer::save_checkpoint(int64_t step) {
  const train::AdamWState& st = model_.optimizer_state();
  const fs::path root = fs::path(o_.out_dir) / "checkpoints";
  fs::create_directories(root);
  const fs::path final_dir = root / step_dir_name(step);
  const fs::path tmp = root / fmt::format(".{}.tmp-{}", step_dir_name(step), getpid());
  fs::remove_all(tmp);
  save_lora(model_.adapter(), model_.config(), tmp.string());
  write_optimizer((tmp / "optimizer.safetensors").string(), model_.adapter(), st, model_.config());
  write_json_file((tmp / "trainer_state.json").string(),
                  {{"step", step}, {"optimizer_step", st.step}, {"seed", o_.seed}, {"data", data_fingerprint(data_)}});
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);  // a checkpoint appears whole or not at all
  // Keep the newest few.
  std::vector<fs::path> dirs;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory() && e.path().filename().string().rfind("step-", 0) == 0) dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  for (size_t i = 0; o_.keep_checkpoints > 0 && i + size_t(o_.keep_checkpoints) < dirs.size(); ++i) fs::remove_all(dirs[i]);
}

int64_t Trainer::load_latest_checkpoint() {
  const fs::path root = fs::path(o_.out_dir) / "checkpoints";
  if (!fs::exists(root)) return 0;
  std::vector<fs::path> dirs;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(".step-", 0) == 0) fs::remove_all(e.path());  // a checkpoint a kill cut short
    else if (e.is_directory() && name.rfind("step-", 0) == 0) dirs.push_back(e.path());
  }
  if (dirs.empty()) return 0;
  std::sort(dirs.begin(), dirs.end());
  const fs::path dir = dirs.back();
  const auto state = read_json_file((dir / "trainer_state.json").string());
  const std::string state_path = (dir / "trainer_state.json").string();
  const int64_t step = json_integer(required_field(state, "step", state_path), field_name(state_path, "step"), 0);
  if (field_string(state, "data", state_path, "") != data_fingerprint(data_))
    throw Error(fmt::format("{}: the checkpoint was trained on other data than this run's", dir.string()));
  LoraAdapter a = load_lora(dir.string(), model_.config());
  const auto& want = model_.adapter().config;
  if (a.config.r != want.r || a.config.alpha != want.alpha || a.config.targets != want.targets || a.config.rslora != want.rslora)
    throw Error(fmt::format("{}: the checkpoint's LoRA (r {}, alpha {}) differs from this run's (r {}, alpha {})", dir.string(),
                            a.config.r, a.config.alpha, want.r, want.alpha));
  a.config = want;  // dropout and the base name as this run states them
  model_.set_adapter(a);
  train::AdamWState st = train::adamw_init(model_.adapter());
  read_optimizer((dir / "optimizer.safetensors").string(), st, model_.config());
  if (st.step != step) throw FormatError(fmt::format("{}: optimiser step {} but trainer step {}", dir.string(), st.step, step));
  model_.set_optimizer_state(st);
  return step;
}

nlohmann::json Trainer::log_header() const {
  const bool original = o_.loss_normalization == TrainOptions::LossNormalization::FirstTokenCounted;
  return {{"loss_normalization", original ? "first-token-counted" : "predicted"},
          {"loss", original ? "summed cross-entropy / (predicted target tokens + each sequence's first token when it is "
                              "a target), as transformers' Trainer up to 4.57 (the original pipeline's logs)"
                            : "summed cross-entropy / predicted target tokens of the window, as transformers >= 5 "
                              "(a sequence's first token is never predicted, so never counted)"}};
}

std::vector<StepRecord> Trainer::run(const std::function<void(const StepRecord&)>& on_step) {
  std::vector<StepRecord> records;
  const bool write = !o_.out_dir.empty();
  const std::string log_path = write ? (fs::path(o_.out_dir) / "train_log.jsonl").string() : "";
  model_.set_optimizer_state(train::adamw_init(model_.adapter()));  // fresh moments unless a checkpoint resumes
  if (write) {
    fs::create_directories(o_.out_dir);
    const std::string id_path = (fs::path(o_.out_dir) / "finetune.json").string();
    nlohmann::json identity = o_.identity;
    identity["data"] = data_fingerprint(data_);
    if (fs::exists(id_path)) {
      const auto old = read_json_file(id_path);
      std::string diffs;
      for (const auto& [k, v] : identity.items())
        if (!old.contains(k) || old[k] != v)
          diffs += fmt::format("\n  {}: was {}, now {}", k, old.contains(k) ? old[k].dump() : "absent", v.dump());
      if (!diffs.empty())
        throw Error(fmt::format("{} holds a fine-tuning run with other settings (use another --out, or the same settings to resume):{}",
                                o_.out_dir, diffs));
    } else {
      write_json_file(id_path, identity);
    }
    resumed_from_ = load_latest_checkpoint();
    const auto done = fs::path(o_.out_dir) / "trainer_state.json";
    if (fs::exists(done) && field_bool(read_json_file(done.string()), "complete", done.string(), false)) resumed_from_ = o_.steps;
    records = read_log(log_path, resumed_from_);
    // The log holds its header, then exactly the steps before the resume point.
    std::string text = log_header().dump() + "\n";
    for (const auto& r : records) text += r.to_json().dump() + "\n";
    write_file_atomically(log_path, text);
    if (resumed_from_ >= o_.steps) return records;
  }

  const size_t W = size_t(o_.batch_size * o_.grad_accum);
  std::optional<Progress> bar;
  if (o_.progress) {
    bar.emplace("fine-tuning", uint64_t(o_.steps), ProgressUnit::Items);
    bar->set(uint64_t(resumed_from_));
  }
  for (int64_t step = resumed_from_; step < o_.steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    model_.zero_grad();
    const auto idx = window(step);
    size_t targets = 0, tokens = 0;
    for (size_t i : idx) {
      targets += data_[i].target_count();
      if (o_.loss_normalization == TrainOptions::LossNormalization::FirstTokenCounted && !data_[i].target.empty() &&
          data_[i].target[0])
        ++targets;  // transformers <= 4.57 counted the first token's label too
      tokens += data_[i].tokens.size();
    }
    // A true token mean over the window: every micro-batch's summed loss / all its targets.
    const float scale = 1.0f / float(targets);
    double loss = 0;
    for (size_t j = 0; j < W; ++j) loss += model_.forward_backward(data_[idx[j]], scale, dropout_key(o_.seed, step, j));
    StepRecord r;
    r.step = step + 1;
    r.loss = loss / double(targets);
    r.grad_norm = model_.grad_norm();
    r.lr = train::cosine_lr(o_.lr, step, o_.warmup, o_.steps);
    model_.optimizer_step(r.grad_norm, o_.max_grad_norm, r.lr, o_.adam);
    r.tokens = tokens;
    r.target_tokens = targets;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.tokens_per_second = double(tokens) / std::max(r.seconds, 1e-9);
    r.peak_rss_bytes = peak_rss_bytes();
    if (o_.eval_every > 0 && !eval_.empty() && (r.step % o_.eval_every == 0 || r.step == o_.steps)) r.eval_loss = eval_loss();
    records.push_back(r);
    if (write) {
      append_line(log_path, r.to_json().dump());
      if (o_.save_every > 0 && r.step % o_.save_every == 0 && r.step < o_.steps) save_checkpoint(r.step);
    }
    if (bar) bar->set(uint64_t(r.step));
    if (on_step) on_step(r);
  }
  if (bar) bar->finish();
  if (write) {
    save_lora(model_.adapter(), model_.config(), o_.out_dir);
    MetricSeries train_loss{"train loss", {}, {}, std::nullopt}, eval_loss_series{"eval loss", {}, {}, std::nullopt};
    for (const auto& r : records) {
      train_loss.ks.push_back(double(r.step));
      train_loss.values.push_back(r.loss);
      if (r.eval_loss) {
        eval_loss_series.ks.push_back(double(r.step));
        eval_loss_series.values.push_back(*r.eval_loss);
      }
    }
    std::vector<MetricSeries> series{train_loss};
    if (!eval_loss_series.ks.empty()) series.push_back(eval_loss_series);
    plot_loss_curve(series, "Fine-tuning loss", (fs::path(o_.out_dir) / "loss_curve").string());
    write_json_file((fs::path(o_.out_dir) / "trainer_state.json").string(), {{"complete", true}, {"step", o_.steps}});
  }
  return records;
}

}  // namespace pivotmt
