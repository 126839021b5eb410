#include "tests/chaos/chaos.h"

#include <dirent.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/mount.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tests/chaos/harness.h"

namespace caddie::chaos {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using reliability::ControllerProcess;
using reliability::Ctx;

constexpr char kUserToken[] = "chaos-user-token";
constexpr char kWorkerToken[] = "chaos-worker-token";

bool Terminal(int state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED || state == v1::JOB_STATE_OVER_BUDGET ||
         state == v1::JOB_STATE_CANCELLED;
}

void Sleep(double s) { std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(s * 1000))); }

// Rows of a query as strings.
std::vector<std::vector<std::string>> Query(sqlite3* db, const std::string& sql) {
  std::vector<std::vector<std::string>> rows;
  sqlite3_exec(
      db, sql.c_str(),
      [](void* o, int n, char** v, char**) {
        auto* r = static_cast<std::vector<std::vector<std::string>>*>(o);
        r->emplace_back();
        for (int i = 0; i < n; ++i) r->back().push_back(v[i] ? v[i] : "");
        return 0;
      },
      &rows, nullptr);
  return rows;
}

// The fake trainers of this run: pid → command line, found through /proc.
std::vector<pid_t> TrainerPids(const std::string& fake_bin, const std::string& dir) {
  std::vector<pid_t> out;
  DIR* d = opendir("/proc");
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0) continue;
    std::ifstream in(absl::StrCat("/proc/", pid, "/cmdline"), std::ios::binary);
    std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmd.rfind(fake_bin, 0) == 0 && cmd.find(dir) != std::string::npos) out.push_back(pid);
  }
  closedir(d);
  return out;
}

class Driver {
 public:
  explicit Driver(const ChaosOptions& o) : o_(o), rng_(o.seed) {}

  ChaosReport Run() {
    const auto t0 = Clock::now();
    Setup();
    if (!setup_error_.empty()) {
      r_.problems.push_back(setup_error_);
      Teardown();
      return r_;
    }
    const auto deadline = t0 + std::chrono::milliseconds(static_cast<int64_t>(o_.deadline_s * 1000));
    // Leave a quiet tail for the last jobs to finish after the last action.
    const auto chaos_end = deadline - std::chrono::seconds(45);
    auto next_action = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(o_.action_interval_s * 1000));
    while (Clock::now() < deadline) {
      if (!fill_path_.empty() && Clock::now() > fill_until_) Unfill();
      if (AllTerminal()) {
        r_.all_terminal = true;
        break;
      }
      if (Clock::now() >= next_action && Clock::now() < chaos_end) {
        Act();
        next_action = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(o_.action_interval_s * 1000));
      }
      Sleep(0.2);
    }
    if (!fill_path_.empty()) Unfill();
    Teardown();
    Audit();
    r_.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    return r_;
  }

 private:
  void Log(const std::string& line) {
    if (o_.verbose) std::fprintf(stderr, "chaos %6.1fs: %s\n", Elapsed(), line.c_str());
  }
  double Elapsed() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

  std::vector<std::string> WorkerArgv(int i) const {
    return {o_.worker_bin,    "--controller",      ctl_->address(),
            "--work-dir",     WorkerDir(i).string(), "--id",
            absl::StrCat("chaos-w", i), "--trainer", o_.fake_train_bin,
            "--cpu-slots",    std::to_string(o_.cpu_slots), "--lease-interval",
            "0.2",            "--heartbeat-interval", "0.5",
            "--http-listen",  ""};
  }
  fs::path WorkerDir(int i) const { return i == o_.workers - 1 ? dir_ / "disk" : dir_ / absl::StrCat("w", i); }

  void StartWorker(int i) {
    workers_[i] = std::make_unique<testing_support::Process>();
    const nlohmann::json plan = {{"steps", o_.steps}, {"step_ms", o_.step_ms}, {"artifact_bytes", 20000}};
    auto s = workers_[i]->Start(WorkerArgv(i), dir_ / absl::StrCat("worker", i, ".log"),
                                {{"CADDIE_WORKER_TOKEN", kWorkerToken}, {"CADDIE_FAKE_TRAIN", plan.dump()}});
    if (!s.ok()) setup_error_ = absl::StrCat("worker ", i, ": ", s.ToString());
  }

  void Setup() {
    start_ = Clock::now();
    dir_ = fs::absolute(o_.dir);
    umount2((dir_ / "disk").c_str(), MNT_DETACH);
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "disk");
    // A real size-limited filesystem for the last worker: run dirs, spool and all.
    r_.tmpfs = mount("tmpfs", (dir_ / "disk").c_str(), "tmpfs", 0, "size=16m") == 0;
    Log(r_.tmpfs ? "worker disk: 16 MiB tmpfs" : "worker disk: no tmpfs (mount refused); disk fills are skipped");
    ctl_ = std::make_unique<ControllerProcess>(o_.controller_bin, dir_ / "controller");
    auto s = ctl_->Start({"--lease-ttl", "4", "--heartbeat-interval", "0.5", "--worker-lost-after", "6",
                          "--drain-after", "0", "--retry-avoid", "1"},
                         {{"CADDIE_USER_TOKEN", kUserToken}, {"CADDIE_WORKER_TOKEN", kWorkerToken}});
    if (!s.ok()) {
      setup_error_ = "controller: " + s.ToString();
      return;
    }
    user_ = v1::UserService::NewStub(reliability::Insecure(ctl_->address()));
    workers_.resize(o_.workers);
    for (int i = 0; i < o_.workers; ++i) StartWorker(i);
    v1::SubmitSweepRequest req;
    req.mutable_spec()->set_name("chaos");
    nlohmann::json seeds = nlohmann::json::array();
    for (int i = 1; i <= o_.jobs; ++i) seeds.push_back(i);
    req.mutable_spec()->set_sweep_json(
        nlohmann::json({{"base", {{"iterations", o_.steps}}}, {"axes", {{"seed", seeds}}}}).dump());
    req.mutable_spec()->set_max_attempts(30);
    req.mutable_spec()->mutable_budget()->set_train_seconds(60);
    req.mutable_spec()->mutable_budget()->set_grace_seconds(5);
    v1::SubmitSweepResponse resp;
    const grpc::Status st = user_->SubmitSweep(Ctx(kUserToken).get(), req, &resp);
    if (!st.ok()) setup_error_ = "submit: " + st.error_message();
    Log(absl::StrCat("submitted ", resp.jobs_size(), " jobs to ", o_.workers, " workers at ", ctl_->address()));
  }

  bool AllTerminal() {
    v1::ListJobsRequest req;
    v1::ListJobsResponse resp;
    if (!user_->ListJobs(Ctx(kUserToken, 2).get(), req, &resp).ok()) return false;
    if (resp.jobs_size() < o_.jobs) return false;
    int done = 0;
    for (const auto& j : resp.jobs()) done += Terminal(j.state()) ? 1 : 0;
    if (done != last_done_) {
      last_done_ = done;
      Log(absl::StrCat(done, "/", resp.jobs_size(), " jobs terminal"));
    }
    return done == resp.jobs_size();
  }

  void Act() {
    std::uniform_int_distribution<int> pick(0, 9);
    const int a = pick(rng_);
    if (a < 2) {
      KillController();
    } else if (a < 5) {
      KillWorker();
    } else if (a < 8) {
      KillRank();
    } else if (r_.tmpfs && fill_path_.empty()) {
      FillDisk();
    } else {
      KillRank();
    }
  }

  void KillController() {
    ctl_->Kill9();
    ++r_.controller_kills;
    Sleep(std::uniform_real_distribution<double>(0.2, 1.0)(rng_));
    for (int tries = 0; tries < 5; ++tries) {
      auto s = ctl_->Restart();
      if (s.ok()) {
        Log(absl::StrCat("SIGKILL controller #", r_.controller_kills, ", restarted"));
        return;
      }
      Sleep(0.5);
    }
    r_.problems.push_back("controller did not restart:\n" + ctl_->Log());
  }

  void KillWorker() {
    const int i = std::uniform_int_distribution<int>(0, o_.workers - 1)(rng_);
    workers_[i]->Signal(SIGKILL);
    workers_[i]->Wait(std::chrono::seconds(5));
    ++r_.worker_kills;
    Sleep(0.3);
    StartWorker(i);
    Log(absl::StrCat("SIGKILL worker ", i, ", restarted"));
  }

  void KillRank() {
    auto pids = TrainerPids(o_.fake_train_bin, dir_.string());
    if (pids.empty()) return;
    const pid_t pid = pids[std::uniform_int_distribution<size_t>(0, pids.size() - 1)(rng_)];
    if (kill(pid, SIGKILL) == 0) {
      ++r_.rank_kills;
      Log(absl::StrCat("SIGKILL trainer rank pid ", pid));
    }
  }

  // Fills the tmpfs to the last byte; it is emptied again a few seconds later.
  void FillDisk() {
    fill_path_ = dir_ / "disk" / "filler";
    const int fd = open(fill_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
      fill_path_.clear();
      return;
    }
    const std::string block(1 << 16, 'f');
    int64_t written = 0;
    for (;;) {
      const ssize_t n = write(fd, block.data(), block.size());
      if (n <= 0) break;
      written += n;
    }
    // Top off the last partial page.
    while (write(fd, "f", 1) == 1) ++written;
    close(fd);
    ++r_.disk_fills;
    fill_until_ = Clock::now() + std::chrono::seconds(3);
    Log(absl::StrCat("worker ", o_.workers - 1, " disk full (", written, " filler bytes) for 3 s"));
  }
  void Unfill() {
    fs::remove(fill_path_);
    fill_path_.clear();
    Log("worker disk freed");
  }

  void Teardown() {
    for (auto& w : workers_) {
      if (w) {
        w->Signal(SIGTERM);
        if (!w->Wait(std::chrono::seconds(10))) w->Kill();
      }
    }
    if (ctl_) ctl_->Terminate();
  }

  void Problem(const std::string& p) {
    if (r_.problems.size() < 50) r_.problems.push_back(p);
  }

  void Audit() {
    if (!ctl_) return;
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(ctl_->db().c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
      Problem("cannot open the database");
      return;
    }
    auto integrity = Query(db, "PRAGMA integrity_check");
    r_.integrity = integrity.empty() || integrity[0].empty() ? "no answer" : integrity[0][0];
    auto jobs = Query(db, "SELECT id, state, attempt, worker_id, finished_ms FROM jobs ORDER BY seq");
    r_.jobs = static_cast<int>(jobs.size());
    if (r_.jobs != o_.jobs) Problem(absl::StrCat("expected ", o_.jobs, " jobs, the database has ", r_.jobs));
    std::map<std::string, std::vector<std::string>> job_row;
    for (const auto& j : jobs) {
      job_row[j[0]] = j;
      const int state = std::stoi(j[1]);
      if (!Terminal(state)) {
        ++r_.non_terminal;
        Problem(absl::StrCat("job ", j[0], " is not terminal: ", v1::JobState_Name(static_cast<v1::JobState>(state))));
      } else if (std::stoll(j[4]) <= 0) {
        Problem(absl::StrCat("job ", j[0], " is terminal without a finish time"));
      }
      if (state == v1::JOB_STATE_SUCCEEDED) {
        ++r_.succeeded;
      } else if (state == v1::JOB_STATE_FAILED) {
        ++r_.failed;
      } else if (Terminal(state)) {
        ++r_.other_terminal;
      }
    }
    // Results: exactly the successful jobs, of their last attempt.
    for (const auto& res : Query(db, "SELECT job_id, attempt FROM results")) {
      auto it = job_row.find(res[0]);
      if (it == job_row.end()) {
        Problem("result for unknown job " + res[0]);
        continue;
      }
      const int state = std::stoi(it->second[1]);
      if (state != v1::JOB_STATE_SUCCEEDED && state != v1::JOB_STATE_OVER_BUDGET) {
        Problem(absl::StrCat("job ", res[0], " has a result but state ", state));
      }
      if (res[1] != it->second[2]) {
        Problem(absl::StrCat("job ", res[0], " result of attempt ", res[1], ", job at attempt ", it->second[2]));
        ++r_.duplicates;
      }
    }
    // Duplicates: two attempts of one job that both ran to a successful `final`.
    for (const auto& d : Query(db,
                               "SELECT job_id, COUNT(DISTINCT attempt) FROM events WHERE type = 'final' AND "
                               "json_extract(json, '$.exit_reason') = 'completed' GROUP BY job_id HAVING "
                               "COUNT(DISTINCT attempt) > 1")) {
      // The earlier attempt's completion never reached the controller (its worker
      // was killed, its lease expired and the job was requeued): that attempt is
      // not a success, and the results check above proves only one was recorded.
      ++r_.reruns;
      Log(absl::StrCat("job ", d[0], " reached a successful final event in ", d[1], " attempts (rerun)"));
    }
    // Events: contiguous seqs from 1 in every attempt.
    auto per_attempt = Query(db, "SELECT job_id, attempt, COUNT(*), MIN(seq), MAX(seq) FROM events GROUP BY job_id, attempt");
    r_.attempts = static_cast<int64_t>(per_attempt.size());
    std::map<std::pair<std::string, std::string>, int64_t> stored;
    for (const auto& a : per_attempt) {
      const int64_t n = std::stoll(a[2]), lo = std::stoll(a[3]), hi = std::stoll(a[4]);
      r_.events += n;
      stored[{a[0], a[1]}] = n;
      if (lo != 1 || hi != n) {
        r_.lost += static_cast<int>(hi - n + (lo - 1));
        Problem(absl::StrCat("job ", a[0], " attempt ", a[1], ": ", n, " events, seqs ", lo, "..", hi, " (a hole)"));
      }
    }
    // A succeeded job's last attempt holds every line its trainer printed.
    for (const auto& [id, j] : job_row) {
      if (std::stoi(j[1]) != v1::JOB_STATE_SUCCEEDED) continue;
      const std::string& worker = j[3];
      const std::string wi = worker.substr(worker.find_last_not_of("0123456789") + 1);
      if (wi.empty()) continue;
      const fs::path log = WorkerDir(std::stoi(wi)) / worker / "runs" / absl::StrCat(id, "-a", j[2]) / "rank0.stdout.log";
      std::ifstream in(log);
      if (!in) {
        Problem(absl::StrCat("job ", id, ": no trainer log ", log.string()));
        continue;
      }
      int64_t lines = 0;
      for (std::string line; std::getline(in, line);) lines += line.empty() ? 0 : 1;
      const int64_t have = stored[{id, j[2]}];
      if (have < lines) {
        r_.lost += static_cast<int>(lines - have);
        Problem(absl::StrCat("job ", id, " attempt ", j[2], ": trainer printed ", lines, " events, ", have, " stored"));
      }
    }
    sqlite3_close(db);
    if (r_.tmpfs) umount2((dir_ / "disk").c_str(), MNT_DETACH);
  }

  const ChaosOptions o_;
  std::mt19937_64 rng_;
  ChaosReport r_;
  fs::path dir_;
  Clock::time_point start_;
  std::string setup_error_;
  std::unique_ptr<ControllerProcess> ctl_;
  std::unique_ptr<v1::UserService::Stub> user_;
  std::vector<std::unique_ptr<testing_support::Process>> workers_;
  fs::path fill_path_;
  Clock::time_point fill_until_;
  int last_done_ = -1;
};

}  // namespace

std::string ChaosReport::Summary() const {
  std::string s = absl::StrFormat(
      "chaos: %s in %.0f s\n"
      "  kills survived: %d (controller %d, workers %d, trainer ranks %d), disk fills: %d (%s)\n"
      "  jobs: %d (succeeded %d, failed %d, other terminal %d, not terminal %d)\n"
      "  events: %d in %d attempts\n"
      "  duplicates: %d (reruns after a lost completion: %d)\n"
      "  lost: %d\n"
      "  integrity_check: %s\n",
      ok() ? "PASS" : "FAIL", seconds, kills_survived(), controller_kills, worker_kills, rank_kills, disk_fills,
      tmpfs ? "16 MiB tmpfs" : "no tmpfs", jobs, succeeded, failed, other_terminal, non_terminal, events, attempts,
      duplicates, reruns, lost, integrity);
  for (const auto& p : problems) absl::StrAppend(&s, "  problem: ", p, "\n");
  return s;
}

ChaosReport RunChaos(const ChaosOptions& options) { return Driver(options).Run(); }

}  // namespace caddie::chaos
