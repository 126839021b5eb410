// Issue 13 regression: the soak benchmark (bench/load) aborted caddie-controller
// with heap corruption ("malloc_consolidate(): unaligned fastbin chunk") while
// many workers completed jobs of one sweep at once. Cause: a metrics child
// reference (Family::WithLabels returned T&) was written after a concurrent
// completion's RemoveMatching freed it (leaderboard gauges, OnJobFinished).
//
// This test drives the same mix against a real in-process controller on a real
// SQLite file: sweeps submitted while 32 workers (16 client threads) lease,
// report and complete, WatchJob streams opened and cancelled, job reads and
// /metrics scrapes, all at once. It asserts that every transition lands once and
// the controller stays up. Under build/asan (scripts/sanitize.sh) a use-after-free
// anywhere on these paths fails it deterministically.
#include <atomic>
#include <filesystem>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>

#include "common/metric_names.h"
#include "controller/server.h"
#include "tests/controller/harness.h"

namespace caddie::controller {
namespace {

using caddie::testing::Client;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr char kUser[] = "user-secret";
constexpr char kWorker[] = "worker-secret";
constexpr int kSweeps = 10;
constexpr int kJobsPerSweep = 150;
constexpr int kTotal = kSweeps * kJobsPerSweep;
constexpr int kWorkers = 32;
constexpr int kWorkerThreads = 16;

// val_bpb of a job: distinct per job so each sweep's leaderboard is one exact set.
double Bpb(const v1::Job& job) { return 1.0 + 0.001 * job.index_in_sweep(); }

// Series of `metric` in a /metrics text: label text → value.
std::map<std::string, double> Series(const std::string& text, const std::string& metric) {
  std::map<std::string, double> out;
  const std::regex re("^" + metric + "\\{([^}]*)\\} (\\S+)$");
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_match(line, m, re)) out[m[1]] = std::stod(m[2]);
  }
  return out;
}

TEST(ControllerConcurrencyTest, SubmitLeaseReportCompleteWatchAndScrapeAtOnceLandEveryTransition) {
  const std::string dir = caddie::testing::TempDir("concurrency");
  ControllerOptions o;
  o.db_path = dir + "/caddie.db";
  o.listen = "127.0.0.1:0";
  o.http_listen = "127.0.0.1:0";
  o.tokens = {kUser, kWorker};
  o.scheduler.tick_seconds = 0.02;  // ticks refresh gauges and pending reasons in between
  o.sqlite_synchronous_normal = true;
  auto started = Controller::Start(o);
  ASSERT_TRUE(started.ok()) << started.status();
  std::unique_ptr<Controller> controller = std::move(*started);
  Client client(controller->address(), kUser, kWorker);
  const std::string http_addr = controller->http_address();
  const std::string http_host = http_addr.substr(0, http_addr.rfind(':'));
  const int http_port = std::stoi(http_addr.substr(http_addr.rfind(':') + 1));

  for (int i = 0; i < kWorkers; ++i) ASSERT_EQ(client.Register("w-" + std::to_string(i), 0, 1), "w-" + std::to_string(i));

  std::mutex mu;
  std::vector<std::string> sweep_ids, job_ids;  // guarded by mu
  std::atomic<int> completed{0}, errors{0}, watches_done{0}, watches_cancelled{0}, submitted{0};
  std::atomic<bool> stop{false};
  std::vector<std::string> failures;  // guarded by mu
  auto fail = [&](const std::string& what) {
    std::lock_guard<std::mutex> l(mu);
    if (failures.size() < 20) failures.push_back(what);
  };
  const auto deadline = Clock::now() + std::chrono::seconds(90);
  auto running = [&] { return !stop.load() && Clock::now() < deadline; };

  std::vector<std::thread> threads;
  // Two submitters, spaced so that sweeps arrive while completions are in flight.
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (int s = 0; s < kSweeps / 2 && running(); ++s) {
        json seeds = json::array();
        for (int i = 0; i < kJobsPerSweep; ++i) seeds.push_back(t * 1000 + s * 100 + i);
        v1::SubmitSweepRequest req;
        req.mutable_spec()->set_name("concurrency");
        req.mutable_spec()->set_sweep_json(json({{"axes", {{"seed", seeds}}}}).dump());
        v1::SubmitSweepResponse resp;
        const grpc::Status st = client.user()->SubmitSweep(client.UserCtx().get(), req, &resp);
        if (!st.ok() || resp.jobs_size() != kJobsPerSweep) {
          fail("submit: " + st.error_message());
          ++errors;
          continue;
        }
        {
          std::lock_guard<std::mutex> l(mu);
          sweep_ids.push_back(resp.sweep().id());
          for (const auto& j : resp.jobs()) job_ids.push_back(j.id());
        }
        submitted += kJobsPerSweep;
        std::this_thread::sleep_for(std::chrono::milliseconds(150));
      }
    });
  }
  // Workers: lease → one events batch → SUCCEEDED, like bench/load.
  for (int t = 0; t < kWorkerThreads; ++t) {
    threads.emplace_back([&, t] {
      while (running() && completed.load() < kTotal) {
        bool leased_any = false;
        for (int w = t; w < kWorkers; w += kWorkerThreads) {
          const std::string id = "w-" + std::to_string(w);
          v1::LeaseJobResponse l;
          if (grpc::Status st = client.Lease(id, 0, &l, 1); !st.ok()) {
            fail("lease: " + st.error_message());
            ++errors;
            continue;
          }
          if (l.job().id().empty()) continue;
          leased_any = true;
          const double bpb = Bpb(l.job());
          v1::ReportEventsResponse r;
          grpc::Status st = client.Report(id, l.job().id(), l.fencing_token(),
                                          {{{"event", "start"}, {"params", 1000}},
                                           {{"event", "step"}, {"step", 10}, {"train_loss", 3.0}},
                                           {{"event", "val"}, {"step", 10}, {"val_bpb", bpb + 0.01}},
                                           {{"event", "final"}, {"val_bpb_post_quant", bpb}}},
                                          1, &r);
          if (!st.ok() || r.acked_seq() != 4) {
            fail("report " + l.job().id() + ": " + st.error_message());
            ++errors;
          }
          v1::CompleteJobResponse c;
          st = client.Complete(id, l.job().id(), l.fencing_token(), v1::JOB_STATE_SUCCEEDED,
                               v1::EXIT_REASON_COMPLETED, bpb, &c);
          if (!st.ok() || c.job().state() != v1::JOB_STATE_SUCCEEDED) {
            fail("complete " + l.job().id() + ": " + st.error_message());
            ++errors;
          } else {
            ++completed;
          }
        }
        if (!leased_any) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
  }
  // Watchers: streams that run to the end (checked), and streams cancelled
  // after their first message (the reactor's OnCancel/OnDone racing Notify).
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      for (unsigned n = static_cast<unsigned>(t); running(); n += 7) {
        std::string job;
        {
          std::lock_guard<std::mutex> l(mu);
          if (!job_ids.empty()) job = job_ids[(n * 37) % job_ids.size()];
        }
        if (job.empty()) {
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
          continue;
        }
        const bool cancel_early = t == 2;
        auto ctx = Client::Ctx(kUser);
        v1::WatchJobRequest req;
        req.set_job_id(job);
        auto reader = client.user()->WatchJob(ctx.get(), req);
        const auto seen = caddie::testing::ReadWatch(reader.get(), [&] {
          if (cancel_early) ctx->TryCancel();
        });
        const grpc::Status st = reader->Finish();
        if (cancel_early) {
          ++watches_cancelled;
          continue;
        }
        if (!st.ok()) {
          // Only the 20 s deadline may end a watch of a job not leased yet.
          if (st.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) fail("watch " + job + ": " + st.error_message());
          continue;
        }
        if (seen.last != v1::JOB_STATE_SUCCEEDED ||
            seen.types != std::vector<std::string>{"start", "step", "val", "final"}) {
          fail("watch " + job + " saw " + std::to_string(seen.types.size()) + " events, last state " +
               v1::JobState_Name(seen.last));
        }
        ++watches_done;
      }
    });
  }
  // Readers: ListJobs/GetJob (pending reasons) and /metrics + /healthz scrapes.
  threads.emplace_back([&] {
    httplib::Client http(http_host, http_port);
    while (running()) {
      auto m = http.Get("/metrics");
      auto h = http.Get("/healthz");
      if (!m || m->status != 200 || !h || h->status != 200) fail("scrape failed");
      std::string sweep;
      {
        std::lock_guard<std::mutex> l(mu);
        if (!sweep_ids.empty()) sweep = sweep_ids.back();
      }
      if (!sweep.empty()) client.ListJobs(sweep);
    }
  });

  while (running() && !(submitted.load() == kTotal && completed.load() >= kTotal) && errors.load() == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // Let the watchers see the last completions end their streams.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  stop = true;
  for (auto& th : threads) th.join();

  for (const auto& f : failures) ADD_FAILURE() << f;
  EXPECT_EQ(errors.load(), 0);
  ASSERT_EQ(completed.load(), kTotal);
  EXPECT_GT(watches_done.load(), 0);
  EXPECT_GT(watches_cancelled.load(), 0);

  // Every job: succeeded on its first lease, exactly its 4 events stored.
  ASSERT_EQ(sweep_ids.size(), static_cast<size_t>(kSweeps));
  for (const auto& sweep : sweep_ids) {
    const auto jobs = client.ListJobs(sweep);
    ASSERT_EQ(jobs.size(), static_cast<size_t>(kJobsPerSweep));
    for (const auto& j : jobs) {
      EXPECT_EQ(j.state(), v1::JOB_STATE_SUCCEEDED) << j.id();
      EXPECT_EQ(j.attempt(), 1) << j.id();
      auto events = controller->scheduler()->ListEvents(j.id(), 0, 100);
      ASSERT_TRUE(events.ok());
      EXPECT_EQ(events->size(), 4u) << j.id();
    }
  }

  // The controller is still up and its metrics agree with the store: each
  // sweep's leaderboard series are exactly its best kLeaderboardSize jobs, and
  // no finished job left a per-job series behind.
  httplib::Client http(http_host, http_port);
  auto h = http.Get("/healthz");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  auto m = http.Get("/metrics");
  ASSERT_TRUE(m);
  const auto lb = Series(m->body, "caddie_leaderboard_val_bpb");
  EXPECT_EQ(lb.size(), static_cast<size_t>(kSweeps * metric_names::kLeaderboardSize));
  for (const auto& sweep : sweep_ids) {
    v1::LeaderboardRequest lr;
    lr.set_sweep_id(sweep);
    lr.set_limit(metric_names::kLeaderboardSize);
    v1::LeaderboardResponse best;
    ASSERT_TRUE(client.user()->Leaderboard(client.UserCtx().get(), lr, &best).ok());
    ASSERT_EQ(best.entries_size(), metric_names::kLeaderboardSize);
    for (const auto& e : best.entries()) {
      const std::string key = "sweep_id=\"" + sweep + "\",job_id=\"" + e.job_id() + "\"";
      ASSERT_TRUE(lb.count(key)) << key << " missing from the leaderboard gauge";
      EXPECT_DOUBLE_EQ(lb.at(key), e.val_bpb_post_quant());
    }
  }
  EXPECT_TRUE(Series(m->body, "caddie_job_step").empty());

  controller->Shutdown(absl::Seconds(2));
  controller.reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace caddie::controller
