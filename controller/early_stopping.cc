#include "controller/early_stopping.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_format.h"

namespace caddie::controller {

namespace {

bool Active(v1::JobState s) { return s == v1::JOB_STATE_LEASED || s == v1::JOB_STATE_RUNNING; }

struct JobSeries {
  std::vector<std::pair<int64_t, double>> points;  // (step, val_bpb), ascending step
  v1::JobState state = v1::JOB_STATE_UNSPECIFIED;
};

std::map<std::string, JobSeries> ByJob(const std::vector<ValPoint>& points) {
  std::map<std::string, JobSeries> m;
  for (const auto& p : points) {
    auto& s = m[p.job_id];
    s.points.emplace_back(p.step, p.val_bpb);
    s.state = p.state;
  }
  for (auto& [id, s] : m) std::sort(s.points.begin(), s.points.end());
  return m;
}

std::vector<StopDecision> Asha(const EarlyStoppingConfig& c, const std::map<std::string, JobSeries>& jobs) {
  const int64_t eta = std::max<int64_t>(2, c.reduction_factor);
  const int64_t base = std::max<int64_t>(1, c.grace_steps);
  const size_t min_trials = static_cast<size_t>(c.min_trials > 0 ? c.min_trials : eta);
  // rung index → (value, job id) of every job that reached it.
  std::map<int, std::vector<std::pair<double, std::string>>> rungs;
  std::map<std::string, std::pair<int, double>> highest;  // job → (rung, value there)
  for (const auto& [id, s] : jobs) {
    int64_t rung_step = base;
    size_t i = 0;
    for (int k = 0; k < 62; ++k, rung_step *= eta) {
      while (i < s.points.size() && s.points[i].first < rung_step) ++i;
      if (i == s.points.size()) break;
      rungs[k].emplace_back(s.points[i].second, id);
      highest[id] = {k, s.points[i].second};
      if (rung_step > (int64_t{1} << 50) / eta) break;
    }
  }
  std::vector<StopDecision> out;
  for (const auto& [id, hv] : highest) {
    if (!Active(jobs.at(id).state)) continue;
    auto vals = rungs[hv.first];
    if (vals.size() < min_trials) continue;
    std::sort(vals.begin(), vals.end());
    const size_t keep = std::max<size_t>(1, vals.size() / static_cast<size_t>(eta));
    const double cutoff = vals[keep - 1].first;
    if (hv.second > cutoff) {
      int64_t rung_step = base;
      for (int k = 0; k < hv.first; ++k) rung_step *= eta;
      out.push_back({id, absl::StrFormat("early_stopped (asha): val_bpb %.4f at rung step %d is not in the best %d "
                                         "of %d (cutoff %.4f)",
                                         hv.second, rung_step, keep, vals.size(), cutoff)});
    }
  }
  return out;
}

double BestUpTo(const JobSeries& s, int64_t step, bool* any) {
  double best = 0;
  *any = false;
  for (const auto& [st, v] : s.points) {
    if (st > step) break;
    if (!*any || v < best) best = v;
    *any = true;
  }
  return best;
}

std::vector<StopDecision> Median(const EarlyStoppingConfig& c, const std::map<std::string, JobSeries>& jobs) {
  const size_t min_trials = static_cast<size_t>(c.min_trials > 0 ? c.min_trials : 3);
  std::vector<StopDecision> out;
  for (const auto& [id, s] : jobs) {
    if (!Active(s.state) || s.points.empty()) continue;
    const int64_t step = s.points.back().first;
    if (step < c.grace_steps) continue;
    bool any = false;
    const double mine = BestUpTo(s, step, &any);
    std::vector<double> others;
    for (const auto& [oid, os] : jobs) {
      if (oid == id) continue;
      bool oany = false;
      double v = BestUpTo(os, step, &oany);
      if (oany) others.push_back(v);
    }
    if (others.size() < min_trials) continue;
    std::sort(others.begin(), others.end());
    const size_t n = others.size();
    const double median = n % 2 ? others[n / 2] : 0.5 * (others[n / 2 - 1] + others[n / 2]);
    if (mine > median) {
      out.push_back({id, absl::StrFormat("early_stopped (median): best val_bpb %.4f by step %d is worse than the "
                                         "median %.4f of %d other jobs",
                                         mine, step, median, n)});
    }
  }
  return out;
}

}  // namespace

std::vector<StopDecision> DecideEarlyStops(const EarlyStoppingConfig& config, const std::vector<ValPoint>& points) {
  if (config.type.empty()) return {};
  const auto jobs = ByJob(points);
  if (config.type == "asha") return Asha(config, jobs);
  if (config.type == "median") return Median(config, jobs);
  return {};
}

}  // namespace caddie::controller
