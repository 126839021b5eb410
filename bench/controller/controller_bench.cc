// controller_bench: sustained lease → heartbeat → complete cycles per second and
// LeaseJob latency (p50/p99) for N simulated workers, each a thread with its own
// loop, against a caddie-controller in this process (real gRPC on loopback, a
// real SQLite file). Usage: controller_bench [--workers 100,1000] [--seconds 8]
// [--sync-normal] [--dir /tmp]
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <thread>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "caddie/v1/user_service.grpc.pb.h"
#include "caddie/v1/worker_service.grpc.pb.h"
#include "controller/server.h"

namespace {

using Clock = std::chrono::steady_clock;

struct RunResult {
  int64_t cycles = 0;
  double seconds = 0;
  std::vector<double> lease_ms;
  int64_t errors = 0;
};

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto c = std::make_unique<grpc::ClientContext>();
  c->AddMetadata("authorization", "Bearer bench-worker");
  c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  return c;
}

RunResult RunOnce(int workers, double seconds, bool sync_normal, const std::string& dir) {
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  caddie::controller::ControllerOptions o;
  o.db_path = dir + "/bench.db";
  o.listen = "127.0.0.1:0";
  o.tokens = {"bench-user", "bench-worker"};
  o.sqlite_synchronous_normal = sync_normal;
  o.scheduler.tick_seconds = 0.5;
  auto c = caddie::controller::Controller::Start(o);
  if (!c.ok()) {
    std::fprintf(stderr, "start: %s\n", c.status().ToString().c_str());
    std::exit(1);
  }
  auto& controller = *c;
  // Several channels: one TCP connection per 16 workers, as separate hosts would have.
  const int nchan = std::max(1, workers / 16);
  std::vector<std::shared_ptr<grpc::Channel>> chans;
  for (int i = 0; i < nchan; ++i) {
    grpc::ChannelArguments args;
    args.SetInt("grpc.channel_id", i);  // distinct channels, not one shared subchannel
    chans.push_back(grpc::CreateCustomChannel(controller->address(), grpc::InsecureChannelCredentials(), args));
  }
  // Enough jobs that the queue never runs dry: sweeps of 10,000.
  auto user = caddie::v1::UserService::NewStub(chans[0]);
  const int64_t want_jobs = static_cast<int64_t>(seconds * 8000) + 10000;
  for (int64_t made = 0; made < want_jobs; made += 10000) {
    std::vector<int> seeds(10000);
    for (int i = 0; i < 10000; ++i) seeds[i] = i;
    caddie::v1::SubmitSweepRequest req;
    req.mutable_spec()->set_sweep_json(nlohmann::json({{"axes", {{"seed", seeds}}}, {"max_jobs", 10000}}).dump());
    req.mutable_spec()->set_gpus(1);
    caddie::v1::SubmitSweepResponse resp;
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer bench-user");
    auto st = user->SubmitSweep(&ctx, req, &resp);
    if (!st.ok()) {
      std::fprintf(stderr, "submit: %s\n", st.error_message().c_str());
      std::exit(1);
    }
  }
  std::atomic<bool> stop{false};
  std::atomic<int64_t> cycles{0}, errors{0};
  std::mutex mu;
  std::vector<double> lease_ms;
  std::vector<std::thread> threads;
  for (int w = 0; w < workers; ++w) {
    threads.emplace_back([&, w] {
      auto stub = caddie::v1::WorkerService::NewStub(chans[w % nchan]);
      const std::string id = absl::StrCat("bench-w", w);
      caddie::v1::RegisterWorkerRequest rr;
      rr.mutable_worker()->set_id(id);
      rr.mutable_worker()->add_gpus()->set_index(0);
      caddie::v1::RegisterWorkerResponse rresp;
      if (!stub->RegisterWorker(Ctx().get(), rr, &rresp).ok()) {
        errors++;
        return;
      }
      std::vector<double> mine;
      while (!stop.load()) {
        caddie::v1::LeaseJobRequest lr;
        lr.set_worker_id(id);
        lr.set_gpus_free(1);
        caddie::v1::LeaseJobResponse l;
        const auto t0 = Clock::now();
        auto st = stub->LeaseJob(Ctx().get(), lr, &l);
        mine.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
        if (!st.ok() || l.job().id().empty()) {
          errors++;
          continue;
        }
        caddie::v1::HeartbeatRequest hb;
        hb.set_worker_id(id);
        auto* ref = hb.add_leases();
        ref->set_job_id(l.job().id());
        ref->set_fencing_token(l.fencing_token());
        caddie::v1::HeartbeatResponse hresp;
        if (!stub->Heartbeat(Ctx().get(), hb, &hresp).ok()) errors++;
        caddie::v1::CompleteJobRequest cr;
        cr.set_worker_id(id);
        *cr.mutable_lease() = *ref;
        cr.set_state(caddie::v1::JOB_STATE_SUCCEEDED);
        cr.set_exit_reason(caddie::v1::EXIT_REASON_COMPLETED);
        caddie::v1::CompleteJobResponse cresp;
        if (!stub->CompleteJob(Ctx().get(), cr, &cresp).ok()) {
          errors++;
          continue;
        }
        cycles++;
      }
      std::lock_guard<std::mutex> g(mu);
      lease_ms.insert(lease_ms.end(), mine.begin(), mine.end());
    });
  }
  // Measure a steady window after every worker has registered and warmed up.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const int64_t c0 = cycles.load();
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  const int64_t c1 = cycles.load();
  const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  stop = true;
  for (auto& t : threads) t.join();
  controller->Shutdown(absl::Seconds(2));
  controller.reset();
  std::filesystem::remove_all(dir);
  RunResult r;
  r.cycles = c1 - c0;
  r.seconds = elapsed;
  r.lease_ms = std::move(lease_ms);
  r.errors = errors.load();
  return r;
}

double Pct(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"controller_bench: lease+heartbeat+complete cycles/s and lease latency"};
  std::string workers_list = "100,1000";
  double seconds = 8;
  bool sync_normal = false;
  std::string dir = (std::filesystem::temp_directory_path() / absl::StrCat("caddie_bench_", getpid())).string();
  app.add_option("--workers", workers_list, "Comma-separated simulated worker counts");
  app.add_option("--seconds", seconds, "Measured seconds per worker count")->check(CLI::Range(1.0, 120.0));
  app.add_flag("--sync-normal", sync_normal, "SQLite synchronous=NORMAL instead of FULL");
  app.add_option("--dir", dir, "Scratch directory for the database");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  std::printf("caddie-controller bench: %u CPU cores, SQLite synchronous=%s, %.0f s per run\n",
              std::thread::hardware_concurrency(), sync_normal ? "NORMAL" : "FULL", seconds);
  std::printf("%8s %14s %12s %12s %8s\n", "workers", "cycles/s", "lease p50", "lease p99", "errors");
  for (auto part : absl::StrSplit(workers_list, ',')) {
    const int n = std::stoi(std::string(part));
    auto r = RunOnce(n, seconds, sync_normal, dir);
    std::printf("%8d %14.1f %10.2fms %10.2fms %8lld\n", n, static_cast<double>(r.cycles) / r.seconds,
                Pct(r.lease_ms, 0.5), Pct(r.lease_ms, 0.99), static_cast<long long>(r.errors));
    std::fflush(stdout);
  }
  return 0;
}
