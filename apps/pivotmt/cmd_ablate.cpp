// `pivotmt ablate [CONFIG.toml] [options]`: the k-ablation study, resumable and shardable.
// A TOML file (parsed by CLI11's own config reader) sets any option by its long name; the
// command line overrides the file. `pivotmt report DIR...`: the cross-run tables.
#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <numeric>
#include <optional>
#include <thread>

#include <nlohmann/json.hpp>

#include "ablation_view.h"
#include "commands.h"
#include "study_options.h"
#include "core/error.h"
#include "io/json_file.h"
#include "core/progress.h"
#include "experiment/ablation.h"
#include "comet_options.h"
#include "nllb_options.h"
#include "slurm.h"
#include "workers.h"
#include "backends/backend.h"
#include "experiment/cross_report.h"
#include "metrics/comet.h"
#include "experiment/plots.h"
#include "io/temp_path.h"
#include "hub/hub_client.h"
#include "models/model_config.h"
#include "models/weights.h"
#include "io/checkpoint.h"
#include "experiment/run_plan.h"

namespace pivotmt::cli {
namespace {

// "0 1 3", "0,5,10" or "0..10" into k values.
std::vector<size_t> parse_ks(const std::vector<std::string>& items) {
  std::vector<size_t> ks;
  for (const auto& item : items) {
    const auto dots = item.find("..");
    try {
      if (dots == std::string::npos) {
        ks.push_back(std::stoul(item));
      } else {
        const size_t a = std::stoul(item.substr(0, dots)), b = std::stoul(item.substr(dots + 2));
        if (a > b) throw Error("empty range");
        for (size_t k = a; k <= b; ++k) ks.push_back(k);
      }
    } catch (const std::exception&) {
      throw Error(fmt::format("-k {}: expected numbers or a range such as 0..10", item));
    }
  }
  return ks;
}

// "2/8" into (2, 8); "auto": the Slurm array task's.
std::pair<size_t, size_t> parse_shard(const std::string& text) {
  if (text == "auto") return slurm_array_shard();
  const auto slash = text.find('/');
  try {
    if (slash != std::string::npos) {
      const size_t i = std::stoul(text.substr(0, slash)), n = std::stoul(text.substr(slash + 1));
      if (n >= 1 && i >= 1 && i <= n) return {i, n};
    }
  } catch (const std::exception&) {
  }
  throw Error(fmt::format("--shard {}: expected i/N with 1 <= i <= N, e.g. 2/8, or auto (a Slurm array task)", text));
}

// Joins shard folders into `out`. Shards of a several-model run hold one folder per model:
// those are joined by name.
void merge_shards(const std::vector<std::string>& dirs, const std::string& out, bool force, const comet::Location& comet) {
  namespace fs = std::filesystem;
  if (out.empty()) throw Error("ablate --merge: --out is required");
  if (fs::exists(fs::path(dirs.front()) / "ablation_config.json")) {
    const auto outcome = merge_ablation(dirs, out, force, comet.model_dir, comet.encoder_dir, comet.name, comet.weights);
    fmt::print("{}: merged {} shards ({} rows over all k); summary in {}/ablation_summary.csv\n", out, dirs.size(),
               outcome.rows_resumed, out);
    return;
  }
  std::vector<std::string> names;
  if (fs::is_directory(dirs.front()))
    for (const auto& e : fs::directory_iterator(dirs.front()))
      if (fs::exists(e.path() / "ablation_config.json")) names.push_back(e.path().filename().string());
  if (names.empty()) throw Error(fmt::format("{}: no ablation_config.json in it or its folders: not a shard", dirs.front()));
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    std::vector<std::string> parts;
    for (const auto& d : dirs) parts.push_back((fs::path(d) / name).string());
    merge_shards(parts, (fs::path(out) / name).string(), force, comet);
  }
}

// --emit-sbatch: the job array and the merge job for this command line (the run itself is the
// array's).
void emit_sbatch_scripts(const CLI::App& cmd, const StudyArgs& args, const std::string& dir, SbatchRequest request,
                         const CometArgs& comet, const std::string& plan_device) {
  namespace fs = std::filesystem;
  if (args.config.out.empty()) throw Error("--emit-sbatch: --out is required (the shards and the merged run go there)");
  // The command the tasks run: this binary, this command line without what each task sets.
  auto base = strip_options(command_line(),
                            {"--emit-sbatch", "--sbatch-tasks", "--sbatch-time", "--sbatch-mem", "--sbatch-cpus",
                             "--sbatch-gpus", "--sbatch-partition", "--out", "-o", "--shard", "--workers", "--devices"},
                            {"--log-json"});
  std::error_code ec;
  const auto exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) base[0] = exe.string();
  // Memory: the model's weights in the chosen storage (from the safetensors sizes) + room.
  if (request.mem.empty() || cmd.get_option("--sbatch-mem")->count() == 0) {
    double bytes = 0;
    for (const auto& m : args.models) {
      const std::string local = fs::is_directory(m) ? m : resolve_repo_path(m, RepoType::Model);
      for (const auto& e : fs::directory_iterator(local))
        if (e.path().extension() == ".safetensors") bytes += double(fs::file_size(fs::canonical(e.path())));
      // The files hold F32 or BF16/F16; the storage chosen scales them.
      const auto cfg = load_model_config(local);
      const double stored = cfg.torch_dtype == "float32" ? 4 : 2;
      const std::string& w = args.config.weights;
      const double chosen = w == "f32" ? 4 : w == "f16" ? 2 : w == "nf4" ? 0.55 : 1;
      bytes = std::max(bytes, bytes * chosen / stored);
    }
    request.mem = fmt::format("{}G", size_t(bytes / double(1 << 30)) + 4);
  }
  if (cmd.get_option("--sbatch-gpus")->count() == 0)
    request.gpus_per_task = args.config.device.rfind("cuda", 0) == 0 ? 1 : 0;
  // Time: the run plan's estimate of one task's share (the dry run builds every prompt; the
  // device is --plan-device, else an H100 for GPU tasks, else this CPU), with half again
  // and 15 minutes of margin.
  if (cmd.get_option("--sbatch-time")->count() == 0) {
    double seconds = 0;
    const DeviceCeiling ceiling = !plan_device.empty() ? (plan_device == "cpu" ? measure_cpu_ceiling() : gpu_ceiling(plan_device))
                                  : request.gpus_per_task > 0 ? gpu_ceiling("h100")
                                                              : measure_cpu_ceiling();
    for (size_t m = 0; m < std::max<size_t>(1, args.models.size()); ++m) {
      AblationConfig config = resolve_study(args, {"data", "model", "out"}, m);
      if (args.models.size() > 1) config.out = (fs::path(config.out) / model_slug(args.models[m])).string();
      AblationRunOptions dry;
      dry.dry_run = true;
      const auto outcome = run_ablation(config, dry);
      if (outcome.workload.rows == 0) continue;
      const ModelConfig model_config = load_model_config(config.model);
      const Checkpoint ckpt(config.model);
      const auto weights = expected_weights(model_config, ckpt);
      seconds += make_run_plan(model_config, parameter_count(weights), config.weights, outcome.workload, ceiling,
                               gguf_in_place_weight_bytes(weights, ckpt))
                     .seconds();
    }
    const double per_task = seconds / double(std::max<size_t>(1, request.tasks)) * 1.5 + 900;
    const long t = std::min(long(per_task), 7L * 24 * 3600);
    request.time = fmt::format("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60);
  }
  std::vector<std::string> merge_extra;
  if (!comet.model.empty()) merge_extra = {"--comet-model", comet.model};
  if (!comet.encoder.empty()) merge_extra.insert(merge_extra.end(), {"--comet-encoder", comet.encoder});
  write_sbatch(dir, base, fs::absolute(args.config.out).string(), fs::current_path().string(), request, merge_extra);
  fmt::print("{}: ablate.sbatch ({} array tasks, {} and {} each{}), merge.sbatch, submit.sh; submit with: bash {}/submit.sh\n",
             dir, request.tasks, request.time, request.mem,
             request.gpus_per_task ? fmt::format(", {} GPU", request.gpus_per_task) : std::string(), dir);
}

}  // namespace

void register_ablate(CLI::App& app) {
  auto* cmd = app.add_subcommand("ablate", "Run the k-ablation study (retrieve, prompt, generate, score), resumable");
  static StudyArgs args;
  static std::vector<std::string> ks = {"0", "1", "3", "5", "7", "10"};
  static bool quick = false, force = false, quiet = false, log_json = false;
  static std::string shard;
  static std::vector<std::string> merge;
  static CometArgs comet_args;
  static comet::Location comet_dirs;
  cmd->add_option("CONFIG", args.config_file, "TOML file of options (keys: the long option names, e.g. max-new-tokens = 200)");
  add_study_options(cmd, args);
  add_generation_options(cmd, args);
  cmd->add_option("-k,--k", ks, "k values: numbers and ranges (0..10)")->capture_default_str();
  cmd->add_flag("--quick", quick, "k = 0 5 10");
  cmd->add_option("--limit", args.config.limit, "Test rows (0: all)")->capture_default_str();
  cmd->add_option("--out,-o", args.config.out, "Output directory");
  cmd->add_flag("--force", force, "Replace a run of another configuration in --out");
  cmd->add_option("--index", args.config.index_dir, "Retrieval index folder, reusable across runs (default: OUT/index)");
  static bool no_reuse = false, dry_run = false;
  cmd->add_flag("--dry-run", dry_run, "Show what would run (rows per k, prompt lengths, context overflows) and the run plan (memory, batch, time; "
                "OUT/run_plan.json); load no model, write nothing but the index and the plan");
  static std::string plan_device;
  static double within_hours = 24;
  cmd->add_option("--plan-device", plan_device,
                  "The dry run's plan for this device: cpu, cuda:N (measured), h100 or h200 (stated roofline); default: "
                  "the --device the run would use");
  cmd->add_option("--within", within_hours, "The plan's devices wanted to finish within this many hours")->capture_default_str();
  cmd->add_flag("--no-prefix-reuse", no_reuse, "Recompute every prompt in full (same outputs, slower; for comparison)");
  cmd->add_option("--shard", shard,
                  "Run slice i of N (rows i-1, i-1+N, ...), e.g. 2/8, or auto (Slurm's SLURM_ARRAY_TASK_ID / _MIN / "
                  "_COUNT); join with --merge");
  static size_t workers = 1;
  static std::string devices;
  cmd->add_option("--workers", workers, "Run as N worker processes on this machine (shards merged when all finish; CPU workers share the cores)")
      ->capture_default_str();
  cmd->add_option("--devices", devices, "One worker per device: cuda:0,cuda:1,... or all (every visible GPU)");
  static std::string emit_sbatch;
  static SbatchRequest sbatch;
  cmd->add_option("--emit-sbatch", emit_sbatch,
                  "Write DIR/ablate.sbatch (a job array of --sbatch-tasks shards), DIR/merge.sbatch and DIR/submit.sh "
                  "instead of running");
  cmd->add_option("--sbatch-tasks", sbatch.tasks, "Array tasks (shards) of --emit-sbatch")->capture_default_str();
  cmd->add_option("--sbatch-time", sbatch.time,
                  "Time limit per task (default: the run plan's estimate of a task's share, +50% and 15 minutes)");
  cmd->add_option("--sbatch-mem", sbatch.mem, "Memory per task (default: the model's weights in the chosen storage + 4G)");
  cmd->add_option("--sbatch-cpus", sbatch.cpus_per_task, "CPUs per task")->capture_default_str();
  cmd->add_option("--sbatch-gpus", sbatch.gpus_per_task, "GPUs per task (default: 1 when --device is cuda, else 0)");
  cmd->add_option("--sbatch-partition", sbatch.partition, "Slurm partition (default: the cluster's)");
  cmd->add_option("--merge", merge, "Join these --shard folders into --out (the outputs of a single run)");
  add_comet_options(cmd, comet_args);
  static std::string baseline_model, baseline_weights = "f16";
  static NllbArgs baseline_args;
  cmd->add_option("--baseline-model", baseline_model,
                  "NLLB-200 model (hub id or directory, e.g. facebook/nllb-200-distilled-600M): translate the test rows "
                  "once with it into OUT/baseline, shown beside every k");
  cmd->add_option("--baseline-weights", baseline_weights, "The baseline's weight storage: f32 | f16 | int8")
      ->check(CLI::IsMember({"f32", "f16", "int8"}))
      ->capture_default_str();
  add_nllb_options(cmd, baseline_args, "baseline-");
  cmd->add_flag("--quiet", quiet, "No progress output");
  cmd->add_flag("--log-json", log_json, "Progress as JSON lines on stderr (for clusters)");
  // One model's run into `out`.
  static auto run_one = [](AblationConfig config, const std::string& out) {
    config.out = out;
    config.reuse_prefixes = !no_reuse;
    config.comet_model = comet_dirs.model_dir;
    config.comet_encoder = comet_dirs.encoder_dir;
    config.comet_name = comet_args.model;
    config.comet_weights = comet_dirs.weights;
    config.ks = quick ? std::vector<size_t>{0, 5, 10} : parse_ks(ks);
    if (!shard.empty()) std::tie(config.shard_index, config.shard_count) = parse_shard(shard);
    AblationView view(choose_view_mode(quiet, log_json), std::filesystem::path(config.out).filename().string());
    AblationRunOptions options;
    options.force = force;
    options.dry_run = dry_run;
    options.on_progress = [&](const AblationProgress& p) { view.update(p); };
    std::unique_ptr<Progress> baseline_bar;
    const ViewMode mode = choose_view_mode(quiet, log_json);
    options.on_baseline_progress = [&](size_t done, size_t total) {
      if (mode == ViewMode::Quiet) return;
      if (mode == ViewMode::Json) {
        fmt::print(stderr, "{}\n", nlohmann::json{{"event", "baseline"}, {"done", done}, {"total", total}}.dump());
        return;
      }
      if (!baseline_bar) baseline_bar = std::make_unique<Progress>("baseline", total, ProgressUnit::Items);
      baseline_bar->set(done);
      if (done == total) baseline_bar->finish();
    };
    if (dry_run) {
      const auto planned = run_ablation(config, options);
      const auto& plan = planned.plan;
      const auto& run_ablation_plan_baseline = planned.baseline_plan;
      fmt::print("{}: dry run of {} (over the context: prompt + max_new_tokens {} > the model's positions)\n\n",
                 config.out, config.model, config.max_new_tokens);
      fmt::print("| k | rows done | rows to run | prompt tokens p50 | p90 | max | over the context |\n"
                 "|---:|---:|---:|---:|---:|---:|---:|\n");
      for (const auto& r : plan)
        fmt::print("| {} | {} | {} | {:.0f} | {:.0f} | {:.0f} | {} |\n", r["k"].get<size_t>(), r["done"].get<size_t>(),
                   r["pending"].get<size_t>(), r["prompt_tokens_p50"].get<double>(), r["prompt_tokens_p90"].get<double>(),
                   r["prompt_tokens_max"].get<double>(), r["over_context"].get<size_t>());
      if (const auto& b = run_ablation_plan_baseline; !b.is_null())
        fmt::print("\nbaseline {} ({} → {}, column {}): {} rows done, {} to translate\n", b["languages"]["model"].get<std::string>(),
                   b["languages"]["src_lang"].get<std::string>(), b["languages"]["tgt_lang"].get<std::string>(),
                   b["languages"]["column"].get<std::string>(), b["done"].get<size_t>(), b["pending"].get<size_t>());
      // The run plan: memory, batch, tokens and time on the device.
      if (planned.workload.rows > 0) {
        const ModelConfig model_config = load_model_config(config.model);
        const Checkpoint ckpt(config.model);
        const auto weights = expected_weights(model_config, ckpt);
        const uint64_t params = parameter_count(weights);
        std::string device = plan_device;
        if (device.empty()) {
          const Device d = resolve_device(config.device, config.weights == "f16");
          device = d.kind == DeviceKind::CUDA ? fmt::format("cuda:{}", d.index) : "cpu";
        }
        const DeviceCeiling ceiling = device == "cpu" ? measure_cpu_ceiling() : gpu_ceiling(device);
        RunPlan run_plan = make_run_plan(model_config, params, config.weights, planned.workload, ceiling,
                                         gguf_in_place_weight_bytes(weights, ckpt));
        // The stages after generation: sentences and segments of about the references' length.
        const auto& out_tokens = planned.workload.output_tokens;
        const double tokens =
            out_tokens.empty() ? 32.0
                               : double(std::accumulate(out_tokens.begin(), out_tokens.end(), size_t(0))) / double(out_tokens.size());
        double baseline_rows = 0;
        if (config.baseline.enabled()) {
          baseline_rows = double(planned.baseline_plan.value("pending", size_t(0)));
          const auto dir = std::filesystem::path(config.baseline.model);
          const auto generation = dir / "generation_config.json";
          const size_t beams = config.baseline.num_beams ? *config.baseline.num_beams
                               : std::filesystem::exists(generation)
                                   ? read_json_file(generation.string()).value("num_beams", size_t(1))
                                   : size_t(1);
          run_plan.stages.push_back(plan_nllb(read_json_file((dir / "config.json").string()), baseline_rows, tokens, beams,
                                              config.baseline.batch, config.baseline.weights, ceiling));
        }
        if (!comet_args.model.empty()) {
          std::optional<nlohmann::json> encoder;
          const auto encoder_config = std::filesystem::path(comet_args.encoder) / "config.json";
          if (!comet_args.encoder.empty() && std::filesystem::exists(encoder_config))
            encoder = read_json_file(encoder_config.string());
          run_plan.stages.push_back(plan_comet(comet_args.model, encoder ? &*encoder : nullptr,
                                               double(planned.workload.rows) + baseline_rows, tokens, ceiling,
                                               comet_args.weights == "f16"));
        }
        fmt::print("\n{}", run_plan_markdown(run_plan, within_hours));
        std::filesystem::create_directories(config.out);
        write_file_atomically((std::filesystem::path(config.out) / "run_plan.json").string(), run_plan.to_json().dump(2) + "\n");
      } else {
        fmt::print("\nnothing left to run\n");
      }
      return;
    }
    const auto outcome = run_ablation(config, options);
    view.finish(outcome);
    const std::string reuse = outcome.prompt_tokens > 0
                                  ? fmt::format(" ({:.0f}% of prompt tokens copied from shared prefixes)",
                                                100.0 * double(outcome.reused_prompt_tokens) / double(outcome.prompt_tokens))
                                  : "";
    if (outcome.baseline.generated > 0)
      fmt::print("{}: baseline: {} rows translated{}\n", config.out, outcome.baseline.generated,
                 outcome.baseline.truncated ? fmt::format(" ({} sources cut to the tokenizer's maximum)", outcome.baseline.truncated)
                                            : std::string());
    if (outcome.outputs_written)
      fmt::print("{}: {} rows generated{}, {} resumed from earlier runs; summary in {}/ablation_summary.csv\n", config.out,
                 outcome.rows_generated, reuse, outcome.rows_resumed, config.out);
    else
      fmt::print("{}: shard {}/{}: {} rows generated{}, {} resumed; join the shards with pivotmt ablate --merge "
                 "DIR... --out DIR\n",
                 config.out, config.shard_index, config.shard_count, outcome.rows_generated, reuse, outcome.rows_resumed);
  };
  cmd->callback([cmd] {
    if (!args.config_file.empty()) apply_config_file(*cmd, args.config_file);
    if (!emit_sbatch.empty()) {
      emit_sbatch_scripts(*cmd, args, emit_sbatch, sbatch, comet_args, plan_device);
      return;
    }
    // Several worker processes (inside a worker, --workers / --devices of a config file are
    // the parent's, not ours).
    if ((workers > 1 || !devices.empty()) && !is_worker_process()) {
      if (!shard.empty()) throw Error("--workers / --devices run the shards themselves; drop --shard");
      if (!merge.empty()) throw Error("--workers / --devices with --merge: nothing to run");
      if (args.config.out.empty()) throw Error("--out is required");
      if (!dry_run) comet_dirs = resolve_comet(comet_args);
      const auto plan = plan_workers(workers, devices, cuda_device_count(), int(std::max(1u, std::thread::hardware_concurrency())));
      const auto base = strip_options(command_line(), {"--workers", "--devices", "--out", "-o", "--shard", "--device"},
                                      {"--log-json"});
      const auto dirs = run_workers(base, plan, args.config.out, choose_view_mode(quiet, log_json));
      merge_shards(dirs, args.config.out, force, comet_dirs);
      if (args.models.size() > 1) {
        std::vector<RunScores> scored;
        for (const auto& m : args.models)
          scored.push_back(score_run_folder((std::filesystem::path(args.config.out) / model_slug(m)).string(), args.config.target));
        write_file_atomically((std::filesystem::path(args.config.out) / "cross_report.md").string(),
                              "# Cross-run analysis\n\n" + cross_run_markdown(scored));
      }
      return;
    }
    // Before any generation: a COMET download or conversion problem shows now, not hours later.
    if (!dry_run) comet_dirs = resolve_comet(comet_args);
    if (!baseline_model.empty()) args.config.baseline = baseline_config(baseline_model, baseline_weights, baseline_args);
    else if (any_nllb_option_given(baseline_args)) throw Error("the --baseline-* options need --baseline-model");
    if (!merge.empty()) {
      merge_shards(merge, args.config.out, force, comet_dirs);
      return;
    }
    if (args.models.size() > 1) {
      // One run per model, each in OUT/<model name>, then the cross-run tables.
      std::vector<std::string> runs;
      for (size_t m = 0; m < args.models.size(); ++m) {
        const std::string out = (std::filesystem::path(args.config.out) / model_slug(args.models[m])).string();
        for (const auto& r : runs)
          if (r == out) throw Error(fmt::format("two models would share the folder {}", out));
        runs.push_back(out);
      }
      for (size_t m = 0; m < args.models.size(); ++m) {
        fmt::print("== {} -> {}\n", args.models[m], runs[m]);
        // The NLLB baseline does not depend on the LLM: translated once, copied to the others.
        const auto first_baseline = std::filesystem::path(runs[0]) / "baseline";
        if (m > 0 && !baseline_model.empty() && std::filesystem::exists(first_baseline) &&
            !std::filesystem::exists(std::filesystem::path(runs[m]) / "baseline")) {
          std::filesystem::create_directories(runs[m]);
          std::filesystem::copy(first_baseline, std::filesystem::path(runs[m]) / "baseline",
                                std::filesystem::copy_options::recursive);
        }
        run_one(resolve_study(args, {"data", "model", "out"}, m), runs[m]);
      }
      if (shard.empty()) {
        std::vector<RunScores> scored;
        for (const auto& r : runs) scored.push_back(score_run_folder(r, args.config.target));
        const std::string md = "# Cross-run analysis\n\n" + cross_run_markdown(scored);
        write_file_atomically((std::filesystem::path(args.config.out) / "cross_report.md").string(), md);
        fmt::print("cross-run tables in {}/cross_report.md\n", args.config.out);
      }
      return;
    }
    run_one(resolve_study(args, {"data", "model", "out"}), args.config.out);
  });
}

void register_report(CLI::App& app) {
  auto* cmd = app.add_subcommand("report", "Cross-run tables (per metric: runs x k, best in bold; best k) from ablation folders");
  static std::vector<std::string> dirs;
  static std::string target, source, out, plots;
  static CometArgs comet_args;
  static std::string comet_device = "auto";
  cmd->add_option("DIR", dirs, "Ablation output folders (pivotmt's or the original pipeline's)")->required();
  cmd->add_option("--target", target, "Reference column (default: from the folder's config, else gom / tn)");
  cmd->add_option("--source", source, "Source column, for COMET (default: from the folder's config, else mar / en)");
  add_comet_options(cmd, comet_args);
  cmd->add_option("--device", comet_device, "COMET's encoder: auto | cpu | cuda[:N] (auto: cuda:0 when a GPU is visible)")
      ->capture_default_str();
  cmd->add_option("--out,-o", out, "Also write the Markdown here");
  cmd->add_option("--plots", plots, "Write each run's figures here ({run}_plots / {run}_bars, PNG and SVG)");
  cmd->callback([] {
    const auto where = resolve_comet(comet_args);
    std::unique_ptr<comet::Model> comet;
    if (!where.model_dir.empty())
      comet = std::make_unique<comet::Model>(where.model_dir, where.encoder_dir, comet_args.model,
                                             resolve_device(comet_device), where.weights);
    std::vector<RunScores> runs;
    for (const auto& d : dirs) runs.push_back(score_run_folder(d, target, comet.get(), source));
    if (!plots.empty()) {
      std::filesystem::create_directories(plots);
      for (const auto& r : runs) {
        auto series = bleu_chrf_series(r.by_k);
        for (auto& ms : series)  // the NLLB baseline as a line, when the folder has one
          if (const auto b = r.baseline.find(ms.name); b != r.baseline.end()) ms.baseline = b->second;
        const std::string stem = (std::filesystem::path(plots) / r.name).string();
        plot_metrics_vs_k(series, r.name + " (target " + r.target + ")", stem + "_plots");
        plot_grouped_bars(series, r.name + " (target " + r.target + ")", stem + "_bars");
      }
    }
    const std::string md = "# Cross-run analysis\n\nScores recomputed from each folder's results_k*.csv "
                           "(sacrebleu defaults; rows with an empty translation or reference left out" +
                           std::string(comet ? "; COMET by " + comet_args.model : "") + ").\n\n" +
                           cross_run_markdown(runs);
    fmt::print("{}", md);
    if (!out.empty()) {
      std::ofstream f(out);
      f << md;
      if (!f) throw Error("cannot write " + out);
    }
  });
}

}  // namespace pivotmt::cli
