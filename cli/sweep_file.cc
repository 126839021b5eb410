#include "cli/sweep_file.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <optional>
#include <set>
#include <sstream>

#include "common/core/train_spec.h"
#include "common/utf8.h"

namespace caddie::cli {
namespace {

using nlohmann::json;

// Allowed range of a numeric sweep-file key.
struct Range {
  double lo;
  double hi;
  bool integer;
};

struct KeyDoc {
  std::string name;
  std::string doc;
};

const std::vector<KeyDoc>& TopKeys() {
  static const std::vector<KeyDoc> keys = {
      {"name", "sweep name (default: the file name)"},
      {"description", "free text"},
      {"base", "trainer spec every job starts from (keys of caddie-train)"},
      {"axes", "trainer keys to vary: a list per key (grid), or a distribution (random)"},
      {"variants", "grid mode: hand-picked configurations (mappings of trainer keys); the grid runs under each"},
      {"mode", "grid | random"},
      {"samples", "random mode: number of jobs to draw"},
      {"seed", "random mode: seed of the draw"},
      {"max_jobs", "refuse sweeps that expand to more jobs than this (default 1000)"},
      {"gpus", "GPUs per job, all on one worker (0 = CPU job)"},
      {"priority", "higher runs first; FIFO within a priority"},
      {"max_attempts", "attempts per job before it is failed (default 3)"},
      {"budget", "train_seconds, eval_seconds, artifact_limit_bytes, grace_seconds"},
      {"early_stopping", "type (asha | median), metric, grace_steps, reduction_factor"},
  };
  return keys;
}

const std::vector<std::string>& Names(const std::vector<KeyDoc>& docs) {
  static std::map<const void*, std::vector<std::string>> cache;
  auto& v = cache[&docs];
  if (v.empty()) {
    for (const auto& d : docs) v.push_back(d.name);
  }
  return v;
}

const std::map<std::string, Range>& TopRanges() {
  static const std::map<std::string, Range> r = {
      {"samples", {1, 100000, true}},     {"seed", {0, 2147483647, true}},
      {"max_jobs", {1, static_cast<double>(kSweepMaxJobsCeiling), true}}, {"gpus", {0, 64, true}},
      {"priority", {-1000, 1000, true}},  {"max_attempts", {1, 100, true}},
  };
  return r;
}

const std::vector<std::string>& BudgetKeys() {
  static const std::vector<std::string> k = {"train_seconds", "eval_seconds",
                                             "artifact_limit_bytes", "grace_seconds"};
  return k;
}

const std::map<std::string, Range>& BudgetRanges() {
  static const std::map<std::string, Range> r = {
      {"train_seconds", {1, 86400, false}},
      {"eval_seconds", {1, 86400, false}},
      {"artifact_limit_bytes", {1, 16000000, true}},  // Parameter Golf's limit is the ceiling
      {"grace_seconds", {0, 3600, false}},
  };
  return r;
}

const std::vector<std::string>& EarlyStoppingKeys() {
  static const std::vector<std::string> k = {"type", "metric", "grace_steps", "reduction_factor", "min_trials"};
  return k;
}

const std::vector<std::string>& DistributionKinds() {
  static const std::vector<std::string> k = {"uniform", "log_uniform", "int_uniform", "choice"};
  return k;
}

std::string FormatNumber(double v) {
  std::ostringstream os;
  if (v == std::floor(v) && std::abs(v) < 1e15) {
    os << static_cast<long long>(v);
  } else {
    os << v;
  }
  return os.str();
}

std::string RangeText(const Range& r) {
  return "[" + FormatNumber(r.lo) + ", " + FormatNumber(r.hi) + "]" + (r.integer ? " (integer)" : "");
}

// yaml-cpp passes bytes that are not well-formed UTF-8 through, and nlohmann::json
// throws on them when the sweep JSON is written (FirstInvalidUtf8, common/utf8.h).
// `s` with every byte FirstInvalidUtf8 rejects replaced by '?'.
std::string ReplaceInvalidUtf8(const std::string& s) { return caddie::ReplaceInvalidUtf8(s, "?"); }

// YAML → JSON with positions. Plain scalars get YAML 1.2 core-schema types;
// quoted scalars stay strings.
class Converter {
 public:
  explicit Converter(SweepCheck& check) : check_(check) {}

  std::map<std::string, SourcePos> positions;

  json Convert(const YAML::Node& node, const std::string& path) {
    positions[path] = Pos(node);
    switch (node.Type()) {
      case YAML::NodeType::Null:
      case YAML::NodeType::Undefined:
        return nullptr;
      case YAML::NodeType::Scalar:
        return Scalar(node);
      case YAML::NodeType::Sequence: {
        json arr = json::array();
        for (size_t i = 0; i < node.size(); ++i) {
          arr.push_back(Convert(node[i], path + "[" + std::to_string(i) + "]"));
        }
        return arr;
      }
      case YAML::NodeType::Map: {
        json obj = json::object();
        for (auto it = node.begin(); it != node.end(); ++it) {
          std::string key = it->first.IsScalar() ? Utf8(it->first.Scalar(), it->first) : "?";
          const std::string child = path.empty() ? key : path + "." + key;
          if (obj.contains(key)) {
            check_.errors.push_back({Pos(it->first), child,
                                     "duplicate key \"" + key + "\" (first set on line " +
                                         std::to_string(positions[child + "#key"].line) + ")"});
            continue;
          }
          positions[child + "#key"] = Pos(it->first);
          obj[key] = Convert(it->second, child);
        }
        return obj;
      }
    }
    return nullptr;
  }

  static SourcePos Pos(const YAML::Node& n) {
    const YAML::Mark m = n.Mark();
    if (m.line < 0) return {};
    return {m.line + 1, m.column + 1};
  }

 private:
  // yaml-cpp can hand back bytes that are not UTF-8 (from a NUL or an escape in the text);
  // nlohmann::json throws writing them, so they are an error here, at the node's position.
  std::string Utf8(const std::string& s, const YAML::Node& node) {
    if (FirstInvalidUtf8(s) == std::string::npos) return s;
    check_.errors.push_back({Pos(node), "", "not valid UTF-8 after YAML decoding: \"" + ReplaceInvalidUtf8(s) +
                                                "\" (bytes shown as ?)"});
    return ReplaceInvalidUtf8(s);
  }

  json Scalar(const YAML::Node& node) {
    const std::string s = Utf8(node.Scalar(), node);
    if (node.Tag() != "?") return s;  // quoted or explicitly tagged: a string
    if (s == "true" || s == "True" || s == "TRUE") return true;
    if (s == "false" || s == "False" || s == "FALSE") return false;
    if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return nullptr;
    // Integers (decimal, optional sign, '_' not allowed in YAML 1.2).
    {
      size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
      if (i < s.size() && std::all_of(s.begin() + i, s.end(), ::isdigit)) {
        try {
          return static_cast<int64_t>(std::stoll(s));
        } catch (const std::exception&) {
          // too large for int64: fall through to a float
        }
      }
    }
    // Floats: 0.5, 1e-3, -2.5E+4, .5
    {
      const char* b = s.c_str();
      char* e = nullptr;
      const double d = std::strtod(b, &e);
      const bool has_digit = std::any_of(s.begin(), s.end(), ::isdigit);
      if (e == b + s.size() && has_digit && s.find_first_of("xXpP") == std::string::npos &&
          std::isfinite(d)) {
        return d;
      }
    }
    return s;
  }

  SweepCheck& check_;
};

// Collects issues with positions. Keys are dotted paths into the sweep file.
class Checker {
 public:
  Checker(SweepCheck& check, const std::map<std::string, SourcePos>& pos)
      : check_(check), pos_(pos) {}

  SourcePos At(const std::string& path, bool key = false) const {
    auto it = pos_.find(key ? path + "#key" : path);
    if (it == pos_.end() && key) it = pos_.find(path);
    return it == pos_.end() ? SourcePos{} : it->second;
  }

  void Error(const std::string& path, const std::string& msg, bool at_key = false) {
    check_.errors.push_back({At(path, at_key), path, msg});
  }
  void Warn(const std::string& path, const std::string& msg) {
    check_.warnings.push_back({At(path), path, msg});
  }

  void UnknownKey(const std::string& parent, const std::string& key,
                  const std::vector<std::string>& valid, const std::string& what) {
    const std::string path = parent.empty() ? key : parent + "." + key;
    std::string msg = "unknown " + what + " \"" + key + "\"";
    const std::string near = ClosestKey(key, valid);
    if (!near.empty()) {
      msg += " (did you mean \"" + near + "\"?)";
    } else {
      std::string all;
      for (size_t i = 0; i < valid.size() && i < 16; ++i) all += (i ? ", " : "") + valid[i];
      msg += "; valid keys: " + all + (valid.size() > 16 ? ", ..." : "");
    }
    Error(path, msg, /*at_key=*/true);
  }

  // Checks a numeric key against its range; returns the value when it is valid.
  std::optional<double> Number(const std::string& path, const json& v, const Range& r) {
    const std::string leaf = path.substr(path.find_last_of('.') + 1);
    if (!v.is_number()) {
      Error(path, "must be " + std::string(r.integer ? "an integer" : "a number") + " in " +
                      RangeText(r) + ", got " + v.dump());
      return std::nullopt;
    }
    const double d = v.get<double>();
    if (r.integer && d != std::floor(d)) {
      Error(path, leaf + " = " + v.dump() + " must be an integer in " + RangeText(r));
      return std::nullopt;
    }
    if (!(d >= r.lo && d <= r.hi)) {
      Error(path, leaf + " = " + v.dump() + " is out of range: allowed " + RangeText(r));
      return std::nullopt;
    }
    return d;
  }

  SweepCheck& check_;
  const std::map<std::string, SourcePos>& pos_;
};

bool IsKeyLevelError(const std::string& msg) {
  return msg.rfind("spec key \"", 0) == 0 || msg.rfind("unknown spec key", 0) == 0;
}

// Trainer keys a message names, in the order they appear in it.
std::vector<std::string> KeysNamed(const std::string& msg) {
  std::vector<std::pair<size_t, std::string>> found;
  for (const std::string& k : TrainSpecKeys()) {
    size_t at = 0;
    while ((at = msg.find(k, at)) != std::string::npos) {
      const bool left_ok = at == 0 || !(std::isalnum(static_cast<unsigned char>(msg[at - 1])) || msg[at - 1] == '_');
      const size_t end = at + k.size();
      const bool right_ok = end >= msg.size() || !(std::isalnum(static_cast<unsigned char>(msg[end])) || msg[end] == '_');
      if (left_ok && right_ok) {
        found.emplace_back(at, k);
        break;
      }
      at = end;
    }
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& [at, k] : found) out.push_back(k);
  return out;
}

// Rules of the CLI beyond the trainer's own ranges: checked per value.
std::optional<std::string> ExtraValueRule(const std::string& key, const json& v) {
  if (key == "vocab_size" && v.is_number() && v.get<double>() < 256) {
    return "vocab_size = " + v.dump() +
           " is out of range: allowed [256, 65536] (caddie data builds byte-fallback "
           "SentencePiece tokenizers, which need at least 256 pieces)";
  }
  return std::nullopt;
}

// Checks one trainer key/value alone (type, range, choices, format).
void CheckTrainValue(Checker& c, const std::string& path, const std::string& key, const json& v) {
  json one = json::object();
  one[key] = v;
  auto r = ParseTrainSpec(one);
  if (!r.ok() && IsKeyLevelError(r.status().message())) {
    // An unknown key points at the key, a bad value at the value.
    c.Error(path, r.status().message(), r.status().message().rfind("unknown", 0) == 0);
    return;
  }
  if (auto extra = ExtraValueRule(key, v)) c.Error(path, *extra);
}

std::string ParamsText(const json& params) {
  std::string s;
  for (auto it = params.begin(); it != params.end(); ++it) {
    if (!s.empty()) s += ", ";
    s += it.key() + "=" + (it.value().is_string() ? it.value().get<std::string>() : it.value().dump());
  }
  return s.empty() ? "base" : s;
}

}  // namespace

const std::vector<std::pair<std::string, std::string>>& SweepFileKeys() {
  static const std::vector<std::pair<std::string, std::string>> keys = [] {
    std::vector<std::pair<std::string, std::string>> v;
    for (const auto& k : TopKeys()) v.emplace_back(k.name, k.doc);
    return v;
  }();
  return keys;
}

std::string ClosestKey(const std::string& word, const std::vector<std::string>& candidates) {
  auto dist = [](const std::string& a, const std::string& b) {
    std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
      cur[0] = i;
      for (size_t j = 1; j <= b.size(); ++j) {
        cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      }
      std::swap(prev, cur);
    }
    return prev[b.size()];
  };
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const auto& c : candidates) {
    const size_t d = dist(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  // A candidate that contains the word (or the reverse) is close whatever its length.
  const bool contains = !best.empty() && !word.empty() &&
                        (best.find(word) != std::string::npos || word.find(best) != std::string::npos);
  if (best.empty() || (!contains && best_d > std::max<size_t>(2, word.size() / 2))) return "";
  return best;
}

SweepCheck CheckSweepText(const std::string& yaml_text, const std::string& path) {
  SweepCheck check;
  check.path = path;
  if (const size_t bad = FirstInvalidUtf8(yaml_text); bad != std::string::npos) {
    const size_t line_start = yaml_text.rfind('\n', bad == 0 ? 0 : bad - 1);
    const int line = 1 + static_cast<int>(std::count(yaml_text.begin(), yaml_text.begin() + bad, '\n'));
    const int column = 1 + static_cast<int>(line_start == std::string::npos || bad == 0 ? bad : bad - line_start - 1);
    char byte[8];
    std::snprintf(byte, sizeof byte, "0x%02X", static_cast<unsigned char>(yaml_text[bad]));
    check.errors.push_back({{line, column}, "", std::string("not valid UTF-8: byte ") + byte +
                                                    " does not start a well-formed character (save the file as UTF-8)"});
    return check;
  }
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    check.errors.push_back({{e.mark.line + 1, e.mark.column + 1}, "", "YAML syntax error: " + e.msg});
    return check;
  } catch (const YAML::Exception& e) {
    check.errors.push_back({{e.mark.line + 1, e.mark.column + 1}, "", std::string("YAML error: ") + e.msg});
    return check;
  }
  if (!root.IsMap()) {
    check.errors.push_back({Converter::Pos(root), "",
                            "a sweep file is a mapping with keys base, axes, mode, budget, ...; got " +
                                std::string(root.IsNull() ? "an empty document" : "something else")});
    return check;
  }
  Converter conv(check);
  const json doc = conv.Convert(root, "");
  Checker c(check, conv.positions);

  // --- top-level keys ---
  std::string name, mode = "grid";
  json base = json::object(), axes = json::object(), variants = json::array();
  std::optional<json> early_stopping;
  int64_t samples = 0, seed = 1, max_jobs = kSweepDefaultMaxJobs;
  bool have_samples = false;
  v1::SweepSpec& spec = check.spec;
  spec.set_max_attempts(3);
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    const std::string& k = it.key();
    const json& v = it.value();
    if (k == "name" || k == "description") {
      if (!v.is_string()) {
        c.Error(k, "must be a string, got " + v.dump());
      } else if (k == "name") {
        name = v.get<std::string>();
        if (name.empty() || name.size() > 128) c.Error(k, "must be 1 to 128 characters");
      }
    } else if (k == "base") {
      if (v.is_object()) {
        base = v;
      } else if (!v.is_null()) {
        c.Error(k, "must be a mapping of trainer keys (e.g. num_layers: 9), got " + v.dump());
      }
    } else if (k == "axes") {
      if (v.is_object()) {
        axes = v;
      } else if (!v.is_null()) {
        c.Error(k, "must be a mapping from trainer key to a list of values (grid) or a distribution, got " +
                       v.dump());
      }
    } else if (k == "variants") {
      if (!v.is_array() || v.empty()) {
        c.Error(k, "must be a non-empty list of mappings of trainer keys (e.g. - {unique_blocks: 3, loops: 3}), got " +
                       v.dump());
        continue;
      }
      for (size_t i = 0; i < v.size(); ++i) {
        if (!v[i].is_object()) {
          c.Error(k + "[" + std::to_string(i) + "]", "must be a mapping of trainer keys, got " + v[i].dump());
        }
      }
      variants = v;
    } else if (k == "mode") {
      if (!v.is_string() || (v != "grid" && v != "random")) {
        c.Error(k, "mode = " + v.dump() + " is not one of grid | random");
      } else {
        mode = v.get<std::string>();
      }
    } else if (TopRanges().count(k)) {
      if (auto d = c.Number(k, v, TopRanges().at(k))) {
        const int64_t i = static_cast<int64_t>(*d);
        if (k == "samples") {
          samples = i;
          have_samples = true;
        } else if (k == "seed") {
          seed = i;
        } else if (k == "max_jobs") {
          max_jobs = i;
        } else if (k == "gpus") {
          spec.set_gpus(static_cast<int32_t>(i));
        } else if (k == "priority") {
          spec.set_priority(static_cast<int32_t>(i));
        } else if (k == "max_attempts") {
          spec.set_max_attempts(static_cast<int32_t>(i));
        }
      }
    } else if (k == "budget") {
      if (!v.is_object()) {
        c.Error(k, "must be a mapping with " + std::string("train_seconds, eval_seconds, artifact_limit_bytes, grace_seconds"));
        continue;
      }
      for (auto b = v.begin(); b != v.end(); ++b) {
        const std::string p = "budget." + b.key();
        if (!BudgetRanges().count(b.key())) {
          c.UnknownKey("budget", b.key(), BudgetKeys(), "budget key");
          continue;
        }
        auto d = c.Number(p, b.value(), BudgetRanges().at(b.key()));
        if (!d) continue;
        v1::Budget* bud = spec.mutable_budget();
        if (b.key() == "train_seconds") bud->set_train_seconds(*d);
        if (b.key() == "eval_seconds") bud->set_eval_seconds(*d);
        if (b.key() == "artifact_limit_bytes") bud->set_artifact_limit_bytes(static_cast<int64_t>(*d));
        if (b.key() == "grace_seconds") bud->set_grace_seconds(*d);
      }
    } else if (k == "early_stopping") {
      if (v.is_null()) continue;
      if (!v.is_object()) {
        c.Error(k, "must be a mapping with type (asha | median), metric, grace_steps, reduction_factor");
        continue;
      }
      json es = json::object();
      for (auto e = v.begin(); e != v.end(); ++e) {
        const std::string p = "early_stopping." + e.key();
        if (e.key() == "type") {
          if (e.value() != "asha" && e.value() != "median") {
            c.Error(p, "type = " + e.value().dump() + " is not one of asha | median");
          }
        } else if (e.key() == "metric") {
          if (e.value() != "val_bpb" && e.value() != "val_loss") {
            c.Error(p, "metric = " + e.value().dump() + " is not one of val_bpb | val_loss");
          }
        } else if (e.key() == "grace_steps") {
          c.Number(p, e.value(), {0, 1e9, true});
        } else if (e.key() == "reduction_factor") {
          c.Number(p, e.value(), {2, 16, true});
        } else if (e.key() == "min_trials") {
          c.Number(p, e.value(), {0, 100000, true});
        } else {
          c.UnknownKey("early_stopping", e.key(), EarlyStoppingKeys(), "early_stopping key");
          continue;
        }
        es[e.key()] = e.value();
      }
      if (!es.contains("type")) {
        c.Error(k, "needs type: asha | median", /*at_key=*/true);
      }
      if (!es.contains("metric")) es["metric"] = "val_bpb";
      early_stopping = es;
    } else {
      c.UnknownKey("", k, Names(TopKeys()), "sweep key");
    }
  }
  if (name.empty()) {
    // The file name without directories or extension.
    std::string stem = path.substr(path.find_last_of('/') + 1);
    stem = stem.substr(0, stem.find('.'));
    name = stem.empty() ? "sweep" : stem;
  }
  spec.set_name(name);
  if (mode == "random" && !have_samples) c.Error("mode", "mode: random needs samples: N (jobs to draw)");
  if (mode == "grid" && have_samples) c.Error("samples", "samples applies to mode: random only (grid runs every combination)", true);

  // --- base: each trainer key alone ---
  for (auto it = base.begin(); it != base.end(); ++it) {
    CheckTrainValue(c, "base." + it.key(), it.key(), it.value());
  }

  // --- variants: each trainer key alone, and not also an axis ---
  json variants_out = json::array();
  for (size_t i = 0; i < variants.size(); ++i) {
    if (!variants[i].is_object()) continue;  // reported above
    const std::string vp = "variants[" + std::to_string(i) + "]";
    json one = json::object();
    for (auto it = variants[i].begin(); it != variants[i].end(); ++it) {
      const std::string p = vp + "." + it.key();
      const auto& keys = TrainSpecKeys();
      if (std::find(keys.begin(), keys.end(), it.key()) == keys.end()) {
        c.UnknownKey(vp, it.key(), keys, "trainer key");
        continue;
      }
      if (axes.contains(it.key())) {
        c.Error(p, "is also an axis: set " + it.key() + " in the variants or in axes, not both");
        continue;
      }
      CheckTrainValue(c, p, it.key(), it.value());
      one[it.key()] = it.value();
    }
    variants_out.push_back(one);
  }
  if (!variants_out.empty() && mode != "grid") c.Error("variants", "variants apply to mode: grid only", true);

  // --- axes ---
  json axes_out = json::object();
  for (auto it = axes.begin(); it != axes.end(); ++it) {
    const std::string& k = it.key();
    const std::string p = "axes." + k;
    const json& v = it.value();
    const auto& keys = TrainSpecKeys();
    if (std::find(keys.begin(), keys.end(), k) == keys.end()) {
      c.UnknownKey("axes", k, keys, "trainer key");
      continue;
    }
    if (v.is_array()) {
      if (v.empty()) {
        c.Error(p, "has no values");
        continue;
      }
      std::set<std::string> seen;
      for (size_t i = 0; i < v.size(); ++i) {
        CheckTrainValue(c, p + "[" + std::to_string(i) + "]", k, v[i]);
        if (!seen.insert(v[i].dump()).second) c.Warn(p + "[" + std::to_string(i) + "]", "repeats value " + v[i].dump());
      }
      if (base.contains(k)) c.Warn("base." + k, "is overridden by axis " + k);
      axes_out[k] = v;
    } else if (v.is_object()) {
      if (mode != "random") {
        c.Error(p, "a distribution needs mode: random (grid axes are lists of values)");
        continue;
      }
      if (v.size() != 1 || std::find(DistributionKinds().begin(), DistributionKinds().end(),
                                     v.begin().key()) == DistributionKinds().end()) {
        const std::string kind = v.empty() ? "" : v.begin().key();
        const std::string near = ClosestKey(kind, DistributionKinds());
        c.Error(p, "a distribution is one of {uniform: [lo, hi]}, {log_uniform: [lo, hi]}, "
                   "{int_uniform: [lo, hi]}, {choice: [values]}" +
                       (near.empty() || near == kind ? std::string() : " (did you mean \"" + near + "\"?)"));
        continue;
      }
      const std::string kind = v.begin().key();
      const json& args = v.begin().value();
      const std::string ap = p + "." + kind;
      if (kind == "choice") {
        if (!args.is_array() || args.empty()) {
          c.Error(ap, "must be a non-empty list of values");
          continue;
        }
        for (size_t i = 0; i < args.size(); ++i) CheckTrainValue(c, ap + "[" + std::to_string(i) + "]", k, args[i]);
      } else {
        if (!args.is_array() || args.size() != 2 || !args[0].is_number() || !args[1].is_number()) {
          c.Error(ap, "must be [lo, hi] (two numbers), got " + args.dump());
          continue;
        }
        const double lo = args[0].get<double>(), hi = args[1].get<double>();
        if (!(lo < hi)) c.Error(ap, "needs lo < hi, got " + args.dump());
        if (kind == "log_uniform" && lo <= 0) c.Error(ap, "log_uniform needs lo > 0, got " + args.dump());
        if (kind == "int_uniform" && (lo != std::floor(lo) || hi != std::floor(hi))) {
          c.Error(ap, "int_uniform needs integer bounds, got " + args.dump());
        }
        for (size_t i = 0; i < 2; ++i) CheckTrainValue(c, ap + "[" + std::to_string(i) + "]", k, args[i]);
      }
      axes_out[k] = v;
    } else {
      c.Error(p, "must be a list of values (grid) or a distribution such as {log_uniform: [0.01, 0.1]}, got " +
                     v.dump());
    }
  }
  if (axes.empty() && variants.empty() && mode == "grid") c.Warn("axes", "no axes: the sweep is a single job");

  // Budget vs the spec's own clock: the worker kills a run past the budget.
  const double train_budget = spec.budget().train_seconds() > 0 ? spec.budget().train_seconds() : 600.0;

  // --- sweep JSON (docs/contracts.md) ---
  json sj = json::object();
  sj["base"] = base;
  sj["axes"] = axes_out;
  if (!variants_out.empty()) sj["variants"] = variants_out;
  sj["mode"] = mode;
  if (mode == "random") sj["samples"] = samples;
  sj["seed"] = seed;
  sj["max_jobs"] = max_jobs;
  if (early_stopping) sj["early_stopping"] = *early_stopping;
  check.sweep_json = sj;
  spec.set_sweep_json(sj.dump());
  // Expansion runs even when errors were found above, so that per-job errors
  // are reported in the same pass; values already reported are left out.

  // --- expansion and each job's whole spec ---
  // common/sweep.h: the controller's own expansion, so the preview is what will run.
  std::vector<SweepJobPreview> expanded;
  if (auto e = ExpandSweep(sj); e.ok()) {
    expanded = std::move(e->jobs);
  } else if (check.errors.empty()) {
    // Structural problems are reported above with positions; this is the rest (max_jobs).
    c.Error(mode == "grid" ? "axes" : "samples", std::string(e.status().message()), true);
  }
  auto* jobs = &expanded;
  struct Group {
    std::string path;
    std::vector<int> jobs;
    std::string first_params;
  };
  std::map<std::string, Group> by_message;
  std::vector<std::string> order;
  for (const SweepJobPreview& job : *jobs) {
    json merged = job.spec;
    for (auto it = job.spec.begin(); it != job.spec.end(); ++it) {
      json one = json::object();
      one[it.key()] = it.value();
      auto alone = ParseTrainSpec(one);
      if ((!alone.ok() && IsKeyLevelError(alone.status().message())) || ExtraValueRule(it.key(), it.value())) {
        merged.erase(it.key());
      }
    }
    auto r = ParseTrainSpec(merged);
    std::string msg;
    std::vector<std::string> named;
    if (!r.ok()) {
      if (IsKeyLevelError(r.status().message())) continue;  // reported per value above
      msg = r.status().message();
      named = KeysNamed(msg);
    } else if (merged.contains("max_wallclock_seconds") && r->max_wallclock_seconds > train_budget) {
      msg = "max_wallclock_seconds = " + FormatNumber(r->max_wallclock_seconds) +
            " exceeds budget.train_seconds = " + FormatNumber(train_budget) +
            " (the worker stops runs at the budget)";
      named = {"max_wallclock_seconds"};
    } else {
      continue;
    }
    // Point at the first named key this job sets through an axis, else in base.
    std::string where = "base";
    bool found = false;
    const size_t per_variant = variants_out.empty() ? 0 : jobs->size() / variants_out.size();
    for (const std::string& k : named) {
      if (per_variant > 0 && !axes_out.contains(k) && job.params.contains(k)) {
        where = "variants[" + std::to_string(job.index / per_variant) + "]." + k;
        found = true;
        break;
      }
      if (job.params.contains(k)) {
        where = "axes." + k;
        if (axes_out[k].is_array()) {
          for (size_t i = 0; i < axes_out[k].size(); ++i) {
            if (axes_out[k][i] == job.params[k]) where += "[" + std::to_string(i) + "]";
            if (axes_out[k][i] == job.params[k]) break;
          }
        }
        found = true;
        break;
      }
    }
    if (!found) {
      for (const std::string& k : named) {
        if (base.contains(k)) {
          where = "base." + k;
          break;
        }
      }
    }
    const std::string gk = where + "\n" + msg;
    if (!by_message.count(gk)) order.push_back(gk);
    Group& g = by_message[gk];
    g.path = where;
    if (g.jobs.empty()) g.first_params = ParamsText(job.params);
    g.jobs.push_back(job.index);
  }
  for (const std::string& gk : order) {
    const Group& g = by_message[gk];
    const std::string msg = gk.substr(gk.find('\n') + 1);
    std::string which = "job " + std::to_string(g.jobs[0]) + " (" + g.first_params + ")";
    if (g.jobs.size() > 1) which = std::to_string(g.jobs.size()) + " jobs, e.g. " + which;
    c.Error(g.path, msg + " — in " + which);
  }
  if (check.errors.empty()) check.jobs = std::move(*jobs);
  // In file order, as a compiler would list them.
  auto by_pos = [](const SweepIssue& a, const SweepIssue& b) {
    return std::make_pair(a.pos.line, a.pos.column) < std::make_pair(b.pos.line, b.pos.column);
  };
  std::stable_sort(check.errors.begin(), check.errors.end(), by_pos);
  std::stable_sort(check.warnings.begin(), check.warnings.end(), by_pos);
  if (base.find("data") == base.end()) {
    c.Warn("base", "base.data is not set: jobs need a data directory made by `caddie data` (e.g. data/sp1024)");
  }
  return check;
}

SweepCheck CheckSweepFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    SweepCheck check;
    check.path = path;
    check.errors.push_back({{}, "", "cannot read the sweep file: " + std::string(std::strerror(errno))});
    return check;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return CheckSweepText(ss.str(), path);
}

std::string FormatIssues(const SweepCheck& check, bool color) {
  const char* red = color ? "\033[1;31m" : "";
  const char* yellow = color ? "\033[1;33m" : "";
  const char* bold = color ? "\033[1m" : "";
  const char* reset = color ? "\033[0m" : "";
  std::string out;
  auto emit = [&](const SweepIssue& i, const char* kind, const char* col) {
    std::string where = check.path;
    if (i.pos.line > 0) where += ":" + std::to_string(i.pos.line) + ":" + std::to_string(i.pos.column);
    out += std::string(bold) + where + ":" + reset + " " + col + kind + ":" + reset + " ";
    if (!i.key.empty()) out += i.key + ": ";
    out += i.message + "\n";
  };
  for (const auto& i : check.errors) emit(i, "error", red);
  for (const auto& i : check.warnings) emit(i, "warning", yellow);
  return out;
}

}  // namespace caddie::cli
