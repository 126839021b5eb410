#include "cli/sweep_expand.h"

#include <cmath>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"

namespace caddie::cli {

using nlohmann::json;

namespace {

// docs/contracts.md: "{key}" in a string value of a job's spec is replaced by
// that job's value of the trainer key (e.g. data: "data/sp{vocab_size}").
void Substitute(json& spec) {
  for (auto it = spec.begin(); it != spec.end(); ++it) {
    if (!it.value().is_string()) continue;
    std::string s = it.value().get<std::string>();
    for (auto k = spec.begin(); k != spec.end(); ++k) {
      const std::string pat = "{" + k.key() + "}";
      const std::string val = k.value().is_string() ? k.value().get<std::string>() : k.value().dump();
      for (size_t at; (at = s.find(pat)) != std::string::npos;) s.replace(at, pat.size(), val);
    }
    it.value() = s;
  }
}

}  // namespace

absl::StatusOr<std::vector<SweepJobPreview>> ExpandSweepPreview(const json& sweep) {
  const json& base = sweep.at("base");
  const json& axes = sweep.at("axes");
  const int64_t max_jobs = sweep.value("max_jobs", 1000);
  std::vector<SweepJobPreview> jobs;
  if (sweep.value("mode", "grid") == "grid") {
    double total = 1;
    for (auto it = axes.begin(); it != axes.end(); ++it) total *= static_cast<double>(it.value().size());
    if (total > static_cast<double>(max_jobs)) {
      return absl::InvalidArgumentError(absl::StrCat("the grid has ", static_cast<int64_t>(total),
                                                     " jobs, more than max_jobs = ", max_jobs,
                                                     " (raise max_jobs or remove values)"));
    }
    std::vector<std::string> keys;
    for (auto it = axes.begin(); it != axes.end(); ++it) keys.push_back(it.key());
    std::vector<size_t> idx(keys.size(), 0);
    for (int64_t n = 0; n < static_cast<int64_t>(total); ++n) {
      SweepJobPreview job;
      job.index = static_cast<int>(n);
      job.params = json::object();
      for (size_t a = 0; a < keys.size(); ++a) job.params[keys[a]] = axes[keys[a]][idx[a]];
      job.spec = base;
      for (auto it = job.params.begin(); it != job.params.end(); ++it) job.spec[it.key()] = it.value();
      Substitute(job.spec);
      jobs.push_back(std::move(job));
      // Last axis fastest.
      for (size_t a = keys.size(); a-- > 0;) {
        if (++idx[a] < axes[keys[a]].size()) break;
        idx[a] = 0;
      }
    }
    return jobs;
  }
  const int64_t samples = sweep.value("samples", 1);
  if (samples > max_jobs) {
    return absl::InvalidArgumentError(
        absl::StrCat("samples = ", samples, " is more than max_jobs = ", max_jobs));
  }
  std::mt19937_64 rng(static_cast<uint64_t>(sweep.value("seed", 1)));
  for (int64_t n = 0; n < samples; ++n) {
    SweepJobPreview job;
    job.index = static_cast<int>(n);
    job.params = json::object();
    for (auto it = axes.begin(); it != axes.end(); ++it) {
      const json& v = it.value();
      if (v.is_array()) {
        job.params[it.key()] = v[std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng)];
        continue;
      }
      const std::string kind = v.begin().key();
      const json& a = v.begin().value();
      if (kind == "choice") {
        job.params[it.key()] = a[std::uniform_int_distribution<size_t>(0, a.size() - 1)(rng)];
      } else if (kind == "int_uniform") {
        job.params[it.key()] = std::uniform_int_distribution<int64_t>(a[0].get<int64_t>(), a[1].get<int64_t>())(rng);
      } else if (kind == "uniform") {
        job.params[it.key()] = std::uniform_real_distribution<double>(a[0].get<double>(), a[1].get<double>())(rng);
      } else {
        const double lo = std::log(a[0].get<double>()), hi = std::log(a[1].get<double>());
        job.params[it.key()] = std::exp(std::uniform_real_distribution<double>(lo, hi)(rng));
      }
    }
    job.spec = base;
    for (auto it = job.params.begin(); it != job.params.end(); ++it) job.spec[it.key()] = it.value();
    Substitute(job.spec);
    jobs.push_back(std::move(job));
  }
  return jobs;
}

}  // namespace caddie::cli
