#include "model/quant.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace caddie::model {
namespace {

// Scales are stored as fp16: keep them inside its finite, non-zero range so a
// zero row or an enormous row still round-trips (2^-24 is the smallest fp16
// subnormal, 65504 the largest finite fp16).
constexpr double kMinScale = 5.9604644775390625e-08;
constexpr double kMaxScale = 65504.0;

// (rows, cols) float32 view of w: rows = first dimension, a 1-D tensor is one row.
torch::Tensor AsRows(const torch::Tensor& w) {
  const int64_t rows = w.dim() >= 2 ? w.size(0) : 1;
  return w.detach().to(torch::kFloat32).reshape({rows, -1});
}

// Per-row clip = the clip_percentile-th percentile of |row| with linear
// interpolation between order statistics (torch.quantile's default). topk of
// the few largest values instead of a sort: near 100 only 1-2 are needed.
// w32: (rows, cols) -> (rows)
torch::Tensor RowClip(const torch::Tensor& w32, double clip_percentile) {
  const int64_t cols = w32.size(1);
  const torch::Tensor a = w32.abs();
  const double pos = clip_percentile / 100.0 * static_cast<double>(cols - 1);
  const int64_t lo = std::clamp<int64_t>(static_cast<int64_t>(std::floor(pos)), 0, cols - 1);
  const int64_t hi = std::min<int64_t>(lo + 1, cols - 1);
  const double frac = pos - static_cast<double>(lo);
  // Ascending index i is descending index cols-1-i; topk keeps cols-lo values.
  const torch::Tensor top = std::get<0>(a.topk(cols - lo, /*dim=*/1, /*largest=*/true, /*sorted=*/true));
  const torch::Tensor v_lo = top.select(1, cols - 1 - lo);
  const torch::Tensor v_hi = top.select(1, cols - 1 - hi);
  return v_lo + (v_hi - v_lo) * frac;
}

// Returns the fp16-rounded scales as float32 (rows) and the float-valued codes.
std::pair<torch::Tensor, torch::Tensor> QuantizeImpl(const torch::Tensor& w32, int bits,
                                                     double clip_percentile, double min_scale) {
  const double qmax = QMax(bits);
  const torch::Tensor clip = RowClip(w32, clip_percentile);
  const torch::Tensor scale = (clip / qmax)
                                  .clamp(std::clamp(min_scale, kMinScale, kMaxScale), kMaxScale)
                                  .to(torch::kFloat16)
                                  .to(torch::kFloat32);
  const torch::Tensor c = clip.unsqueeze(1);
  const torch::Tensor clipped = torch::max(torch::min(w32, c), -c);
  const torch::Tensor codes = torch::round(clipped / scale.unsqueeze(1)).clamp(-qmax, qmax);
  return {scale, codes};
}

// Straight-through estimator: forward is the export round trip, backward the identity.
struct FakeQuantizeFunction : public torch::autograd::Function<FakeQuantizeFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* /*ctx*/, torch::Tensor w,
                               int64_t bits, double clip_percentile, double min_scale) {
    return QuantizeDequantize(w, static_cast<int>(bits), clip_percentile, min_scale).to(w.scalar_type());
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* /*ctx*/,
                                                 torch::autograd::variable_list grad_out) {
    return {grad_out[0], torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

LiteStatus ValidateBits(int bits) {
  if (bits >= 2 && bits <= 8) return LiteStatus::Ok();
  return LiteStatus::Error("unsupported quantisation bits " + std::to_string(bits) +
                           " (want 2..8)");
}

LiteStatus ValidateQuantOptions(const QuantOptions& options) {
  if (LiteStatus s = ValidateBits(options.bits); !s.ok()) return s;
  if (!(options.clip_percentile > 0.0 && options.clip_percentile <= 100.0)) {
    return LiteStatus::Error("clip_percentile " + std::to_string(options.clip_percentile) +
                             " out of range (0, 100]");
  }
  if (!(options.min_scale >= 0.0 && options.min_scale <= 1.0)) {
    return LiteStatus::Error("min_scale " + std::to_string(options.min_scale) + " out of range [0, 1]");
  }
  if (options.keep_float_max_numel < 0) {
    return LiteStatus::Error("keep_float_max_numel " +
                             std::to_string(options.keep_float_max_numel) + " is negative");
  }
  return LiteStatus::Ok();
}

int QMax(int bits) { return (1 << (bits - 1)) - 1; }

bool ShouldQuantize(const std::string& name, const torch::Tensor& w, const QuantOptions& options) {
  if (!w.defined() || !w.is_floating_point() || w.numel() <= options.keep_float_max_numel ||
      w.numel() == 0) {
    return false;
  }
  for (const std::string& pattern : options.keep_float_name_patterns) {
    if (!pattern.empty() && name.find(pattern) != std::string::npos) return false;
  }
  return true;
}

QuantizedRows QuantizeRows(const torch::Tensor& w, int bits, double clip_percentile,
                           double min_scale) {
  const torch::Tensor w32 = AsRows(w);
  auto [scale, codes] = QuantizeImpl(w32, bits, clip_percentile, min_scale);
  QuantizedRows q;
  q.codes = codes.to(torch::kInt8).cpu().contiguous();
  q.scales = scale.to(torch::kFloat16).cpu().contiguous();
  q.bits = bits;
  return q;
}

torch::Tensor DequantizeRows(const QuantizedRows& q, c10::IntArrayRef shape) {
  // codes: (rows, cols), scales: (rows) -> w: shape
  return (q.codes.to(torch::kFloat32) * q.scales.to(torch::kFloat32).unsqueeze(1)).reshape(shape);
}

torch::Tensor QuantizeDequantize(const torch::Tensor& w, int bits, double clip_percentile,
                                 double min_scale) {
  const torch::Tensor w32 = AsRows(w);
  auto [scale, codes] = QuantizeImpl(w32, bits, clip_percentile, min_scale);
  // Same product as DequantizeRows: integer-valued float codes times the fp16 scale.
  return (codes * scale.unsqueeze(1)).reshape(w.sizes());
}

torch::Tensor FakeQuantize(const torch::Tensor& w, int bits, double clip_percentile,
                           double min_scale) {
  return FakeQuantizeFunction::apply(w, static_cast<int64_t>(bits), clip_percentile, min_scale);
}

int64_t PackedBytes(int64_t count, int bits) { return (count * bits + 7) / 8; }

LiteStatusOr<std::string> PackCodes(const int8_t* codes, int64_t count, int bits) {
  if (LiteStatus s = ValidateBits(bits); !s.ok()) return s;
  const int qmax = QMax(bits);
  std::string out;
  out.reserve(static_cast<size_t>(PackedBytes(count, bits)));
  uint64_t acc = 0;
  int pending = 0;  // bits in acc not yet written
  for (int64_t i = 0; i < count; ++i) {
    const int code = codes[i];
    if (code < -qmax || code > qmax) {
      return LiteStatus::Error("code " + std::to_string(code) + " at index " + std::to_string(i) +
                               " out of range for " + std::to_string(bits) + " bits");
    }
    acc |= static_cast<uint64_t>(code + qmax) << pending;
    pending += bits;
    while (pending >= 8) {
      out.push_back(static_cast<char>(acc & 0xff));
      acc >>= 8;
      pending -= 8;
    }
  }
  if (pending > 0) out.push_back(static_cast<char>(acc & 0xff));
  return out;
}

LiteStatus UnpackCodes(const std::string& packed, int64_t count, int bits, int8_t* out) {
  if (LiteStatus s = ValidateBits(bits); !s.ok()) return s;
  if (count < 0 || static_cast<int64_t>(packed.size()) != PackedBytes(count, bits)) {
    return LiteStatus::Error("packed codes have " + std::to_string(packed.size()) +
                             " bytes, want " + std::to_string(PackedBytes(count, bits)) + " for " +
                             std::to_string(count) + " codes of " + std::to_string(bits) + " bits");
  }
  const int qmax = QMax(bits);
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  uint64_t acc = 0;
  int have = 0;
  size_t next = 0;
  for (int64_t i = 0; i < count; ++i) {
    while (have < bits) {
      acc |= static_cast<uint64_t>(static_cast<uint8_t>(packed[next++])) << have;
      have += 8;
    }
    const int u = static_cast<int>(acc & mask);
    acc >>= bits;
    have -= bits;
    if (u > 2 * qmax) {
      return LiteStatus::Error("packed code " + std::to_string(u) + " at index " +
                               std::to_string(i) + " out of range for " + std::to_string(bits) +
                               " bits");
    }
    out[i] = static_cast<int8_t>(u - qmax);
  }
  return LiteStatus::Ok();
}

}  // namespace caddie::model
