// TrainSpec: every hyperparameter of a caddie-train job, with the Parameter Golf
// baseline (train_gpt.py) as the default of each. The one home of the key list,
// defaults and allowed ranges. Torch-free so the CLI and controller validate specs
// without LibTorch.
//
// Thread-safe: value type and free functions; no shared state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/core/lite_status.h"

namespace caddie {

struct TrainSpec {
  // --- Data and run ---
  std::string data;                  // data directory (shards + byte_table.json)
  std::string run_dir;               // where log, spec and final model go ("" = none)
  std::string device = "auto";       // auto | cpu | cuda
  int64_t seed = 1337;

  // --- Model shape (baseline GPT) ---
  int64_t vocab_size = 1024;
  int64_t num_layers = 9;
  int64_t model_dim = 512;
  int64_t num_heads = 8;
  int64_t num_kv_heads = 4;
  int64_t mlp_mult = 2;
  bool tie_embeddings = true;
  double tied_embed_init_std = 0.005;
  double rope_base = 10000.0;
  double qk_gain_init = 1.5;
  double logit_softcap = 30.0;

  // --- Training length and batch ---
  int64_t seq_len = 1024;
  int64_t train_batch_tokens = 524288;  // global tokens per optimizer step
  int64_t grad_accum_steps = 0;         // 0 = reference rule: 8 / world_size
  int64_t iterations = 20000;
  int64_t warmup_steps = 20;            // compile/warm-up steps, excluded from the clock, state restored
  int64_t warmdown_iters = 1200;        // lr warmdown length, in (estimated) steps of wall clock
  double max_wallclock_seconds = 600.0; // training time budget (0 = none)

  // --- Optimizer ---
  double matrix_lr = 0.04;   // Muon, 2-D block matrices
  double scalar_lr = 0.04;   // Adam, vectors / scalars / control tensors
  double tied_embed_lr = 0.05;
  double embed_lr = 0.6;     // untied input embedding
  double head_lr = 0.008;    // untied lm_head
  double muon_momentum = 0.95;
  double muon_momentum_warmup_start = 0.85;
  int64_t muon_momentum_warmup_steps = 500;
  int64_t muon_backend_steps = 5;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double adam_eps = 1e-8;
  double grad_clip_norm = 0.0;  // 0 = off

  // --- Evaluation and logging ---
  int64_t val_every = 1000;            // steps between val events (0 = only at the end)
  int64_t log_every = 200;             // steps between step events (first 10 always)
  int64_t val_batch_tokens = 524288;   // global tokens per eval batch
  int64_t val_max_tokens = 0;          // 0 = the whole validation split (the metric); >0 truncates

  // --- Quantisation / artifact (issue 6) ---
  int64_t qat_bits = 0;           // 0 = off, else 2..8
  double qat_start_frac = 0.0;    // QAT switches on after this fraction of the time budget
  // 2,3,4,5,6,8. ParseTrainSpec: a spec with qat_bits > 0 and no "export_bits" key exports
  // at qat_bits (the width QAT trained for); an explicit export_bits always wins.
  int64_t export_bits = 8;
  // Floor of every per-row scale, in export and QAT: the reference's clamp_min(1/127) (rows
  // with a clip under QMax/127 go on the fixed grid k/127); 0 = exact per-row scales.
  double quant_scale_floor = 1.0 / 127.0;
  std::string compression = "zstd";  // zstd | zlib
  int64_t zstd_level = 22;

  // --- Architecture axes (issue 7) ---
  int64_t unique_blocks = 0;      // 0 = num_layers (no sharing)
  int64_t loops = 1;              // times the recurrent range is applied
  std::string recur_layers;       // "" = all layers loop; "A-B" = loop only layers A..B (inclusive)
  bool loop_scalars = false;      // learned (loops, C) gain on each looped layer's residual update (needs loops > 1)
  bool loop_embedding = false;    // learned (loops, C) vector added to the stream as each loop starts (needs loops > 1)
  std::string mixer = "attention";  // attention | ssm
  std::string mixer_pattern;      // "" = all `mixer`; else one letter per layer: A (attention) / S (ssm)
  int64_t ssm_state_dim = 16;
  int64_t ssm_conv_width = 4;
  int64_t ssm_expand = 2;
  int64_t embed_dim = 0;          // 0 = model_dim; < model_dim = factorised embedding
  std::string pos_scheme = "rope";  // rope | alibi | none
  double rope_fraction = 1.0;     // fraction of head_dim rotated, rounded to whole pairs (RopeDims)
  std::string seq_len_schedule;   // "" = fixed; "LEN:FRAC,LEN:FRAC" = use LEN until FRAC of the budget (LEN never falls)
};

// Parses a JSON object. Missing keys take their defaults, except export_bits, which follows
// qat_bits when QAT is on (qat_bits 7, not an export width, then needs an explicit
// export_bits). Errors (message names the key):
// not an object, unknown key (with the closest known key suggested), wrong JSON type,
// value out of range, inconsistent combination (see ValidateTrainSpec).
LiteStatusOr<TrainSpec> ParseTrainSpec(const nlohmann::json& j);
LiteStatusOr<TrainSpec> ParseTrainSpecText(const std::string& text);

// Checks ranges and cross-key constraints (heads divide width, kv heads divide heads,
// even head_dim, embed_dim ≤ model_dim, the layer layout of ValidateLayerLayout, rope_fraction
// rotating at least one pair and not all of a head when < 1, seq_len_schedule lengths dividing
// seq_len and never falling, ...).
LiteStatus ValidateTrainSpec(const TrainSpec& spec);

// The layer -> block -> mixer layout, checked by ValidateTrainSpec and by the model's
// constructor (a spec built in code must not index past mixer_pattern): unique_blocks ≤
// num_layers; mixer_pattern, when set, has one letter A or S per layer, and with unique_blocks
// u > 0 (layer i runs block i % u) letter i equals letter i % u. Errors name the keys and the
// first layer that does not fit.
LiteStatus ValidateLayerLayout(const TrainSpec& spec);

// Dims of each head that RoPE rotates: rope_fraction × head_dim rounded to the nearest whole
// pair (2·llround(rope_fraction × head_dim / 2)); 0 unless pos_scheme is rope.
// REQUIRES: num_heads > 0.
int64_t RopeDims(const TrainSpec& spec);

// Every key with its value (the resolved spec). ParseTrainSpec(ToJson(s)) == s.
nlohmann::json ToJson(const TrainSpec& spec);

// The names of all keys, in declaration order.
const std::vector<std::string>& TrainSpecKeys();

// Keys whose value differs from the default (data/run_dir/device/seed included).
std::vector<std::string> NonDefaultKeys(const TrainSpec& spec);

// Parsed seq_len_schedule: (len, until_frac) pairs; the last stage runs to the end. A warm-up:
// each stage's length is at least the previous one's (a falling length is an error naming the
// stage), fractions increase within (0, 1].
struct SeqLenStage {
  int64_t seq_len;
  double until_frac;
};
LiteStatusOr<std::vector<SeqLenStage>> ParseSeqLenSchedule(const std::string& text);

// Parsed recur_layers "A-B" (inclusive, 0-based); {-1,-1} for "".
LiteStatusOr<std::pair<int64_t, int64_t>> ParseRecurLayers(const std::string& text);

}  // namespace caddie
