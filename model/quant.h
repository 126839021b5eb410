// The weight quantiser of caddie-train: per-row symmetric int-N (N in 2..8;
// the spec offers 2,3,4,5,6,8 for export and 2..8 for QAT) with percentile
// clipping and fp16 scales, the bit packing of its codes, and FakeQuantize for
// quantisation-aware training.
//
// Export (model/artifact.h) and QAT both call QuantizeRows, so the weights a
// QAT forward pass sees are bit for bit the weights the artifact reloads.
// All functions are pure: safe to call from any thread.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/core/lite_status.h"

namespace caddie::model {

// Which tensors are quantised, and how. Defaults follow the reference
// train_gpt.py (int8, 99.99984th percentile, small tensors kept as fp16).
// The reference's floor on every row's scale: clamp_min(1/127). It binds whenever a row's
// clip is below QMax/127 (at int8: below 1.0, i.e. nearly every trained row), putting those
// rows on the fixed grid k/127. That is most of why the reference's int8 artifact compresses
// to ~11 MB after a short run where exact per-row scales give ~16 MB, and why its
// quantisation gap is larger.
inline constexpr double kReferenceMinScale = 1.0 / 127.0;

struct QuantOptions {
  int bits = 8;                             // 2..8
  double clip_percentile = 99.99984;        // per row, of |w|; in (0, 100]
  double min_scale = kReferenceMinScale;    // floor of the scales; 0 = none (fp16's smallest)
  int64_t keep_float_max_numel = 65536;     // tensors this small stay fp16
  // Tensors whose name contains one of these stay fp16 whatever their size:
  // norms, gains and mixing scalars are few bytes but very sensitive.
  std::vector<std::string> keep_float_name_patterns = {
      "norm", "gain", "scale", "resid_mix", "skip_weight", "loop_scalars", "loop_embedding"};
};

// Returns OK when `bits` is one of the supported widths, else an error naming it.
LiteStatus ValidateBits(int bits);
// Returns OK when options are usable (bits, 0 < clip_percentile <= 100, ...).
LiteStatus ValidateQuantOptions(const QuantOptions& options);

// Largest code magnitude for `bits`: codes lie in [-QMax, QMax] = 2^(bits-1) - 1.
// REQUIRES: ValidateBits(bits).ok().
int QMax(int bits);

// True when export stores `w` (named `name`) quantised rather than as fp16:
// a floating-point tensor with more than keep_float_max_numel elements and no
// keep-float pattern in its name. The trainer applies QAT to exactly these.
bool ShouldQuantize(const std::string& name, const torch::Tensor& w, const QuantOptions& options);

// Codes and scales of one tensor. A tensor of shape (d0, d1, ...) is seen as
// rows = d0, cols = d1*d2*...; a 1-D tensor is one row.
struct QuantizedRows {
  torch::Tensor codes;   // (rows, cols) int8 in [-QMax(bits), QMax(bits)], CPU
  torch::Tensor scales;  // (rows) float16, CPU, > 0 and finite
  int bits = 8;
};

// Per-row symmetric quantisation of a floating-point tensor on any device:
// clip |w| at the row's clip_percentile (linear interpolation, as
// torch.quantile), scale = fp16(max(clip / QMax, min_scale)) (and never below fp16's
// smallest subnormal), code = clamp(round(w / scale), -QMax, QMax). The scale is rounded
// to fp16 *before* dividing, so dequantisation with the stored fp16 scale is exact.
// min_scale = kReferenceMinScale is the reference's export; 0 gives exact per-row
// scales (finer codes, smaller gap, larger artifact).
// REQUIRES: bits valid, w floating point with at least one element, finite; min_scale >= 0.
QuantizedRows QuantizeRows(const torch::Tensor& w, int bits, double clip_percentile,
                           double min_scale);

// codes * scale per row, as float32 of shape `shape` (on the codes' device).
torch::Tensor DequantizeRows(const QuantizedRows& q, c10::IntArrayRef shape);

// Dequantize(Quantize(w)) in float32 on w's device, without leaving it: what
// the artifact reloads for w. REQUIRES as QuantizeRows.
torch::Tensor QuantizeDequantize(const torch::Tensor& w, int bits, double clip_percentile,
                                 double min_scale);

// Quantisation-aware training: forward returns QuantizeDequantize(w) cast to
// w's dtype; backward passes the gradient through unchanged (straight-through
// estimator). Differentiable in w; no gradient reaches the scales.
torch::Tensor FakeQuantize(const torch::Tensor& w, int bits, double clip_percentile,
                           double min_scale);

// Bit packing of codes in [-QMax(bits), QMax(bits)]: each code is stored as
// the unsigned value code + QMax in `bits` bits, least significant bit first,
// codes back to back across byte boundaries; the last byte is zero-padded.
// PackedBytes(n, bits) = ceil(n * bits / 8).
int64_t PackedBytes(int64_t count, int bits);
// REQUIRES: every code within range (checked: out-of-range is an error).
LiteStatusOr<std::string> PackCodes(const int8_t* codes, int64_t count, int bits);
// Unpacks `count` codes from `packed` (which must be exactly PackedBytes long).
// An unsigned value above 2*QMax (impossible for a packer's output) or a
// wrong length is an error naming it: the input may be a corrupted artifact.
LiteStatus UnpackCodes(const std::string& packed, int64_t count, int bits, int8_t* out);

}  // namespace caddie::model
