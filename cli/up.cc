#include "cli/up.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "caddie/demo_sweep.h"
#include "cli/exit_codes.h"
#include "cli/interrupt.h"
#include "cli/sweep_file.h"
#include "common/subprocess.h"

namespace caddie::cli {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct UpArgs {
  std::string data_dir = ".caddie";
  int port = 7070;
  std::string sweep_file;  // "" = the built-in demo
  std::string bin_dir;
  int vocab = kDemoVocab;  // the demo's vocab_size (examples/demo.yaml)
  int64_t max_bytes = 3'000'000;
  bool once = false;
  bool no_sweep = false;
  int cpu_slots = 1;
};

void Say(const std::string& s) {
  std::fputs(s.c_str(), stdout);
  std::fflush(stdout);
}

std::string TailOfFile(const std::string& path, size_t max_lines) {
  std::ifstream f(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(f, l);) lines.push_back(l);
  std::string out;
  for (size_t i = lines.size() > max_lines ? lines.size() - max_lines : 0; i < lines.size(); ++i) {
    out += "    " + lines[i] + "\n";
  }
  return out;
}

std::string ReadAll(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// One child process of `up`, in its own process group so that stopping it also
// stops whatever it started (the worker's trainer ranks).
struct ChildProc {
  std::string name;
  std::string log_path;
  Child child;
  std::optional<ExitStatus> exited;

  bool Running() {
    if (child.pid <= 0 || exited) return false;
    exited = TryReap(child.pid);
    return !exited.has_value();
  }

  // SIGTERM to the group, then SIGKILL after `grace`; reaps the leader.
  void Stop(std::chrono::milliseconds grace) {
    if (child.pid <= 0) return;
    if (Running()) {
      kill(-child.pgid, SIGTERM);
      const auto until = Clock::now() + grace;
      while (Clock::now() < until && Running()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    // Whatever is left in the group (a trainer the worker did not stop) goes too.
    kill(-child.pgid, SIGKILL);
    if (Running()) {
      int st = 0;
      waitpid(child.pid, &st, 0);
      exited = DecodeWaitStatus(st);
    }
  }
};

class Up {
 public:
  Up(const GlobalOptions& g, const UpArgs& a) : g_(g), a_(a), st_(ShouldColor(STDOUT_FILENO, g.no_color)) {}

  int Run();

 private:
  absl::Status Prepare();
  absl::Status BuildDataIfMissing();
  absl::Status StartController();
  absl::Status StartWorker();
  absl::StatusOr<std::string> FindOrSubmitSweep();
  int Follow(const std::string& sweep_id);
  void Shutdown();
  bool Stopping() const { return InterruptCount() > 0; }
  absl::Status CheckChildren();

  const GlobalOptions& g_;
  const UpArgs a_;
  const Style st_;
  std::string root_;       // absolute data dir
  std::string self_dir_;
  std::string controller_bin_, worker_bin_, trainer_bin_;
  std::string addr_;
  ChildProc controller_{"caddie-controller", "", {}, {}};
  ChildProc worker_{"caddie-worker", "", {}, {}};
  std::string sweep_name_;
  int worker_gpus_ = 0;
  std::unique_ptr<Client> client_;        // unary calls (deadline each), main thread
  std::unique_ptr<Client> watch_client_;  // WatchJob streams; cancelled on Ctrl-C and when done
};

absl::Status Up::Prepare() {
  std::error_code ec;
  fs::create_directories(a_.data_dir, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("cannot create --data-dir ", a_.data_dir, ": ", ec.message()));
  root_ = fs::absolute(a_.data_dir).lexically_normal().string();
  while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
  self_dir_ = fs::read_symlink("/proc/self/exe", ec).parent_path().string();
  auto c = FindCaddieBinary("caddie-controller", a_.bin_dir, self_dir_);
  if (!c.ok()) return c.status();
  auto w = FindCaddieBinary("caddie-worker", a_.bin_dir, self_dir_);
  if (!w.ok()) return w.status();
  auto t = FindCaddieBinary("caddie-train", a_.bin_dir, self_dir_);
  if (!t.ok()) return t.status();
  controller_bin_ = *c;
  worker_bin_ = *w;
  trainer_bin_ = *t;
  return absl::OkStatus();
}

absl::Status Up::BuildDataIfMissing() {
  const std::string dir = absl::StrCat(root_, "/data/sp", a_.vocab);
  std::error_code ec;
  if (fs::exists(dir + "/meta.json", ec) && fs::exists(dir + "/byte_table.json", ec)) {
    Say(absl::StrCat(st_.Green("✓"), " data: ", dir, " (reused)\n"));
    return absl::OkStatus();
  }
  auto prep = FindCaddieBinary("caddie-dataprep", a_.bin_dir, self_dir_);
  if (!prep.ok()) return prep.status();
  Say(absl::StrCat("• building the corpus and a ", a_.vocab, "-piece tokenizer into ", root_,
                   "/data (once; later runs reuse it)\n"));
  SpawnOptions o;
  o.argv = {*prep, "data", "--vocab", absl::StrCat(a_.vocab), "--out", root_ + "/data", "--max-bytes",
            absl::StrCat(a_.max_bytes)};
  if (isatty(STDOUT_FILENO) != 1) o.argv.push_back("--quiet");
  o.env = CurrentEnvironment();
  o.stdout_path = "/dev/stdout";
  o.stderr_path = "/dev/stderr";
  o.process_group = 0;
  o.kill_with_parent = true;
  const auto start = Clock::now();
  auto child = Spawn(o);
  if (!child.ok()) return child.status();
  std::optional<ExitStatus> st;
  while (!(st = TryReap(child->pid))) {
    if (Stopping()) {
      kill(-child->pgid, SIGTERM);
      int ws = 0;
      waitpid(child->pid, &ws, 0);
      return absl::CancelledError("interrupted");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!st->ok()) {
    return absl::InternalError(absl::StrCat("building the demo data failed (", *prep, " exited with ",
                                            st->ToString(), "); see its messages above"));
  }
  Say(absl::StrCat(st_.Green("✓"), " data: ", dir, " built in ",
                   FormatDuration(std::chrono::duration<double>(Clock::now() - start).count()), "\n"));
  return absl::OkStatus();
}

absl::Status Up::StartController() {
  controller_.log_path = root_ + "/controller.log";
  std::error_code ec;
  fs::remove(controller_.log_path, ec);
  SpawnOptions o;
  o.argv = {controller_bin_, "--listen", absl::StrCat("127.0.0.1:", a_.port), "--db", root_ + "/caddie.db"};
  // The local controller listens on loopback only and takes no tokens, whatever
  // this shell exports for a remote one.
  for (const std::string& kv : CurrentEnvironment()) {
    if (kv.rfind("CADDIE_USER_TOKEN=", 0) != 0 && kv.rfind("CADDIE_WORKER_TOKEN=", 0) != 0) o.env.push_back(kv);
  }
  o.stdout_path = controller_.log_path;
  o.stderr_path = controller_.log_path;
  o.process_group = 0;
  o.kill_with_parent = true;
  auto child = Spawn(o);
  if (!child.ok()) return child.status();
  controller_.child = *child;
  // It prints "caddie-controller listening on HOST:PORT" once it serves.
  const auto until = Clock::now() + std::chrono::seconds(30);
  while (Clock::now() < until && !Stopping()) {
    const int port = ParseListeningPort(ReadAll(controller_.log_path));
    if (port > 0) {
      addr_ = absl::StrCat("127.0.0.1:", port);
      std::ofstream(root_ + "/controller.addr") << addr_ << "\n";
      Say(absl::StrCat(st_.Green("✓"), " controller: ", addr_, ", database ", root_, "/caddie.db (log ",
                       controller_.log_path, ")\n"));
      return absl::OkStatus();
    }
    if (!controller_.Running()) {
      std::string why = controller_.exited ? controller_.exited->ToString() : "?";
      std::string hint;
      if (a_.port != 0) {
        hint = absl::StrCat("\n  Is port ", a_.port, " taken (another `caddie up`?) Try --port 0 for any free port.");
      }
      return absl::FailedPreconditionError(absl::StrCat("caddie-controller (", controller_bin_, ") exited with ", why,
                                                        "; its log:\n", TailOfFile(controller_.log_path, 15), hint));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (Stopping()) return absl::CancelledError("interrupted");
  return absl::DeadlineExceededError(absl::StrCat("caddie-controller did not report listening within 30 s; its log:\n",
                                                  TailOfFile(controller_.log_path, 15)));
}

absl::Status Up::StartWorker() {
  worker_.log_path = root_ + "/worker.log";
  std::error_code ec;
  fs::create_directories(root_ + "/worker", ec);
  SpawnOptions o;
  o.argv = {worker_bin_, "--controller", addr_, "--work-dir", root_ + "/worker", "--trainer", trainer_bin_,
            "--cpu-slots", absl::StrCat(a_.cpu_slots), "--id", "local"};
  for (const std::string& kv : CurrentEnvironment()) {
    if (kv.rfind("CADDIE_WORKER_TOKEN=", 0) != 0) o.env.push_back(kv);
  }
  o.stdout_path = worker_.log_path;
  o.stderr_path = worker_.log_path;
  o.process_group = 0;
  o.kill_with_parent = true;
  auto child = Spawn(o);
  if (!child.ok()) return child.status();
  worker_.child = *child;
  // Registered once the controller lists it.
  const auto until = Clock::now() + std::chrono::seconds(30);
  while (Clock::now() < until && !Stopping()) {
    if (!worker_.Running()) {
      return absl::FailedPreconditionError(absl::StrCat("caddie-worker (", worker_bin_, ") exited with ",
                                                        worker_.exited->ToString(), "; its log:\n",
                                                        TailOfFile(worker_.log_path, 15)));
    }
    auto w = client_->ListWorkers();
    if (w.ok() && w->workers_size() > 0) {
      const auto& wk = w->workers(0);
      worker_gpus_ = wk.gpus_size();
      std::string gpus = wk.gpus_size() == 0 ? std::string("CPU only")
                                             : absl::StrCat(wk.gpus_size(), " GPU(s): ", wk.gpus(0).name());
      Say(absl::StrCat(st_.Green("✓"), " worker: ", wk.id(), " (", gpus, ", log ", worker_.log_path, ")\n"));
      return absl::OkStatus();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  if (Stopping()) return absl::CancelledError("interrupted");
  return absl::DeadlineExceededError(absl::StrCat("caddie-worker did not register within 30 s; its log:\n",
                                                  TailOfFile(worker_.log_path, 15)));
}

absl::StatusOr<std::string> Up::FindOrSubmitSweep() {
  SweepCheck check;
  if (a_.sweep_file.empty()) {
    check = CheckSweepText(DemoSweepYaml(root_ + "/data/sp" + std::to_string(a_.vocab)), "examples/demo.yaml");
  } else {
    check = CheckSweepFile(a_.sweep_file);
  }
  if (!check.ok()) {
    std::fputs(FormatIssues(check, st_.color()).c_str(), stderr);
    return absl::InvalidArgumentError(absl::StrCat(check.path, " is not a valid sweep; nothing was submitted"));
  }
  // The demo runs on one GPU when the worker found any.
  if (a_.sweep_file.empty() && worker_gpus_ > 0) check.spec.set_gpus(1);
  // A sweep of the same name from an earlier run is reused (the list is newest first).
  auto sweeps = client_->ListSweeps(1000);
  if (!sweeps.ok()) return sweeps.status();
  for (const auto& s : sweeps->sweeps()) {
    if (s.spec().name() == check.spec.name() && !s.cancelled()) {
      sweep_name_ = s.spec().name();
      Say(absl::StrCat(st_.Green("✓"), " sweep ", st_.Bold(s.id()), " (", s.spec().name(), ", ", s.jobs_total(),
                       " jobs) from an earlier run (reused)\n"));
      return s.id();
    }
  }
  v1::SubmitSweepRequest req;
  *req.mutable_spec() = check.spec;
  auto resp = client_->SubmitSweep(req);
  if (!resp.ok()) return resp.status();
  sweep_name_ = check.spec.name();
  Say(absl::StrCat(st_.Green("✓"), " submitted sweep ", st_.Bold(resp->sweep().id()), " (", check.spec.name(), "): ",
                   resp->jobs_size(), " jobs, ", FormatDuration(check.spec.budget().train_seconds()),
                   " of training each\n"));
  return resp->sweep().id();
}

absl::Status Up::CheckChildren() {
  for (ChildProc* c : {&controller_, &worker_}) {
    if (!c->Running()) {
      return absl::InternalError(absl::StrCat(c->name, " exited with ", c->exited ? c->exited->ToString() : "?",
                                              "; its log (", c->log_path, "):\n", TailOfFile(c->log_path, 15)));
    }
  }
  return absl::OkStatus();
}

int Up::Follow(const std::string& sweep_id) {
  const bool tty = isatty(STDOUT_FILENO) == 1;
  absl::Mutex mu;
  std::map<std::string, WatchView> views;  // guarded by mu
  std::map<std::string, std::thread> watchers;
  std::map<std::string, v1::JobState> last_state;
  int drawn_lines = 0;
  bool done = false;
  std::vector<v1::Job> jobs;
  while (!Stopping()) {
    if (absl::Status s = CheckChildren(); !s.ok()) {
      Say("\n");
      std::fprintf(stderr, "caddie up: %s\n", std::string(s.message()).c_str());
      done = false;
      break;
    }
    v1::ListJobsRequest req;
    req.set_sweep_id(sweep_id);
    req.set_limit(1000);
    auto r = client_->ListJobs(req);
    if (!r.ok()) {
      if (Stopping()) break;
      std::fprintf(stderr, "caddie up: %s\n", std::string(r.status().message()).c_str());
      std::this_thread::sleep_for(std::chrono::seconds(1));
      continue;
    }
    jobs.assign(r->jobs().begin(), r->jobs().end());
    std::sort(jobs.begin(), jobs.end(), [](const v1::Job& a, const v1::Job& b) { return a.index_in_sweep() < b.index_in_sweep(); });
    // A watcher per job that has started, feeding its view.
    for (const v1::Job& j : jobs) {
      if (watchers.count(j.id()) || j.state() == v1::JOB_STATE_QUEUED) continue;
      {
        absl::MutexLock l(&mu);
        views.emplace(j.id(), WatchView(j.id()));
      }
      const std::string id = j.id();
      watchers.emplace(id, std::thread([this, id, &mu, &views] {
        const Style plain(false);
        (void)watch_client_->WatchJob(id, 0, [&](const v1::WatchJobResponse& resp) {
          absl::MutexLock l(&mu);
          views.at(id).Apply(resp, plain);
          return !Stopping();
        });
      }));
    }
    std::string block;
    {
      absl::MutexLock l(&mu);
      block = UpProgressBlock(sweep_name_, jobs, views, st_);
    }
    if (tty) {
      std::string out;
      if (drawn_lines > 0) out += absl::StrCat("\033[", drawn_lines, "F\033[J");
      out += block;
      Say(out);
      drawn_lines = static_cast<int>(std::count(block.begin(), block.end(), '\n'));
    } else {
      // Logs and pipes get one line per state change.
      for (const v1::Job& j : jobs) {
        if (last_state[j.id()] != j.state()) {
          last_state[j.id()] = j.state();
          std::string line = absl::StrCat("  job ", j.id(), " (", ParamsSummary(j.params_json()), ") ", StateName(j.state()));
          if (j.has_result() && j.result().val_bpb_post_quant() > 0) {
            line += absl::StrCat(": val_bpb ", absl::StrFormat("%.4f", j.result().val_bpb_post_quant()), ", artifact ",
                                 FormatBytes(j.result().artifact_bytes()));
          }
          Say(line + "\n");
        }
      }
    }
    const bool all_done =
        !jobs.empty() && std::all_of(jobs.begin(), jobs.end(), [](const v1::Job& j) { return IsTerminal(j.state()); });
    if (all_done) {
      done = true;
      break;
    }
    for (int i = 0; i < 10 && !Stopping(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  watch_client_->Cancel();  // ends the watch streams
  for (auto& [id, t] : watchers) t.join();
  if (!done) return Stopping() ? kExitInterrupted : kExitFailure;
  auto lb = client_->Leaderboard(sweep_id, 50);
  Say("\n" + st_.Bold(absl::StrCat("leaderboard of sweep ", sweep_id)) + " (val_bpb after export and reload; lower is better)\n");
  if (lb.ok()) {
    Say(LeaderboardTable(*lb, st_));
  } else {
    std::fprintf(stderr, "caddie up: %s\n", std::string(lb.status().message()).c_str());
  }
  int failed = 0;
  for (const v1::Job& j : jobs) {
    if (j.state() != v1::JOB_STATE_SUCCEEDED) {
      ++failed;
      Say(absl::StrCat("  job ", j.id(), " ", StyledState(j.state(), st_), " (", ExitReasonName(j.exit_reason()), ") ",
                       j.message(), "  →  caddie logs ", j.id(), "\n"));
    }
  }
  return failed == 0 ? kExitOk : kExitJobFailed;
}

void Up::Shutdown() {
  if (worker_.child.pid > 0) {
    Say("• stopping the worker (and its trainers)…\n");
    worker_.Stop(std::chrono::seconds(15));
  }
  if (controller_.child.pid > 0) {
    Say("• stopping the controller…\n");
    controller_.Stop(std::chrono::seconds(10));
  }
  std::error_code ec;
  if (!root_.empty()) fs::remove(root_ + "/controller.addr", ec);
  if (worker_.child.pid > 0 || controller_.child.pid > 0) Say(st_.Green("✓") + " stopped; nothing left running\n");
}

int Up::Run() {
  // Ctrl-C: the main loop notices InterruptCount(); a second one forces the stop.
  // Ctrl-C: the main thread notices InterruptCount() and stops things in order;
  // a second Ctrl-C kills the children's process groups at once.
  const pid_t* worker_pgid = &worker_.child.pgid;
  const pid_t* controller_pgid = &controller_.child.pgid;
  OnInterrupt([worker_pgid, controller_pgid](int n) {
    if (n >= 2) {
      for (const pid_t* g : {worker_pgid, controller_pgid}) {
        if (*g > 0) kill(-*g, SIGKILL);  // never kill(-(-1)): that signals every process
      }
      _exit(kExitInterrupted);
    }
  });
  auto fail = [&](const absl::Status& s) {
    if (s.code() != absl::StatusCode::kCancelled) {
      std::fprintf(stderr, "%s %s\n", Style(ShouldColor(STDERR_FILENO, g_.no_color)).Red("caddie up:").c_str(),
                   std::string(s.message()).c_str());
    }
    Shutdown();
    return Stopping() ? kExitInterrupted : ExitCodeFor(s) == kExitOk ? kExitFailure : ExitCodeFor(s);
  };
  if (absl::Status s = Prepare(); !s.ok()) return fail(s);
  if (absl::Status s = BuildDataIfMissing(); !s.ok()) return fail(s);
  if (Stopping()) return fail(absl::CancelledError("interrupted"));
  if (absl::Status s = StartController(); !s.ok()) return fail(s);
  Connection conn;
  conn.addr = addr_;
  conn.addr_source = "caddie up";
  client_ = std::make_unique<Client>(conn, g_.timeout_s);
  watch_client_ = std::make_unique<Client>(conn, g_.timeout_s);
  if (absl::Status s = client_->WaitReady(10); !s.ok()) return fail(s);
  if (absl::Status s = StartWorker(); !s.ok()) return fail(s);
  int rc = kExitOk;
  if (!a_.no_sweep) {
    auto sweep = FindOrSubmitSweep();
    if (!sweep.ok()) return fail(sweep.status());
    rc = Follow(*sweep);
  }
  if (!a_.once && !Stopping() && rc != kExitFailure) {
    Say(absl::StrCat("\ncaddie is up at ", st_.Bold(addr_), ": try `caddie sweep submit examples/qat_bits.yaml`, "
                     "`caddie jobs`, `caddie workers`.\nCtrl-C stops the controller and the worker.\n"));
    while (!Stopping()) {
      if (absl::Status s = CheckChildren(); !s.ok()) return fail(s);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  if (Stopping()) Say("\n");
  Shutdown();
  OnInterrupt(nullptr);
  return Stopping() ? kExitInterrupted : rc;
}

}  // namespace

absl::StatusOr<std::string> FindCaddieBinary(const std::string& name, const std::string& bin_dir,
                                             const std::string& self_dir) {
  std::vector<std::string> tried;
  auto ok = [](const std::string& p) { return access(p.c_str(), X_OK) == 0 && fs::is_regular_file(p); };
  std::vector<std::string> dirs;
  if (!bin_dir.empty()) {
    dirs.push_back(bin_dir);
  } else if (!self_dir.empty()) {
    dirs.push_back(self_dir);
    // The build tree: build/<preset>/cli/caddie beside cli/data/ and {controller,worker,model}/.
    dirs.push_back(self_dir + "/data");
    for (const char* sub : {"controller", "worker", "model"}) dirs.push_back(self_dir + "/../" + sub);
  }
  for (const std::string& d : dirs) {
    const std::string p = fs::path(d + "/" + name).lexically_normal().string();
    tried.push_back(p);
    if (ok(p)) return p;
  }
  if (bin_dir.empty()) {
    const char* path = std::getenv("PATH");
    for (absl::string_view d : absl::StrSplit(path ? path : "", ':', absl::SkipEmpty())) {
      const std::string p = absl::StrCat(d, "/", name);
      if (ok(p)) return p;
    }
    tried.push_back("$PATH");
  }
  return absl::NotFoundError(absl::StrCat("cannot find ", name, " (looked in ", absl::StrJoin(tried, ", "),
                                          "); build it with `cmake --build --preset release` or pass --bin-dir"));
}

std::string DemoSweepYaml(const std::string& data_dir) {
  std::string y = kDemoSweepYaml;
  const std::string from = "data: .caddie/data/sp1024";
  const size_t at = y.find(from);
  if (at != std::string::npos) y.replace(at, from.size(), "data: \"" + data_dir + "\"");
  return y;
}

int ParseListeningPort(const std::string& log) {
  static const std::regex re("caddie-controller listening on [^\\s:]+:([0-9]+)");
  std::smatch m;
  if (!std::regex_search(log, m, re)) return 0;
  return std::stoi(m[1].str());
}

std::string UpProgressBlock(const std::string& title, const std::vector<v1::Job>& jobs,
                            const std::map<std::string, WatchView>& views, const Style& st) {
  std::vector<std::vector<std::string>> rows;
  int done = 0;
  for (const v1::Job& j : jobs) {
    if (IsTerminal(j.state())) ++done;
    std::string progress;
    auto v = views.find(j.id());
    if (j.state() == v1::JOB_STATE_RUNNING || j.state() == v1::JOB_STATE_LEASED) {
      progress = v != views.end() ? v->second.StatusLine(st, TrainBudgetSeconds(j)) : ProgressBar(0, 24, st);
      // The view's own state word duplicates the STATE column.
      const std::string tail = "  " + StyledState(j.state(), st);
      if (progress.size() >= tail.size() && progress.compare(progress.size() - tail.size(), tail.size(), tail) == 0) {
        progress.resize(progress.size() - tail.size());
      }
    } else if (j.has_result() && j.result().val_bpb_post_quant() > 0) {
      progress = absl::StrCat("val_bpb ", st.Bold(absl::StrFormat("%.4f", j.result().val_bpb_post_quant())),
                              "  artifact ", FormatBytes(j.result().artifact_bytes()), "  ",
                              FormatInt(j.result().steps()), " steps");
    } else if (j.state() == v1::JOB_STATE_QUEUED) {
      progress = st.Dim(j.pending_reason().empty() ? "waiting for the worker" : j.pending_reason());
    } else if (IsTerminal(j.state())) {
      progress = ExitReasonName(j.exit_reason()) + (j.message().empty() ? "" : ": " + j.message());
    }
    rows.push_back({j.id(), StyledState(j.state(), st), ParamsSummary(j.params_json()), progress});
  }
  return absl::StrCat(st.Bold(absl::StrCat("sweep ", title, ": ", done, "/", jobs.size(), " jobs done")), "\n",
                      FormatTable({"JOB", "STATE", "PARAMS", "PROGRESS"}, rows, {}, st));
}

void RegisterUpCommand(CLI::App& app, GlobalOptions& g) {
  auto a = std::make_shared<UpArgs>();
  CLI::App* up = app.add_subcommand(
      "up", "Start a local controller and worker, build the data if missing, run the demo sweep "
            "(depth recurrence x QAT bits on a tiny model) and print its leaderboard. Ctrl-C stops everything; "
            "a second run reuses the database, data and finished sweep");
  up->add_option("--data-dir", a->data_dir, "Database, data, logs and worker spool live here")->capture_default_str();
  up->add_option("--port", a->port, "Controller port on 127.0.0.1 (0 = any free port)")
      ->capture_default_str()->check(CLI::Range(0, 65535));
  up->add_option("--sweep", a->sweep_file, "Run this sweep file instead of the built-in demo (examples/demo.yaml)");
  up->add_flag("--no-sweep", a->no_sweep, "Only start the controller and the worker");
  up->add_flag("--once", a->once, "Exit after the sweep's leaderboard instead of staying up");
  up->add_option("--bin-dir", a->bin_dir, "Where caddie-controller, caddie-worker and caddie-train are "
                                          "(default: next to this caddie, then PATH)");
  up->add_option("--max-bytes", a->max_bytes, "Corpus bytes for the demo data (0 = the whole corpus)")
      ->capture_default_str();
  up->add_option("--cpu-slots", a->cpu_slots, "CPU jobs the local worker runs at once")->capture_default_str()
      ->check(CLI::Range(1, 64));
  up->callback([&g, a] {
    Up u(g, *a);
    const int rc = u.Run();
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace caddie::cli
