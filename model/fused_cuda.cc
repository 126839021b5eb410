#include "model/fused_cuda.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>

#include "model/fused_cuda_launch.h"
#include "model/perf_knobs.h"

#ifdef CADDIE_WITH_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace caddie::model {

namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The self-check fills outputs with NaN so that an element a kernel fails to write shows.
bool g_poison = false;

#ifdef CADDIE_WITH_CUDA_KERNELS
void* Stream(const Tensor& t) { return c10::cuda::getCurrentCUDAStream(t.device().index()).stream(); }
#else
void* Stream(const Tensor&) { return nullptr; }
#endif

void Check(int err, const char* what) {
  TORCH_CHECK(err == 0, "caddie fused kernel ", what, " failed to launch (cudaError ", err, ")");
}

Tensor NewLike(const Tensor& t) {
  return g_poison ? torch::full_like(t, std::numeric_limits<float>::quiet_NaN(), t.options(), torch::MemoryFormat::Contiguous)
                  : torch::empty_like(t, t.options(), torch::MemoryFormat::Contiguous);
}

Tensor NewOf(torch::IntArrayRef sizes, const torch::TensorOptions& o) {
  return g_poison ? torch::full(sizes, std::numeric_limits<float>::quiet_NaN(), o) : torch::empty(sizes, o);
}

bool Aligned(const Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

// A bf16 activation the kernels can read: contiguous, 16-byte aligned.
bool KernelActivation(const Tensor& t) {
  return t.defined() && t.is_cuda() && t.scalar_type() == torch::kBFloat16 && t.is_contiguous() && Aligned(t);
}

// Grads arrive from autograd in any layout: make them what the kernels read.
Tensor Prep(const Tensor& g) {
  auto t = g.scalar_type() == torch::kBFloat16 ? g.contiguous() : g.to(torch::kBFloat16).contiguous();
  return Aligned(t) ? t : t.clone();
}

bool KernelParam(const Tensor& p, int64_t numel) {
  return p.defined() && p.is_cuda() && p.scalar_type() == torch::kFloat32 && p.is_contiguous() && p.numel() == numel;
}

// Residual-stream ops: x, y (.., C) bf16 of one shape, C a multiple of 8 up to 4096 (one
// block row of the backward's column reduction holds C/8 threads).
bool ResidualApplies(const char* knob, const Tensor& x, const Tensor& y) {
  if (!FusedKernelsBuilt() || PerfOff(knob)) return false;
  if (!KernelActivation(x) || !KernelActivation(y) || x.sizes() != y.sizes() || x.dim() < 1) return false;
  const int64_t c = x.size(-1);
  return c % 8 == 0 && c <= 4096 && x.numel() > 0 && x.device() == y.device();
}

struct MixFn : public torch::autograd::Function<MixFn> {
  // out = (has_a ? a : 1)·x + b·y, with a = params[0], b = params[1] when has_a, else b = params.
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& params, const Tensor& y, bool has_a) {
    const int64_t c = x.size(-1), rows = x.numel() / c;
    auto out = NewLike(x);
    const float* p = params.data_ptr<float>();
    const float* a = has_a ? p : nullptr;
    const float* b = has_a ? p + c : p;
    Check(cuda::MixForward(x.data_ptr(), a, y.data_ptr(), b, out.data_ptr(), rows, c, Stream(x)), "mix fwd");
    ctx->save_for_backward({x, params, y});
    ctx->saved_data["has_a"] = has_a;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &params = saved[1], &y = saved[2];
    const bool has_a = ctx->saved_data["has_a"].toBool();
    auto g = Prep(grads[0]);
    const int64_t c = x.size(-1), rows = x.numel() / c;
    auto dparams = torch::zeros_like(params);
    auto dy = NewLike(y);
    Tensor dx = has_a ? NewLike(x) : g;  // x + s·y: dx is g itself
    const float* p = params.data_ptr<float>();
    float* dp = dparams.data_ptr<float>();
    Check(cuda::MixBackward(g.data_ptr(), has_a ? x.data_ptr() : nullptr, has_a ? p : nullptr, y.data_ptr(),
                            has_a ? p + c : p, has_a ? dx.data_ptr() : nullptr, dy.data_ptr(),
                            has_a ? dp : nullptr, has_a ? dp + c : dp, rows, c, Stream(x)),
          "mix bwd");
    return {dx, dparams, dy, Tensor()};
  }
};

struct ReluSqFn : public torch::autograd::Function<ReluSqFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& u) {
    auto out = NewLike(u);
    Check(cuda::ReluSqForward(u.data_ptr(), out.data_ptr(), u.numel(), Stream(u)), "relu2 fwd");
    ctx->save_for_backward({u});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto u = ctx->get_saved_variables()[0];
    auto g = Prep(grads[0]);
    auto du = NewLike(u);
    Check(cuda::ReluSqBackward(u.data_ptr(), g.data_ptr(), du.data_ptr(), u.numel(), Stream(u)), "relu2 bwd");
    return {du};
  }
};

struct RmsFn : public torch::autograd::Function<RmsFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, double eps) {
    const int64_t c = x.size(-1), rows = x.numel() / c;
    auto out = NewLike(x);
    Check(cuda::RmsNormForward(x.data_ptr(), out.data_ptr(), rows, c, static_cast<float>(eps), Stream(x)), "rms fwd");
    ctx->save_for_backward({x});
    ctx->saved_data["eps"] = eps;
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto x = ctx->get_saved_variables()[0];
    const double eps = ctx->saved_data["eps"].toDouble();
    auto g = Prep(grads[0]);
    const int64_t c = x.size(-1), rows = x.numel() / c;
    auto dx = NewLike(x);
    Check(cuda::RmsNormBackward(x.data_ptr(), g.data_ptr(), dx.data_ptr(), rows, c, static_cast<float>(eps), Stream(x)),
          "rms bwd");
    return {dx, Tensor()};
  }
};

struct QkFn : public torch::autograd::Function<QkFn> {
  // gain is ignored (pass any defined tensor) when has_gain is false.
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& cos, const Tensor& sin,
                        const Tensor& gain, double eps, bool has_gain) {
    const int64_t t = x.size(1), h = x.size(2), d = x.size(3), rows = x.numel() / d;
    auto out = NewLike(x);
    Check(cuda::QkNormRopeForward(x.data_ptr(), cos.data_ptr<float>(), sin.data_ptr<float>(),
                                  has_gain ? gain.data_ptr<float>() : nullptr, out.data_ptr(), rows, t, h, d, h * d,
                                  h * d, static_cast<float>(eps), Stream(x)),
          "qk fwd");
    ctx->save_for_backward({x, cos, sin, gain});
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["has_gain"] = has_gain;
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const Tensor &x = s[0], &cos = s[1], &sin = s[2], &gain = s[3];
    const double eps = ctx->saved_data["eps"].toDouble();
    const bool has_gain = ctx->saved_data["has_gain"].toBool();
    auto g = Prep(grads[0]);
    const int64_t t = x.size(1), h = x.size(2), d = x.size(3), rows = x.numel() / d;
    auto dx = NewLike(x);
    Tensor dgain = has_gain ? torch::zeros_like(gain) : Tensor();
    Check(cuda::QkNormRopeBackward(x.data_ptr(), g.data_ptr(), cos.data_ptr<float>(), sin.data_ptr<float>(),
                                   has_gain ? gain.data_ptr<float>() : nullptr, dx.data_ptr(),
                                   has_gain ? dgain.data_ptr<float>() : nullptr, rows, t, h, d, h * d, h * d,
                                   static_cast<float>(eps), Stream(x)),
          "qk bwd");
    return {dx, Tensor(), Tensor(), dgain, Tensor(), Tensor()};
  }
};

// Pointer to element `off` of a bf16 tensor's storage.
void* At(const Tensor& t, int64_t off) { return static_cast<char*>(t.data_ptr()) + off * 2; }

struct QkvFn : public torch::autograd::Function<QkvFn> {
  // qkv (B,T,(H+2K)·D) -> q (B,T,H,D), k, v (B,T,K,D); see QkvNormRope.
  static variable_list forward(AutogradContext* ctx, const Tensor& qkv, const Tensor& cos, const Tensor& sin,
                               const Tensor& gain, double eps, int64_t heads, int64_t kv_heads) {
    const int64_t b = qkv.size(0), t = qkv.size(1), w = qkv.size(2), d = w / (heads + 2 * kv_heads);
    auto q = NewOf({b, t, heads, d}, qkv.options());
    auto k = NewOf({b, t, kv_heads, d}, qkv.options());
    const float* c = cos.data_ptr<float>();
    const float* s = sin.data_ptr<float>();
    Check(cuda::QkNormRopeForward(qkv.data_ptr(), c, s, gain.data_ptr<float>(), q.data_ptr(), b * t * heads, t, heads,
                                  d, w, heads * d, static_cast<float>(eps), Stream(qkv)),
          "qkv q fwd");
    Check(cuda::QkNormRopeForward(At(qkv, heads * d), c, s, nullptr, k.data_ptr(), b * t * kv_heads, t, kv_heads, d,
                                  w, kv_heads * d, static_cast<float>(eps), Stream(qkv)),
          "qkv k fwd");
    auto v = NewOf({b, t, kv_heads, d}, qkv.options());
    Check(cuda::RowCopy(At(qkv, (heads + kv_heads) * d), w, v.data_ptr(), kv_heads * d, b * t, kv_heads * d,
                        Stream(qkv)),
          "qkv v copy");
    ctx->save_for_backward({qkv, cos, sin, gain});
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["heads"] = heads;
    ctx->saved_data["kv_heads"] = kv_heads;
    return {q, k, v};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto sv = ctx->get_saved_variables();
    const Tensor &qkv = sv[0], &cos = sv[1], &sin = sv[2], &gain = sv[3];
    const double eps = ctx->saved_data["eps"].toDouble();
    const int64_t heads = ctx->saved_data["heads"].toInt(), kv_heads = ctx->saved_data["kv_heads"].toInt();
    const int64_t b = qkv.size(0), t = qkv.size(1), w = qkv.size(2), d = w / (heads + 2 * kv_heads);
    // One grad for the whole projection output: q and k grads written in place by the
    // kernels, v's copied in (an unused output's grad is zero).
    auto dqkv = NewLike(qkv);
    auto dgain = torch::zeros_like(gain);
    const float* c = cos.data_ptr<float>();
    const float* s = sin.data_ptr<float>();
    auto gq = grads[0].defined() ? Prep(grads[0]) : torch::zeros({b, t, heads, d}, qkv.options());
    auto gk = grads[1].defined() ? Prep(grads[1]) : torch::zeros({b, t, kv_heads, d}, qkv.options());
    Check(cuda::QkNormRopeBackward(qkv.data_ptr(), gq.data_ptr(), c, s, gain.data_ptr<float>(), dqkv.data_ptr(),
                                   dgain.data_ptr<float>(), b * t * heads, t, heads, d, w, heads * d,
                                   static_cast<float>(eps), Stream(qkv)),
          "qkv q bwd");
    Check(cuda::QkNormRopeBackward(At(qkv, heads * d), gk.data_ptr(), c, s, nullptr, At(dqkv, heads * d), nullptr,
                                   b * t * kv_heads, t, kv_heads, d, w, kv_heads * d, static_cast<float>(eps),
                                   Stream(qkv)),
          "qkv k bwd");
    auto dv = dqkv.narrow(2, (heads + kv_heads) * d, kv_heads * d).view({b, t, kv_heads, d});
    const Tensor& gv = grads[2];
    if (!gv.defined()) {
      dv.zero_();
    } else if (KernelActivation(gv)) {  // SDPA's grad in v's own layout: one vectorised pass
      Check(cuda::RowCopy(gv.data_ptr(), kv_heads * d, dv.data_ptr(), w, b * t, kv_heads * d, Stream(qkv)),
            "qkv dv copy");
    } else {
      dv.copy_(gv);
    }
    return {dqkv, Tensor(), Tensor(), dgain, Tensor(), Tensor(), Tensor()};
  }
};

struct ResidNormFn : public torch::autograd::Function<ResidNormFn> {
  // {out, RmsNorm(out)} with out = (has_a ? a : 1)·x + b·y; params as MixFn's.
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& params, const Tensor& y,
                               bool has_a, double eps) {
    const int64_t c = x.size(-1), rows = x.numel() / c;
    auto out = NewLike(x), nout = NewLike(x);
    const float* p = params.data_ptr<float>();
    Check(cuda::ResidNormForward(x.data_ptr(), has_a ? p : nullptr, y.data_ptr(), has_a ? p + c : p, out.data_ptr(),
                                 nout.data_ptr(), rows, c, static_cast<float>(eps), Stream(x)),
          "resid+norm fwd");
    ctx->save_for_backward({x, params, y});
    ctx->saved_data["has_a"] = has_a;
    ctx->saved_data["eps"] = eps;
    return {out, nout};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &params = saved[1], &y = saved[2];
    const bool has_a = ctx->saved_data["has_a"].toBool();
    const double eps = ctx->saved_data["eps"].toDouble();
    const int64_t c = x.size(-1), rows = x.numel() / c;
    Tensor g1 = grads[0].defined() ? Prep(grads[0]) : Tensor();
    Tensor g2 = grads[1].defined() ? Prep(grads[1]) : torch::zeros_like(x);
    auto dparams = torch::zeros_like(params);
    auto dx = NewLike(x), dy = NewLike(y);
    const float* p = params.data_ptr<float>();
    float* dp = dparams.data_ptr<float>();
    Check(cuda::ResidNormBackward(g1.defined() ? g1.data_ptr() : nullptr, g2.data_ptr(), x.data_ptr(),
                                  has_a ? p : nullptr, y.data_ptr(), has_a ? p + c : p, dx.data_ptr(), dy.data_ptr(),
                                  has_a ? dp : nullptr, has_a ? dp + c : dp, rows, c, static_cast<float>(eps),
                                  Stream(x)),
          "resid+norm bwd");
    return {dx, dparams, dy, Tensor(), Tensor()};
  }
};

struct SoftcapCeFn : public torch::autograd::Function<SoftcapCeFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& logits, const Tensor& targets, double cap) {
    const int64_t rows = logits.size(0), v = logits.size(1);
    auto f32 = logits.options().dtype(torch::kFloat32);
    auto loss = torch::empty({rows}, f32), lse = torch::empty({rows}, f32);
    Check(cuda::SoftcapCeForward(logits.data_ptr(), targets.data_ptr<int64_t>(), loss.data_ptr<float>(),
                                 lse.data_ptr<float>(), rows, v, static_cast<float>(cap), Stream(logits)),
          "softcap ce fwd");
    ctx->save_for_backward({logits, targets, lse});
    ctx->saved_data["cap"] = cap;
    return loss.mean();
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const Tensor &logits = s[0], &targets = s[1], &lse = s[2];
    const double cap = ctx->saved_data["cap"].toDouble();
    const int64_t rows = logits.size(0), v = logits.size(1);
    // d mean / d loss[r] = g / rows, kept on the device (no host sync).
    auto gscale = (grads[0].to(torch::kFloat32) / static_cast<double>(rows)).reshape({1}).contiguous();
    auto dl = NewLike(logits);
    Check(cuda::SoftcapCeBackward(logits.data_ptr(), targets.data_ptr<int64_t>(), lse.data_ptr<float>(),
                                  gscale.data_ptr<float>(), dl.data_ptr(), rows, v, static_cast<float>(cap),
                                  Stream(logits)),
          "softcap ce bwd");
    return {dl, Tensor(), Tensor()};
  }
};

}  // namespace

#ifdef CADDIE_WITH_CUDA_KERNELS
bool FusedKernelsBuilt() { return true; }
#else
bool FusedKernelsBuilt() { return false; }

// No nvcc in this build: the launchers exist only so that the wrappers compile; the
// FusedKernelsBuilt() checks keep them from being called.
namespace cuda {
namespace {
int NotBuilt() {
  TORCH_CHECK(false, "caddie-train was built without CUDA kernels");
  return -1;
}
}  // namespace
int MixForward(const void*, const float*, const void*, const float*, void*, int64_t, int64_t, void*) {
  return NotBuilt();
}
int MixBackward(const void*, const void*, const float*, const void*, const float*, void*, void*, float*, float*,
                int64_t, int64_t, void*) {
  return NotBuilt();
}
int ReluSqForward(const void*, void*, int64_t, void*) { return NotBuilt(); }
int RmsNormForward(const void*, void*, int64_t, int64_t, float, void*) { return NotBuilt(); }
int RmsNormBackward(const void*, const void*, void*, int64_t, int64_t, float, void*) { return NotBuilt(); }
int ReluSqBackward(const void*, const void*, void*, int64_t, void*) { return NotBuilt(); }
int QkNormRopeForward(const void*, const float*, const float*, const float*, void*, int64_t, int64_t, int64_t,
                      int64_t, int64_t, int64_t, float, void*) {
  return NotBuilt();
}
int QkNormRopeBackward(const void*, const void*, const float*, const float*, const float*, void*, float*, int64_t,
                       int64_t, int64_t, int64_t, int64_t, int64_t, float, void*) {
  return NotBuilt();
}
int ResidNormForward(const void*, const float*, const void*, const float*, void*, void*, int64_t, int64_t, float,
                     void*) {
  return NotBuilt();
}
int ResidNormBackward(const void*, const void*, const void*, const float*, const void*, const float*, void*, void*,
                      float*, float*, int64_t, int64_t, float, void*) {
  return NotBuilt();
}
int RowCopy(const void*, int64_t, void*, int64_t, int64_t, int64_t, void*) { return NotBuilt(); }
int SoftcapCeForward(const void*, const int64_t*, float*, float*, int64_t, int64_t, float, void*) {
  return NotBuilt();
}
int SoftcapCeBackward(const void*, const int64_t*, const float*, const float*, void*, int64_t, int64_t, float, void*) {
  return NotBuilt();
}
}  // namespace cuda
#endif

Tensor MixResidual(const Tensor& x, const Tensor& mix, const Tensor& x0) {
  if (ResidualApplies("kmix", x, x0) && KernelParam(mix, 2 * x.size(-1))) {
#ifdef CADDIE_WITH_CUDA_KERNELS
    c10::cuda::CUDAGuard guard(x.device());
#endif
    return MixFn::apply(x, mix, x0, true);
  }
  auto m = mix.to(x.scalar_type());
  return m[0] * x + m[1] * x0;
}

Tensor AddScaled(const Tensor& x, const Tensor& scale, const Tensor& y) {
  if (ResidualApplies("kadd", x, y) && KernelParam(scale, x.size(-1))) {
#ifdef CADDIE_WITH_CUDA_KERNELS
    c10::cuda::CUDAGuard guard(x.device());
#endif
    return MixFn::apply(x, scale, y, false);
  }
  return x + scale.to(x.scalar_type()) * y;
}

Tensor ReluSquare(const Tensor& u) {
  if (FusedKernelsBuilt() && !PerfOff("krelu") && KernelActivation(u) && u.numel() % 8 == 0 && u.numel() > 0) {
#ifdef CADDIE_WITH_CUDA_KERNELS
    c10::cuda::CUDAGuard guard(u.device());
#endif
    return ReluSqFn::apply(u);
  }
  return torch::relu(u).square();
}

bool FusedRmsApplies(const Tensor& x) {
  if (!FusedKernelsBuilt() || PerfOff("knorm") || !KernelActivation(x) || x.dim() < 1 || x.numel() == 0) return false;
  const int64_t c = x.size(-1);
  return c == 256 || c == 512 || c == 768 || c == 1024;
}

Tensor RmsNormKernel(const Tensor& x, double eps) {
#ifdef CADDIE_WITH_CUDA_KERNELS
  c10::cuda::CUDAGuard guard(x.device());
#endif
  return RmsFn::apply(x, eps);
}

bool FusedQkApplies(const Tensor& x) {
  if (!FusedKernelsBuilt() || PerfOff("kqk") || !KernelActivation(x) || x.dim() != 4 || x.numel() == 0) return false;
  const int64_t d = x.size(3);
  return d == 32 || d == 64 || d == 128;
}

Tensor QkNormRope(const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& gain, double eps) {
  const int64_t t = x.size(1), half = x.size(3) / 2;
  auto c = cos.to(torch::kFloat32).reshape({t, half}).contiguous();
  auto s = sin.to(torch::kFloat32).reshape({t, half}).contiguous();
  const bool has_gain = gain.defined();
  TORCH_CHECK(!has_gain || KernelParam(gain, x.size(2)), "QkNormRope: gain must be fp32 (H) on the GPU");
#ifdef CADDIE_WITH_CUDA_KERNELS
  c10::cuda::CUDAGuard guard(x.device());
#endif
  return QkFn::apply(x, c, s, has_gain ? gain : c, eps, has_gain);
}

bool FusedQkvApplies(const Tensor& h, int64_t heads, int64_t kv_heads, int64_t head_dim) {
  if (!FusedKernelsBuilt() || PerfOff("qkv") || PerfOff("kqk") || !KernelActivation(h) || h.dim() != 3) return false;
  return (head_dim == 32 || head_dim == 64 || head_dim == 128) && heads > 0 && kv_heads > 0;
}

std::vector<Tensor> QkvNormRope(const Tensor& qkv, const Tensor& cos, const Tensor& sin, const Tensor& gain,
                                int64_t heads, int64_t kv_heads, double eps) {
  const int64_t t = qkv.size(1), w = qkv.size(2), d = w / (heads + 2 * kv_heads), half = d / 2;
  TORCH_CHECK(KernelActivation(qkv) && qkv.dim() == 3 && d * (heads + 2 * kv_heads) == w,
              "QkvNormRope: qkv must be contiguous bf16 (B,T,(H+2K)·D)");
  TORCH_CHECK(KernelParam(gain, heads), "QkvNormRope: gain must be fp32 (H) on the GPU");
  auto c = cos.to(torch::kFloat32).reshape({t, half}).contiguous();
  auto s = sin.to(torch::kFloat32).reshape({t, half}).contiguous();
#ifdef CADDIE_WITH_CUDA_KERNELS
  c10::cuda::CUDAGuard guard(qkv.device());
#endif
  return QkvFn::apply(qkv, c, s, gain, eps, heads, kv_heads);
}

bool FusedResidNormApplies(const Tensor& x, const Tensor& y) {
  if (!FusedKernelsBuilt() || PerfOff("kresnorm") || PerfOff("knorm") || PerfOff("norm")) return false;
  if (!KernelActivation(x) || !KernelActivation(y) || x.sizes() != y.sizes() || x.dim() < 1 || x.numel() == 0) {
    return false;
  }
  const int64_t c = x.size(-1);
  return c % 256 == 0 && c <= 4096 && x.device() == y.device();
}

std::vector<Tensor> MixNorm(const Tensor& x, const Tensor& mix, const Tensor& x0, double eps) {
  TORCH_CHECK(KernelParam(mix, 2 * x.size(-1)), "MixNorm: mix must be fp32 (2,C) on the GPU");
#ifdef CADDIE_WITH_CUDA_KERNELS
  c10::cuda::CUDAGuard guard(x.device());
#endif
  return ResidNormFn::apply(x, mix, x0, true, eps);
}

std::vector<Tensor> AddNorm(const Tensor& x, const Tensor& scale, const Tensor& y, double eps) {
  TORCH_CHECK(KernelParam(scale, x.size(-1)), "AddNorm: scale must be fp32 (C) on the GPU");
#ifdef CADDIE_WITH_CUDA_KERNELS
  c10::cuda::CUDAGuard guard(x.device());
#endif
  return ResidNormFn::apply(x, scale, y, false, eps);
}

bool FusedSoftcapCeApplies(const Tensor& logits, const Tensor& targets, double cap) {
  if (!FusedKernelsBuilt() || PerfOff("kce") || !KernelActivation(logits) || logits.dim() != 2) return false;
  return logits.size(1) % 8 == 0 && logits.size(0) > 0 && cap > 0 && cap <= 40 && targets.is_cuda() &&
         targets.scalar_type() == torch::kInt64 && targets.dim() == 1 && targets.size(0) == logits.size(0);
}

Tensor SoftcapCrossEntropy(const Tensor& logits, const Tensor& targets, double cap) {
#ifdef CADDIE_WITH_CUDA_KERNELS
  c10::cuda::CUDAGuard guard(logits.device());
#endif
  return SoftcapCeFn::apply(logits, targets.contiguous(), cap);
}

void SetFusedOutputPoison(bool on) { g_poison = on; }

}  // namespace caddie::model
