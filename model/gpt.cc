// The baseline GPT of Parameter Golf's train_gpt.py, read top to bottom:
// modules, forward pass, Muon, evaluation. Shapes: B batch, T time, C width,
// H query heads, K kv heads, D head dim, V vocab.
#include "model/gpt.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <stdexcept>
#include <limits>
#include <map>

#include "model/fused_cuda.h"
#include "model/fused_ops.h"
#include "model/perf_knobs.h"
#include "model/quant.h"
#include "model/torch_compat.h"

namespace caddie::model {

namespace F = torch::nn::functional;

namespace {

// RmsNorm's epsilon for bf16 (finfo(bf16).eps): the fused kernels run on bf16 only.
constexpr double kBf16Eps = 0.0078125;

torch::nn::Linear MakeLinear(int64_t in, int64_t out, bool zero_init) {
  torch::nn::Linear l(torch::nn::LinearOptions(in, out).bias(false));
  if (zero_init) {
    torch::NoGradGuard ng;
    l->weight.zero_();
  }
  return l;
}

// RoPE on the last dim, halves rotated as the reference: x (B,H,T,D), cos/sin (1,1,T,D/2).
torch::Tensor ApplyRotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  auto x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  return torch::cat({x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos}, -1);
}

// Causal attention. q (B,H,T,D), k/v (B,K,T,D) -> (B,H,T,D). GQA: query head h
// reads kv head h / (H/K), as SDPA's enable_gqa (repeat_interleave). `bias`, when
// defined, is an additive (1,H,T,T) mask that already holds the causal -inf (ALiBi).
torch::Tensor CausalAttention(const torch::Tensor& q, torch::Tensor k, torch::Tensor v,
                              const torch::Tensor& bias) {
  const int64_t rep = q.size(1) / k.size(1);
#if CADDIE_TORCH_AT_LEAST_2_4
  // CADDIE_PERF_OFF=cudnn: SDPA without its cuDNN backend (then flash attention), to compare.
  static const bool cudnn_sdp = [] {
    if (PerfOff("cudnn")) at::globalContext().setSDPUseCuDNN(false);
    return !PerfOff("cudnn");
  }();
  (void)cudnn_sdp;
#endif
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5)
  // SDPA's own GQA (flash reads kv head h / rep) saves two copies of k and v per layer.
  if (rep > 1 && q.is_cuda() && !bias.defined() && !PerfOff("gqa")) {
    return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                            /*is_causal=*/true, /*scale=*/std::nullopt,
                                            /*enable_gqa=*/true);
  }
#endif
  if (rep > 1) {
    k = k.repeat_interleave(rep, 1);
    v = v.repeat_interleave(rep, 1);
  }
#if CADDIE_TORCH_AT_LEAST_2
  if (bias.defined()) {
    return at::scaled_dot_product_attention(q, k, v, bias.to(q.scalar_type()), 0.0, false);
  }
  return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                          /*is_causal=*/true);
#else
  // LibTorch 1.13 has no SDPA: softmax(q kᵀ / √D + causal mask) v.
  const int64_t t = q.size(2);
  auto att = torch::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(static_cast<double>(q.size(-1))));
  if (bias.defined()) {
    att = att + bias.to(att.scalar_type());
  } else {
    auto mask = torch::ones({t, t}, torch::TensorOptions().dtype(torch::kBool).device(q.device())).triu(1);
    att = att.masked_fill(mask, -std::numeric_limits<float>::infinity());
  }
  return torch::matmul(torch::softmax(att, -1), v);
#endif
}

}  // namespace

torch::Tensor RmsNorm(const torch::Tensor& x) {
  const double eps = x.scalar_type() == torch::kBFloat16 ? 0.0078125
                     : x.scalar_type() == torch::kHalf   ? 0.0009765625
                     : x.scalar_type() == torch::kDouble ? std::numeric_limits<double>::epsilon()
                                                         : std::numeric_limits<float>::epsilon();
  if (x.is_cuda() && !PerfOff("norm")) return FusedRmsApplies(x) ? RmsNormKernel(x, eps) : FusedRmsNorm(x, eps);
  return x * torch::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps);
}

// --- Modules ----------------------------------------------------------------

MlpImpl::MlpImpl(int64_t dim, int64_t mult) {
  fc = register_module("fc", MakeLinear(dim, mult * dim, false));
  proj = register_module("proj", MakeLinear(mult * dim, dim, true));
}

AttentionImpl::AttentionImpl(int64_t dim, int64_t h, int64_t kv, double qk_gain_init)
    : heads(h), kv_heads(kv), head_dim(dim / h) {
  c_q = register_module("c_q", MakeLinear(dim, dim, false));
  c_k = register_module("c_k", MakeLinear(dim, kv * head_dim, false));
  c_v = register_module("c_v", MakeLinear(dim, kv * head_dim, false));
  proj = register_module("proj", MakeLinear(dim, dim, true));
  q_gain = register_parameter("q_gain", torch::full({h}, qk_gain_init));
}

BlockImpl::BlockImpl(int64_t dim, int64_t h, int64_t kv, int64_t mlp_mult, double qk_gain_init) {
  attn = register_module("attn", Attention(dim, h, kv, qk_gain_init));
  mlp = register_module("mlp", Mlp(dim, mlp_mult));
  attn_scale = register_parameter("attn_scale", torch::ones({dim}));
  mlp_scale = register_parameter("mlp_scale", torch::ones({dim}));
  resid_mix = register_parameter("resid_mix", torch::stack({torch::ones({dim}), torch::zeros({dim})}));
}

std::vector<int64_t> LayerSchedule(const TrainSpec& s) {
  std::vector<int64_t> out;
  auto recur = ParseRecurLayers(s.recur_layers);
  const int64_t lo = recur.ok() && recur->first >= 0 ? recur->first : 0;
  const int64_t hi = recur.ok() && recur->first >= 0 ? recur->second : s.num_layers - 1;
  for (int64_t i = 0; i < lo; ++i) out.push_back(i);
  for (int64_t l = 0; l < s.loops; ++l) {
    for (int64_t i = lo; i <= hi; ++i) out.push_back(i);
  }
  for (int64_t i = hi + 1; i < s.num_layers; ++i) out.push_back(i);
  if (s.unique_blocks > 0) {
    for (auto& b : out) b %= s.unique_blocks;
  }
  return out;
}

char BlockMixer(const TrainSpec& s, int64_t block) {
  if (!s.mixer_pattern.empty()) return s.mixer_pattern[static_cast<size_t>(block)];
  return s.mixer == "ssm" ? 'S' : 'A';
}

torch::Tensor AlibiBias(int64_t heads, int64_t t) {
  // Press et al.'s get_slopes: a geometric sequence starting at 2^(-8/P) for P a power of two.
  std::function<std::vector<double>(int64_t)> slopes_of = [&](int64_t n) {
    int64_t p = 1;
    while (2 * p <= n) p *= 2;
    std::vector<double> out;
    for (int64_t h = 0; h < p; ++h) out.push_back(std::pow(2.0, -8.0 * static_cast<double>(h + 1) / p));
    if (p < n) {
      const auto more = slopes_of(2 * p);
      for (int64_t h = 0; static_cast<int64_t>(out.size()) < n; h += 2) out.push_back(more[h]);
    }
    return out;
  };
  auto slopes = torch::tensor(slopes_of(heads), torch::kFloat64).to(torch::kFloat32);  // (H)
  auto pos = torch::arange(t, torch::kFloat32);
  auto dist = pos.view({t, 1}) - pos.view({1, t});  // (T,T) i - j
  auto b = -slopes.view({heads, 1, 1}) * dist.view({1, t, t});
  b = b.masked_fill(dist.view({1, t, t}) < 0, -std::numeric_limits<float>::infinity());
  return b.unsqueeze(0);  // (1,H,T,T)
}

namespace {
// Muon takes the 2-D weight matrices of blocks; control tensors (the reference's resid_mix,
// the SSM's A_log) and everything else go to Adam.
bool IsBlockMatrix(const std::string& name, const torch::Tensor& p) {
  return p.dim() == 2 && name.find("resid_mix") == std::string::npos && name.find("A_log") == std::string::npos;
}
int64_t StoredBlocks(const TrainSpec& s) { return s.unique_blocks > 0 ? s.unique_blocks : s.num_layers; }
int64_t EmbedDim(const TrainSpec& s) { return s.embed_dim > 0 ? s.embed_dim : s.model_dim; }
}  // namespace

SsmImpl::SsmImpl(int64_t dim, int64_t expand, int64_t n, int64_t w)
    : inner(expand * dim), state(n), conv_width(w), dt_rank((dim + 15) / 16) {
  in_proj = register_module("in_proj", MakeLinear(dim, 2 * inner, false));
  x_proj = register_module("x_proj", MakeLinear(inner, dt_rank + 2 * n, false));
  dt_proj = register_module("dt_proj", torch::nn::Linear(torch::nn::LinearOptions(dt_rank, inner)));
  out_proj = register_module("out_proj", MakeLinear(inner, dim, true));
  conv_weight = register_parameter("conv_weight", torch::empty({inner, 1, w}).uniform_(-1.0 / std::sqrt(w), 1.0 / std::sqrt(w)));
  conv_bias = register_parameter("conv_bias", torch::zeros({inner}));
  // A = -[1..N] per channel (S4D-real); Δ starts log-uniform in [0.001, 0.1] (Mamba's init).
  A_log = register_parameter("A_log", torch::log(torch::arange(1, n + 1, torch::kFloat32)).repeat({inner, 1}));
  D_skip = register_parameter("D_skip", torch::ones({inner}));
  torch::NoGradGuard ng;
  dt_proj->weight.uniform_(-1.0 / std::sqrt(dt_rank), 1.0 / std::sqrt(dt_rank));
  auto dt = torch::exp(torch::rand({inner}) * (std::log(0.1) - std::log(0.001)) + std::log(0.001));
  dt_proj->bias.copy_(dt + torch::log(-torch::expm1(-dt)));  // softplus⁻¹(dt)
}

std::vector<int64_t> ScanChunkLengths(const std::vector<double>& steps, int64_t max_chunk) {
  // Within a chunk the scan scales by exp(-Σ Δ A) ≤ exp(Σ steps); keeping that exponent
  // ≤ kScanMaxLogRange leaves fp32 headroom (e^60 ≈ 1e26) for |ΔBu| and the running sum.
  std::vector<int64_t> lens;
  int64_t len = 0;
  double sum = 0;
  for (double step : steps) {
    step = std::isnan(step) ? kScanMinLogDecay : std::max(step, 0.0);
    if (len > 0 && ((max_chunk > 0 && len == max_chunk) || sum + step > kScanMaxLogRange)) {
      lens.push_back(len);
      len = 0, sum = 0;
    }
    ++len, sum += step;
  }
  if (len > 0) lens.push_back(len);
  return lens;
}

torch::Tensor SelectiveScan(const torch::Tensor& u_in, const torch::Tensor& dt_in, const torch::Tensor& A_in,
                            const torch::Tensor& B_in, const torch::Tensor& C_in, int64_t chunk) {
  const auto f = torch::kFloat32;
  auto u = u_in.to(f), dt = dt_in.to(f), A = A_in.to(f), Bm = B_in.to(f), Cm = C_in.to(f);
  const int64_t b = u.size(0), t = u.size(1), d = u.size(2), n = A.size(1);
  // Per-step log decay Δ·A, clamped at -kScanMinLogDecay: exp(-20) = 2e-9 is below fp32's
  // resolution of the state it multiplies, so the clamp changes nothing representable, and it
  // bounds the step so that every chunk is at least 3 steps long.
  auto log_decay = (dt.unsqueeze(-1) * A).clamp_min(-kScanMinLogDecay);  // (B,T,D,N)
  // One host read per call (T numbers): the largest step at each time, from which the chunks
  // are cut front to back, so a chunk edge never depends on a later time.
  auto step_t = log_decay.detach().amin({0, 2, 3}).neg().to(torch::kFloat64).cpu().contiguous();  // (T)
  const double* step_p = step_t.data_ptr<double>();
  const std::vector<int64_t> lens = ScanChunkLengths(std::vector<double>(step_p, step_p + t), chunk);
  auto dbu = (dt * u).unsqueeze(-1) * Bm.unsqueeze(2);  // (B,T,D,N) Δ B u
  auto h = torch::zeros({b, d, n}, u.options());        // state entering the chunk
  std::vector<torch::Tensor> ys;
  int64_t t0 = 0;
  for (const int64_t l : lens) {
    // h_t = exp(cum_t) · (h_0 + Σ_{s≤t} exp(-cum_s) ΔBu_s), cum = Σ Δ A within the chunk:
    // only (B,L,D,N) tensors, and -cum ≤ Σ steps ≤ kScanMaxLogRange keeps exp(-cum) finite.
    auto cum = log_decay.narrow(1, t0, l).cumsum(1);
    auto inside = (torch::exp(-cum) * dbu.narrow(1, t0, l)).cumsum(1);
    auto hs = torch::exp(cum) * (inside + h.unsqueeze(1));  // (B,L,D,N)
    ys.push_back((hs * Cm.narrow(1, t0, l).unsqueeze(2)).sum(-1));  // (B,L,D)
    h = hs.select(1, l - 1);
    t0 += l;
  }
  return ys.size() == 1 ? ys[0] : torch::cat(ys, 1);
}

torch::Tensor SelectiveScanSequential(const torch::Tensor& u, const torch::Tensor& dt, const torch::Tensor& A,
                                      const torch::Tensor& Bm, const torch::Tensor& Cm) {
  auto h = torch::zeros({u.size(0), u.size(2), A.size(1)}, u.options());
  std::vector<torch::Tensor> ys;
  for (int64_t i = 0; i < u.size(1); ++i) {
    auto dti = dt.select(1, i).unsqueeze(-1);                               // (B,D,1)
    h = torch::exp(dti * A) * h + dti * u.select(1, i).unsqueeze(-1) * Bm.select(1, i).unsqueeze(1);
    ys.push_back((h * Cm.select(1, i).unsqueeze(1)).sum(-1));             // (B,D)
  }
  return torch::stack(ys, 1);
}

BlockImpl::BlockImpl(int64_t dim, int64_t mlp_mult, const TrainSpec& s) {
  ssm = register_module("ssm", Ssm(dim, s.ssm_expand, s.ssm_state_dim, s.ssm_conv_width));
  mlp = register_module("mlp", Mlp(dim, mlp_mult));
  attn_scale = register_parameter("attn_scale", torch::ones({dim}));
  mlp_scale = register_parameter("mlp_scale", torch::ones({dim}));
  resid_mix = register_parameter("resid_mix", torch::stack({torch::ones({dim}), torch::zeros({dim})}));
}

GptImpl::GptImpl(const TrainSpec& s) : spec(s) {
  // ValidateTrainSpec has checked a parsed spec; one built in code must not index past mixer_pattern.
  if (LiteStatus st = ValidateLayerLayout(s); !st.ok()) throw std::invalid_argument(st.message());
  const int64_t c = s.model_dim, e = EmbedDim(s);
  schedule = LayerSchedule(s);
  const int64_t depth = static_cast<int64_t>(schedule.size());
  num_encoder_layers = depth / 2;
  num_decoder_layers = depth - num_encoder_layers;
  rope_dims = RopeDims(s);
  tok_emb = register_module("tok_emb", torch::nn::Embedding(s.vocab_size, e));
  if (e < c) {
    embed_proj = register_module("embed_proj", MakeLinear(e, c, false));
    head_proj = register_module("head_proj", MakeLinear(c, e, false));
  }
  skip_weights = register_parameter(
      "skip_weights", torch::ones({std::min(num_encoder_layers, num_decoder_layers), c}));
  auto recur = ParseRecurLayers(s.recur_layers);
  loop_lo = recur.ok() && recur->first >= 0 ? recur->first : 0;
  loop_len = (recur.ok() && recur->first >= 0 ? recur->second + 1 : s.num_layers) - loop_lo;
  if (s.loop_scalars) loop_scalars = register_parameter("loop_scalars", torch::ones({s.loops, c}));
  if (s.loop_embedding) loop_embedding = register_parameter("loop_embedding", torch::zeros({s.loops, c}));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < StoredBlocks(s); ++i) {
    if (BlockMixer(s, i) == 'S') {
      blocks->push_back(Block(c, s.mlp_mult, s));
    } else {
      blocks->push_back(Block(c, s.num_heads, s.num_kv_heads, s.mlp_mult, s.qk_gain_init));
    }
  }
  if (!s.tie_embeddings) lm_head = register_module("lm_head", MakeLinear(e, s.vocab_size, true));
  torch::NoGradGuard ng;
  // Tied: N(0, 0.005). Untied: nn.Embedding's default N(0, 1), as the reference.
  if (s.tie_embeddings) tok_emb->weight.normal_(0.0, s.tied_embed_init_std);
}

int64_t GptImpl::NumParams() {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

std::vector<torch::Tensor> GptImpl::MatrixParams() {
  std::vector<torch::Tensor> out;
  for (const auto& kv : blocks->named_parameters()) {
    if (IsBlockMatrix(kv.key(), kv.value())) out.push_back(kv.value());
  }
  // Factorised-embedding projections are matrices too: Muon.
  if (embed_proj) out.push_back(embed_proj->weight), out.push_back(head_proj->weight);
  return out;
}

std::vector<torch::Tensor> GptImpl::ScalarParams() {
  std::vector<torch::Tensor> out;
  for (const auto& kv : blocks->named_parameters()) {
    if (!IsBlockMatrix(kv.key(), kv.value())) out.push_back(kv.value());
  }
  if (skip_weights.numel() > 0) out.push_back(skip_weights);
  for (const auto& p : {loop_scalars, loop_embedding}) {
    if (p.defined()) out.push_back(p);
  }
  return out;
}

int64_t ExpectedParamCount(const TrainSpec& s) {
  const int64_t c = s.model_dim, hd = c / s.num_heads, kvd = s.num_kv_heads * hd, e = EmbedDim(s);
  const int64_t attn = c * c /*q*/ + 2 * c * kvd /*k,v*/ + c * c /*proj*/ + s.num_heads /*q_gain*/;
  const int64_t mlp = 2 * c * (s.mlp_mult * c);
  const int64_t rest = mlp + 2 * c /*attn_scale, mlp_scale*/ + 2 * c /*resid_mix*/;
  const int64_t di = s.ssm_expand * c, n = s.ssm_state_dim, r = (c + 15) / 16;
  const int64_t ssm = c * 2 * di /*in_proj*/ + di * s.ssm_conv_width + di /*conv*/ +
                      di * (r + 2 * n) /*x_proj*/ + r * di + di /*dt_proj*/ + di * n /*A_log*/ +
                      di /*D_skip*/ + di * c /*out_proj*/;
  int64_t blocks = 0;
  for (int64_t i = 0; i < StoredBlocks(s); ++i) {
    blocks += rest + (BlockMixer(s, i) == 'S' ? ssm : attn);
  }
  const int64_t depth = static_cast<int64_t>(LayerSchedule(s).size());
  const int64_t enc = depth / 2, dec = depth - enc;
  const int64_t emb = s.vocab_size * e * (s.tie_embeddings ? 1 : 2) + (e < c ? 2 * c * e : 0);
  const int64_t loop_params = (s.loop_scalars + s.loop_embedding) * s.loops * c;
  return emb + std::min(enc, dec) * c + blocks + loop_params;
}

// --- Forward ----------------------------------------------------------------

torch::Tensor GptImpl::W(const torch::Tensor& w, const std::string& name) {
  if (qat_bits_ <= 0 || !is_training()) return w;
  QuantOptions opts;
  opts.bits = qat_bits_;
  if (!ShouldQuantize(name, w, opts)) return w;
  return FakeQuantize(w, qat_bits_, qat_clip_, qat_min_scale_);
}

torch::Tensor GptImpl::BlockForward(BlockImpl& b, const std::string& prefix, torch::Tensor x,
                                    const torch::Tensor& x0) {
  // x, x0: (B,T,C)
  const int64_t bsz = x.size(0), t = x.size(1), c = x.size(2);
  if (b.ssm) {
    x = MixResidual(x, b.resid_mix, x0);  // mix[0]·x + mix[1]·x0 (fused on CUDA bf16)
    x = AddScaled(x, b.attn_scale, SsmForward(*b.ssm, prefix + "ssm.", RmsNorm(x)));
    return MlpForward(b, prefix, x, torch::Tensor());
  }
  auto& a = *b.attn;

  // Attention: q (B,H,T,D), k/v (B,K,T,D). h = RmsNorm(x) after the mix, in the same kernel
  // where it applies (one grad of x instead of the norm's and the residual's summed).
  torch::Tensor h;
  if (FusedResidNormApplies(x, x0)) {
    auto xh = MixNorm(x, b.resid_mix, x0, kBf16Eps);
    x = xh[0], h = xh[1];
  } else {
    x = MixResidual(x, b.resid_mix, x0);  // mix[0]·x + mix[1]·x0 (fused on CUDA bf16)
    h = RmsNorm(x);
  }
  const std::string ap = prefix + "attn.";
  if (rope_dims > 0 && (!rope_cos_.defined() || rope_cos_.size(2) != t || rope_cos_.device() != x.device())) {
    auto inv_freq = 1.0 / torch::pow(spec.rope_base, torch::arange(0, rope_dims, 2, torch::kFloat32) / rope_dims);
    auto freqs = torch::outer(torch::arange(t, torch::kFloat32), inv_freq).to(x.device());  // (T, R/2)
    rope_cos_ = freqs.cos().view({1, 1, t, rope_dims / 2});
    rope_sin_ = freqs.sin().view({1, 1, t, rope_dims / 2});
  }
  torch::Tensor q, k, v;
  // One q/k/v projection: the three fp32 weights concatenated each forward (Muon still sees
  // three matrices), one matmul, and one grad of h from it instead of three summed.
  const bool fused_qkv = rope_dims == a.head_dim && FusedQkvApplies(h, a.heads, a.kv_heads, a.head_dim);
  bool fused_qk = fused_qkv;
  if (fused_qkv) {
    auto w = torch::cat({W(a.c_q->weight, ap + "c_q.weight"), W(a.c_k->weight, ap + "c_k.weight"),
                         W(a.c_v->weight, ap + "c_v.weight")});
    auto qkv = QkvNormRope(F::linear(h, w), rope_cos_, rope_sin_, a.q_gain, a.heads, a.kv_heads, kBf16Eps);
    q = qkv[0].transpose(1, 2), k = qkv[1].transpose(1, 2), v = qkv[2].transpose(1, 2);
  } else {
    q = F::linear(h, W(a.c_q->weight, ap + "c_q.weight")).view({bsz, t, a.heads, a.head_dim});
    k = F::linear(h, W(a.c_k->weight, ap + "c_k.weight")).view({bsz, t, a.kv_heads, a.head_dim});
    v = F::linear(h, W(a.c_v->weight, ap + "c_v.weight")).view({bsz, t, a.kv_heads, a.head_dim}).transpose(1, 2);
    // Fused q/k path: RmsNorm, full-width RoPE and q_gain in one kernel each way.
    fused_qk = rope_dims == a.head_dim && FusedQkApplies(q) && FusedQkApplies(k);
    q = q.transpose(1, 2);
    k = k.transpose(1, 2);
    if (!fused_qk) {
      q = RmsNorm(q);
      k = RmsNorm(k);
    }
    if (rope_dims > 0) {
      auto rot = [&](const torch::Tensor& z) {
        auto r = ApplyRotary(z.narrow(-1, 0, rope_dims), rope_cos_.to(z.scalar_type()),
                             rope_sin_.to(z.scalar_type()));
        return rope_dims == a.head_dim ? r : torch::cat({r, z.narrow(-1, rope_dims, a.head_dim - rope_dims)}, -1);
      };
      if (fused_qk) {
        q = QkNormRope(q.transpose(1, 2), rope_cos_, rope_sin_, a.q_gain, kBf16Eps).transpose(1, 2);
        k = QkNormRope(k.transpose(1, 2), rope_cos_, rope_sin_, torch::Tensor(), kBf16Eps).transpose(1, 2);
      } else {
        q = rot(q);
        k = rot(k);
      }
    }
  }
  if (!fused_qk) q = q * a.q_gain.to(q.scalar_type()).view({1, a.heads, 1, 1});
  torch::Tensor bias;
  if (spec.pos_scheme == "alibi") {
    if (!alibi_bias_.defined() || alibi_bias_.size(2) != t || alibi_bias_.device() != x.device()) {
      alibi_bias_ = AlibiBias(a.heads, t).to(x.device());
    }
    bias = alibi_bias_;
  }
  auto y = CausalAttention(q, k, v, bias).transpose(1, 2).contiguous().view({bsz, t, c});  // (B,T,C)
  y = F::linear(y, W(a.proj->weight, ap + "proj.weight"));
  if (FusedResidNormApplies(x, y)) {
    auto xh = AddNorm(x, b.attn_scale, y, kBf16Eps);
    return MlpForward(b, prefix, xh[0], xh[1]);
  }
  x = AddScaled(x, b.attn_scale, y);
  return MlpForward(b, prefix, x, torch::Tensor());
}

torch::Tensor GptImpl::MlpForward(BlockImpl& b, const std::string& prefix, const torch::Tensor& x,
                                  const torch::Tensor& xn) {
  // MLP: (B,T,C) -> (B,T,mult*C) -> (B,T,C).
  auto& m = *b.mlp;
  auto u = ReluSquare(F::linear(xn.defined() ? xn : RmsNorm(x), W(m.fc->weight, prefix + "mlp.fc.weight")));
  u = F::linear(u, W(m.proj->weight, prefix + "mlp.proj.weight"));
  return AddScaled(x, b.mlp_scale, u);
}

torch::Tensor GptImpl::SsmForward(SsmImpl& m, const std::string& prefix, const torch::Tensor& h) {
  // h: (B,T,C) -> u, z: (B,T,D_in)
  const int64_t t = h.size(1), di = m.inner, n = m.state, r = m.dt_rank;
  auto uz = F::linear(h, W(m.in_proj->weight, prefix + "in_proj.weight"));
  auto u = uz.narrow(-1, 0, di), z = uz.narrow(-1, di, di);
  // Causal depthwise conv: pad W-1 both sides, keep the first T outputs (inputs t-W+1..t).
  auto uc = torch::conv1d(u.transpose(1, 2), m.conv_weight.to(u.scalar_type()), m.conv_bias.to(u.scalar_type()),
                          1, m.conv_width - 1, 1, di);  // (B,D_in,T+W-1)
  u = torch::silu(uc.narrow(2, 0, t).transpose(1, 2));  // (B,T,D_in)
  auto dbc = F::linear(u, W(m.x_proj->weight, prefix + "x_proj.weight"));  // (B,T,R+2N)
  auto dt = F::softplus(F::linear(dbc.narrow(-1, 0, r), W(m.dt_proj->weight, prefix + "dt_proj.weight"),
                                  m.dt_proj->bias).to(torch::kFloat32));  // (B,T,D_in)
  auto A = -torch::exp(m.A_log.to(torch::kFloat32));                     // (D_in,N)
  auto y = SelectiveScan(u, dt, A, dbc.narrow(-1, r, n), dbc.narrow(-1, r + n, n));
  y = (y + u.to(torch::kFloat32) * m.D_skip.to(torch::kFloat32)).to(u.scalar_type());
  y = y * torch::silu(z);
  return F::linear(y, W(m.out_proj->weight, prefix + "out_proj.weight"));  // (B,T,C)
}

torch::Tensor GptImpl::Hidden(const torch::Tensor& ids) {
  auto x = F::embedding(ids, W(tok_emb->weight, "tok_emb.weight"));  // (B,T,E)
  if (embed_proj) x = F::linear(x, W(embed_proj->weight, "embed_proj.weight"));  // (B,T,C)
  // Under CUDA autocast the residual stream is bf16, as the reference's (its tok_emb is
  // bf16): half the bytes of every elementwise pass. Each block's control tensors follow x.
  if (x.is_cuda() && CudaAutocastEnabled() && !PerfOff("resid")) x = x.to(torch::kBFloat16);
  x = RmsNorm(x);
  const auto x0 = x;
  std::vector<torch::Tensor> skips;
  auto layer = [&](int64_t i) {
    const int64_t b = schedule[i];
    const int64_t at = i - loop_lo, l = at >= 0 && at < spec.loops * loop_len ? at / loop_len : -1;
    auto in = x;
    if (loop_embedding.defined() && l >= 0 && at % loop_len == 0) in = in + loop_embedding[l].to(in.scalar_type());
    auto out = BlockForward(*blocks[b]->as<BlockImpl>(), "blocks." + std::to_string(b) + ".", in, x0);
    if (loop_scalars.defined() && l >= 0) out = in + loop_scalars[l].to(in.scalar_type()) * (out - in);
    return out;
  };
  // U-Net: the first half stores skips; the second half adds them back in reverse.
  for (int64_t i = 0; i < num_encoder_layers; ++i) {
    x = layer(i);
    skips.push_back(x);
  }
  for (int64_t i = 0; i < num_decoder_layers; ++i) {
    if (!skips.empty()) {
      x = AddScaled(x, skip_weights[i], skips.back());
      skips.pop_back();
    }
    x = layer(num_encoder_layers + i);
  }
  return RmsNorm(x);
}

torch::Tensor GptImpl::HeadProjection(const torch::Tensor& h_in) {
  // Factorised: (.., C) -> (.., E) before the tied (or untied) output layer.
  const auto h = head_proj ? F::linear(h_in, W(head_proj->weight, "head_proj.weight")) : h_in;
  return spec.tie_embeddings ? F::linear(h, W(tok_emb->weight, "tok_emb.weight"))
                             : F::linear(h, W(lm_head->weight, "lm_head.weight"));
}

torch::Tensor GptImpl::LogitsFromHidden(const torch::Tensor& h_in) {
  return spec.logit_softcap * torch::tanh(HeadProjection(h_in) / spec.logit_softcap);
}

torch::Tensor GptImpl::Loss(const torch::Tensor& x, const torch::Tensor& y) {
  auto h = Hidden(x);
  auto proj = HeadProjection(h.reshape({-1, h.size(-1)}));  // (B*T, V)
  const auto targets = y.reshape(-1);
  // Soft cap and cross-entropy in one kernel each way (fp32 arithmetic from the bf16 logits,
  // as the reference's compiled graph fuses them).
  if (FusedSoftcapCeApplies(proj, targets, spec.logit_softcap)) {
    return SoftcapCrossEntropy(proj, targets, spec.logit_softcap);
  }
  auto logits = spec.logit_softcap * torch::tanh(proj / spec.logit_softcap);
  // float32 as the reference (logits.float()); a float64 model stays float64 (tests).
  if (logits.scalar_type() != torch::kDouble) logits = logits.to(torch::kFloat32);
  return F::cross_entropy(logits, targets);
}

torch::Tensor GptImpl::Logits(const torch::Tensor& x) {
  auto logits = LogitsFromHidden(Hidden(x));
  return logits.scalar_type() == torch::kDouble ? logits : logits.to(torch::kFloat32);
}

// --- Muon -------------------------------------------------------------------

torch::Tensor ZeroPowerNewtonSchulz5(const torch::Tensor& g, int64_t steps, torch::ScalarType dtype) {
  const double a = 3.4445, b = -4.7750, c = 2.0315;
  auto x = g.to(dtype);
  x = x / (x.norm() + 1e-7);
  const bool transposed = g.size(0) > g.size(1);
  if (transposed) x = x.t();
  for (int64_t i = 0; i < steps; ++i) {
    auto A = torch::matmul(x, x.t());
    auto B = b * A + c * torch::matmul(A, A);
    x = a * x + torch::matmul(B, x);
  }
  return transposed ? x.t() : x;
}

Muon::Muon(std::vector<torch::Tensor> params, double lr_, double momentum_, int64_t backend_steps,
           torch::ScalarType ns_dtype)
    : lr(lr_), momentum(momentum_), params_(std::move(params)), backend_steps_(backend_steps),
      ns_dtype_(ns_dtype) {
  for (const auto& p : params_) buffers_.push_back(torch::zeros_like(p));
}

void Muon::Step(int rank, int world, const AllReduceSum& all_reduce) {
  torch::NoGradGuard ng;
  if (params_.empty()) return;
  int64_t total = 0;
  for (const auto& p : params_) total += p.numel();
  auto flat = torch::zeros({total}, params_[0].options().dtype(ns_dtype_));
  std::vector<int64_t> offsets;
  int64_t off = 0;
  for (const auto& p : params_) offsets.push_back(off), off += p.numel();
  // This rank's matrices grouped by shape: one batched Newton–Schulz per shape (3 launches
  // per iteration) instead of one per matrix; the same function of each matrix.
  std::map<std::pair<int64_t, int64_t>, std::vector<size_t>> by_shape;
  std::vector<torch::Tensor> updates(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& p = params_[i];
    if (static_cast<int>(i % world) == rank && p.grad().defined()) {
      auto g = p.grad();
      buffers_[i].mul_(momentum).add_(g);
      updates[i] = g.add(buffers_[i], momentum);  // Nesterov
      by_shape[{p.size(0), p.size(1)}].push_back(i);
    }
  }
  for (const auto& [shape, idx] : by_shape) {
    const double scale = std::sqrt(std::max(1.0, static_cast<double>(shape.first) / shape.second));
    if (idx.size() == 1 || PerfOff("ns")) {
      for (size_t i : idx) {
        auto g = ZeroPowerNewtonSchulz5(updates[i], backend_steps_, ns_dtype_) * scale;
        flat.narrow(0, offsets[i], params_[i].numel()).copy_(g.reshape(-1));
      }
      continue;
    }
    std::vector<torch::Tensor> gs;
    for (size_t i : idx) gs.push_back(updates[i]);
    auto o = ZeroPowerNewtonSchulz5Batched(torch::stack(gs), backend_steps_, ns_dtype_) * scale;
    for (size_t k = 0; k < idx.size(); ++k) {
      flat.narrow(0, offsets[idx[k]], params_[idx[k]].numel()).copy_(o[static_cast<int64_t>(k)].reshape(-1));
    }
  }
  if (world > 1 && all_reduce) all_reduce(flat);
  off = 0;
  for (auto& p : params_) {
    p.add_(flat.narrow(0, off, p.numel()).view_as(p).to(p.scalar_type()), -lr);
    off += p.numel();
  }
}

// --- Evaluation -------------------------------------------------------------

double ValSums::val_bpb() const { return (val_loss() / std::log(2.0)) * (tokens / bytes); }

ValSums EvalValShare(Gpt& model, const torch::Tensor& val, int64_t seq_len, int64_t batch_seqs,
                     const ByteTable& table, int rank, int world, torch::Device device, bool autocast) {
  torch::NoGradGuard ng;
  const bool was_training = model->is_training();
  model->eval();
  const auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  auto base = torch::tensor(std::vector<int64_t>(table.base_bytes.begin(), table.base_bytes.end()), i64);
  auto space = torch::tensor(std::vector<int64_t>(table.has_leading_space.begin(), table.has_leading_space.end()), i64);
  auto boundary = torch::tensor(std::vector<int64_t>(table.is_boundary.begin(), table.is_boundary.end()), i64);
  const int64_t total_seqs = (val.numel() - 1) / seq_len;
  const int64_t s0 = total_seqs * rank / world, s1 = total_seqs * (rank + 1) / world;
  ValSums sums;
  for (int64_t bs = s0; bs < s1; bs += batch_seqs) {
    const int64_t be = std::min(bs + batch_seqs, s1);
    auto local = val.slice(0, bs * seq_len, be * seq_len + 1).to(torch::kInt64);
    auto x = local.slice(0, 0, local.numel() - 1).view({-1, seq_len});  // (B,T)
    auto y = local.slice(0, 1, local.numel()).view({-1, seq_len});
    torch::Tensor loss;
    {
      AutocastGuard ac(autocast);
      loss = model->Loss(x.to(device), y.to(device)).detach();
    }
    const double n = static_cast<double>(y.numel());
    sums.loss_sum += loss.to(torch::kFloat64).item<double>() * n;
    sums.tokens += n;
    // bytes(target) = base[target] + (space[target] & !boundary[prev])
    auto prev = x.reshape(-1), tgt = y.reshape(-1);
    auto bytes = base.index_select(0, tgt) + space.index_select(0, tgt) * (1 - boundary.index_select(0, prev));
    sums.bytes += static_cast<double>(bytes.sum().item<int64_t>());
  }
  if (was_training) model->train();
  return sums;
}

}  // namespace caddie::model
