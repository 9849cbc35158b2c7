// `ablate --workers N` and `--devices cuda:0,cuda:1,...|all`: the same command as N worker
// processes, worker i running shard i/N (rows i-1, i-1+N, ...) into OUT/shards/i-of-N on its
// own device (CPU workers share the cores), with one combined progress display. When every
// worker has finished, the shards are merged into OUT, as `ablate --merge` does. A worker
// that fails is reported with its shard, device, exit status and the end of its log
// (OUT/shards/i-of-N/worker.log); the others run to the end, and rerunning the same command
// resumes only the rows that are missing (each shard's row logs survive).
#pragma once
#include <string>
#include <vector>

#include "ablation_view.h"

namespace pivotmt::cli {

// The process's command line (main records it), for starting workers.
void set_command_line(int argc, char** argv);
const std::vector<std::string>& command_line();

// True inside a worker (the environment says so): --workers / --devices from a config file
// must not start workers of their own.
bool is_worker_process();

struct WorkerPlan {
  std::vector<std::string> devices;  // one per worker: "cpu" or "cuda:N"
  int threads_each = 0;              // CPU kernel threads per worker (0: the default)
};
// --devices (a comma list, or "all" GPUs) or --workers N (CPU workers, the cores split
// between them). Throws on an empty or unknown device, or "all" without a GPU.
WorkerPlan plan_workers(size_t workers, const std::string& devices, int gpu_count, int cores);

// argv without the options the workers get values of their own for: each name in
// `with_value` is removed with its value ("--out X", "--out=X", "-o X"), each in `flags` alone.
std::vector<std::string> strip_options(const std::vector<std::string>& argv, const std::vector<std::string>& with_value,
                                       const std::vector<std::string>& flags);

// Starts the workers (base_args: the command line to repeat, already stripped; each worker
// gets --shard i/N --out DIR --device D --log-json), shows their combined progress and
// returns the shard folders in shard order once all succeeded. Throws naming every failed
// worker otherwise.
std::vector<std::string> run_workers(const std::vector<std::string>& base_args, const WorkerPlan& plan,
                                     const std::string& out, ViewMode mode);

}  // namespace pivotmt::cli
