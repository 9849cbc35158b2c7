// `pivotmt finetune [CONFIG.toml] --model M --data D --out DIR [options]`: QLoRA
// fine-tuning on the CPU or a GPU with the original's recipe as defaults; rerun on the same DIR to
// resume. `pivotmt merge --model BASE --adapter DIR --out DIR`: fold an adapter into a
// Hugging Face checkpoint.
#include <fmt/format.h>

#include <filesystem>

#include "backends/random_fill.h"
#include "chat/chat_template.h"
#include "backends/backend.h"
#include "commands.h"
#include "core/error.h"
#include "core/progress.h"
#include "io/json_file.h"
#include "io/temp_path.h"
#include "experiment/finetune_plan.h"
#include "hub/hub_client.h"
#include "study_options.h"
#include "tokenizer/tokenizer.h"
#include "train/finetune_data.h"
#include "train/merge.h"
#include "train/trainer.h"

namespace pivotmt::cli {
namespace {

namespace fs = std::filesystem;

struct FinetuneArgs {
  StudyArgs study;
  std::string out;
  int64_t steps = 400, warmup = 100, batch_size = 2, grad_accum = 4, save_every = 50, eval_every = 0;
  double lr = 5e-5, max_grad_norm = 1.0, weight_decay = 0.0, eval_fraction = 0.0;
  LoraConfig lora;
  std::string base_weights = "nf4", loss_on = "all", checkpointing = "auto", offload_inputs = "on", init_adapter, loss_normalization = "predicted";
  std::string device = "auto", base_compute = "f16", plan_device;
  size_t max_seq_len = 4096, k = 3;
  bool drop_long = false, no_shuffle = false, log_json = false, reference_kernels = false, dry_run = false;
};

// A seeded choice of held-out sequences: the fraction whose splitmix64 hash of (seed, index)
// is smallest, so the split depends on the seed alone.
void split_eval(std::vector<TrainSequence>& train, std::vector<TrainSequence>& eval, double fraction, uint64_t seed) {
  if (fraction <= 0) return;
  if (fraction >= 1) throw Error("--eval-fraction must be below 1");
  const size_t n_eval = std::max<size_t>(1, size_t(double(train.size()) * fraction));
  if (n_eval >= train.size()) throw Error(fmt::format("--eval-fraction {}: {} sequences leave none to train on", fraction, train.size()));
  std::vector<std::pair<uint64_t, size_t>> keyed;
  for (size_t i = 0; i < train.size(); ++i) {
    keyed.push_back({random_fill::splitmix64(seed ^ random_fill::splitmix64(i + 1)), i});
  }
  std::sort(keyed.begin(), keyed.end());
  std::vector<bool> held(train.size(), false);
  for (size_t j = 0; j < n_eval; ++j) held[keyed[j].second] = true;
  std::vector<TrainSequence> kept;
  for (size_t i = 0; i < train.size(); ++i) (held[i] ? eval : kept).push_back(std::move(train[i]));
  train = std::move(kept);
}

// `--dry-run`: memory and time on the device from config.json and the data's lengths (no
// weights loaded); the plan also goes to OUT/finetune_plan.json.
void print_plan(const FinetuneArgs& a, const std::string& model_dir, const std::vector<TrainSequence>& data,
                const Device& device) {
  FinetuneSetup setup;
  setup.base = parse_base_weights(a.base_weights);
  setup.lora = a.lora;
  setup.checkpointing = parse_checkpointing(a.checkpointing);
  setup.offload_inputs = a.offload_inputs == "on";
  setup.compute = train::parse_base_compute(a.base_compute);
  setup.steps = a.steps;
  setup.window = size_t(a.batch_size * a.grad_accum);
  for (const auto& s : data) setup.sequence_tokens.push_back(s.tokens.size());
  if (!a.init_adapter.empty()) {
    const auto cfg = read_json_file((fs::path(a.init_adapter) / "adapter_config.json").string());
    setup.lora.r = cfg.value("r", setup.lora.r);
    setup.lora.dropout = cfg.value("lora_dropout", setup.lora.dropout);
    if (cfg.contains("target_modules") && cfg["target_modules"].is_array())
      setup.lora.targets = cfg["target_modules"].get<std::vector<std::string>>();
  }
  std::string where = a.plan_device;
  if (where.empty()) where = device.kind == DeviceKind::CUDA ? fmt::format("cuda:{}", device.index) : "cpu";
  const DeviceCeiling ceiling = where == "cpu" ? measure_cpu_ceiling() : gpu_ceiling(where);
  const FinetunePlan plan = make_finetune_plan(load_decoder_config(model_dir, "fine-tuning"), setup, ceiling);
  fmt::print("{}", finetune_plan_markdown(plan));
  fs::create_directories(a.out);
  write_file_atomically((fs::path(a.out) / "finetune_plan.json").string(), plan.to_json().dump(2) + "\n");
}

void run_finetune(FinetuneArgs& a) {
  if (a.out.empty()) throw Error("--out is required (on the command line or in the config file)");
  // A folder of ours holds finetune.json, written when training starts; before that only the
  // retrieval index this command builds first (a run killed then left just that) and a dry
  // run's plan.
  if (fs::exists(a.out) && !fs::exists(fs::path(a.out) / "finetune.json"))
    for (const auto& e : fs::directory_iterator(a.out))
      if (e.path().filename() != "index" && e.path().filename() != "finetune_plan.json" &&
          e.path().filename().string().find(".tmp.") == std::string::npos)
        throw Error(fmt::format("{} exists and does not hold a fine-tuning run ({} is not ours): choose another --out", a.out,
                                e.path().filename().string()));
  const std::string model_name = a.study.models.empty() ? a.study.config.model : a.study.models.front();
  AblationConfig config = resolve_study(a.study, {"data", "model"});
  const bool quiet = Progress::quiet() || a.log_json;
  auto say = [&](const std::string& s) {
    if (!quiet) fmt::print(stderr, "{}\n", s);
  };

  const auto tokenizer = load_tokenizer(config.model);
  SequenceLimits limits;
  limits.max_seq_len = a.max_seq_len;
  limits.drop_long = a.drop_long;
  limits.loss_on = parse_loss_on(a.loss_on);
  DataReport report;
  std::vector<TrainSequence> data;
  const bool jsonl = fs::is_regular_file(config.data) && fs::path(config.data).extension() == ".jsonl";
  try {
    if (jsonl) {
      data = sequences_from_jsonl(config.data, *tokenizer, limits, report);
    } else {
      data = sequences_from_study(config, a.k, *tokenizer, limits, (fs::path(a.out) / "index").string(), report);
    }
  } catch (const NoChatTemplateError& e) {
    throw Error(fmt::format("{}: {}", model_name, e.what()));
  }
  say(fmt::format("data: {}", report.describe()));
  std::vector<TrainSequence> eval;
  split_eval(data, eval, a.eval_fraction, config.seed);
  if (!eval.empty()) say(fmt::format("held out {} sequences for the evaluation loss", eval.size()));

  const BaseWeights base = parse_base_weights(a.base_weights);
  const Device device = resolve_device(a.device);
  if (a.dry_run) {
    print_plan(a, config.model, data, device);
    return;
  }
  if (a.reference_kernels && device.kind == DeviceKind::CUDA)
    throw Error(fmt::format("--reference-kernels runs the CPU's plain loops: use --device cpu with it (not {})", a.device));
  LoraLlama model(config.model, base, a.reference_kernels ? train::Kernels::Reference : train::Kernels::Fast, device,
                  train::parse_base_compute(a.base_compute));
  model.set_checkpointing(parse_checkpointing(a.checkpointing));
  model.set_offload_inputs(a.offload_inputs == "on");
  LoraConfig lora = a.lora;
  if (!a.init_adapter.empty()) {
    // Training continues from these weights (a resumed run's checkpoint still wins: the
    // trainer restores it over this).
    LoraAdapter start = load_lora(a.init_adapter, model.config());
    lora = start.config;
    lora.base_model = model_name;
    start.config = lora;
    model.set_adapter(std::move(start));
  } else {
    std::sort(lora.targets.begin(), lora.targets.end());
    lora.targets.erase(std::unique(lora.targets.begin(), lora.targets.end()), lora.targets.end());
    lora.base_model = model_name;
    model.set_adapter(init_lora(model.config(), lora, config.seed));
  }
  say(fmt::format("model: {} ({} base, {}), LoRA r {} alpha {} on {}: {} trainable parameters; on {}", config.model,
                  base_weights_name(base), format_bytes(double(model.base_bytes())), lora.r, lora.alpha,
                  fmt::join(lora.targets, ","), model.adapter().parameter_count(), model.describe_device()));

  TrainOptions o;
  o.steps = a.steps;
  o.warmup = a.warmup;
  o.batch_size = a.batch_size;
  o.grad_accum = a.grad_accum;
  o.lr = a.lr;
  o.max_grad_norm = a.max_grad_norm;
  o.adam.weight_decay = a.weight_decay;
  o.shuffle = !a.no_shuffle;
  o.seed = config.seed;
  o.save_every = a.save_every;
  o.eval_every = a.eval_every;
  o.out_dir = a.out;
  o.progress = !quiet;
  o.loss_normalization = a.loss_normalization == "first-token-counted" ? TrainOptions::LossNormalization::FirstTokenCounted
                                                                       : TrainOptions::LossNormalization::Predicted;
  o.identity = {{"model", model_name},
                {"base_weights", a.base_weights},
                {"lora", {{"r", lora.r}, {"alpha", lora.alpha}, {"dropout", lora.dropout}, {"rslora", lora.rslora}, {"targets", lora.targets}}},
                {"steps", a.steps},
                {"warmup", a.warmup},
                {"lr", a.lr},
                {"batch_size", a.batch_size},
                {"grad_accum", a.grad_accum},
                {"max_grad_norm", a.max_grad_norm},
                {"weight_decay", a.weight_decay},
                {"shuffle", !a.no_shuffle},
                {"seed", config.seed},
                {"loss_on", a.loss_on},
                {"max_seq_len", a.max_seq_len},
                {"drop_long", a.drop_long},
                {"eval_fraction", a.eval_fraction}};
  if (!jsonl) o.identity["k"] = a.k;
  if (a.loss_normalization != "predicted") o.identity["loss_normalization"] = a.loss_normalization;
  if (!a.init_adapter.empty()) o.identity["init_adapter"] = fs::absolute(a.init_adapter).string();
  Trainer trainer(model, std::move(data), std::move(eval), o);
  const int64_t every = std::max<int64_t>(1, a.steps / 20);
  const auto records = trainer.run([&](const StepRecord& r) {
    if (a.log_json) {
      fmt::print("{}\n", r.to_json().dump());
      std::fflush(stdout);
    } else if (!quiet && (r.step % every == 0 || r.step == a.steps)) {
      fmt::print(stderr, "\nstep {}/{}: loss {:.4f}{} lr {:.3g} grad norm {:.3g} {:.0f} tokens/s peak RSS {}\n", r.step, a.steps,
                 r.loss, r.eval_loss ? fmt::format(" eval {:.4f}", *r.eval_loss) : "", r.lr, r.grad_norm,
                 r.tokens_per_second, format_bytes(double(r.peak_rss_bytes)));
    }
  });
  if (trainer.resumed_from() > 0 && trainer.resumed_from() < a.steps) say(fmt::format("resumed from step {}", trainer.resumed_from()));
  if (!records.empty())
    say(fmt::format("done: {} steps, final loss {:.4f}; adapter in {} (use it: --adapter {}; merge: pivotmt merge --model {} --adapter {} --out DIR)",
                    records.back().step, records.back().loss, a.out, a.out, model_name, a.out));
}

}  // namespace

void register_finetune(CLI::App& app) {
  static FinetuneArgs a;
  auto* cmd = app.add_subcommand("finetune", "QLoRA fine-tuning on the CPU or a GPU with PEFT-compatible adapters; rerun on --out to resume");
  cmd->add_option("config", a.study.config_file, "TOML file setting any option by its long name")->check(CLI::ExistingFile);
  add_study_options(cmd, a.study);
  cmd->add_option("--seed", a.study.config.seed, "Seed of the data order, LoRA's initialisation and dropout")->capture_default_str();
  cmd->add_option("--init-adapter", a.init_adapter,
                  "Start from this adapter (PEFT's or pivotmt's: adapter_config.json + adapter_model.safetensors) instead "
                  "of a fresh one; its rank, alpha, dropout and targets replace --lora-*")
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--out", a.out, "Output folder: adapter, train_log.jsonl, loss curve, checkpoints");
  cmd->add_option("--steps", a.steps, "Optimiser steps")->capture_default_str();
  cmd->add_option("--lr", a.lr, "Peak learning rate (cosine schedule)")->capture_default_str();
  cmd->add_option("--warmup", a.warmup, "Linear warmup steps")->capture_default_str();
  cmd->add_option("--batch-size", a.batch_size, "Sequences per micro-batch")->capture_default_str();
  cmd->add_option("--grad-accum", a.grad_accum, "Micro-batches per optimiser step (the loss is a token mean over all)")->capture_default_str();
  cmd->add_option("--lora-r", a.lora.r, "LoRA rank")->capture_default_str();
  cmd->add_option("--lora-alpha", a.lora.alpha, "LoRA alpha (scaling alpha / r)")->capture_default_str();
  cmd->add_option("--lora-dropout", a.lora.dropout, "Dropout on the LoRA branch's input")->capture_default_str();
  cmd->add_flag("--rslora", a.lora.rslora, "Rank-stabilised scaling alpha / sqrt(r)");
  cmd->add_option("--lora-targets", a.lora.targets, "Projections to adapt")
      ->check(CLI::IsMember({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}))
      ->capture_default_str();
  cmd->add_option("--base-weights", a.base_weights, "Frozen base storage: nf4 (QLoRA) | f16 | f32")
      ->check(CLI::IsMember({"nf4", "f16", "f32"}))
      ->capture_default_str();
  cmd->add_option("--loss-normalization", a.loss_normalization,
                  "predicted (the loss over the tokens the model predicts, as transformers >= 5) | first-token-counted "
                  "(each sequence's first token counted too, as transformers' Trainer up to 4.57 and the original "
                  "pipeline's logs)")
      ->check(CLI::IsMember({"predicted", "first-token-counted"}))
      ->capture_default_str();
  cmd->add_option("--loss-on", a.loss_on, "all (the original) | response (the answer only)")
      ->check(CLI::IsMember({"all", "response"}))
      ->capture_default_str();
  cmd->add_option("--max-seq-len", a.max_seq_len, "Longer sequences are truncated (or dropped with --drop-long)")->capture_default_str();
  cmd->add_flag("--drop-long", a.drop_long, "Drop sequences over --max-seq-len instead of truncating them");
  cmd->add_flag("--no-shuffle", a.no_shuffle, "Keep the data order (default: a seeded shuffle per epoch)");
  cmd->add_option("--k", a.k, "Retrieved examples in each study training prompt")->capture_default_str();
  cmd->add_option("--save-every", a.save_every, "Checkpoint every N steps (0: only the end)")->capture_default_str();
  cmd->add_option("--eval-fraction", a.eval_fraction, "Hold out this fraction of sequences for an evaluation loss")->capture_default_str();
  cmd->add_option("--eval-every", a.eval_every, "Evaluation loss every N steps (0: never)")->capture_default_str();
  cmd->add_option("--max-grad-norm", a.max_grad_norm, "Global gradient-norm clip (0: none)")->capture_default_str();
  cmd->add_option("--weight-decay", a.weight_decay, "Decoupled weight decay (AdamW)")->capture_default_str();
  cmd->add_option("--gradient-checkpointing", a.checkpointing,
                  "always: recompute each layer in backward (least memory); never: keep all activations; auto: keep them "
                  "while they fit a quarter of the available memory (same results in every mode)")
      ->check(CLI::IsMember({"auto", "always", "never"}))
      ->capture_default_str();
  cmd->add_option("--offload-inputs", a.offload_inputs,
                  "on: a GPU with checkpointing keeps the layers' inputs in pinned host memory, copied there and back "
                  "beside the compute (2.1 GB of device memory saved for a 7B model at 4096 tokens); off: on the "
                  "device (same results)")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  cmd->add_flag("--log-json", a.log_json, "One JSON object per step on stdout (no progress bar)");
  cmd->add_flag("--reference-kernels", a.reference_kernels, "Plain loops instead of BLAS (slow; for checking; CPU)");
  cmd->add_option("--device", a.device,
                  "auto | cpu | cuda[:N] (auto: cuda:0 when a GPU is visible; the base stays in its storage format "
                  "there, see --base-compute)")
      ->capture_default_str();
  cmd->add_flag("--dry-run", a.dry_run,
                "Show the plan — device memory by purpose (does the run fit?) and time from the GEMM rates — and "
                "train nothing (OUT/finetune_plan.json); reads config.json and the data, no weights");
  cmd->add_option("--plan-device", a.plan_device,
                  "With --dry-run: plan for this device instead of --device: cpu, cuda:N (present), h100 or h200 "
                  "(their stated rooflines)");
  cmd->add_option("--base-compute", a.base_compute,
                  "On a GPU, the numerics: f16 (the base's and the output layer's products with F16 inputs and F32 "
                  "sums, attention on the tensor cores — a fused F16 forward, a TF32 backward —, as bitsandbytes + "
                  "PEFT under autocast; losses within 1e-3 of the CPU's) | f32 (the CPU's numerics, slower)")
      ->check(CLI::IsMember({"f16", "f32"}))
      ->capture_default_str();
  cmd->callback([cmd] {
    if (!a.study.config_file.empty()) apply_config_file(*cmd, a.study.config_file, cmd->get_parent()->get_subcommand("ablate"));
    run_finetune(a);
  });

  static std::string base, adapter, out;
  auto* merge = app.add_subcommand("merge", "Fold a LoRA adapter into a model: a Hugging Face checkpoint with its tokenizer files");
  merge->add_option("--model,-m", base, "Base model directory or hub id")->required();
  merge->add_option("--adapter", adapter, "PEFT adapter directory")->required()->check(CLI::ExistingDirectory);
  merge->add_option("--out", out, "New model folder (must not exist or be empty)")->required();
  merge->callback([] {
    const auto r = merge_adapter(resolve_repo_path(base, RepoType::Model), adapter, out);
    if (!Progress::quiet())
      fmt::print(stderr, "merged {} projections ({} tensors, {}) into {}\n", r.merged, r.tensors, format_bytes(double(r.bytes)), out);
  });
}

}  // namespace pivotmt::cli
