#include "model/quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace caddie::model {
namespace {

constexpr double kPct = 99.99984;

TEST(QuantTest, ValidateBitsNamesTheBadValue) {
  for (int bits = 2; bits <= 8; ++bits) EXPECT_TRUE(ValidateBits(bits).ok()) << bits;
  EXPECT_EQ(ValidateBits(1).message(), "unsupported quantisation bits 1 (want 2..8)");
  EXPECT_EQ(ValidateBits(9).message(), "unsupported quantisation bits 9 (want 2..8)");
  QuantOptions o;
  o.clip_percentile = 0.0;
  EXPECT_EQ(ValidateQuantOptions(o).message(), "clip_percentile 0.000000 out of range (0, 100]");
  o.clip_percentile = 100.5;
  EXPECT_FALSE(ValidateQuantOptions(o).ok());
  o.clip_percentile = 100.0;
  EXPECT_TRUE(ValidateQuantOptions(o).ok());
}

TEST(QuantTest, QMaxPerWidth) {
  EXPECT_EQ(QMax(2), 1);
  EXPECT_EQ(QMax(3), 3);
  EXPECT_EQ(QMax(4), 7);
  EXPECT_EQ(QMax(5), 15);
  EXPECT_EQ(QMax(6), 31);
  EXPECT_EQ(QMax(8), 127);
}

TEST(QuantTest, PackRoundTripsEveryWidthAndLength) {
  std::mt19937 rng(7);
  for (int bits = 2; bits <= 8; ++bits) {
    const int qmax = QMax(bits);
    std::uniform_int_distribution<int> dist(-qmax, qmax);
    for (int64_t n : {0, 1, 2, 7, 8, 9, 1001}) {
      std::vector<int8_t> codes(n);
      for (auto& c : codes) c = static_cast<int8_t>(dist(rng));
      if (n >= 2) {  // the extremes must survive
        codes[0] = static_cast<int8_t>(-qmax);
        codes[1] = static_cast<int8_t>(qmax);
      }
      LiteStatusOr<std::string> packed = PackCodes(codes.data(), n, bits);
      ASSERT_TRUE(packed.ok()) << packed.status().message();
      EXPECT_EQ(static_cast<int64_t>(packed->size()), (n * bits + 7) / 8) << bits << " " << n;
      EXPECT_EQ(PackedBytes(n, bits), (n * bits + 7) / 8);
      std::vector<int8_t> back(n, 99);
      ASSERT_TRUE(UnpackCodes(*packed, n, bits, back.data()).ok());
      EXPECT_EQ(back, codes) << bits << " " << n;
    }
  }
}

TEST(QuantTest, PackLayoutIsLsbFirstWithOffset) {
  // 4 bits: -7 -> 0, 7 -> 14; first code in the low nibble.
  const int8_t codes4[] = {-7, 7, 0};
  LiteStatusOr<std::string> p4 = PackCodes(codes4, 3, 4);
  ASSERT_TRUE(p4.ok());
  ASSERT_EQ(p4->size(), 2u);
  EXPECT_EQ(static_cast<uint8_t>((*p4)[0]), 0xE0);
  EXPECT_EQ(static_cast<uint8_t>((*p4)[1]), 0x07);
  // 3 bits across a byte boundary: codes +3,+3,+3 -> 6,6,6 = 110 110 110 (LSB first).
  const int8_t codes3[] = {3, 3, 3};
  LiteStatusOr<std::string> p3 = PackCodes(codes3, 3, 3);
  ASSERT_TRUE(p3.ok());
  ASSERT_EQ(p3->size(), 2u);
  EXPECT_EQ(static_cast<uint8_t>((*p3)[0]), 0xB6);  // bits 0-7 of 0b110110110
  EXPECT_EQ(static_cast<uint8_t>((*p3)[1]), 0x01);
}

TEST(QuantTest, PackRejectsOutOfRangeCodes) {
  const int8_t codes[] = {0, 8};
  LiteStatusOr<std::string> p = PackCodes(codes, 2, 4);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().message(), "code 8 at index 1 out of range for 4 bits");
  const int8_t minus128[] = {-128};
  EXPECT_FALSE(PackCodes(minus128, 1, 8).ok());
}

TEST(QuantTest, UnpackRejectsCorruptInput) {
  std::vector<int8_t> out(4);
  // 3 bits: an all-ones field is 7 > 2*QMax(3) = 6, which no packer writes.
  EXPECT_EQ(UnpackCodes(std::string("\xff\xff", 2), 4, 3, out.data()).message(),
            "packed code 7 at index 0 out of range for 3 bits");
  EXPECT_EQ(UnpackCodes(std::string("\x00", 1), 4, 3, out.data()).message(),
            "packed codes have 1 bytes, want 2 for 4 codes of 3 bits");
  EXPECT_EQ(UnpackCodes(std::string(), 4, 9, out.data()).message(),
            "unsupported quantisation bits 9 (want 2..8)");
}

TEST(QuantTest, ShouldQuantizeFollowsSizeNameAndDtype) {
  QuantOptions o;
  EXPECT_TRUE(ShouldQuantize("blocks.0.mlp.fc.weight", torch::zeros({512, 1024}), o));
  EXPECT_FALSE(ShouldQuantize("blocks.0.mlp.fc.weight", torch::zeros({256, 256}), o));  // 65536
  EXPECT_TRUE(ShouldQuantize("w", torch::zeros({65537}), o));
  EXPECT_FALSE(ShouldQuantize("blocks.0.q_gain", torch::zeros({70000}), o));
  EXPECT_FALSE(ShouldQuantize("final_norm.weight", torch::zeros({70000}), o));
  EXPECT_FALSE(ShouldQuantize("ids", torch::zeros({70000}, torch::kInt64), o));
  o.keep_float_max_numel = 0;
  EXPECT_TRUE(ShouldQuantize("w", torch::zeros({3}), o));
  EXPECT_FALSE(ShouldQuantize("w", torch::zeros({0}), o));
}

TEST(QuantTest, QuantizeRowsBoundsErrorByHalfAStep) {
  torch::manual_seed(1);
  const torch::Tensor w = torch::randn({64, 300}) * 0.05;
  for (int bits = 2; bits <= 8; ++bits) {
    const QuantizedRows q = QuantizeRows(w, bits, 100.0, 0.0);  // no clipping
    ASSERT_EQ(q.codes.scalar_type(), torch::kInt8);
    ASSERT_EQ(q.scales.scalar_type(), torch::kFloat16);
    EXPECT_EQ(q.codes.sizes(), (std::vector<int64_t>{64, 300}));
    EXPECT_EQ(q.scales.sizes(), (std::vector<int64_t>{64}));
    EXPECT_LE(q.codes.abs().max().item<int>(), QMax(bits));
    // The row maximum hits the largest code (up to fp16 rounding of the scale).
    EXPECT_GE(q.codes.abs().amax(1).min().item<int>(), QMax(bits) - 1);
    const torch::Tensor s = q.scales.to(torch::kFloat32).unsqueeze(1);
    const torch::Tensor err = (DequantizeRows(q, w.sizes()) - w).abs();
    // Within half a step, plus a sliver for the scale's fp16 rounding at the edge.
    EXPECT_TRUE((err <= s * 0.5 + s * 1e-3 * QMax(bits)).all().item<bool>()) << bits;
  }
}

TEST(QuantTest, ClipAtPercentileMatchesTorchQuantile) {
  torch::manual_seed(2);
  const torch::Tensor w = torch::randn({8, 1000});
  const QuantizedRows q = QuantizeRows(w, 8, 90.0, 0.0);
  const torch::Tensor clip = torch::quantile(w.abs(), 0.9, /*dim=*/1);
  const torch::Tensor top = q.scales.to(torch::kFloat32) * 127.0;  // largest dequantised value
  EXPECT_TRUE(torch::allclose(top, clip, /*rtol=*/1e-3, /*atol=*/0)) << top << clip;
  // Values beyond the clip are clamped to the largest code.
  EXPECT_EQ(q.codes.abs().max().item<int>(), 127);
}

TEST(QuantTest, ZeroRowAndScalarAreSafe) {
  torch::Tensor w = torch::zeros({3, 5});
  w[1] = torch::arange(5).to(torch::kFloat32);
  const QuantizedRows q = QuantizeRows(w, 4, kPct, 0.0);
  EXPECT_TRUE((q.scales.to(torch::kFloat32) > 0).all().item<bool>());
  EXPECT_TRUE(q.codes[0].eq(0).all().item<bool>());
  EXPECT_TRUE(torch::isfinite(DequantizeRows(q, w.sizes())).all().item<bool>());
  EXPECT_TRUE(DequantizeRows(q, w.sizes())[0].eq(0).all().item<bool>());
  const torch::Tensor scalar = torch::tensor(0.75);
  EXPECT_FLOAT_EQ(QuantizeDequantize(scalar, 8, kPct, 0.0).item<float>(),
                  127 * torch::tensor(0.75f / 127.0f).to(torch::kFloat16).item<float>());
}

TEST(QuantTest, QuantizeDequantizeEqualsDequantizeOfQuantize) {
  torch::manual_seed(3);
  const torch::Tensor w = torch::randn({2, 3, 4, 50});
  for (int bits = 2; bits <= 8; ++bits) {
    const torch::Tensor a = QuantizeDequantize(w, bits, kPct, kReferenceMinScale);
    const torch::Tensor b = DequantizeRows(QuantizeRows(w, bits, kPct, kReferenceMinScale), w.sizes());
    EXPECT_EQ(a.sizes(), w.sizes());
    EXPECT_TRUE(torch::equal(a, b)) << bits;
  }
}

TEST(QuantTest, FakeQuantizeForwardIsExportAndGradientIsIdentity) {
  torch::manual_seed(4);
  for (int bits : {2, 4, 6, 7, 8}) {
    torch::Tensor w = (torch::randn({40, 70}) * 0.1).requires_grad_(true);
    const torch::Tensor y = FakeQuantize(w, bits, kPct, kReferenceMinScale);
    EXPECT_TRUE(y.requires_grad());
    EXPECT_TRUE(torch::equal(y.detach(), QuantizeDequantize(w.detach(), bits, kPct, kReferenceMinScale))) << bits;
    EXPECT_FALSE(torch::equal(y.detach(), w.detach()));  // it really quantises
    const torch::Tensor g = torch::randn({40, 70});
    (y * g).sum().backward();
    EXPECT_TRUE(torch::equal(w.grad(), g)) << bits;
  }
}

TEST(QuantTest, FakeQuantizeKeepsDtype) {
  torch::manual_seed(5);
  const torch::Tensor w = torch::randn({16, 64}).to(torch::kBFloat16).requires_grad_(true);
  const torch::Tensor y = FakeQuantize(w, 4, kPct, 0.0);
  EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(y.detach(), QuantizeDequantize(w.detach(), 4, kPct, 0.0).to(torch::kBFloat16)));
  y.sum().backward();
  EXPECT_TRUE(torch::equal(w.grad(), torch::ones_like(w)));
}

TEST(QuantTest, ReferenceScaleFloorPutsSmallRowsOnTheGridOfOneOver127) {
  // The reference's int8 export, computed independently: clip at torch.quantile, scale =
  // max(clip / 127, 1/127), codes = round(clip(w) / scale). Rows 0-3 are small (clip < 1:
  // the floor binds), rows 4-5 large (clip > 1: their own scale).
  torch::manual_seed(6);
  torch::Tensor w = torch::randn({6, 4096}) * 0.02;
  w.slice(0, 4, 6) *= 100.0;
  const QuantizedRows q = QuantizeRows(w, 8, kPct, kReferenceMinScale);
  const torch::Tensor clip = torch::quantile(w.abs(), kPct / 100.0, /*dim=*/1, /*keepdim=*/true);
  const torch::Tensor ref_scale = (clip / 127.0).clamp_min(1.0 / 127.0);
  const torch::Tensor ref_codes = torch::round(torch::max(torch::min(w, clip), -clip) / ref_scale).clamp(-127, 127);
  const torch::Tensor scales = q.scales.to(torch::kFloat32);
  for (int r = 0; r < 4; ++r) {
    EXPECT_FLOAT_EQ(scales[r].item<float>(), torch::tensor(1.0f / 127.0f).to(torch::kFloat16).item<float>()) << r;
    EXPECT_LT(q.codes[r].abs().max().item<int>(), 20) << r;  // few distinct codes: why it compresses
  }
  EXPECT_GT(scales[4].item<float>(), 1.0f / 127.0f);
  // Codes agree with the reference's except where fp16 rounding of the scale moves a value
  // across a rounding boundary; values within half a step plus that rounding.
  // The floored rows' scale is fp16(1/127), 6e-5 off: their codes agree almost everywhere;
  // the large rows' fp16 scales are up to 5e-4 off at codes up to 127.
  const torch::Tensor same = q.codes.to(torch::kFloat32).eq(ref_codes).to(torch::kFloat64);
  const double agree_floored = same.slice(0, 0, 4).mean().item<double>();
  const double agree_large = same.slice(0, 4, 6).mean().item<double>();
  EXPECT_GT(agree_floored, 0.9995) << agree_floored;
  EXPECT_GT(agree_large, 0.98) << agree_large;
  const torch::Tensor deq = DequantizeRows(q, w.sizes());
  const torch::Tensor clipped = torch::max(torch::min(w, clip), -clip);
  EXPECT_TRUE(((deq - clipped).abs() <= ref_scale * 0.5 * (1 + 2e-3) + 1e-6).all().item<bool>());
  // Without the floor the same small rows use all 127 codes.
  const QuantizedRows exact = QuantizeRows(w, 8, kPct, 0.0);
  EXPECT_GE(exact.codes[0].abs().max().item<int>(), 126);
  // A floor is validated.
  QuantOptions o;
  o.min_scale = -1;
  EXPECT_FALSE(ValidateQuantOptions(o).ok());
}

}  // namespace
}  // namespace caddie::model
