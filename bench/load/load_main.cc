// caddie-load: load and soak benchmark of one caddie-controller process.
//
// Starts a controller (its own database in --dir), queues --jobs jobs (sweeps
// of 1000), registers --workers simulated workers and drives them from
// --threads client threads for --seconds: each worker leases a job, reports
// its events (start, step, val, final in one batch), completes it SUCCEEDED,
// and heartbeats every --heartbeat seconds like caddie-worker does. Prints
// sustained transitions/s (QUEUED→LEASED, LEASED→RUNNING, RUNNING→SUCCEEDED),
// p50/p99 LeaseJob latency as the worker sees it, the controller's RSS and the
// SQLite size (database + WAL).
//
// --job-seconds: how long a simulated job runs between its events batch and its
// completion (default 0: at once); heartbeats go on meanwhile.
//
// --soak: keeps the queue topped up (a new 1000-job sweep whenever fewer than
// --jobs/2 are queued), samples the controller's RSS every --sample seconds and
// runs until the heartbeats sent amount to --fleet-minutes (default 30) of a
// real fleet of --workers workers heartbeating every --real-heartbeat seconds
// (5, caddie-worker's default), or until --seconds, whichever comes first. The
// time is compressed by heartbeating every --heartbeat seconds (scripts/load.sh
// --soak: 0.5 s, 10x the real rate, and jobs of --job-seconds 6, i.e. a fleet
// running one-minute jobs, compressed 10x).
// Memory verdict, after the first third of samples (warm-up) is set aside: the
// last third's mean RSS against the middle third's, and the least-squares slope
// of RSS over the last two thirds extrapolated over the whole run; flat = both
// under --flat-percent (default 10) of the middle third's mean. Exit 1 when
// memory grows, the fleet-minutes target is not reached, or any call failed.
//
// Bounded: stops after --seconds whatever happens; loopback only.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tests/chaos/harness.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using caddie::reliability::Ctx;
namespace v1 = caddie::v1;

constexpr char kUser[] = "load-user-token";
constexpr char kWorker[] = "load-worker-token";

int64_t RssKb(pid_t pid, const char* field = "VmRSS:") {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(field, 0) == 0) return std::atoll(line.c_str() + std::strlen(field));
  }
  return -1;
}

int64_t FileSize(const fs::path& p) {
  std::error_code ec;
  const auto n = fs::file_size(p, ec);
  return ec ? 0 : static_cast<int64_t>(n);
}

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

struct SimWorker {
  std::string id;
  std::string job_id;
  int64_t token = 0;
  int stage = 0;  // 0 idle, 1 leased (report next), 2 running (complete next)
  Clock::time_point next_heartbeat;
  Clock::time_point complete_after;  // stage 2: the simulated job runs until then
};

struct Totals {
  std::atomic<int64_t> leased{0}, running{0}, completed{0}, heartbeats{0}, empty_leases{0}, errors{0};
  std::atomic<int64_t> queued{0};
};

// Flatness of RSS samples (seconds, KiB) over a run of run_s seconds: the first
// third is warm-up; the last third's mean is compared with the middle third's,
// and the least-squares slope over the last two thirds is extrapolated over
// run_s. Both must stay under flat_percent of the middle third's mean.
struct Verdict {
  bool ok = false;  // enough samples (>= 6)
  double mid_mib = 0, last_mib = 0, third_growth_pct = 0, slope_mib_per_min = 0, slope_growth_pct = 0;
  bool flat = false;
};
Verdict MemoryVerdict(const std::vector<std::pair<double, int64_t>>& samples, double run_s, double flat_percent) {
  Verdict v;
  if (samples.size() < 6) return v;
  v.ok = true;
  const size_t third = samples.size() / 3;
  auto mean_mib = [&](size_t from, size_t to) {
    double sum = 0;
    for (size_t i = from; i < to; ++i) sum += static_cast<double>(samples[i].second);
    return sum / static_cast<double>(to - from) / 1024.0;
  };
  v.mid_mib = mean_mib(third, 2 * third);
  v.last_mib = mean_mib(samples.size() - third, samples.size());
  v.third_growth_pct = (v.last_mib - v.mid_mib) / v.mid_mib * 100;
  double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (size_t i = third; i < samples.size(); ++i) {
    const double x = samples[i].first / 60.0, y = static_cast<double>(samples[i].second) / 1024.0;
    n += 1;
    sx += x;
    sy += y;
    sxx += x * x;
    sxy += x * y;
  }
  const double den = n * sxx - sx * sx;
  v.slope_mib_per_min = den > 0 ? (n * sxy - sx * sy) / den : 0;
  v.slope_growth_pct = v.slope_mib_per_min * (run_s / 60.0) / v.mid_mib * 100;
  v.flat = v.third_growth_pct < flat_percent && v.slope_growth_pct < flat_percent;
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  std::string controller_bin, dir = "/tmp/caddie-load";
  int workers = 1000, jobs = 10000, threads = 16, channels = 4;
  double seconds = 60, heartbeat = 5, sample = 10, job_seconds = 0, fleet_minutes = 30, real_heartbeat = 5, flat_percent = 10;
  bool soak = false, fast_sync = false;
  CLI::App app{"caddie-load: load / soak benchmark of one caddie-controller"};
  app.add_option("--controller", controller_bin, "caddie-controller binary")->required();
  app.add_option("--dir", dir, "scratch directory (removed first)");
  app.add_option("--workers", workers, "simulated workers")->check(CLI::Range(1, 100000));
  app.add_option("--jobs", jobs, "jobs queued at the start")->check(CLI::Range(1, 1000000));
  app.add_option("--threads", threads, "client threads")->check(CLI::Range(1, 256));
  app.add_option("--channels", channels, "gRPC connections")->check(CLI::Range(1, 64));
  app.add_option("--seconds", seconds, "run time after setup")->check(CLI::PositiveNumber);
  app.add_option("--heartbeat", heartbeat, "seconds between a worker's heartbeats")->check(CLI::PositiveNumber);
  app.add_option("--job-seconds", job_seconds, "seconds a simulated job runs between its events and its completion")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--sample", sample, "seconds between RSS samples")->check(CLI::PositiveNumber);
  app.add_flag("--soak", soak, "keep the queue full and watch memory");
  app.add_option("--fleet-minutes", fleet_minutes, "soak: stop once the heartbeats equal this many minutes of a real fleet")
      ->check(CLI::PositiveNumber);
  app.add_option("--real-heartbeat", real_heartbeat, "soak: a real worker's seconds between heartbeats")
      ->check(CLI::PositiveNumber);
  app.add_option("--flat-percent", flat_percent, "soak: RSS growth (percent) still called flat")
      ->check(CLI::PositiveNumber);
  app.add_flag("--sqlite-synchronous-normal", fast_sync, "pass the controller's synchronous=NORMAL flag");
  CLI11_PARSE(app, argc, argv);

  fs::remove_all(dir);
  caddie::reliability::ControllerProcess ctl(controller_bin, dir);
  std::vector<std::string> flags = {"--heartbeat-interval", absl::StrCat(heartbeat), "--lease-ttl", "60",
                                    "--worker-lost-after", "120"};
  if (fast_sync) flags.push_back("--sqlite-synchronous-normal");
  if (auto s = ctl.Start(flags, {{"CADDIE_USER_TOKEN", kUser}, {"CADDIE_WORKER_TOKEN", kWorker}}); !s.ok()) {
    std::fprintf(stderr, "caddie-load: %s\n", s.ToString().c_str());
    return 1;
  }
  std::vector<std::shared_ptr<grpc::Channel>> chans;
  for (int i = 0; i < channels; ++i) {
    grpc::ChannelArguments args;
    args.SetInt("caddie.load.channel", i);  // distinct args: a connection of its own
    chans.push_back(grpc::CreateCustomChannel(ctl.address(), grpc::InsecureChannelCredentials(), args));
  }
  auto user = v1::UserService::NewStub(chans[0]);

  Totals t;
  std::mutex submit_mu;
  int sweeps = 0;
  auto submit = [&](int n) -> bool {
    std::lock_guard<std::mutex> l(submit_mu);
    v1::SubmitSweepRequest req;
    req.mutable_spec()->set_name(absl::StrCat("load-", sweeps++));
    nlohmann::json seeds = nlohmann::json::array();
    for (int i = 0; i < n; ++i) seeds.push_back(i + 1);
    req.mutable_spec()->set_sweep_json(
        nlohmann::json({{"base", {{"num_layers", 2}}}, {"axes", {{"seed", seeds}}}, {"max_jobs", n}}).dump());
    v1::SubmitSweepResponse resp;
    const grpc::Status s = user->SubmitSweep(Ctx(kUser, 120).get(), req, &resp);
    if (!s.ok()) {
      std::fprintf(stderr, "caddie-load: submit: %s\n", s.error_message().c_str());
      return false;
    }
    t.queued += resp.jobs_size();
    return true;
  };

  const auto setup0 = Clock::now();
  for (int left = jobs; left > 0; left -= 1000) {
    if (!submit(std::min(left, 1000))) return 1;
  }
  const double submit_s = std::chrono::duration<double>(Clock::now() - setup0).count();

  std::vector<SimWorker> sims(workers);
  {
    auto stub = v1::WorkerService::NewStub(chans[0]);
    for (int i = 0; i < workers; ++i) {
      sims[i].id = absl::StrFormat("load-w%05d", i);
      v1::RegisterWorkerRequest req;
      req.mutable_worker()->set_id(sims[i].id);
      req.mutable_worker()->set_hostname("sim");
      req.mutable_worker()->set_cpu_slots(1);
      v1::RegisterWorkerResponse resp;
      const grpc::Status s = stub->RegisterWorker(Ctx(kWorker).get(), req, &resp);
      if (!s.ok()) {
        std::fprintf(stderr, "caddie-load: register: %s\n", s.error_message().c_str());
        return 1;
      }
      sims[i].next_heartbeat = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(
                                                  heartbeat * 1000 * i / std::max(1, workers)));
    }
  }
  const double setup_s = std::chrono::duration<double>(Clock::now() - setup0).count();
  std::printf("caddie-load: %d jobs queued in %.1f s, %d workers registered (setup %.1f s); running %.0f s%s\n",
              jobs, submit_s, workers, setup_s, seconds, soak ? " (soak)" : "");
  std::fflush(stdout);

  const pid_t pid = ctl.pid();
  const int64_t rss_start = RssKb(pid);
  std::atomic<bool> stop{false};
  std::vector<std::vector<double>> lease_ms(threads), lease_empty_ms(threads);
  const auto t0 = Clock::now();
  std::vector<std::thread> pool;
  for (int th = 0; th < threads; ++th) {
    pool.emplace_back([&, th] {
      auto stub = v1::WorkerService::NewStub(chans[th % chans.size()]);
      while (!stop.load()) {
        bool did = false;
        for (int i = th; i < workers && !stop.load(); i += threads) {
          SimWorker& w = sims[i];
          const auto now = Clock::now();
          if (now >= w.next_heartbeat) {
            v1::HeartbeatRequest req;
            req.set_worker_id(w.id);
            if (w.stage > 0) {
              auto* l = req.add_leases();
              l->set_job_id(w.job_id);
              l->set_fencing_token(w.token);
            }
            v1::HeartbeatResponse resp;
            if (stub->Heartbeat(Ctx(kWorker).get(), req, &resp).ok()) {
              ++t.heartbeats;
            } else {
              ++t.errors;
            }
            w.next_heartbeat = now + std::chrono::milliseconds(static_cast<int64_t>(heartbeat * 1000));
            did = true;
          }
          if (w.stage == 0) {
            v1::LeaseJobRequest req;
            req.set_worker_id(w.id);
            req.set_cpu_slots_free(1);
            v1::LeaseJobResponse resp;
            const auto c0 = Clock::now();
            const grpc::Status s = stub->LeaseJob(Ctx(kWorker).get(), req, &resp);
            const double ms = std::chrono::duration<double, std::milli>(Clock::now() - c0).count();
            if (!s.ok()) {
              ++t.errors;
            } else if (!resp.job().id().empty()) {
              lease_ms[th].push_back(ms);
              w.job_id = resp.job().id();
              w.token = resp.fencing_token();
              w.stage = 1;
              ++t.leased;
              --t.queued;
              did = true;
            } else {
              lease_empty_ms[th].push_back(ms);
              ++t.empty_leases;
            }
          } else if (w.stage == 1) {
            v1::ReportEventsRequest req;
            req.set_worker_id(w.id);
            req.mutable_lease()->set_job_id(w.job_id);
            req.mutable_lease()->set_fencing_token(w.token);
            const double now_s = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
            const char* types[] = {"start", "step", "val", "final"};
            for (int k = 0; k < 4; ++k) {
              auto* e = req.add_events();
              e->set_seq(k + 1);
              e->set_type(types[k]);
              e->set_step(k == 0 ? 0 : 10);
              e->set_time_unix(now_s);
              e->set_json(absl::StrFormat(R"({"event":"%s","time":%.3f,"step":10,"val_bpb":2.5,"train_loss":3.1})",
                                          types[k], now_s));
            }
            v1::ReportEventsResponse resp;
            if (stub->ReportEvents(Ctx(kWorker).get(), req, &resp).ok()) {
              w.stage = 2;
              w.complete_after = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(job_seconds * 1000));
              ++t.running;
            } else {
              ++t.errors;
              w.stage = 0;
            }
            did = true;
          } else if (now >= w.complete_after) {
            v1::CompleteJobRequest req;
            req.set_worker_id(w.id);
            req.mutable_lease()->set_job_id(w.job_id);
            req.mutable_lease()->set_fencing_token(w.token);
            req.set_state(v1::JOB_STATE_SUCCEEDED);
            req.set_exit_reason(v1::EXIT_REASON_COMPLETED);
            auto* r = req.mutable_result();
            r->set_steps(10);
            r->set_val_bpb(2.5);
            r->set_val_bpb_post_quant(2.51);
            r->set_artifact_bytes(1000);
            r->set_within_budget(true);
            v1::CompleteJobResponse resp;
            if (stub->CompleteJob(Ctx(kWorker).get(), req, &resp).ok()) {
              ++t.completed;
            } else {
              ++t.errors;
            }
            w.stage = 0;
            did = true;
          }
        }
        if (!did) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    });
  }

  // Minutes of a real fleet of `workers` (one heartbeat per real_heartbeat s
  // each) that the heartbeats sent so far amount to.
  auto fleet_min = [&] {
    return static_cast<double>(t.heartbeats.load()) / (workers / real_heartbeat) / 60.0;
  };
  // Sampler (and, in soak mode, the queue top-up).
  std::vector<std::pair<double, int64_t>> samples;
  int64_t last_transitions = 0;
  auto last_sample = Clock::now();
  while (std::chrono::duration<double>(Clock::now() - t0).count() < seconds && !(soak && fleet_min() >= fleet_minutes)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (soak && t.queued.load() < jobs / 2) submit(1000);
    if (std::chrono::duration<double>(Clock::now() - last_sample).count() >= sample) {
      last_sample = Clock::now();
      const double at = std::chrono::duration<double>(Clock::now() - t0).count();
      const int64_t tr = t.leased + t.running + t.completed;
      samples.emplace_back(at, RssKb(pid));
      std::printf("  t=%5.0fs  rss=%6.1f MiB  transitions/s=%7.1f  completed=%lld  heartbeats=%lld (%.1f fleet-min)  db=%.1f MiB\n",
                  at, samples.back().second / 1024.0, static_cast<double>(tr - last_transitions) / sample,
                  static_cast<long long>(t.completed.load()), static_cast<long long>(t.heartbeats.load()), fleet_min(),
                  static_cast<double>(FileSize(fs::path(dir) / "caddie.db") + FileSize(fs::path(dir) / "caddie.db-wal")) /
                      (1 << 20));
      std::fflush(stdout);
      last_transitions = tr;
    }
  }
  stop = true;
  for (auto& th : pool) th.join();
  const double run_s = std::chrono::duration<double>(Clock::now() - t0).count();
  const int64_t rss_end = RssKb(pid), hwm = RssKb(pid, "VmHWM:");
  const int64_t db_bytes = FileSize(fs::path(dir) / "caddie.db"), wal_bytes = FileSize(fs::path(dir) / "caddie.db-wal");
  std::vector<double> all_lease, empty;
  for (auto& v : lease_ms) all_lease.insert(all_lease.end(), v.begin(), v.end());
  for (auto& v : lease_empty_ms) empty.insert(empty.end(), v.begin(), v.end());
  const int64_t transitions = t.leased + t.running + t.completed;
  std::printf("caddie-load results (%d workers, %d jobs queued at start, %d threads, %.0f s%s):\n", workers, jobs,
              threads, run_s, soak ? ", soak" : "");
  std::printf("  transitions: %lld (%lld leased, %lld running, %lld succeeded) = %.1f/s sustained\n",
              static_cast<long long>(transitions), static_cast<long long>(t.leased.load()),
              static_cast<long long>(t.running.load()), static_cast<long long>(t.completed.load()),
              static_cast<double>(transitions) / run_s);
  std::printf("  heartbeats: %lld (%.1f/s), empty leases: %lld, errors: %lld\n",
              static_cast<long long>(t.heartbeats.load()), static_cast<double>(t.heartbeats.load()) / run_s,
              static_cast<long long>(t.empty_leases.load()), static_cast<long long>(t.errors.load()));
  std::printf("  lease latency (LeaseJob granting a job, client side): p50 %.2f ms, p99 %.2f ms (n=%zu)\n",
              Percentile(all_lease, 0.5), Percentile(all_lease, 0.99), all_lease.size());
  if (!empty.empty()) {
    std::printf("  lease latency (nothing to lease): p50 %.2f ms, p99 %.2f ms (n=%zu)\n", Percentile(empty, 0.5),
                Percentile(empty, 0.99), empty.size());
  }
  std::printf("  controller RSS: %.1f MiB at start of run, %.1f MiB at end, peak %.1f MiB\n", rss_start / 1024.0,
              rss_end / 1024.0, hwm / 1024.0);
  std::printf("  SQLite: %.1f MiB database + %.1f MiB WAL, %d sweeps\n", static_cast<double>(db_bytes) / (1 << 20),
              static_cast<double>(wal_bytes) / (1 << 20), sweeps);
  int rc = t.errors.load() == 0 ? 0 : 1;
  if (soak) {
    const double reached = fleet_min();
    std::printf("  soak: %.1f minutes of a %d-worker fleet's heartbeats (one per %g s each; target %g) in %.0f s, "
                "%lld jobs completed\n",
                reached, workers, real_heartbeat, fleet_minutes, run_s, static_cast<long long>(t.completed.load()));
    if (reached < fleet_minutes) {
      std::printf("  soak: SHORT of the %g-minute target (raise --seconds or lower --heartbeat)\n", fleet_minutes);
      rc = 1;
    }
    if (const auto v = MemoryVerdict(samples, run_s, flat_percent); v.ok) {
      std::printf("  memory: middle third mean %.1f MiB, last third mean %.1f MiB: %+.1f%%; slope over the last two "
                  "thirds %+.3f MiB/min = %+.1f%% over the run -> %s\n",
                  v.mid_mib, v.last_mib, v.third_growth_pct, v.slope_mib_per_min, v.slope_growth_pct,
                  v.flat ? "FLAT" : "GROWING");
      if (!v.flat) rc = 1;
    } else {
      std::printf("  memory: too few samples for a verdict (use --seconds >= 6 x --sample)\n");
      rc = 1;
    }
  }
  ctl.Terminate();
  return rc;
}
