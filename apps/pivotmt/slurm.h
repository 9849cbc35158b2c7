// Slurm: `--shard auto` (the array task's slice from Slurm's environment) and
// `ablate --emit-sbatch DIR` (a job array running the ablation's shards and a merge job that
// waits for all of them).
#pragma once
#include <cstddef>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace pivotmt::cli {

// (i, N) of this array task: i = SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN + 1,
// N = SLURM_ARRAY_TASK_COUNT, read from `env` (the process environment when empty).
// Throws when the variables are missing or inconsistent (not an array task).
std::pair<size_t, size_t> slurm_array_shard(const std::map<std::string, std::string>& env = {});

struct SbatchRequest {
  size_t tasks = 1;          // array tasks = shards
  std::string time = "24:00:00";
  std::string mem = "16G";   // per task
  size_t cpus_per_task = 4;
  size_t gpus_per_task = 0;  // --gres=gpu:N
  std::string partition;     // empty: the cluster's default
};

// POSIX shell single-quoting.
std::string shell_quote(const std::string& s);

// Writes DIR/ablate.sbatch (the array: task t runs `ARGS --shard t/N --out OUT/shards/t-of-N`;
// the shard is spelled out rather than `auto`, so resubmitting one task of the array —
// `sbatch --array=3 ablate.sbatch` — still runs shard 3), DIR/merge.sbatch (`pivotmt ablate
// --merge OUT/shards/*-of-N --out OUT`) and DIR/submit.sh (submits the array, then the merge
// with --dependency=afterok on it). `args`: the command line to run (binary first, already
// without --out, --shard and --emit-sbatch); `workdir`: where relative paths in it resolve.
void write_sbatch(const std::string& dir, const std::vector<std::string>& args, const std::string& out,
                  const std::string& workdir, const SbatchRequest& request, const std::vector<std::string>& merge_extra = {});

}  // namespace pivotmt::cli
