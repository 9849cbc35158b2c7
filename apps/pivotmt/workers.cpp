#include "workers.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"

extern char** environ;

namespace pivotmt::cli {
namespace fs = std::filesystem;

namespace {
std::vector<std::string> g_command_line;
constexpr const char* kWorkerEnv = "PIVOTMT_WORKER";
}  // namespace

void set_command_line(int argc, char** argv) { g_command_line.assign(argv, argv + argc); }
const std::vector<std::string>& command_line() { return g_command_line; }

bool is_worker_process() {
  const char* v = std::getenv(kWorkerEnv);
  return v && *v && std::string(v) != "0";
}

WorkerPlan plan_workers(size_t workers, const std::string& devices, int gpu_count, int cores) {
  WorkerPlan plan;
  if (!devices.empty()) {
    if (devices == "all") {
      if (gpu_count <= 0) throw Error("--devices all: no GPU is visible (use --workers N for CPU workers)");
      for (int i = 0; i < gpu_count; ++i) plan.devices.push_back(fmt::format("cuda:{}", i));
    } else {
      size_t start = 0;
      while (start <= devices.size()) {
        const size_t comma = devices.find(',', start);
        std::string d = devices.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (d.empty()) throw Error(fmt::format("--devices {}: an empty entry", devices));
        if (d == "cuda") d = "cuda:0";
        const bool ok = d == "cpu" || (d.rfind("cuda:", 0) == 0 && d.size() > 5 &&
                                       d.find_first_not_of("0123456789", 5) == std::string::npos);
        if (!ok) throw Error(fmt::format("--devices {}: '{}' is not cpu or cuda:N", devices, d));
        plan.devices.push_back(d);
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
    }
    if (workers > 1 && workers != plan.devices.size())
      throw Error(fmt::format("--workers {} and --devices {} ({} devices) disagree; give one of them", workers, devices,
                              plan.devices.size()));
  } else {
    if (workers < 1) throw Error("--workers must be at least 1");
    plan.devices.assign(workers, "cpu");
  }
  size_t cpu_workers = 0;
  for (const auto& d : plan.devices) cpu_workers += d == "cpu" ? 1 : 0;
  // CPU workers share the cores; a GPU worker needs one core to feed its device.
  if (cpu_workers > 0) plan.threads_each = std::max(1, (cores - int(plan.devices.size() - cpu_workers)) / int(cpu_workers));
  return plan;
}

std::vector<std::string> strip_options(const std::vector<std::string>& argv, const std::vector<std::string>& with_value,
                                       const std::vector<std::string>& flags) {
  std::vector<std::string> out;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    bool drop = false;
    for (const auto& name : with_value) {
      if (a == name) {
        drop = true;
        ++i;  // and its value
        break;
      }
      if (a.rfind(name + "=", 0) == 0) {
        drop = true;
        break;
      }
    }
    for (const auto& name : flags) drop = drop || a == name;
    if (!drop) out.push_back(a);
  }
  return out;
}

namespace {

struct Worker {
  size_t index = 0;  // 0-based; shard index + 1
  std::string device, dir;
  pid_t pid = -1;
  int pipe_fd = -1;  // its stderr
  int log_fd = -1;   // OUT/shards/i-of-N/worker.log
  std::string partial;  // an unfinished line of stderr
  std::deque<std::string> tail;  // the last lines that were not progress events
  size_t done = 0, total = 0, resumed = 0, baseline_done = 0, baseline_total = 0;
  int status = 0;
  bool exited = false;
};

std::string describe_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exit status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return "stopped";
}

void write_all(int fd, const std::string& text) {
  size_t off = 0;
  while (off < text.size()) {
    const ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n <= 0) return;  // the log is best effort; progress goes on
    off += size_t(n);
  }
}

// One line of a worker's stderr: a JSON progress event, or text for its log.
void take_line(Worker& w, const std::string& line) {
  if (!line.empty() && line.front() == '{') {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.is_object() && j.contains("event")) {
      const std::string event = j["event"].is_string() ? j["event"].get<std::string>() : "";
      if (event == "baseline") {
        w.baseline_done = j.value("done", size_t(0));
        w.baseline_total = j.value("total", size_t(0));
      } else if (j.contains("done") && j.contains("total")) {
        w.done = j.value("done", size_t(0));
        w.total = j.value("total", size_t(0));
        w.resumed = j.value("resumed", size_t(0));
      }
      write_all(w.log_fd, line + "\n");
      return;
    }
  }
  write_all(w.log_fd, line + "\n");
  w.tail.push_back(line);
  if (w.tail.size() > 12) w.tail.pop_front();
}

std::string clock(double seconds) {
  if (!(seconds >= 0) || seconds > 359999) return "--:--";
  const long s = long(seconds + 0.5);
  return s >= 3600 ? fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60) : fmt::format("{:02}:{:02}", s / 60, s % 60);
}

}  // namespace

std::vector<std::string> run_workers(const std::vector<std::string>& base_args, const WorkerPlan& plan,
                                     const std::string& out, ViewMode mode) {
  const size_t n = plan.devices.size();
  if (n == 0) throw Error("workers: no devices");
  if (base_args.empty()) throw Error("workers: no command line to repeat");
  std::vector<Worker> workers(n);

  // Every worker's environment: ours, marked as a worker, CPU workers with their share of
  // the cores.
  std::vector<std::string> env_base;
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    if (kv.rfind(std::string(kWorkerEnv) + "=", 0) == 0 || kv.rfind("PIVOTMT_THREADS=", 0) == 0) continue;
    env_base.push_back(kv);
  }
  env_base.push_back(std::string(kWorkerEnv) + "=1");

  for (size_t i = 0; i < n; ++i) {
    Worker& w = workers[i];
    w.index = i;
    w.device = plan.devices[i];
    w.dir = (fs::path(out) / "shards" / fmt::format("{}-of-{}", i + 1, n)).string();
    fs::create_directories(w.dir);
    std::vector<std::string> args = base_args;
    // This very binary, wherever it was started from (PIVOTMT_EXEC: a wrapper, for a binary
    // that runs through an explicit loader, as the GPU bundle's may).
    const char* self = std::getenv("PIVOTMT_EXEC");
    args[0] = self && *self ? self : "/proc/self/exe";
    for (const std::string& a : {std::string("--shard"), fmt::format("{}/{}", i + 1, n), std::string("--out"), w.dir,
                                 std::string("--device"), w.device, std::string("--log-json")})
      args.push_back(a);
    std::vector<std::string> env = env_base;
    if (w.device == "cpu" && plan.threads_each > 0) env.push_back(fmt::format("PIVOTMT_THREADS={}", plan.threads_each));

    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw Error("workers: cannot create a pipe");
    w.pipe_fd = fds[0];
    w.log_fd = ::open((fs::path(w.dir) / "worker.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (w.log_fd < 0) throw Error(fmt::format("workers: cannot write {}/worker.log", w.dir));
    write_all(w.log_fd, fmt::format("== worker {}/{} on {}\n", i + 1, n, w.device));
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDERR_FILENO);
    posix_spawn_file_actions_adddup2(&actions, w.log_fd, STDOUT_FILENO);
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    const int rc = posix_spawn(&w.pid, argv[0], &actions, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    if (rc != 0) throw Error(fmt::format("workers: cannot start worker {} ({})", i + 1, std::strerror(rc)));
  }

  // Read every worker's stderr until all have closed it, drawing the combined progress.
  const auto start = std::chrono::steady_clock::now();
  auto last_draw = start - std::chrono::hours(1);
  auto draw = [&](bool final) {
    if (mode == ViewMode::Quiet) return;
    const auto now = std::chrono::steady_clock::now();
    const double interval = mode == ViewMode::Terminal ? 0.2 : 10.0;
    if (!final && std::chrono::duration<double>(now - last_draw).count() < interval) return;
    last_draw = now;
    size_t done = 0, total = 0, resumed = 0, bdone = 0, btotal = 0;
    for (const auto& w : workers) {
      done += w.done;
      total += w.total;
      resumed += std::min(w.resumed, w.done);
      bdone += w.baseline_done;
      btotal += w.baseline_total;
    }
    // Rows generated by these workers (not those their logs already held) over the time so far.
    const double seconds = std::chrono::duration<double>(now - start).count();
    const double rate = seconds > 0 ? double(done - resumed) / seconds : 0;
    if (mode == ViewMode::Json) {
      nlohmann::ordered_json ws = nlohmann::ordered_json::array();
      for (const auto& w : workers)
        ws.push_back({{"shard", w.index + 1}, {"device", w.device}, {"done", w.done}, {"total", w.total},
                      {"exited", w.exited}});
      fmt::print(stderr, "{}\n", nlohmann::ordered_json{{"event", final ? "workers_finished" : "workers_progress"},
                                                      {"done", done}, {"total", total}, {"rows_per_s", rate},
                                                      {"workers", ws}}
                                       .dump());
      std::fflush(stderr);
      return;
    }
    std::string line = fmt::format("{} workers: {}/{} rows, {:.2f} rows/s, ETA {}", n, done, total, rate,
                                   rate > 0 && total >= done ? clock(double(total - done) / rate) : std::string("--:--"));
    if (btotal > 0) line += fmt::format(", baseline {}/{}", bdone, btotal);
    line += " |";
    for (const auto& w : workers)
      line += fmt::format(" {}:{}/{}{}", w.device, w.done, w.total, w.exited ? (w.status == 0 ? " done" : " FAILED") : "");
    if (mode == ViewMode::Terminal) fmt::print(stderr, "\r\033[K{}{}", line, final ? "\n" : "");
    else fmt::print(stderr, "{}\n", line);
    std::fflush(stderr);
  };

  size_t open = n;
  std::vector<char> buf(1 << 16);
  while (open > 0) {
    std::vector<pollfd> fds;
    std::vector<size_t> who;
    for (size_t i = 0; i < n; ++i)
      if (workers[i].pipe_fd >= 0) {
        fds.push_back({workers[i].pipe_fd, POLLIN, 0});
        who.push_back(i);
      }
    const int ready = ::poll(fds.data(), fds.size(), 200);
    if (ready < 0 && errno != EINTR) throw Error("workers: poll failed");
    for (size_t f = 0; f < fds.size(); ++f) {
      if (!(fds[f].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      Worker& w = workers[who[f]];
      const ssize_t got = ::read(w.pipe_fd, buf.data(), buf.size());
      if (got > 0) {
        w.partial.append(buf.data(), size_t(got));
        size_t nl;
        while ((nl = w.partial.find('\n')) != std::string::npos) {
          take_line(w, w.partial.substr(0, nl));
          w.partial.erase(0, nl + 1);
        }
        continue;
      }
      if (got < 0 && errno == EINTR) continue;
      // End of its stderr: the worker has exited (or is about to).
      if (!w.partial.empty()) take_line(w, w.partial);
      ::close(w.pipe_fd);
      w.pipe_fd = -1;
      while (::waitpid(w.pid, &w.status, 0) < 0 && errno == EINTR) {
      }
      w.exited = true;
      write_all(w.log_fd, fmt::format("== worker {}/{}: {}\n", w.index + 1, n, describe_status(w.status)));
      ::close(w.log_fd);
      --open;
    }
    draw(false);
  }
  draw(true);

  std::vector<std::string> failed;
  for (const auto& w : workers)
    if (!(WIFEXITED(w.status) && WEXITSTATUS(w.status) == 0)) {
      std::string last;
      for (const auto& l : w.tail) last += "\n    " + l;
      failed.push_back(fmt::format("worker {} (shard {}/{}, device {}): {}; log {}/worker.log{}", w.index + 1, w.index + 1,
                                   n, w.device, describe_status(w.status), w.dir, last));
    }
  if (!failed.empty()) {
    std::string msg = fmt::format("{} of {} workers failed (the others finished; rerun the same command to resume only "
                                  "the missing rows):",
                                  failed.size(), n);
    for (const auto& f : failed) msg += "\n  " + f;
    throw Error(msg);
  }
  std::vector<std::string> dirs;
  for (const auto& w : workers) dirs.push_back(w.dir);
  return dirs;
}

}  // namespace pivotmt::cli
