#include "common/metrics.h"

#include <charconv>
#include <type_traits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_join.h"
#include "common/str_cat.h"

namespace caddie::metrics {
namespace {

bool IsMetricName(std::string_view s) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    const bool digit = c >= '0' && c <= '9';
    if (!(alpha || (i > 0 && digit))) return false;
  }
  return true;
}

bool IsLabelName(std::string_view s) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    const bool digit = c >= '0' && c <= '9';
    if (!(alpha || (i > 0 && digit))) return false;
  }
  return s.substr(0, 2) != "__";
}

std::string_view TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

void AtomicAdd(std::atomic<double>& a, double delta) {
  double old = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(old, old + delta, std::memory_order_relaxed)) {
  }
}

// `name{l1="v1",l2="v2"[,extra]} value\n`
void AppendSample(std::string* out, std::string_view name, const std::vector<std::string>& names,
                  const LabelValues& values, std::string_view extra_label,
                  std::string_view extra_value, double value) {
  AppendAll(out, name);
  if (!names.empty() || !extra_label.empty()) {
    out->push_back('{');
    for (size_t i = 0; i < names.size(); ++i) {
      if (i > 0) out->push_back(',');
      AppendAll(out, names[i], "=\"", EscapeLabelValue(values[i]), "\"");
    }
    if (!extra_label.empty()) {
      if (!names.empty()) out->push_back(',');
      AppendAll(out, extra_label, "=\"", extra_value, "\"");
    }
    out->push_back('}');
  }
  AppendAll(out, " ", FormatValue(value), "\n");
}

}  // namespace

const std::vector<double> kDefaultBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                             0.5,   1,    2.5,   5,    10};
const std::vector<double> kLatencyBuckets = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                             0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                             1,      2.5,     5,      10};

const std::vector<double> kDefaultBucketsLong = {0.01, 0.05, 0.1, 0.5, 1,   5,    10,
                                                 30,   60,   120, 300, 600, 1800, 3600};

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string EscapeHelp(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), value);
  if (ec != std::errc()) {
    // Cannot happen with a 64-byte buffer; keep a correct fallback anyway.
    std::snprintf(buf, sizeof(buf), "%.17g", value);
    return buf;
  }
  return std::string(buf, end);
}

void Counter::Inc(double delta) {
  if (!(delta >= 0)) return;  // negative or NaN
  AtomicAdd(value_, delta);
}

void Gauge::Inc(double delta) { AtomicAdd(value_, delta); }

Histogram::Histogram(const std::vector<double>* bounds)
    : bounds_(bounds), counts_(bounds->size() + 1, 0) {}

void Histogram::Observe(double value) {
  if (std::isnan(value)) return;
  size_t i = 0;
  while (i < bounds_->size() && value > (*bounds_)[i]) ++i;
  absl::MutexLock lock(&mu_);
  ++counts_[i];
  sum_ += value;
  ++count_;
}

Histogram::Snapshot Histogram::Snap() const {
  Snapshot s;
  s.bounds = *bounds_;
  absl::MutexLock lock(&mu_);
  s.cumulative.resize(counts_.size());
  uint64_t acc = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    acc += counts_[i];
    s.cumulative[i] = acc;
  }
  s.sum = sum_;
  s.count = count_;
  return s;
}

template <typename T>
Family<T>::Family(std::string name, std::string help, std::vector<std::string> label_names,
                  std::vector<double> bounds)
    : name_(std::move(name)),
      help_(std::move(help)),
      label_names_(std::move(label_names)),
      bounds_(std::move(bounds)) {
  // An unlabelled metric always has its one series, so it renders 0 before first use.
  if (label_names_.empty()) {
    absl::MutexLock lock(&mu_);
    children_.emplace(LabelValues{}, NewChild());
  }
}

template <typename T>
std::shared_ptr<T> Family<T>::NewChild() const {
  if constexpr (std::is_same_v<T, Histogram>) {
    return std::make_shared<Histogram>(&bounds_);
  } else {
    return std::make_shared<T>();
  }
}

template <typename T>
Child<T> Family<T>::WithLabels(const LabelValues& values) {
  if (values.size() != label_names_.size()) {
    // A programming error (names and arity are compile-time facts): fail loudly.
    std::fprintf(stderr, "metrics: %s has %zu labels (%s), got %zu values (%s)\n", name_.c_str(),
                 label_names_.size(), absl::StrJoin(label_names_, ",").c_str(), values.size(),
                 absl::StrJoin(values, ",").c_str());
    std::abort();
  }
  absl::MutexLock lock(&mu_);
  auto it = children_.find(values);
  if (it == children_.end()) it = children_.emplace(values, NewChild()).first;
  return Child<T>(it->second);
}

template <typename T>
Child<T> Family<T>::WithLabels(std::initializer_list<std::string_view> values) {
  LabelValues v;
  v.reserve(values.size());
  for (std::string_view s : values) v.emplace_back(s);
  return WithLabels(v);
}

template <typename T>
bool Family<T>::Remove(const LabelValues& values) {
  absl::MutexLock lock(&mu_);
  return children_.erase(values) > 0;
}

template <typename T>
int Family<T>::RemoveMatching(std::string_view label_name, std::string_view value) {
  size_t idx = 0;
  while (idx < label_names_.size() && label_names_[idx] != label_name) ++idx;
  if (idx == label_names_.size()) return 0;
  absl::MutexLock lock(&mu_);
  int removed = 0;
  for (auto it = children_.begin(); it != children_.end();) {
    if (it->first[idx] == value) {
      it = children_.erase(it);
      ++removed;
    } else {
      ++it;
    }
  }
  return removed;
}

template <typename T>
void Family<T>::Clear() {
  absl::MutexLock lock(&mu_);
  children_.clear();
}

template <typename T>
size_t Family<T>::Size() const {
  absl::MutexLock lock(&mu_);
  return children_.size();
}

template <typename T>
void Family<T>::RenderTo(std::string* out) const {
  MetricType type = MetricType::kGauge;
  if constexpr (std::is_same_v<T, Counter>) type = MetricType::kCounter;
  if constexpr (std::is_same_v<T, Histogram>) type = MetricType::kHistogram;
  AppendAll(out, "# HELP ", name_, " ", EscapeHelp(help_), "\n");
  AppendAll(out, "# TYPE ", name_, " ", TypeName(type), "\n");
  absl::MutexLock lock(&mu_);
  for (const auto& [values, child] : children_) {
    if constexpr (std::is_same_v<T, Histogram>) {
      const Histogram::Snapshot s = child->Snap();
      const std::string bucket = name_ + "_bucket";
      for (size_t i = 0; i < s.bounds.size(); ++i) {
        AppendSample(out, bucket, label_names_, values, "le", FormatValue(s.bounds[i]),
                     static_cast<double>(s.cumulative[i]));
      }
      AppendSample(out, bucket, label_names_, values, "le", "+Inf",
                   static_cast<double>(s.cumulative.back()));
      AppendSample(out, name_ + "_sum", label_names_, values, "", "", s.sum);
      AppendSample(out, name_ + "_count", label_names_, values, "", "",
                   static_cast<double>(s.count));
    } else {
      AppendSample(out, name_, label_names_, values, "", "", child->Value());
    }
  }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

absl::StatusOr<Registry::Entry*> Registry::AddEntry(MetricType type, std::string_view name,
                                                    std::vector<std::string>& label_names,
                                                    const std::vector<double>& bounds) {
  if (!IsMetricName(name)) {
    return absl::InvalidArgumentError(
        Cat("metric name '", name, "' does not match [a-zA-Z_:][a-zA-Z0-9_:]*"));
  }
  std::set<std::string_view> seen;
  for (const std::string& l : label_names) {
    if (!IsLabelName(l)) {
      return absl::InvalidArgumentError(Cat(
          "label name '", l, "' of metric '", name,
          "' does not match [a-zA-Z_][a-zA-Z0-9_]* or starts with the reserved '__'"));
    }
    if (!seen.insert(l).second) {
      return absl::InvalidArgumentError(
          Cat("label name '", l, "' appears twice in metric '", name, "'"));
    }
    if (type == MetricType::kHistogram && l == "le") {
      return absl::InvalidArgumentError(
          Cat("histogram '", name, "' may not have a label named 'le'"));
    }
  }
  if (type == MetricType::kHistogram) {
    for (size_t i = 0; i < bounds.size(); ++i) {
      if (!std::isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1]))) {
        return absl::InvalidArgumentError(Cat(
            "histogram '", name, "' bucket bound ", FormatValue(bounds[i]), " at index ", i,
            " is not finite and strictly greater than the previous one"));
      }
    }
  }
  auto it = families_.find(name);
  if (it != families_.end()) {
    if (it->second.type != type || it->second.label_names != label_names) {
      return absl::AlreadyExistsError(Cat(
          "metric '", name, "' is already registered as a ", TypeName(it->second.type),
          " with labels (", absl::StrJoin(it->second.label_names, ","), ")"));
    }
    return &it->second;
  }
  Entry& e = families_[std::string(name)];
  e.type = type;
  e.label_names = label_names;
  return &e;
}

absl::StatusOr<CounterFamily*> Registry::AddCounter(std::string_view name, std::string_view help,
                                                    std::vector<std::string> label_names) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Entry*> e = AddEntry(MetricType::kCounter, name, label_names, {});
  if (!e.ok()) return e.status();
  if (!(*e)->counter) {
    (*e)->counter.reset(
        new CounterFamily(std::string(name), std::string(help), std::move(label_names), {}));
  }
  return (*e)->counter.get();
}

absl::StatusOr<GaugeFamily*> Registry::AddGauge(std::string_view name, std::string_view help,
                                                std::vector<std::string> label_names) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Entry*> e = AddEntry(MetricType::kGauge, name, label_names, {});
  if (!e.ok()) return e.status();
  if (!(*e)->gauge) {
    (*e)->gauge.reset(
        new GaugeFamily(std::string(name), std::string(help), std::move(label_names), {}));
  }
  return (*e)->gauge.get();
}

absl::StatusOr<HistogramFamily*> Registry::AddHistogram(std::string_view name,
                                                        std::string_view help,
                                                        std::vector<std::string> label_names,
                                                        std::vector<double> bounds) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Entry*> e = AddEntry(MetricType::kHistogram, name, label_names, bounds);
  if (!e.ok()) return e.status();
  if (!(*e)->histogram) {
    (*e)->histogram.reset(new HistogramFamily(std::string(name), std::string(help),
                                              std::move(label_names), std::move(bounds)));
  }
  return (*e)->histogram.get();
}

namespace {

std::vector<std::string> SplitLabels(std::string_view labels) {
  std::vector<std::string> out;
  if (labels.empty()) return out;
  size_t start = 0;
  while (true) {
    const size_t comma = labels.find(',', start);
    out.emplace_back(labels.substr(start, comma == std::string_view::npos ? labels.npos
                                                                          : comma - start));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

absl::Status CheckType(const MetricDef& def, MetricType want) {
  if (def.type == want) return absl::OkStatus();
  return absl::InvalidArgumentError(Cat("metric '", def.name, "' is defined as a ",
                                        TypeName(def.type), ", registered as a ",
                                        TypeName(want)));
}

}  // namespace

absl::StatusOr<CounterFamily*> Registry::AddCounter(const MetricDef& def) {
  if (absl::Status s = CheckType(def, MetricType::kCounter); !s.ok()) return s;
  return AddCounter(def.name, def.help, SplitLabels(def.labels));
}

absl::StatusOr<GaugeFamily*> Registry::AddGauge(const MetricDef& def) {
  if (absl::Status s = CheckType(def, MetricType::kGauge); !s.ok()) return s;
  return AddGauge(def.name, def.help, SplitLabels(def.labels));
}

absl::StatusOr<HistogramFamily*> Registry::AddHistogram(const MetricDef& def) {
  if (absl::Status s = CheckType(def, MetricType::kHistogram); !s.ok()) return s;
  return AddHistogram(def.name, def.help, SplitLabels(def.labels),
                      def.buckets != nullptr ? *def.buckets : kDefaultBuckets);
}

void Registry::AddCollectHook(std::function<void()> hook) {
  absl::MutexLock lock(&mu_);
  hooks_.push_back(std::move(hook));
}

std::string Registry::Render() const {
  std::vector<std::function<void()>> hooks;
  {
    absl::MutexLock lock(&mu_);
    hooks = hooks_;
  }
  for (const auto& hook : hooks) hook();
  std::string out;
  absl::MutexLock lock(&mu_);
  for (const auto& [name, e] : families_) {
    if (e.counter) e.counter->RenderTo(&out);
    if (e.gauge) e.gauge->RenderTo(&out);
    if (e.histogram) e.histogram->RenderTo(&out);
  }
  return out;
}

}  // namespace caddie::metrics
