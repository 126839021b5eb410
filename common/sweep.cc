#include "common/sweep.h"

#include <cmath>
#include <random>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace caddie {

using nlohmann::json;

namespace {

const std::set<std::string>& TopLevelKeys() {
  static const std::set<std::string> k = {"base", "axes", "variants", "mode", "samples", "seed",
                                          "max_jobs", "early_stopping"};
  return k;
}

// docs/contracts.md: "{key}" inside a string value of a job's spec is replaced by
// that job's value of trainer key `key` (e.g. data: "data/sp{vocab_size}").
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

SweepJob MakeJob(int index, json params, const json& base) {
  SweepJob job;
  job.index = index;
  job.spec = base;
  for (auto it = params.begin(); it != params.end(); ++it) job.spec[it.key()] = it.value();
  Substitute(job.spec);
  job.params = std::move(params);
  return job;
}

absl::Status CheckRange(const std::string& axis, const std::string& kind, const json& a) {
  if (!a.is_array() || a.size() != 2 || !a[0].is_number() || !a[1].is_number()) {
    return absl::InvalidArgumentError(
        absl::StrCat("axis '", axis, "': ", kind, " needs [lo, hi] numbers, got ", a.dump()));
  }
  if (kind == "int_uniform" && (!a[0].is_number_integer() || !a[1].is_number_integer())) {
    return absl::InvalidArgumentError(
        absl::StrCat("axis '", axis, "': int_uniform needs integer bounds, got ", a.dump()));
  }
  if (a[0].get<double>() > a[1].get<double>()) {
    return absl::InvalidArgumentError(
        absl::StrCat("axis '", axis, "': ", kind, " lower bound > upper bound in ", a.dump()));
  }
  if (kind == "log_uniform" && a[0].get<double>() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("axis '", axis, "': log_uniform needs lo > 0, got ", a.dump()));
  }
  return absl::OkStatus();
}

// Validates one random axis; returns its distribution kind ("list" for a plain list).
absl::StatusOr<std::string> RandomAxisKind(const std::string& axis, const json& v) {
  if (v.is_array()) {
    if (v.empty()) return absl::InvalidArgumentError(absl::StrCat("axis '", axis, "' has no values"));
    return std::string("list");
  }
  if (!v.is_object() || v.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("axis '", axis,
                     "' must be a list or one of {choice|uniform|log_uniform|int_uniform: ...}, got ",
                     v.dump()));
  }
  const std::string kind = v.begin().key();
  const json& a = v.begin().value();
  if (kind == "choice") {
    if (!a.is_array() || a.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("axis '", axis, "': choice needs a non-empty list"));
    }
    return kind;
  }
  if (kind == "uniform" || kind == "log_uniform" || kind == "int_uniform") {
    absl::Status s = CheckRange(axis, kind, a);
    if (!s.ok()) return s;
    return kind;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "axis '", axis, "': unknown distribution '", kind, "' (choice, uniform, log_uniform, int_uniform)"));
}

}  // namespace

absl::StatusOr<EarlyStoppingConfig> ParseEarlyStopping(const json& sweep) {
  EarlyStoppingConfig c;
  if (!sweep.is_object() || !sweep.contains("early_stopping") || sweep["early_stopping"].is_null()) return c;
  const json& e = sweep["early_stopping"];
  if (!e.is_object()) return absl::InvalidArgumentError("early_stopping must be an object");
  for (auto it = e.begin(); it != e.end(); ++it) {
    const std::string& k = it.key();
    const json& v = it.value();
    if (k == "type") {
      if (!v.is_string() || (v != "asha" && v != "median" && v != "none" && v != "")) {
        return absl::InvalidArgumentError(
            absl::StrCat("early_stopping.type must be asha or median, got ", v.dump()));
      }
      c.type = v.get<std::string>() == "none" ? "" : v.get<std::string>();
    } else if (k == "metric") {
      if (!v.is_string() || v != "val_bpb") {
        return absl::InvalidArgumentError(
            absl::StrCat("early_stopping.metric must be val_bpb, got ", v.dump()));
      }
      c.metric = v.get<std::string>();
    } else if (k == "grace_steps" || k == "reduction_factor" || k == "min_trials") {
      if (!v.is_number_integer()) {
        return absl::InvalidArgumentError(absl::StrCat("early_stopping.", k, " must be an integer, got ", v.dump()));
      }
      const int64_t x = v.get<int64_t>();
      if (k == "grace_steps") {
        if (x < 0) return absl::InvalidArgumentError(absl::StrCat("early_stopping.grace_steps must be >= 0, got ", x));
        c.grace_steps = x;
      } else if (k == "reduction_factor") {
        if (x < 2) {
          return absl::InvalidArgumentError(
              absl::StrCat("early_stopping.reduction_factor must be >= 2, got ", x));
        }
        c.reduction_factor = x;
      } else {
        if (x < 0) return absl::InvalidArgumentError(absl::StrCat("early_stopping.min_trials must be >= 0, got ", x));
        c.min_trials = x;
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown early_stopping key '", k, "' (type, metric, grace_steps, reduction_factor, min_trials)"));
    }
  }
  return c;
}

absl::StatusOr<ExpandedSweep> ExpandSweep(const json& sweep) {
  if (!sweep.is_object()) return absl::InvalidArgumentError("sweep JSON must be an object");
  for (auto it = sweep.begin(); it != sweep.end(); ++it) {
    if (!TopLevelKeys().count(it.key())) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown sweep key '", it.key(), "' (", absl::StrJoin(TopLevelKeys(), ", "), ")"));
    }
  }
  const json base = sweep.contains("base") ? sweep["base"] : json::object();
  if (!base.is_object()) return absl::InvalidArgumentError("sweep 'base' must be an object of trainer keys");
  const json axes = sweep.contains("axes") ? sweep["axes"] : json::object();
  if (!axes.is_object()) return absl::InvalidArgumentError("sweep 'axes' must be an object (axis name → values)");

  ExpandedSweep out;
  out.mode = "grid";
  if (sweep.contains("mode")) {
    if (!sweep["mode"].is_string() || (sweep["mode"] != "grid" && sweep["mode"] != "random")) {
      return absl::InvalidArgumentError(absl::StrCat("sweep mode must be grid or random, got ", sweep["mode"].dump()));
    }
    out.mode = sweep["mode"].get<std::string>();
  }
  int64_t max_jobs = kSweepDefaultMaxJobs;
  if (sweep.contains("max_jobs")) {
    if (!sweep["max_jobs"].is_number_integer() || sweep["max_jobs"].get<int64_t>() < 1) {
      return absl::InvalidArgumentError(absl::StrCat("max_jobs must be a positive integer, got ", sweep["max_jobs"].dump()));
    }
    max_jobs = sweep["max_jobs"].get<int64_t>();
    if (max_jobs > kSweepMaxJobsCeiling) {
      return absl::InvalidArgumentError(
          absl::StrCat("max_jobs = ", max_jobs, " is above the controller's ceiling of ", kSweepMaxJobsCeiling));
    }
  }
  auto es = ParseEarlyStopping(sweep);
  if (!es.ok()) return es.status();
  out.early_stopping = *es;

  // Variants: hand-picked configurations (e.g. baseline, 3x3 recurrence, QAT 4,
  // an SSM hybrid) that no single grid expresses; the grid runs under each.
  json variants = json::array({json::object()});
  if (sweep.contains("variants")) {
    const json& v = sweep["variants"];
    if (!v.is_array() || v.empty()) {
      return absl::InvalidArgumentError("sweep 'variants' must be a non-empty list of objects of trainer keys");
    }
    for (size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_object()) {
        return absl::InvalidArgumentError(
            absl::StrCat("variants[", i, "] must be an object of trainer keys, got ", v[i].dump()));
      }
      for (auto it = v[i].begin(); it != v[i].end(); ++it) {
        if (axes.contains(it.key())) {
          return absl::InvalidArgumentError(absl::StrCat("variants[", i, "] sets '", it.key(),
                                                         "', which is also an axis (set it in one place)"));
        }
      }
    }
    if (out.mode != "grid") return absl::InvalidArgumentError("'variants' only applies to mode: grid");
    variants = v;
  }

  if (out.mode == "grid") {
    if (sweep.contains("samples")) {
      return absl::InvalidArgumentError("'samples' only applies to mode: random");
    }
    double total = static_cast<double>(variants.size());
    std::vector<std::string> keys;
    for (auto it = axes.begin(); it != axes.end(); ++it) {
      if (!it.value().is_array() || it.value().empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("grid axis '", it.key(), "' must be a non-empty list of values, got ", it.value().dump()));
      }
      total *= static_cast<double>(it.value().size());
      keys.push_back(it.key());
    }
    if (total > static_cast<double>(max_jobs)) {
      return absl::InvalidArgumentError(absl::StrCat("the grid has ", static_cast<int64_t>(total),
                                                     " jobs, more than max_jobs = ", max_jobs,
                                                     " (raise max_jobs or remove values)"));
    }
    std::vector<size_t> idx(keys.size(), 0);
    size_t variant = 0;
    for (int64_t n = 0; n < static_cast<int64_t>(total); ++n) {
      json params = variants[variant];
      for (size_t a = 0; a < keys.size(); ++a) params[keys[a]] = axes[keys[a]][idx[a]];
      out.jobs.push_back(MakeJob(static_cast<int>(n), std::move(params), base));
      bool carried = true;  // last axis fastest; variants slowest
      for (size_t a = keys.size(); a-- > 0;) {
        if (++idx[a] < axes[keys[a]].size()) {
          carried = false;
          break;
        }
        idx[a] = 0;
      }
      if (carried) ++variant;
    }
    return out;
  }

  int64_t samples = 1;
  if (sweep.contains("samples")) {
    if (!sweep["samples"].is_number_integer() || sweep["samples"].get<int64_t>() < 1) {
      return absl::InvalidArgumentError(absl::StrCat("samples must be a positive integer, got ", sweep["samples"].dump()));
    }
    samples = sweep["samples"].get<int64_t>();
  }
  if (samples > max_jobs) {
    return absl::InvalidArgumentError(absl::StrCat("samples = ", samples, " is more than max_jobs = ", max_jobs));
  }
  uint64_t seed = 1;
  if (sweep.contains("seed")) {
    if (!sweep["seed"].is_number_integer()) {
      return absl::InvalidArgumentError(absl::StrCat("seed must be an integer, got ", sweep["seed"].dump()));
    }
    seed = static_cast<uint64_t>(sweep["seed"].get<int64_t>());
  }
  std::vector<std::pair<std::string, std::string>> kinds;
  for (auto it = axes.begin(); it != axes.end(); ++it) {
    auto kind = RandomAxisKind(it.key(), it.value());
    if (!kind.ok()) return kind.status();
    kinds.emplace_back(it.key(), *kind);
  }
  std::mt19937_64 rng(seed);
  for (int64_t n = 0; n < samples; ++n) {
    json params = json::object();
    for (const auto& [name, kind] : kinds) {
      const json& v = axes[name];
      if (kind == "list") {
        params[name] = v[std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng)];
        continue;
      }
      const json& a = v.begin().value();
      if (kind == "choice") {
        params[name] = a[std::uniform_int_distribution<size_t>(0, a.size() - 1)(rng)];
      } else if (kind == "int_uniform") {
        params[name] = std::uniform_int_distribution<int64_t>(a[0].get<int64_t>(), a[1].get<int64_t>())(rng);
      } else if (kind == "uniform") {
        params[name] = std::uniform_real_distribution<double>(a[0].get<double>(), a[1].get<double>())(rng);
      } else {  // log_uniform
        const double lo = std::log(a[0].get<double>()), hi = std::log(a[1].get<double>());
        params[name] = std::exp(std::uniform_real_distribution<double>(lo, hi)(rng));
      }
    }
    out.jobs.push_back(MakeJob(static_cast<int>(n), std::move(params), base));
  }
  return out;
}

absl::StatusOr<ExpandedSweep> ExpandSweepText(const std::string& sweep_json) {
  json j = json::parse(sweep_json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("sweep_json is not valid JSON");
  return ExpandSweep(j);
}

}  // namespace caddie
