// The Parameter Golf baseline GPT (train_gpt.py's GPT), its Muon optimizer and
// the val_bpb evaluation, in LibTorch. Parameter names equal the reference's
// state-dict names ("tok_emb.weight", "blocks.3.attn.c_q.weight", ...).
//
// A Gpt module is not thread-safe (like any torch::nn::Module); one per rank.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/core/shard_format.h"
#include "common/core/train_spec.h"
#include "model/quant.h"

namespace caddie::model {

// ---------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------

// relu² MLP: x (B,T,C) -> fc (B,T,mult*C) -> relu² -> proj (B,T,C). proj zero-initialised.
struct MlpImpl : torch::nn::Module {
  MlpImpl(int64_t dim, int64_t mult);
  torch::nn::Linear fc{nullptr}, proj{nullptr};
};
TORCH_MODULE(Mlp);

// Causal GQA self-attention with RMSNorm on q and k, RoPE and a learned per-head q gain.
struct AttentionImpl : torch::nn::Module {
  AttentionImpl(int64_t dim, int64_t heads, int64_t kv_heads, double qk_gain_init);
  int64_t heads, kv_heads, head_dim;
  torch::nn::Linear c_q{nullptr}, c_k{nullptr}, c_v{nullptr}, proj{nullptr};
  torch::Tensor q_gain;  // (H)
};
TORCH_MODULE(Attention);

// Selective state-space mixer (Mamba-style): in_proj -> (u, z); u through a short causal
// depthwise conv and SiLU; input-dependent Δ (softplus of a low-rank projection), B and C;
// diagonal A = -exp(A_log); y = scan(u) + D_skip*u, gated by SiLU(z); out_proj zero-init.
struct SsmImpl : torch::nn::Module {
  SsmImpl(int64_t dim, int64_t expand, int64_t state, int64_t conv_width);
  int64_t inner, state, conv_width, dt_rank;
  torch::nn::Linear in_proj{nullptr}, x_proj{nullptr}, dt_proj{nullptr}, out_proj{nullptr};
  torch::Tensor conv_weight;  // (D_in, 1, W) depthwise
  torch::Tensor conv_bias;    // (D_in)
  torch::Tensor A_log;        // (D_in, N)
  torch::Tensor D_skip;       // (D_in)
};
TORCH_MODULE(Ssm);

// The selective scan h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t, y_t = C_t · h_t, exact and
// causal, computed chunk by chunk with tensor ops (a loop over the chunks only; within a chunk
// a cumulative sum of (B,L,D,N) tensors). u, dt: (B,T,D); A: (D,N); Bm, Cm: (B,T,N) -> y
// (B,T,D), float32. The chunks are ScanChunkLengths of the per-time largest step |Δ A| (over
// rows, channels and states), at most `chunk` long when chunk > 0: where a chunk ends depends
// on steps up to that time only, so a change at time p leaves every output before p bit for
// bit as it was (also when the change re-chunks the scan from p on).
torch::Tensor SelectiveScan(const torch::Tensor& u, const torch::Tensor& dt, const torch::Tensor& A,
                            const torch::Tensor& Bm, const torch::Tensor& Cm, int64_t chunk = 0);
// Largest exponent Σ|Δ A| allowed within one chunk, and the per-step clamp of Δ A.
inline constexpr double kScanMaxLogRange = 60.0;
inline constexpr double kScanMinLogDecay = 20.0;
// The chunk lengths SelectiveScan uses for per-time steps |Δ A| `steps` (one per time, each
// ≤ kScanMinLogDecay after the clamp): greedily from time 0, a chunk takes the next time
// while the sum of its steps stays ≤ kScanMaxLogRange (so exp(-Σ Δ A) stays finite in fp32)
// and it is shorter than max_chunk (max_chunk <= 0: no cap); every chunk has at least one
// time. Whether a chunk starts at time t depends on steps[0..t] only. The lengths sum to
// steps.size().
std::vector<int64_t> ScanChunkLengths(const std::vector<double>& steps, int64_t max_chunk);
// The same, one time step at a time (the reference the chunked scan is tested against).
torch::Tensor SelectiveScanSequential(const torch::Tensor& u, const torch::Tensor& dt,
                                      const torch::Tensor& A, const torch::Tensor& Bm,
                                      const torch::Tensor& Cm);

// One transformer block: x = mix0*x + mix1*x0; x += attn_scale*mixer(norm(x)); x += mlp_scale*mlp(norm(x)).
// The mixer is attention ('A') or the SSM ('S').
struct BlockImpl : torch::nn::Module {
  BlockImpl(int64_t dim, int64_t heads, int64_t kv_heads, int64_t mlp_mult, double qk_gain_init);
  BlockImpl(int64_t dim, int64_t mlp_mult, const TrainSpec& ssm_spec);  // SSM block
  Attention attn{nullptr};
  Ssm ssm{nullptr};
  Mlp mlp{nullptr};
  torch::Tensor attn_scale;  // (C)
  torch::Tensor mlp_scale;   // (C)
  torch::Tensor resid_mix;   // (2, C): [0] scales x, [1] scales x0
};
TORCH_MODULE(Block);

struct GptImpl : torch::nn::Module {
  // Throws std::invalid_argument with ValidateLayerLayout's message when the layer layout
  // cannot be built (other checks are ValidateTrainSpec's, run on every parsed spec).
  explicit GptImpl(const TrainSpec& spec);

  // Mean cross-entropy (nats) of predicting y from x. x, y: (B,T) int64.
  torch::Tensor Loss(const torch::Tensor& x, const torch::Tensor& y);
  // Soft-capped logits (B,T,V) in float32. x: (B,T) int64.
  torch::Tensor Logits(const torch::Tensor& x);

  // The parameters the reference gives Muon (2-D block matrices), the Adam "scalar"
  // group (vectors, control tensors, skip weights), and the embedding / head.
  std::vector<torch::Tensor> MatrixParams();
  std::vector<torch::Tensor> ScalarParams();

  // Quantisation-aware training: when bits > 0 the weights that export quantises
  // are fake-quantised (straight-through) in the forward pass.
  void SetQat(int bits, double clip_percentile, double min_scale) {
    qat_bits_ = bits, qat_clip_ = clip_percentile, qat_min_scale_ = min_scale;
  }
  int qat_bits() const { return qat_bits_; }

  int64_t NumParams();

  TrainSpec spec;
  // Depth recurrence: schedule[i] is the block applied as layer i. Without recurrence it
  // is 0..num_layers-1; `loops` repeats the whole stack (or only recur_layers A..B), and
  // unique_blocks u > 0 shares weights: layer i uses block schedule[i] % u.
  std::vector<int64_t> schedule;
  int64_t num_encoder_layers, num_decoder_layers;  // halves of schedule.size() (U-Net)
  int64_t rope_dims;                                // rotated dims per head (rope_fraction)
  torch::nn::Embedding tok_emb{nullptr};            // (V, E); E = embed_dim or C
  torch::nn::Linear embed_proj{nullptr}, head_proj{nullptr};  // E->C, C->E when E < C
  torch::Tensor skip_weights;  // (min(enc, dec), C)
  // Per-loop parameters (loop_scalars / loop_embedding keys), undefined when off: loop l
  // runs schedule[loop_lo + l*loop_len .. +loop_len). loop_scalars[l] gains each looped
  // layer's residual update (init 1); loop_embedding[l] is added as loop l starts (init 0).
  torch::Tensor loop_scalars, loop_embedding;  // (loops, C)
  int64_t loop_lo = 0, loop_len = 0;
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::Linear lm_head{nullptr};  // only when !tie_embeddings: (V, E)

 private:
  torch::Tensor Hidden(const torch::Tensor& x);  // final-normed hidden states (B,T,C)
  torch::Tensor BlockForward(BlockImpl& b, const std::string& prefix, torch::Tensor x,
                             const torch::Tensor& x0);
  // xn: RmsNorm(x) when the caller has it already (fused with the residual add), else undefined.
  torch::Tensor MlpForward(BlockImpl& b, const std::string& prefix, const torch::Tensor& x,
                           const torch::Tensor& xn);
  torch::Tensor SsmForward(SsmImpl& m, const std::string& prefix, const torch::Tensor& h);
  torch::Tensor W(const torch::Tensor& w, const std::string& name);  // QAT hook
  torch::Tensor HeadProjection(const torch::Tensor& h);  // logits before the soft cap
  torch::Tensor LogitsFromHidden(const torch::Tensor& h);

  int qat_bits_ = 0;
  double qat_clip_ = 99.99984;
  double qat_min_scale_ = kReferenceMinScale;
  torch::Tensor rope_cos_, rope_sin_;  // (1,1,T,rope_dims/2) cache
  torch::Tensor alibi_bias_;           // (1,H,T,T) cache: causal mask + ALiBi / none
};
TORCH_MODULE(Gpt);

// The parameter count for a spec, computed from the shapes alone (equal to the
// reference's for the baseline axes).
int64_t ExpectedParamCount(const TrainSpec& spec);

// The layer -> block schedule of a spec (see GptImpl::schedule).
std::vector<int64_t> LayerSchedule(const TrainSpec& spec);

// The mixer letter ('A' attention, 'S' ssm) of stored block b: mixer_pattern[b], else `mixer`.
char BlockMixer(const TrainSpec& spec, int64_t block);

// The ALiBi attention bias (1,H,T,T), float32: -slope_h * (i - j) for j <= i, -inf above the
// diagonal, with the geometric slopes of Press et al.: 2^(-8(h+1)/H) for H a power of two;
// otherwise those of the power of two P below H, then every other slope of 2P.
torch::Tensor AlibiBias(int64_t heads, int64_t t);

// RMS norm over the last dim with eps = finfo(dtype).eps, as F.rms_norm(eps=None).
torch::Tensor RmsNorm(const torch::Tensor& x);

// ---------------------------------------------------------------------------
// Muon
// ---------------------------------------------------------------------------

// Newton–Schulz quintic iteration (a,b,c = 3.4445,-4.7750,2.0315) towards the
// orthogonal factor of g (2-D). Computed in `dtype` (bf16 on CUDA as the reference).
torch::Tensor ZeroPowerNewtonSchulz5(const torch::Tensor& g, int64_t steps,
                                     torch::ScalarType dtype = torch::kFloat32);

// Muon with Nesterov momentum. In data parallel, parameter i is orthogonalised by
// rank i % world and the flat update is all-reduced (sum), as the reference does.
// Not thread-safe.
class Muon {
 public:
  using AllReduceSum = std::function<void(torch::Tensor&)>;
  Muon(std::vector<torch::Tensor> params, double lr, double momentum, int64_t backend_steps,
       torch::ScalarType ns_dtype);
  // Applies one update from the params' .grad(). all_reduce may be empty (one rank).
  void Step(int rank, int world, const AllReduceSum& all_reduce);
  double lr, momentum;

 private:
  std::vector<torch::Tensor> params_, buffers_;
  int64_t backend_steps_;
  torch::ScalarType ns_dtype_;
};

// ---------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------

// Sums that val_bpb is made of; each rank fills its share, then they are all-reduced.
struct ValSums {
  double loss_sum = 0;   // Σ batch_mean_loss × batch_tokens (nats)
  double tokens = 0;
  double bytes = 0;
  double val_loss() const { return loss_sum / tokens; }
  // (loss / ln 2) × (tokens / bytes)
  double val_bpb() const;
};

// This rank's share of the whole validation stream `val` (1-D int64 on CPU, length
// n*seq_len + 1): sequences [total*rank/world, total*(rank+1)/world), in batches of
// batch_seqs. Byte counts as the reference's LUTs.
ValSums EvalValShare(Gpt& model, const torch::Tensor& val, int64_t seq_len, int64_t batch_seqs,
                     const ByteTable& table, int rank, int world, torch::Device device,
                     bool autocast);

}  // namespace caddie::model
