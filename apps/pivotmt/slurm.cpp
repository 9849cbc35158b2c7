#include "slurm.h"

#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>

#include <fmt/format.h>

#include "core/error.h"
#include "io/temp_path.h"

namespace pivotmt::cli {
namespace fs = std::filesystem;

std::pair<size_t, size_t> slurm_array_shard(const std::map<std::string, std::string>& env) {
  auto get = [&](const char* name) -> std::string {
    if (!env.empty()) {
      const auto it = env.find(name);
      return it == env.end() ? "" : it->second;
    }
    const char* v = std::getenv(name);
    return v ? v : "";
  };
  auto number = [&](const char* name) -> size_t {
    const std::string v = get(name);
    if (v.empty())
      throw Error(fmt::format("--shard auto: {} is not set; this is not a Slurm array task (sbatch --array=1-N), "
                              "give --shard i/N instead",
                              name));
    if (v.find_first_not_of("0123456789") != std::string::npos || v.size() > 9)
      throw Error(fmt::format("--shard auto: {}={} is not a number", name, v));
    return std::stoul(v);
  };
  const size_t id = number("SLURM_ARRAY_TASK_ID"), min = number("SLURM_ARRAY_TASK_MIN"),
               count = number("SLURM_ARRAY_TASK_COUNT");
  if (count == 0 || id < min || id - min >= count)
    throw Error(fmt::format("--shard auto: task {} of an array from {} with {} tasks: not a contiguous array (use "
                            "--shard i/N with a stepped or sparse --array)",
                            id, min, count));
  return {id - min + 1, count};
}

std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-./:=,@+%") ==
                        std::string::npos)
    return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

namespace {
void write_script(const fs::path& path, const std::string& text) {
  write_file_atomically(path.string(), text);
  ::chmod(path.c_str(), 0755);
}
}  // namespace

void write_sbatch(const std::string& dir, const std::vector<std::string>& args, const std::string& out,
                  const std::string& workdir, const SbatchRequest& r, const std::vector<std::string>& merge_extra) {
  if (args.empty()) throw Error("--emit-sbatch: no command to run");
  if (r.tasks == 0) throw Error("--emit-sbatch: at least one array task");
  fs::create_directories(dir);
  const std::string n = std::to_string(r.tasks);
  const std::string shards = (fs::path(out) / "shards").string();
  fs::create_directories(shards);
  auto header = [&](const std::string& name, bool array) {
    std::string h = "#!/bin/bash\n";
    h += fmt::format("#SBATCH --job-name={}\n", name);
    if (array) h += fmt::format("#SBATCH --array=1-{}\n", r.tasks);
    h += fmt::format("#SBATCH --output={}\n", shell_quote((fs::path(shards) / (array ? "slurm-%A_%a.log" : "slurm-merge-%j.log")).string()));
    h += fmt::format("#SBATCH --time={}\n#SBATCH --mem={}\n#SBATCH --cpus-per-task={}\n", r.time, array ? r.mem : "8G",
                     array ? r.cpus_per_task : 2);
    if (array && r.gpus_per_task > 0) h += fmt::format("#SBATCH --gres=gpu:{}\n", r.gpus_per_task);
    if (!r.partition.empty()) h += fmt::format("#SBATCH --partition={}\n", r.partition);
    h += "set -euo pipefail\n";
    h += fmt::format("cd {}\n", shell_quote(workdir));
    h += fmt::format("mkdir -p {}\n", shell_quote(shards));
    return h;
  };
  std::string cmd;
  for (const auto& a : args) cmd += (cmd.empty() ? "" : " ") + shell_quote(a);
  // Task t runs shard t of N into its own folder; a rerun of the task resumes its rows.
  std::string array = header("pivotmt-ablate", true);
  array += "# Each task is one shard of the ablation (rows t-1, t-1+N, ...); resubmitting a task\n"
           "# (or the whole array) resumes the rows its folder lacks.\n";
  array += fmt::format("exec {} --shard \"${{SLURM_ARRAY_TASK_ID}}/{}\" --out {}\"/${{SLURM_ARRAY_TASK_ID}}-of-{}\" --log-json\n",
                       cmd, n, shell_quote(shards), n);
  write_script(fs::path(dir) / "ablate.sbatch", array);

  std::string merge = header("pivotmt-merge", false);
  std::string shard_list;
  for (size_t t = 1; t <= r.tasks; ++t) shard_list += " " + shell_quote((fs::path(shards) / fmt::format("{}-of-{}", t, n)).string());
  std::string extra;
  for (const auto& a : merge_extra) extra += " " + shell_quote(a);
  merge += fmt::format("exec {} ablate --merge{} --out {}{}\n", shell_quote(args.front()), shard_list, shell_quote(out), extra);
  write_script(fs::path(dir) / "merge.sbatch", merge);

  std::string submit = "#!/bin/bash\n# Submits the shards as a job array, then the merge once every shard succeeded.\nset -euo pipefail\n";
  submit += "cd \"$(dirname \"$0\")\"\n";
  // Slurm opens the tasks' --output files before a task runs: their folder must exist.
  submit += fmt::format("mkdir -p {}\n", shell_quote(shards));
  submit += "array=$(sbatch --parsable ablate.sbatch)\n";
  submit += "array=${array%%;*}\n";
  submit += "merge=$(sbatch --parsable --dependency=afterok:\"$array\" merge.sbatch)\n";
  submit += "echo \"submitted: array job $array (" + n + " shards), merge job ${merge%%;*} after it\"\n";
  write_script(fs::path(dir) / "submit.sh", submit);
}

}  // namespace pivotmt::cli
