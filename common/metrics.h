// Prometheus metrics: a registry of counter, gauge and histogram families with
// label sets, rendered in the Prometheus text exposition format 0.0.4.
//
// prometheus-cpp is not packaged on Debian 12, so this is caddie's own small
// implementation; metrics_test.cc proves the output with `promtool check metrics`
// and tests/observability/ with a real Prometheus server.
//
// Usage:
//   caddie::metrics::Registry registry;
//   ASSIGN_OR_RETURN(auto* jobs, registry.AddGauge(kJobs, "Jobs by state.", {"state"}));
//   jobs->WithLabels({"queued"}).Set(3);
//   ASSIGN_OR_RETURN(auto* rpcs, registry.AddCounter(kRpcs, "gRPC calls.", {"method"}));
//   rpcs->WithLabels({"Lease"}).Inc();
//   ASSIGN_OR_RETURN(auto* lat, registry.AddHistogram(kLat, "Lease latency.", {}, kLatencyBuckets));
//   lat->WithLabels({}).Observe(0.002);
//   job_step->Remove({job_id});        // a finished job leaves the live gauges
//   std::string text = registry.Render();
//
// Metric names live in common/metric_names.h (one place for each fact).
//
// Thread-safety: everything here is safe for concurrent use from any thread.
// Updating a child (Inc/Set/Observe) is lock-free for counters and gauges and
// takes a per-child mutex for histograms; WithLabels/Remove take the family's
// mutex; Render takes the registry's mutex, then each family's. WithLabels
// returns a Child handle that shares ownership of the child, so a Remove on
// another thread between WithLabels and Set never leaves a dangling reference
// (that race corrupted the controller's heap under load, issue 13).
#pragma once

#include <atomic>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace caddie::metrics {

enum class MetricType { kCounter, kGauge, kHistogram };

// Label values, in the order of the family's label names.
using LabelValues = std::vector<std::string>;

// A monotonically increasing value (Prometheus type `counter`).
class Counter {
 public:
  // Adds `delta`; a negative or NaN delta is ignored (counters never go down).
  void Inc(double delta = 1.0);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// A value that goes up and down (Prometheus type `gauge`).
class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Inc(double delta = 1.0);
  void Dec(double delta = 1.0) { Inc(-delta); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Observations counted into fixed upper-bound buckets (Prometheus type
// `histogram`): renders cumulative `_bucket{le=...}` lines including
// le="+Inf", then `_sum` and `_count`.
class Histogram {
 public:
  // `bounds`: strictly increasing finite upper bounds (validated by the family).
  explicit Histogram(const std::vector<double>* bounds);

  // Counts `value` into the first bucket whose bound is >= value. NaN is ignored.
  void Observe(double value);

  struct Snapshot {
    std::vector<double> bounds;          // finite upper bounds
    std::vector<uint64_t> cumulative;    // bounds.size() + 1 entries, last = +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot Snap() const;

 private:
  const std::vector<double>* const bounds_;  // owned by the family, outlives us
  mutable absl::Mutex mu_;
  std::vector<uint64_t> counts_ ABSL_GUARDED_BY(mu_);  // per bucket, not cumulative
  double sum_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t count_ ABSL_GUARDED_BY(mu_) = 0;
};

// A handle on one child (label set) of a family, as WithLabels returns it.
// It shares ownership of the child: a concurrent Remove/Clear only unlinks the
// child from its family, and an update through a handle taken before that
// lands in the unlinked child (no longer rendered) instead of freed memory.
// Copying costs one shared_ptr copy; keep it for repeated updates.
template <typename T>
class Child {
 public:
  explicit Child(std::shared_ptr<T> child) : child_(std::move(child)) {}
  T* operator->() const { return child_.get(); }
  T& operator*() const { return *child_; }

  void Set(double value) const requires std::is_same_v<T, Gauge> { child_->Set(value); }
  void Inc(double delta = 1.0) const requires(!std::is_same_v<T, Histogram>) { child_->Inc(delta); }
  void Dec(double delta = 1.0) const requires std::is_same_v<T, Gauge> { child_->Dec(delta); }
  void Observe(double value) const requires std::is_same_v<T, Histogram> { child_->Observe(value); }
  double Value() const requires(!std::is_same_v<T, Histogram>) { return child_->Value(); }
  Histogram::Snapshot Snap() const requires std::is_same_v<T, Histogram> { return child_->Snap(); }

 private:
  std::shared_ptr<T> child_;
};

// The Prometheus default buckets (seconds): 5 ms … 10 s.
extern const std::vector<double> kDefaultBuckets;
// Finer latency buckets for fast operations (SQLite, RPCs): 100 µs … 10 s.
extern const std::vector<double> kLatencyBuckets;
// Long waits (queueing): 10 ms … 1 h.
extern const std::vector<double> kDefaultBucketsLong;

// A metric's definition as a constant (see common/metric_names.h): name, type,
// HELP text, comma-separated label names ("" for none) and, for histograms,
// the bucket bounds (null = kDefaultBuckets).
struct MetricDef {
  std::string_view name;
  MetricType type;
  std::string_view help;
  std::string_view labels;
  const std::vector<double>* buckets = nullptr;
};

// A family: one metric name, HELP text and label names, with one child per
// distinct label-value tuple. Children are created on first use.
template <typename T>
class Family {
 public:
  // Returns the child for `values` (created at zero if absent). `values` must
  // have exactly one entry per label name: a wrong count is a programming
  // error and aborts with a message naming the metric. The handle stays valid
  // whatever Remove/Clear do meanwhile (see Child).
  Child<T> WithLabels(const LabelValues& values);
  Child<T> WithLabels(std::initializer_list<std::string_view> values);

  // Drops the child with these label values (so finished jobs or gone workers
  // leave the live series). Returns false if there was none.
  bool Remove(const LabelValues& values);
  // Drops every child whose value of label `label_name` equals `value`;
  // returns how many were dropped (0 also if the family has no such label).
  int RemoveMatching(std::string_view label_name, std::string_view value);
  // Drops every child.
  void Clear();
  // Number of live children (label sets).
  size_t Size() const;

  const std::string& name() const { return name_; }
  const std::vector<std::string>& label_names() const { return label_names_; }

 private:
  friend class Registry;
  Family(std::string name, std::string help, std::vector<std::string> label_names,
         std::vector<double> bounds);
  std::shared_ptr<T> NewChild() const;
  void RenderTo(std::string* out) const;

  // Constant after construction.
  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
  const std::vector<double> bounds_;  // histograms only

  mutable absl::Mutex mu_;
  std::map<LabelValues, std::shared_ptr<T>> children_ ABSL_GUARDED_BY(mu_);
};

using CounterFamily = Family<Counter>;
using GaugeFamily = Family<Gauge>;
using HistogramFamily = Family<Histogram>;

// Owns metric families and renders them. Families live as long as the registry.
class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Registers a family, or returns the existing one when `name` is already
  // registered with the same type and label names (so two components in one
  // process can share a name). Errors (InvalidArgument, naming the value): a
  // name not matching [a-zA-Z_:][a-zA-Z0-9_:]*, a label name not matching
  // [a-zA-Z_][a-zA-Z0-9_]* or starting with "__", duplicate label names,
  // "le" as a histogram label, bounds not strictly increasing and finite.
  // AlreadyExists: `name` registered with another type or label names.
  absl::StatusOr<CounterFamily*> AddCounter(std::string_view name, std::string_view help,
                                            std::vector<std::string> label_names = {});
  absl::StatusOr<GaugeFamily*> AddGauge(std::string_view name, std::string_view help,
                                        std::vector<std::string> label_names = {});
  absl::StatusOr<HistogramFamily*> AddHistogram(std::string_view name, std::string_view help,
                                                std::vector<std::string> label_names = {},
                                                std::vector<double> bounds = kDefaultBuckets);

  // The same, from a MetricDef. InvalidArgument also when def.type is not the
  // type of the call.
  absl::StatusOr<CounterFamily*> AddCounter(const MetricDef& def);
  absl::StatusOr<GaugeFamily*> AddGauge(const MetricDef& def);
  absl::StatusOr<HistogramFamily*> AddHistogram(const MetricDef& def);

  // Registers `hook` to run at the start of every Render(), before any family
  // is read: for values cheaper to compute on scrape (queue depth from the
  // store, heartbeat age). Hooks run in registration order, without registry
  // locks held, so they may call WithLabels/Set/Remove.
  void AddCollectHook(std::function<void()> hook);

  // Runs the collect hooks, then renders every family (sorted by name, each
  // family's children sorted by label values) in text format 0.0.4. A family
  // with labels and no children renders only its HELP and TYPE lines.
  std::string Render() const;

 private:
  struct Entry {
    MetricType type;
    std::vector<std::string> label_names;
    std::unique_ptr<CounterFamily> counter;
    std::unique_ptr<GaugeFamily> gauge;
    std::unique_ptr<HistogramFamily> histogram;
  };
  absl::StatusOr<Entry*> AddEntry(MetricType type, std::string_view name,
                                  std::vector<std::string>& label_names,
                                  const std::vector<double>& bounds)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, Entry, std::less<>> families_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void()>> hooks_ ABSL_GUARDED_BY(mu_);
};

// Content type of Render()'s output, for an HTTP response.
inline constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

// Exposition helpers, exposed for tests.
// Escapes a label value: backslash, double quote and newline.
std::string EscapeLabelValue(std::string_view value);
// Escapes HELP text: backslash and newline.
std::string EscapeHelp(std::string_view help);
// Formats a sample value as Prometheus parses it: shortest round-trip decimal,
// "+Inf", "-Inf", "NaN".
std::string FormatValue(double value);

}  // namespace caddie::metrics
