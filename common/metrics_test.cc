#include "common/metrics.h"

#include "common/metric_names.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <algorithm>
#include <set>
#include <thread>

namespace caddie::metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct CommandResult {
  int exit_code = -1;
  std::string output;
};

// Runs `promtool check metrics` with `text` on stdin (the real consumer's linter).
CommandResult PromtoolCheckMetrics(const std::string& text) {
  char path[] = "/tmp/caddie_metrics_test_XXXXXX";
  const int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  {
    std::ofstream f(path);
    f << text;
  }
  close(fd);
  CommandResult r;
  const std::string cmd = std::string("promtool check metrics < ") + path + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  EXPECT_NE(p, nullptr);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  unlink(path);
  return r;
}

TEST(MetricsTest, CounterExposition) {
  Registry registry;
  auto calls = registry.AddCounter("caddie_test_calls_total", "Calls by method.", {"method"});
  ASSERT_TRUE(calls.ok()) << calls.status();
  (*calls)->WithLabels({"Lease"}).Inc();
  (*calls)->WithLabels({"Lease"}).Inc(2);
  (*calls)->WithLabels({"Heartbeat"}).Inc(0.5);
  (*calls)->WithLabels({"Heartbeat"}).Inc(-7);  // ignored: counters never go down
  EXPECT_EQ(registry.Render(),
            "# HELP caddie_test_calls_total Calls by method.\n"
            "# TYPE caddie_test_calls_total counter\n"
            "caddie_test_calls_total{method=\"Heartbeat\"} 0.5\n"
            "caddie_test_calls_total{method=\"Lease\"} 3\n");
  EXPECT_EQ((*calls)->WithLabels({"Lease"}).Value(), 3);
}

TEST(MetricsTest, UnlabelledMetricsRenderZeroBeforeFirstUse) {
  Registry registry;
  ASSERT_TRUE(registry.AddCounter("caddie_test_expired_total", "Expired.").ok());
  auto depth = registry.AddGauge("caddie_test_depth", "Depth.");
  ASSERT_TRUE(depth.ok());
  EXPECT_EQ(registry.Render(),
            "# HELP caddie_test_depth Depth.\n"
            "# TYPE caddie_test_depth gauge\n"
            "caddie_test_depth 0\n"
            "# HELP caddie_test_expired_total Expired.\n"
            "# TYPE caddie_test_expired_total counter\n"
            "caddie_test_expired_total 0\n");
  (*depth)->WithLabels({}).Set(-2.25);
  EXPECT_THAT(registry.Render(), HasSubstr("\ncaddie_test_depth -2.25\n"));
}

TEST(MetricsTest, GaugeExpositionAndSpecialValues) {
  Registry registry;
  auto g = registry.AddGauge("caddie_test_value", "Values.", {"job_id", "kind"});
  ASSERT_TRUE(g.ok());
  (*g)->WithLabels({"j1", "a"}).Set(1.5);
  (*g)->WithLabels({"j1", "a"}).Inc(1);
  (*g)->WithLabels({"j1", "a"}).Dec(0.25);
  (*g)->WithLabels({"j2", "inf"}).Set(std::numeric_limits<double>::infinity());
  (*g)->WithLabels({"j2", "nan"}).Set(std::nan(""));
  (*g)->WithLabels({"j3", "big"}).Set(1e21);
  (*g)->WithLabels({"j3", "small"}).Set(0.1);
  EXPECT_EQ(registry.Render(),
            "# HELP caddie_test_value Values.\n"
            "# TYPE caddie_test_value gauge\n"
            "caddie_test_value{job_id=\"j1\",kind=\"a\"} 2.25\n"
            "caddie_test_value{job_id=\"j2\",kind=\"inf\"} +Inf\n"
            "caddie_test_value{job_id=\"j2\",kind=\"nan\"} NaN\n"
            "caddie_test_value{job_id=\"j3\",kind=\"big\"} 1e+21\n"
            "caddie_test_value{job_id=\"j3\",kind=\"small\"} 0.1\n");
}

TEST(MetricsTest, HistogramExposition) {
  Registry registry;
  auto h = registry.AddHistogram("caddie_test_latency_seconds", "Latency.", {"op"},
                                 {0.01, 0.1, 1});
  ASSERT_TRUE(h.ok()) << h.status();
  auto commit = (*h)->WithLabels({"commit"});
  commit.Observe(0.005);
  commit.Observe(0.01);  // on the bound: counts into le="0.01"
  commit.Observe(0.5);
  commit.Observe(3);     // above every bound: only +Inf
  commit.Observe(std::nan(""));  // ignored
  EXPECT_EQ(registry.Render(),
            "# HELP caddie_test_latency_seconds Latency.\n"
            "# TYPE caddie_test_latency_seconds histogram\n"
            "caddie_test_latency_seconds_bucket{op=\"commit\",le=\"0.01\"} 2\n"
            "caddie_test_latency_seconds_bucket{op=\"commit\",le=\"0.1\"} 2\n"
            "caddie_test_latency_seconds_bucket{op=\"commit\",le=\"1\"} 3\n"
            "caddie_test_latency_seconds_bucket{op=\"commit\",le=\"+Inf\"} 4\n"
            "caddie_test_latency_seconds_sum{op=\"commit\"} 3.515\n"
            "caddie_test_latency_seconds_count{op=\"commit\"} 4\n");
}

TEST(MetricsTest, UnlabelledHistogramHasOnlyLe) {
  Registry registry;
  auto h = registry.AddHistogram("caddie_test_h_seconds", "H.", {}, {1});
  ASSERT_TRUE(h.ok());
  (*h)->WithLabels({}).Observe(2);
  EXPECT_THAT(registry.Render(), HasSubstr("caddie_test_h_seconds_bucket{le=\"1\"} 0\n"
                                           "caddie_test_h_seconds_bucket{le=\"+Inf\"} 1\n"
                                           "caddie_test_h_seconds_sum 2\n"
                                           "caddie_test_h_seconds_count 1\n"));
}

TEST(MetricsTest, EscapesLabelValuesAndHelp) {
  EXPECT_EQ(EscapeLabelValue("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
  EXPECT_EQ(EscapeHelp("line1\nback\\slash \"quoted\""), "line1\\nback\\\\slash \"quoted\"");
  Registry registry;
  auto g = registry.AddGauge("caddie_test_escape", "Help with \\ and\nnewline.", {"path"});
  ASSERT_TRUE(g.ok());
  (*g)->WithLabels({"C:\\dir \"x\"\nnext"}).Set(1);
  const std::string text = registry.Render();
  EXPECT_EQ(text,
            "# HELP caddie_test_escape Help with \\\\ and\\nnewline.\n"
            "# TYPE caddie_test_escape gauge\n"
            "caddie_test_escape{path=\"C:\\\\dir \\\"x\\\"\\nnext\"} 1\n");
  const CommandResult r = PromtoolCheckMetrics(text);
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST(MetricsTest, RemoveDropsFinishedLabelSets) {
  Registry registry;
  auto step = registry.AddGauge("caddie_test_step", "Step.", {"sweep_id", "job_id"});
  ASSERT_TRUE(step.ok());
  (*step)->WithLabels({"s1", "j1"}).Set(10);
  (*step)->WithLabels({"s1", "j2"}).Set(20);
  (*step)->WithLabels({"s2", "j3"}).Set(30);
  EXPECT_EQ((*step)->Size(), 3u);
  EXPECT_TRUE((*step)->Remove({"s1", "j1"}));
  EXPECT_FALSE((*step)->Remove({"s1", "j1"}));
  EXPECT_THAT(registry.Render(), Not(HasSubstr("j1")));
  EXPECT_THAT(registry.Render(), HasSubstr("caddie_test_step{sweep_id=\"s1\",job_id=\"j2\"} 20\n"));
  EXPECT_EQ((*step)->RemoveMatching("sweep_id", "s2"), 1);
  EXPECT_EQ((*step)->RemoveMatching("no_such_label", "s1"), 0);
  EXPECT_EQ((*step)->Size(), 1u);
  (*step)->Clear();
  EXPECT_EQ((*step)->Size(), 0u);
  // A labelled family with no series keeps its HELP/TYPE lines only.
  EXPECT_EQ(registry.Render(),
            "# HELP caddie_test_step Step.\n"
            "# TYPE caddie_test_step gauge\n");
  // Re-created children start from zero.
  EXPECT_EQ((*step)->WithLabels({"s1", "j2"}).Value(), 0);
}

TEST(MetricsTest, HistogramRemoval) {
  Registry registry;
  auto h = registry.AddHistogram("caddie_test_rm_seconds", "H.", {"job_id"}, {1});
  ASSERT_TRUE(h.ok());
  (*h)->WithLabels({"a"}).Observe(0.5);
  (*h)->WithLabels({"b"}).Observe(0.5);
  EXPECT_TRUE((*h)->Remove({"a"}));
  const std::string text = registry.Render();
  EXPECT_THAT(text, Not(HasSubstr("job_id=\"a\"")));
  EXPECT_THAT(text, HasSubstr("caddie_test_rm_seconds_count{job_id=\"b\"} 1\n"));
}

TEST(MetricsTest, RejectsBadNamesWithClearErrors) {
  Registry registry;
  auto bad_name = registry.AddCounter("1bad-name", "x");
  EXPECT_EQ(bad_name.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad_name.status().message()), HasSubstr("'1bad-name'"));

  auto bad_label = registry.AddGauge("caddie_ok", "x", {"job-id"});
  EXPECT_EQ(bad_label.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad_label.status().message()), HasSubstr("'job-id'"));

  auto reserved = registry.AddGauge("caddie_ok", "x", {"__name"});
  EXPECT_EQ(reserved.status().code(), absl::StatusCode::kInvalidArgument);

  auto dup = registry.AddGauge("caddie_ok", "x", {"a", "a"});
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(dup.status().message()), HasSubstr("appears twice"));

  auto le = registry.AddHistogram("caddie_h", "x", {"le"});
  EXPECT_EQ(le.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(le.status().message()), HasSubstr("'le'"));

  auto unsorted = registry.AddHistogram("caddie_h", "x", {}, {1, 0.5});
  EXPECT_EQ(unsorted.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(unsorted.status().message()), HasSubstr("0.5 at index 1"));

  auto inf = registry.AddHistogram("caddie_h", "x", {},
                                   {1, std::numeric_limits<double>::infinity()});
  EXPECT_EQ(inf.status().code(), absl::StatusCode::kInvalidArgument);
  // Nothing was registered by the failed calls.
  EXPECT_EQ(registry.Render(), "");
}

TEST(MetricsTest, SameNameSameShapeIsSharedOtherShapeIsAnError) {
  Registry registry;
  auto a = registry.AddGauge("caddie_shared", "x", {"worker"});
  auto b = registry.AddGauge("caddie_shared", "x", {"worker"});
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*a, *b);
  auto c = registry.AddCounter("caddie_shared", "x", {"worker"});
  EXPECT_EQ(c.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("already registered as a gauge"));
  auto d = registry.AddGauge("caddie_shared", "x", {"host"});
  EXPECT_EQ(d.status().code(), absl::StatusCode::kAlreadyExists);
}

TEST(MetricsDeathTest, WrongLabelCountAbortsNamingTheMetric) {
  Registry registry;
  auto g = registry.AddGauge("caddie_arity", "x", {"a", "b"});
  ASSERT_TRUE(g.ok());
  EXPECT_DEATH((*g)->WithLabels({"only-one"}), "caddie_arity has 2 labels");
}

TEST(MetricsTest, CollectHooksRunBeforeRender) {
  Registry registry;
  auto g = registry.AddGauge("caddie_hooked", "x", {"worker"});
  ASSERT_TRUE(g.ok());
  int calls = 0;
  registry.AddCollectHook([&] {
    ++calls;
    (*g)->Clear();
    std::string worker = "w";  // built in two steps: GCC 12 warns falsely on "w" + to_string
    worker += std::to_string(calls);
    (*g)->WithLabels({worker}).Set(calls);
  });
  EXPECT_THAT(registry.Render(), HasSubstr("caddie_hooked{worker=\"w1\"} 1\n"));
  const std::string second = registry.Render();
  EXPECT_THAT(second, HasSubstr("caddie_hooked{worker=\"w2\"} 2\n"));
  EXPECT_THAT(second, Not(HasSubstr("w1")));
}

TEST(MetricsTest, ConcurrentUpdatesAreNotLost) {
  Registry registry;
  auto c = registry.AddCounter("caddie_conc_total", "x", {"t"});
  auto h = registry.AddHistogram("caddie_conc_seconds", "x", {}, {1});
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(h.ok());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10000; ++i) {
        (*c)->WithLabels({"shared"}).Inc();
        (*c)->WithLabels({std::to_string(t)}).Inc();
        (*h)->WithLabels({}).Observe(0.5);
        if (i % 1000 == 0) registry.Render();
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ((*c)->WithLabels({"shared"}).Value(), 40000);
  EXPECT_EQ((*c)->WithLabels({"3"}).Value(), 10000);
  EXPECT_THAT(registry.Render(), HasSubstr("caddie_conc_seconds_count 40000\n"));
}

// A handle taken before another thread drops its series must stay usable: the
// controller sets a leaderboard gauge while a concurrent completion removes the
// sweep's series (issue 13: the old T& pointed into freed memory and corrupted
// the heap under load).
TEST(MetricsTest, HandleTakenBeforeRemoveStaysUsable) {
  Registry registry;
  auto g = registry.AddGauge("caddie_handle", "x", {"sweep_id", "job_id"});
  ASSERT_TRUE(g.ok());
  auto h = (*g)->WithLabels({"s1", "j1"});
  EXPECT_EQ((*g)->RemoveMatching("sweep_id", "s1"), 1);
  h.Set(7);  // lands in the unlinked child
  EXPECT_EQ(h.Value(), 7);
  EXPECT_EQ((*g)->Size(), 0u);
  EXPECT_THAT(registry.Render(), Not(HasSubstr("j1")));
  EXPECT_EQ((*g)->WithLabels({"s1", "j1"}).Value(), 0);  // a new series starts at zero
}

TEST(MetricsTest, ConcurrentSetAndRemoveOfTheSameSeries) {
  Registry registry;
  auto g = registry.AddGauge("caddie_race", "x", {"sweep_id", "job_id"});
  auto h = registry.AddHistogram("caddie_race_seconds", "x", {"op"}, {1});
  ASSERT_TRUE(g.ok());
  ASSERT_TRUE(h.ok());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20000; ++i) {
        const std::string job = std::to_string(i % 8);
        if (t % 2 == 0) {
          (*g)->WithLabels({"s", job}).Set(i);
          (*h)->WithLabels({job}).Observe(0.5);
        } else {
          (*g)->RemoveMatching("sweep_id", "s");
          (*h)->Remove({job});
        }
        if (i % 5000 == 0) registry.Render();
      }
    });
  }
  for (auto& th : threads) th.join();
  (*g)->Clear();
  EXPECT_EQ((*g)->Size(), 0u);
}

// The whole format, every type at once, through the real linter.
TEST(MetricsTest, PromtoolAcceptsRenderedText) {
  Registry registry;
  auto c = registry.AddCounter("caddie_grpc_test_calls_total", "gRPC calls.", {"method", "code"});
  auto g = registry.AddGauge("caddie_test_jobs", "Jobs by state.", {"state"});
  auto h = registry.AddHistogram("caddie_test_lease_latency_seconds", "Lease latency.", {},
                                 kLatencyBuckets);
  auto empty = registry.AddGauge("caddie_test_empty", "No series yet.", {"job_id"});
  ASSERT_TRUE(c.ok() && g.ok() && h.ok() && empty.ok());
  (*c)->WithLabels({"Lease", "OK"}).Inc(5);
  (*c)->WithLabels({"Report", "FAILED_PRECONDITION"}).Inc();
  (*g)->WithLabels({"queued"}).Set(3);
  (*g)->WithLabels({"weird \"state\"\n\\"}).Set(1);
  for (double v : {0.00005, 0.0003, 0.002, 0.2, 20.0}) (*h)->WithLabels({}).Observe(v);
  const CommandResult r = PromtoolCheckMetrics(registry.Render());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "");
}

// The linter is a real check: it rejects what we must never produce.
TEST(MetricsTest, PromtoolRejectsBrokenText) {
  const CommandResult r = PromtoolCheckMetrics(
      "# TYPE caddie_bad counter\ncaddie_bad{a=\"unterminated} 1\n");
  EXPECT_NE(r.exit_code, 0);
}

TEST(MetricsTest, MetricDefRegistrationChecksType) {
  Registry registry;
  constexpr MetricDef kDef{"caddie_def_test", MetricType::kGauge, "Def.", "sweep_id,job_id"};
  auto g = registry.AddGauge(kDef);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ((*g)->label_names(), (std::vector<std::string>{"sweep_id", "job_id"}));
  auto wrong = registry.AddCounter(kDef);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(wrong.status().message()),
              HasSubstr("'caddie_def_test' is defined as a gauge, registered as a counter"));
}

// Every name in common/metric_names.h registers, renders with sample values and
// passes promtool's lint (counter names end in _total, units, …).
TEST(MetricsTest, AllCaddieMetricsPassPromtool) {
  Registry registry;
  std::set<std::string_view> names;
  auto add = [&](const MetricDef* def) {
    ASSERT_TRUE(names.insert(def->name).second) << "duplicate " << def->name;
    LabelValues values;
    size_t n = def->labels.empty() ? 0 : 1 + std::count(def->labels.begin(), def->labels.end(), ',');
    for (size_t i = 0; i < n; ++i) values.push_back(std::string(1, static_cast<char>('a' + i)));
    switch (def->type) {
      case MetricType::kCounter: {
        auto f = registry.AddCounter(*def);
        ASSERT_TRUE(f.ok()) << f.status();
        (*f)->WithLabels(values).Inc(2);
        break;
      }
      case MetricType::kGauge: {
        auto f = registry.AddGauge(*def);
        ASSERT_TRUE(f.ok()) << f.status();
        (*f)->WithLabels(values).Set(1.25);
        break;
      }
      case MetricType::kHistogram: {
        auto f = registry.AddHistogram(*def);
        ASSERT_TRUE(f.ok()) << f.status();
        (*f)->WithLabels(values).Observe(0.3);
        break;
      }
    }
  };
  for (const MetricDef* def : metric_names::kControllerMetrics) add(def);
  for (const MetricDef* def : metric_names::kWorkerMetrics) add(def);
  EXPECT_EQ(names.size(), std::size(metric_names::kControllerMetrics) +
                              std::size(metric_names::kWorkerMetrics));
  const std::string text = registry.Render();
  EXPECT_THAT(text, HasSubstr("caddie_job_val_bpb{sweep_id=\"a\",job_id=\"b\"} 1.25\n"));
  EXPECT_THAT(text, HasSubstr("caddie_lease_latency_seconds_bucket{le=\"3600\"} 1\n"));
  const CommandResult r = PromtoolCheckMetrics(text);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "");
}

}  // namespace
}  // namespace caddie::metrics
