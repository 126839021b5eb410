// caddie-train --self-check-kernels: each fused kernel of model/fused_cuda.h against the plain
// computation in float64. Kept apart from the kernels' wrappers: it is not part of the model,
// so its bytes do not count as code bytes (model/code_files.cmake).
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "model/fused_cuda.h"

namespace caddie::model {

using torch::Tensor;

// --- Self-check -------------------------------------------------------------

namespace {

double RelErr(const Tensor& got, const Tensor& ref) {
  auto g = got.to(torch::kCPU, torch::kFloat64), r = ref.to(torch::kCPU, torch::kFloat64);
  if (g.sizes() != r.sizes()) return std::numeric_limits<double>::infinity();
  if (!torch::isfinite(g).all().item<bool>()) return std::numeric_limits<double>::quiet_NaN();
  const double den = r.norm().item<double>();
  return (g - r).norm().item<double>() / (den > 0 ? den : 1.0);
}

struct Checker {
  int failures = 0;
  // bf16 results: one rounding of a value near 1 is 2^-9 ≈ 2e-3 relative; fp32 sums far less.
  void Expect(const std::string& kernel, const std::string& what, const Tensor& got, const Tensor& ref,
              const Tensor& plain) {
    const double tol = got.scalar_type() == torch::kBFloat16 ? 1e-2 : 1e-3;
    const double err = RelErr(got, ref), plain_err = plain.defined() ? RelErr(plain, ref) : -1.0;
    const bool ok = err <= tol;  // false for NaN
    if (!ok) ++failures;
    std::printf("kernel-check %-22s %-8s %s  rel.err %.3e (tol %.0e; plain ATen %s %.3e)\n", kernel.c_str(),
                what.c_str(), ok ? "PASS" : "FAIL", err, tol, plain.defined() ? "bf16" : "-", plain_err);
  }
};

Tensor Bf16Leaf(torch::IntArrayRef shape, const torch::Device& dev, double scale = 1.0) {
  return (torch::randn(shape, torch::TensorOptions().device(dev)) * scale).to(torch::kBFloat16).requires_grad_(true);
}
Tensor F32Leaf(torch::IntArrayRef shape, const torch::Device& dev, double mean, double scale) {
  return (torch::randn(shape, torch::TensorOptions().device(dev)) * scale + mean).requires_grad_(true);
}
Tensor F64(const Tensor& t) { return t.detach().to(torch::kFloat64).requires_grad_(true); }

// Runs f on the leaves, backward with g; returns {out, grads...} detached.
template <typename Fn>
std::vector<Tensor> RunWithGrads(Fn f, const std::vector<Tensor>& leaves, const Tensor& g) {
  for (const auto& l : leaves) l.mutable_grad() = Tensor();
  auto out = f();
  out.backward(g.to(out.scalar_type()));
  std::vector<Tensor> r{out.detach()};
  for (const auto& l : leaves) r.push_back(l.grad().defined() ? l.grad().detach() : torch::zeros_like(l));
  return r;
}

}  // namespace

int SelfCheckFusedKernels() {
  if (!torch::cuda::is_available() || !FusedKernelsBuilt()) {
    std::printf("kernel-check FAIL: %s\n", FusedKernelsBuilt() ? "no CUDA device" : "built without the CUDA kernels");
    return 1;
  }
  const torch::Device dev(torch::kCUDA, 0);
  torch::manual_seed(20261124);
  SetFusedOutputPoison(true);
  Checker ck;

  // Residual mix at two widths (512: the baseline; 384: a block of 48×5 threads).
  for (int64_t c : {512, 384}) {
    const std::string name = "mix C=" + std::to_string(c);
    auto x = Bf16Leaf({3, 37, c}, dev), x0 = Bf16Leaf({3, 37, c}, dev);
    auto mix = F32Leaf({2, c}, dev, 0.5, 0.5);
    auto g = torch::randn({3, 37, c}, torch::TensorOptions().device(dev)).to(torch::kBFloat16);
    auto fused = RunWithGrads([&] { return MixResidual(x, mix, x0); }, {x, mix, x0}, g);
    auto plain = RunWithGrads([&] { auto m = mix.to(x.scalar_type()); return m[0] * x + m[1] * x0; }, {x, mix, x0}, g);
    auto x64 = F64(x), x064 = F64(x0), m64 = F64(mix);
    auto ref = RunWithGrads([&] { return m64[0] * x64 + m64[1] * x064; }, {x64, m64, x064}, g);
    ck.Expect(name, "out", fused[0], ref[0], plain[0]);
    ck.Expect(name, "dx", fused[1], ref[1], plain[1]);
    ck.Expect(name, "dmix", fused[2], ref[2], plain[2]);
    ck.Expect(name, "dx0", fused[3], ref[3], plain[3]);
  }

  {  // x + scale·y
    const std::string name = "add_scaled C=512";
    auto x = Bf16Leaf({5, 33, 512}, dev), y = Bf16Leaf({5, 33, 512}, dev);
    auto s = F32Leaf({512}, dev, 1.0, 0.3);
    auto g = torch::randn({5, 33, 512}, torch::TensorOptions().device(dev)).to(torch::kBFloat16);
    auto fused = RunWithGrads([&] { return AddScaled(x, s, y); }, {x, s, y}, g);
    auto plain = RunWithGrads([&] { return x + s.to(x.scalar_type()) * y; }, {x, s, y}, g);
    auto x64 = F64(x), y64 = F64(y), s64 = F64(s);
    auto ref = RunWithGrads([&] { return x64 + s64 * y64; }, {x64, s64, y64}, g);
    ck.Expect(name, "out", fused[0], ref[0], plain[0]);
    ck.Expect(name, "dx", fused[1], ref[1], plain[1]);
    ck.Expect(name, "dscale", fused[2], ref[2], plain[2]);
    ck.Expect(name, "dy", fused[3], ref[3], plain[3]);
  }

  for (int64_t c : {512, 256, 1024}) {  // RMSNorm over the last dim
    const std::string name = "rms_norm C=" + std::to_string(c);
    const double eps = 0.0078125;
    auto x = Bf16Leaf({3, 41, c}, dev, 3.0);
    auto g = torch::randn({3, 41, c}, torch::TensorOptions().device(dev)).to(torch::kBFloat16);
    auto fused = RunWithGrads([&] { return RmsNormKernel(x, eps); }, {x}, g);
    auto plain = RunWithGrads([&] { return x * torch::rsqrt(x.pow(2).mean(-1, true) + eps); }, {x}, g);
    auto x64 = F64(x);
    auto ref = RunWithGrads([&] { return x64 * torch::rsqrt(x64.pow(2).mean(-1, true) + eps); }, {x64}, g);
    ck.Expect(name, "out", fused[0], ref[0], plain[0]);
    ck.Expect(name, "dx", fused[1], ref[1], plain[1]);
  }

  {  // relu²
    const std::string name = "relu_square";
    auto u = Bf16Leaf({7, 29, 1024}, dev);
    auto g = torch::randn({7, 29, 1024}, torch::TensorOptions().device(dev)).to(torch::kBFloat16);
    auto fused = RunWithGrads([&] { return ReluSquare(u); }, {u}, g);
    auto plain = RunWithGrads([&] { return torch::relu(u).square(); }, {u}, g);
    auto u64 = F64(u);
    auto ref = RunWithGrads([&] { return torch::relu(u64).square(); }, {u64}, g);
    ck.Expect(name, "out", fused[0], ref[0], plain[0]);
    ck.Expect(name, "du", fused[1], ref[1], plain[1]);
  }

  // q (with gain) and k (without) at three head dims; h = 6 makes the grid stride cross heads.
  for (int64_t d : {64, 32, 128}) {
    for (bool with_gain : {true, false}) {
      const std::string name = std::string(with_gain ? "qk_norm_rope_gain" : "qk_norm_rope") + " D=" + std::to_string(d);
      const int64_t b = 2, t = 50, h = 6, half = d / 2;
      const double eps = 0.0078125;  // bf16 epsilon, as RmsNorm uses for bf16
      auto x = Bf16Leaf({b, t, h, d}, dev, 2.0);
      auto gain = F32Leaf({h}, dev, 1.5, 0.3);
      auto inv_freq = 1.0 / torch::pow(10000.0, torch::arange(0, d, 2, torch::kFloat64) / d);
      auto freqs = torch::outer(torch::arange(t, torch::kFloat64), inv_freq);
      auto cos = freqs.cos().to(torch::kFloat32).to(dev), sin = freqs.sin().to(torch::kFloat32).to(dev);
      auto g = torch::randn({b, t, h, d}, torch::TensorOptions().device(dev)).to(torch::kBFloat16);
      // The plain path as model/gpt.cc computes it, on (B,H,T,D).
      auto plain_fn = [&](const Tensor& xx, const Tensor& gg, const Tensor& c, const Tensor& s, double e) {
        auto z = xx.transpose(1, 2);
        z = z * torch::rsqrt(z.pow(2).mean(-1, true) + e);
        auto c4 = c.view({1, 1, t, half}).to(z.scalar_type()), s4 = s.view({1, 1, t, half}).to(z.scalar_type());
        auto x1 = z.narrow(-1, 0, half), x2 = z.narrow(-1, half, half);
        z = torch::cat({x1 * c4 + x2 * s4, x1 * (-s4) + x2 * c4}, -1);
        if (with_gain) z = z * gg.to(z.scalar_type()).view({1, h, 1, 1});
        return z.transpose(1, 2);
      };
      std::vector<Tensor> leaves{x};
      if (with_gain) leaves.push_back(gain);
      auto fused = RunWithGrads([&] { return QkNormRope(x, cos, sin, with_gain ? gain : Tensor(), eps); }, leaves, g);
      auto plain = RunWithGrads([&] { return plain_fn(x, gain, cos, sin, eps); }, leaves, g);
      auto x64 = F64(x), gain64 = F64(gain);
      // The kernel rounds the cos/sin tables to bf16, as the plain path's cast does.
      auto c64 = cos.to(torch::kBFloat16).to(torch::kFloat64), s64 = sin.to(torch::kBFloat16).to(torch::kFloat64);
      std::vector<Tensor> leaves64{x64};
      if (with_gain) leaves64.push_back(gain64);
      auto ref = RunWithGrads([&] { return plain_fn(x64, gain64, c64, s64, eps); }, leaves64, g);
      ck.Expect(name, "out", fused[0], ref[0], plain[0]);
      ck.Expect(name, "dx", fused[1], ref[1], plain[1]);
      if (with_gain) ck.Expect(name, "dgain", fused[2], ref[2], plain[2]);
    }
  }
  // q/k/v from one projection (H = 6, K = 2: the k part starts mid-row, GQA widths).
  for (int64_t d : {64, 32}) {
    const std::string name = "qkv_norm_rope D=" + std::to_string(d);
    const int64_t b = 2, t = 50, h = 6, kv = 2, w = (h + 2 * kv) * d, half = d / 2;
    const double eps = 0.0078125;
    auto qkv = Bf16Leaf({b, t, w}, dev, 2.0);
    auto gain = F32Leaf({h}, dev, 1.5, 0.3);
    auto inv_freq = 1.0 / torch::pow(10000.0, torch::arange(0, d, 2, torch::kFloat64) / d);
    auto freqs = torch::outer(torch::arange(t, torch::kFloat64), inv_freq);
    auto cos = freqs.cos().to(torch::kFloat32).to(dev), sin = freqs.sin().to(torch::kFloat32).to(dev);
    auto g = torch::randn({b * t * (h + 2 * kv) * d}, torch::TensorOptions().device(dev)).to(torch::kBFloat16);
    // (B,T,n,D): RmsNorm over D, rope on halves, optional per-head gain.
    auto norm_rope = [&](const Tensor& z0, const Tensor& c, const Tensor& s, const Tensor& gg) {
      auto z = z0 * torch::rsqrt(z0.pow(2).mean(-1, true) + eps);
      auto c4 = c.view({1, t, 1, half}).to(z.scalar_type()), s4 = s.view({1, t, 1, half}).to(z.scalar_type());
      auto x1 = z.narrow(-1, 0, half), x2 = z.narrow(-1, half, half);
      z = torch::cat({x1 * c4 + x2 * s4, x1 * (-s4) + x2 * c4}, -1);
      return gg.defined() ? z * gg.to(z.scalar_type()).view({1, 1, -1, 1}) : z;
    };
    auto plain_fn = [&](const Tensor& z, const Tensor& gg, const Tensor& c, const Tensor& s) {
      auto qp = z.narrow(2, 0, h * d).reshape({b, t, h, d});
      auto kp = z.narrow(2, h * d, kv * d).reshape({b, t, kv, d});
      auto vp = z.narrow(2, (h + kv) * d, kv * d);
      return torch::cat({norm_rope(qp, c, s, gg).flatten(), norm_rope(kp, c, s, Tensor()).flatten(), vp.flatten()});
    };
    auto fused = RunWithGrads(
        [&] {
          auto o = QkvNormRope(qkv, cos, sin, gain, h, kv, eps);
          return torch::cat({o[0].flatten(), o[1].flatten(), o[2].flatten()});
        },
        {qkv, gain}, g);
    auto plain = RunWithGrads([&] { return plain_fn(qkv, gain, cos, sin); }, {qkv, gain}, g);
    auto qkv64 = F64(qkv), gain64 = F64(gain);
    auto c64 = cos.to(torch::kBFloat16).to(torch::kFloat64), s64 = sin.to(torch::kBFloat16).to(torch::kFloat64);
    auto ref = RunWithGrads([&] { return plain_fn(qkv64, gain64, c64, s64); }, {qkv64, gain64}, g);
    ck.Expect(name, "out", fused[0], ref[0], plain[0]);
    ck.Expect(name, "dqkv", fused[1], ref[1], plain[1]);
    ck.Expect(name, "dgain", fused[2], ref[2], plain[2]);
  }

  // Residual update + RmsNorm (mix: a·x + b·x0; add: x + s·y) at C = 512 and 1024 (one row
  // per 2 and 4 warps), odd row counts.
  for (int64_t c : {512, 1024, 256}) {
    for (bool mix : {true, false}) {
      const std::string name = std::string(mix ? "mix_norm" : "add_norm") + " C=" + std::to_string(c);
      const double eps = 0.0078125;
      auto x = Bf16Leaf({3, 37, c}, dev), y = Bf16Leaf({3, 37, c}, dev);
      auto p = mix ? F32Leaf({2, c}, dev, 0.5, 0.5) : F32Leaf({c}, dev, 1.0, 0.3);
      auto g = torch::randn({2 * 3 * 37 * c}, torch::TensorOptions().device(dev)).to(torch::kBFloat16);
      auto both = [](const std::vector<Tensor>& o) { return torch::cat({o[0].flatten(), o[1].flatten()}); };
      auto fused = RunWithGrads([&] { return both(mix ? MixNorm(x, p, y, eps) : AddNorm(x, p, y, eps)); }, {x, p, y}, g);
      auto plain = RunWithGrads(
          [&] {
            auto pp = p.to(x.scalar_type());
            auto o = mix ? pp[0] * x + pp[1] * y : x + pp * y;
            return both({o, o * torch::rsqrt(o.pow(2).mean(-1, true) + eps)});
          },
          {x, p, y}, g);
      auto x64 = F64(x), y64 = F64(y), p64 = F64(p);
      auto ref = RunWithGrads(
          [&] {
            auto o = mix ? p64[0] * x64 + p64[1] * y64 : x64 + p64 * y64;
            // The kernel normalises the bf16-rounded value (as the unfused norm reads it); grads pass straight.
            o = o + (o.to(torch::kBFloat16).to(torch::kFloat64) - o).detach();
            return both({o, o * torch::rsqrt(o.pow(2).mean(-1, true) + eps)});
          },
          {x64, p64, y64}, g);
      ck.Expect(name, "out", fused[0], ref[0], plain[0]);
      ck.Expect(name, "dx", fused[1], ref[1], plain[1]);
      ck.Expect(name, mix ? "dmix" : "dscale", fused[2], ref[2], plain[2]);
      ck.Expect(name, "dy", fused[3], ref[3], plain[3]);
    }
  }

  // Soft-capped cross-entropy: V = 1024 (the baseline) and 520 (a partial last chunk per lane).
  for (int64_t v : {1024, 520}) {
    const std::string name = "softcap_ce V=" + std::to_string(v);
    const int64_t n = 301;
    const double cap = 30.0;
    auto l = Bf16Leaf({n, v}, dev, 20.0);
    auto tgt = torch::randint(0, v, {n}, torch::TensorOptions().dtype(torch::kInt64).device(dev));
    auto g = torch::randn({}, torch::TensorOptions().device(dev)) + 2.0;
    auto fused = RunWithGrads([&] { return SoftcapCrossEntropy(l, tgt, cap); }, {l}, g);
    auto plain = RunWithGrads(
        [&] { return torch::nn::functional::cross_entropy((cap * torch::tanh(l / cap)).to(torch::kFloat32), tgt); },
        {l}, g);
    auto l64 = F64(l);
    auto ref = RunWithGrads([&] { return torch::nn::functional::cross_entropy(cap * torch::tanh(l64 / cap), tgt); },
                            {l64}, g);
    ck.Expect(name, "loss", fused[0], ref[0], plain[0]);
    ck.Expect(name, "dlogits", fused[1], ref[1], plain[1]);
  }
  SetFusedOutputPoison(false);
  std::printf("kernel-check %s: %d failure(s)\n", ck.failures == 0 ? "ALL PASS" : "FAILED", ck.failures);
  return ck.failures;
}

}  // namespace caddie::model
