#include "common/core/train_spec.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <variant>

namespace caddie {
namespace {

using Member = std::variant<int64_t TrainSpec::*, double TrainSpec::*, bool TrainSpec::*,
                            std::string TrainSpec::*>;

// One key of the spec: its member, and the allowed range (numbers) or choices (strings).
struct Field {
  const char* name;
  Member member;
  double lo = 0;
  double hi = 0;
  std::vector<std::string> choices = {};  // empty = any string
};

constexpr double kMaxInt = 9.0e15;  // exactly representable in a double

const std::vector<Field>& Fields() {
  static const std::vector<Field> fields = {
      {"data", &TrainSpec::data},
      {"run_dir", &TrainSpec::run_dir},
      {"device", &TrainSpec::device, 0, 0, {"auto", "cpu", "cuda"}},
      {"seed", &TrainSpec::seed, 0, 2147483647},
      {"vocab_size", &TrainSpec::vocab_size, 2, 65536},
      {"num_layers", &TrainSpec::num_layers, 1, 256},
      {"model_dim", &TrainSpec::model_dim, 2, 65536},
      {"num_heads", &TrainSpec::num_heads, 1, 1024},
      {"num_kv_heads", &TrainSpec::num_kv_heads, 1, 1024},
      {"mlp_mult", &TrainSpec::mlp_mult, 1, 64},
      {"tie_embeddings", &TrainSpec::tie_embeddings},
      {"tied_embed_init_std", &TrainSpec::tied_embed_init_std, 0, 10},
      {"rope_base", &TrainSpec::rope_base, 1, 1e12},
      {"qk_gain_init", &TrainSpec::qk_gain_init, 0, 1000},
      {"logit_softcap", &TrainSpec::logit_softcap, 1e-6, 1e6},
      {"seq_len", &TrainSpec::seq_len, 2, 1048576},
      {"train_batch_tokens", &TrainSpec::train_batch_tokens, 2, 1e12},
      {"grad_accum_steps", &TrainSpec::grad_accum_steps, 0, 4096},
      {"iterations", &TrainSpec::iterations, 0, 1e12},
      {"warmup_steps", &TrainSpec::warmup_steps, 0, 1e6},
      {"warmdown_iters", &TrainSpec::warmdown_iters, 0, 1e12},
      {"max_wallclock_seconds", &TrainSpec::max_wallclock_seconds, 0, 1e9},
      {"matrix_lr", &TrainSpec::matrix_lr, 0, 100},
      {"scalar_lr", &TrainSpec::scalar_lr, 0, 100},
      {"tied_embed_lr", &TrainSpec::tied_embed_lr, 0, 100},
      {"embed_lr", &TrainSpec::embed_lr, 0, 100},
      {"head_lr", &TrainSpec::head_lr, 0, 100},
      {"muon_momentum", &TrainSpec::muon_momentum, 0, 1},
      {"muon_momentum_warmup_start", &TrainSpec::muon_momentum_warmup_start, 0, 1},
      {"muon_momentum_warmup_steps", &TrainSpec::muon_momentum_warmup_steps, 0, 1e12},
      {"muon_backend_steps", &TrainSpec::muon_backend_steps, 1, 100},
      {"beta1", &TrainSpec::beta1, 0, 0.999999},
      {"beta2", &TrainSpec::beta2, 0, 0.999999},
      {"adam_eps", &TrainSpec::adam_eps, 1e-30, 1},
      {"grad_clip_norm", &TrainSpec::grad_clip_norm, 0, 1e9},
      {"val_every", &TrainSpec::val_every, 0, 1e12},
      {"log_every", &TrainSpec::log_every, 0, 1e12},
      {"val_batch_tokens", &TrainSpec::val_batch_tokens, 1, 1e12},
      {"val_max_tokens", &TrainSpec::val_max_tokens, 0, 1e15},
      {"qat_bits", &TrainSpec::qat_bits, 0, 8},
      {"qat_start_frac", &TrainSpec::qat_start_frac, 0, 1},
      {"export_bits", &TrainSpec::export_bits, 2, 8},
      {"quant_scale_floor", &TrainSpec::quant_scale_floor, 0, 1},
      {"compression", &TrainSpec::compression, 0, 0, {"zstd", "zlib"}},
      {"zstd_level", &TrainSpec::zstd_level, 1, 22},
      {"unique_blocks", &TrainSpec::unique_blocks, 0, 256},
      {"loops", &TrainSpec::loops, 1, 64},
      {"recur_layers", &TrainSpec::recur_layers},
      {"loop_scalars", &TrainSpec::loop_scalars},
      {"loop_embedding", &TrainSpec::loop_embedding},
      {"mixer", &TrainSpec::mixer, 0, 0, {"attention", "ssm"}},
      {"mixer_pattern", &TrainSpec::mixer_pattern},
      {"ssm_state_dim", &TrainSpec::ssm_state_dim, 1, 1024},
      {"ssm_conv_width", &TrainSpec::ssm_conv_width, 1, 64},
      {"ssm_expand", &TrainSpec::ssm_expand, 1, 16},
      {"embed_dim", &TrainSpec::embed_dim, 0, 65536},
      {"pos_scheme", &TrainSpec::pos_scheme, 0, 0, {"rope", "alibi", "none"}},
      {"rope_fraction", &TrainSpec::rope_fraction, 0, 1},
      {"seq_len_schedule", &TrainSpec::seq_len_schedule},
  };
  return fields;
}

size_t EditDistance(const std::string& a, const std::string& b) {
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
}

std::string RangeText(const Field& f) {
  std::ostringstream os;
  os << '[' << f.lo << ", " << f.hi << ']';
  return os.str();
}

std::string JoinChoices(const std::vector<std::string>& c) {
  std::string out;
  for (size_t i = 0; i < c.size(); ++i) out += (i ? " | " : "") + c[i];
  return out;
}

// Reads one JSON value into `spec` through `f`, checking type, range and choices.
LiteStatus SetField(const Field& f, const nlohmann::json& v, TrainSpec& spec) {
  const std::string key = f.name;
  if (auto* m = std::get_if<int64_t TrainSpec::*>(&f.member)) {
    double d;
    if (v.is_number_integer()) {
      d = static_cast<double>(v.get<int64_t>());
    } else if (v.is_number_float() && std::isfinite(v.get<double>()) &&
               v.get<double>() == std::floor(v.get<double>()) && std::abs(v.get<double>()) < kMaxInt) {
      d = v.get<double>();  // 1e3 written as a float is still an integer
    } else {
      return LiteStatus::Error("spec key \"" + key + "\" must be an integer, got " + v.dump());
    }
    if (d < f.lo || d > f.hi) {
      return LiteStatus::Error("spec key \"" + key + "\" = " + v.dump() + " is out of range " +
                               RangeText(f));
    }
    spec.*(*m) = static_cast<int64_t>(d);
  } else if (auto* m = std::get_if<double TrainSpec::*>(&f.member)) {
    if (!v.is_number()) {
      return LiteStatus::Error("spec key \"" + key + "\" must be a number, got " + v.dump());
    }
    const double d = v.get<double>();
    if (!std::isfinite(d) || d < f.lo || d > f.hi) {
      return LiteStatus::Error("spec key \"" + key + "\" = " + v.dump() + " is out of range " +
                               RangeText(f));
    }
    spec.*(*m) = d;
  } else if (auto* m = std::get_if<bool TrainSpec::*>(&f.member)) {
    if (!v.is_boolean()) {
      return LiteStatus::Error("spec key \"" + key + "\" must be true or false, got " + v.dump());
    }
    spec.*(*m) = v.get<bool>();
  } else if (auto* m = std::get_if<std::string TrainSpec::*>(&f.member)) {
    if (!v.is_string()) {
      return LiteStatus::Error("spec key \"" + key + "\" must be a string, got " + v.dump());
    }
    const std::string s = v.get<std::string>();
    if (!f.choices.empty() && std::find(f.choices.begin(), f.choices.end(), s) == f.choices.end()) {
      return LiteStatus::Error("spec key \"" + key + "\" = \"" + s + "\" is not one of " +
                               JoinChoices(f.choices));
    }
    spec.*(*m) = s;
  }
  return LiteStatus::Ok();
}

nlohmann::json GetField(const Field& f, const TrainSpec& spec) {
  return std::visit([&](auto m) { return nlohmann::json(spec.*m); }, f.member);
}

}  // namespace

const std::vector<std::string>& TrainSpecKeys() {
  static const std::vector<std::string> keys = [] {
    std::vector<std::string> k;
    for (const Field& f : Fields()) k.emplace_back(f.name);
    return k;
  }();
  return keys;
}

LiteStatusOr<TrainSpec> ParseTrainSpec(const nlohmann::json& j) {
  if (!j.is_object()) {
    return LiteStatus::Error("spec must be a JSON object, got " + std::string(j.type_name()));
  }
  TrainSpec spec;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const Field* field = nullptr;
    for (const Field& f : Fields()) {
      if (it.key() == f.name) field = &f;
    }
    if (field == nullptr) {
      const Field* best = &Fields()[0];
      for (const Field& f : Fields()) {
        if (EditDistance(it.key(), f.name) < EditDistance(it.key(), best->name)) best = &f;
      }
      return LiteStatus::Error("unknown spec key \"" + it.key() + "\" (did you mean \"" +
                               best->name + "\"?)");
    }
    LiteStatus s = SetField(*field, it.value(), spec);
    if (!s.ok()) return s;
  }
  // QAT trains for one width: unless export_bits is given, export at that width.
  if (spec.qat_bits >= 2 && !j.contains("export_bits")) {  // 1 is refused below
    if (spec.qat_bits == 7) {
      return LiteStatus::Error(
          "qat_bits = 7 needs export_bits: export_bits follows qat_bits when it is not set, and 7 "
          "is not an export width (one of 2,3,4,5,6,8)");
    }
    spec.export_bits = spec.qat_bits;
  }
  LiteStatus s = ValidateTrainSpec(spec);
  if (!s.ok()) return s;
  return spec;
}

LiteStatusOr<TrainSpec> ParseTrainSpecText(const std::string& text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return LiteStatus::Error("spec is not valid JSON");
  return ParseTrainSpec(j);
}

LiteStatusOr<std::vector<SeqLenStage>> ParseSeqLenSchedule(const std::string& text) {
  std::vector<SeqLenStage> stages;
  if (text.empty()) return stages;
  std::stringstream ss(text);
  std::string item, last_item;
  double last_frac = 0;
  while (std::getline(ss, item, ',')) {
    const size_t colon = item.find(':');
    SeqLenStage st{0, 1.0};
    try {
      size_t used = 0;
      st.seq_len = std::stoll(item.substr(0, colon), &used);
      if (used != item.substr(0, colon).size()) throw std::invalid_argument("len");
      if (colon != std::string::npos) {
        const std::string frac = item.substr(colon + 1);
        st.until_frac = std::stod(frac, &used);
        if (used != frac.size()) throw std::invalid_argument("frac");
      }
    } catch (const std::exception&) {
      return LiteStatus::Error("spec key \"seq_len_schedule\": bad stage \"" + item +
                               "\" (expected LEN:FRAC, e.g. \"256:0.3,1024\")");
    }
    if (st.seq_len < 2 || !(st.until_frac > last_frac && st.until_frac <= 1.0)) {
      return LiteStatus::Error("spec key \"seq_len_schedule\": stage \"" + item +
                               "\" needs LEN >= 2 and FRAC increasing within (0, 1]");
    }
    // A sequence-length warm-up (short sequences first): going back to shorter ones is
    // almost surely a typo, and would train the late, low-lr steps on short contexts.
    if (!stages.empty() && st.seq_len < stages.back().seq_len) {
      return LiteStatus::Error("spec key \"seq_len_schedule\": stage " + std::to_string(stages.size() + 1) +
                               " \"" + item + "\" is shorter than stage " + std::to_string(stages.size()) +
                               " \"" + last_item + "\" (a warm-up: LEN must not fall)");
    }
    last_frac = st.until_frac;
    last_item = item;
    stages.push_back(st);
  }
  if (stages.empty()) return LiteStatus::Error("spec key \"seq_len_schedule\" has no stages");
  stages.back().until_frac = 1.0;
  return stages;
}

LiteStatusOr<std::pair<int64_t, int64_t>> ParseRecurLayers(const std::string& text) {
  if (text.empty()) return std::pair<int64_t, int64_t>{-1, -1};
  const size_t dash = text.find('-');
  try {
    size_t u1 = 0, u2 = 0;
    const std::string a = text.substr(0, dash);
    const std::string b = dash == std::string::npos ? a : text.substr(dash + 1);
    int64_t lo = std::stoll(a, &u1), hi = std::stoll(b, &u2);
    if (u1 != a.size() || u2 != b.size() || lo < 0 || hi < lo) throw std::invalid_argument("x");
    return std::pair<int64_t, int64_t>{lo, hi};
  } catch (const std::exception&) {
    return LiteStatus::Error("spec key \"recur_layers\" = \"" + text +
                             "\" must be \"A-B\" with 0 <= A <= B (layer indices)");
  }
}

LiteStatus ValidateLayerLayout(const TrainSpec& s) {
  const std::string n = std::to_string(s.num_layers);
  if (s.unique_blocks > s.num_layers) {
    return LiteStatus::Error("unique_blocks = " + std::to_string(s.unique_blocks) +
                             " must be <= num_layers = " + n);
  }
  if (s.mixer_pattern.empty()) return LiteStatus::Ok();
  const std::string quoted = "mixer_pattern \"" + s.mixer_pattern + "\"";
  if (static_cast<int64_t>(s.mixer_pattern.size()) != s.num_layers) {
    return LiteStatus::Error(quoted + " has " + std::to_string(s.mixer_pattern.size()) +
                             " letters; num_layers = " + n);
  }
  for (char c : s.mixer_pattern) {
    if (c != 'A' && c != 'S') {
      return LiteStatus::Error(quoted + " has unknown mixer letter '" + std::string(1, c) +
                               "' (A = attention, S = ssm)");
    }
  }
  // Layer i runs block i % u, built with the mixer of letter i % u.
  for (int64_t i = s.unique_blocks; s.unique_blocks > 0 && i < s.num_layers; ++i) {
    const int64_t b = i % s.unique_blocks;
    if (s.mixer_pattern[i] != s.mixer_pattern[b]) {
      return LiteStatus::Error(
          quoted + " does not fit unique_blocks = " + std::to_string(s.unique_blocks) + ": layer " +
          std::to_string(i) + " is '" + std::string(1, s.mixer_pattern[i]) + "' but runs block " +
          std::to_string(b) + ", which is '" + std::string(1, s.mixer_pattern[b]) +
          "' (letter i must equal letter i % unique_blocks)");
    }
  }
  return LiteStatus::Ok();
}

int64_t RopeDims(const TrainSpec& s) {
  if (s.pos_scheme != "rope") return 0;
  const int64_t hd = s.model_dim / s.num_heads;
  return 2 * static_cast<int64_t>(std::llround(s.rope_fraction * static_cast<double>(hd) / 2));
}

namespace {

std::string FormatDouble(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

// A rope_fraction strictly inside (0, 1) must rotate some dims and not all: rounding to whole
// pairs must not silently turn it into no RoPE or full RoPE.
LiteStatus CheckRopeDims(const TrainSpec& s) {
  if (s.pos_scheme != "rope" || s.rope_fraction <= 0 || s.rope_fraction >= 1) return LiteStatus::Ok();
  const int64_t hd = s.model_dim / s.num_heads, dims = RopeDims(s);
  const std::string what = "rope_fraction = " + FormatDouble(s.rope_fraction) + " rotates " +
                           std::to_string(dims) + " of the head_dim = " + std::to_string(hd) +
                           " dims (model_dim / num_heads; rounded to whole pairs)";
  if (dims == 0) {
    return LiteStatus::Error(what + ": use rope_fraction >= " + FormatDouble(2.0 / static_cast<double>(hd)) +
                             " (2 / head_dim, one pair) or 0 for no rotation");
  }
  if (dims == hd) {
    return LiteStatus::Error(what + ": use rope_fraction <= " +
                             FormatDouble(static_cast<double>(hd - 2) / static_cast<double>(hd)) +
                             " ((head_dim - 2) / head_dim) or 1 to rotate all");
  }
  return LiteStatus::Ok();
}

}  // namespace

LiteStatus ValidateTrainSpec(const TrainSpec& s) {
  // Re-check ranges so a spec built in code gets the same verdict as one parsed.
  TrainSpec scratch;
  for (const Field& f : Fields()) {
    LiteStatus st = SetField(f, GetField(f, s), scratch);
    if (!st.ok()) return st;
  }
  auto err = [](const std::string& m) { return LiteStatus::Error(m); };
  const std::string n = std::to_string(s.num_layers);
  if (s.model_dim % s.num_heads != 0) {
    return err("num_heads = " + std::to_string(s.num_heads) + " must divide model_dim = " +
               std::to_string(s.model_dim));
  }
  if (s.num_kv_heads > s.num_heads || s.num_heads % s.num_kv_heads != 0) {
    return err("num_kv_heads = " + std::to_string(s.num_kv_heads) + " must divide num_heads = " +
               std::to_string(s.num_heads));
  }
  if ((s.model_dim / s.num_heads) % 2 != 0) {
    return err("head_dim = model_dim / num_heads = " + std::to_string(s.model_dim / s.num_heads) +
               " must be even (RoPE rotates pairs)");
  }
  if (s.train_batch_tokens < s.seq_len) {
    return err("train_batch_tokens = " + std::to_string(s.train_batch_tokens) +
               " must be at least seq_len = " + std::to_string(s.seq_len));
  }
  if (s.qat_bits == 1) return err("qat_bits = 1 is out of range: 0 (off) or 2..8");
  if (s.export_bits == 7) return err("export_bits = 7 is not supported: one of 2,3,4,5,6,8");
  if (s.embed_dim > s.model_dim) {
    return err("embed_dim = " + std::to_string(s.embed_dim) + " must be <= model_dim = " +
               std::to_string(s.model_dim));
  }
  if (LiteStatus st = ValidateLayerLayout(s); !st.ok()) return st;
  if (LiteStatus st = CheckRopeDims(s); !st.ok()) return st;
  auto recur = ParseRecurLayers(s.recur_layers);
  if (!recur.ok()) return recur.status();
  if (recur->second >= s.num_layers) {
    return err("recur_layers \"" + s.recur_layers + "\" reaches past the last layer (num_layers = " +
               n + ")");
  }
  for (auto [key, on] : {std::pair{"loop_scalars", s.loop_scalars}, std::pair{"loop_embedding", s.loop_embedding}}) {
    if (on && s.loops < 2) {
      return err(std::string(key) + " = true needs depth recurrence: loops = " + std::to_string(s.loops) +
                 " must be >= 2");
    }
  }
  auto sched = ParseSeqLenSchedule(s.seq_len_schedule);
  if (!sched.ok()) return sched.status();
  for (const SeqLenStage& st : *sched) {
    if (st.seq_len > s.seq_len || s.seq_len % st.seq_len != 0) {
      return err("seq_len_schedule length " + std::to_string(st.seq_len) +
                 " must divide seq_len = " + std::to_string(s.seq_len));
    }
  }
  return LiteStatus::Ok();
}

nlohmann::json ToJson(const TrainSpec& spec) {
  nlohmann::json j = nlohmann::json::object();
  for (const Field& f : Fields()) j[f.name] = GetField(f, spec);
  return j;
}

std::vector<std::string> NonDefaultKeys(const TrainSpec& spec) {
  const TrainSpec def;
  std::vector<std::string> out;
  for (const Field& f : Fields()) {
    if (GetField(f, spec) != GetField(f, def)) out.emplace_back(f.name);
  }
  return out;
}

}  // namespace caddie
