// The GPT's elementwise hot paths as single fused CUDA kernels with their backward
// (custom autograd functions over model/fused_cuda.cu). Each function computes the same
// value as the plain LibTorch expression named beside it and falls back to that expression
// wherever the kernels do not apply: CPU, non-bf16 activations, LibTorch built without the
// kernels (CADDIE_WITH_CUDA_KERNELS), odd shapes, or the knob listed in CADDIE_PERF_OFF
// (model/perf_knobs.h). Stateless; thread-safe.
#pragma once

#include <torch/torch.h>

#include <vector>

namespace caddie::model {

// True when this binary carries the CUDA kernels.
bool FusedKernelsBuilt();

// mix[0]·x + mix[1]·x0 (mix (2,C) fp32, cast to x's dtype on the plain path).   knob: kmix
torch::Tensor MixResidual(const torch::Tensor& x, const torch::Tensor& mix, const torch::Tensor& x0);

// x + scale·y (scale (C) fp32, cast to x's dtype on the plain path).            knob: kadd
torch::Tensor AddScaled(const torch::Tensor& x, const torch::Tensor& scale, const torch::Tensor& y);

// relu(u)².                                                                        knob: krelu
torch::Tensor ReluSquare(const torch::Tensor& u);

// x · rsqrt(mean(x², -1) + eps) for bf16 rows of 256/512/768/1024 (FusedRmsApplies).  knob: knorm
bool FusedRmsApplies(const torch::Tensor& x);
torch::Tensor RmsNormKernel(const torch::Tensor& x, double eps);

// For q/k as (B,T,H,D) contiguous, straight from their projection: gain[h]·rope(RmsNorm(x))
// with the rope over all D dims (cos/sin (T,D/2) fp32), gain (H) fp32 or undefined. True in
// FusedQkApplies when this path can run (the caller keeps its plain path otherwise).  knob: kqk
bool FusedQkApplies(const torch::Tensor& x);
torch::Tensor QkNormRope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                         const torch::Tensor& gain, double eps);

// The q/k/v path from one projection: qkv (B,T,(H+2K)·D) bf16 -> {q (B,T,H,D) =
// gain·rope(RmsNorm(q part)), k (B,T,K,D) = rope(RmsNorm(k part)), v (B,T,K,D) a copy}, as
// QkNormRope on each part. Backward writes the three grads into one tensor of qkv's shape, so
// the projection's input gets one grad instead of three summed. FusedQkvApplies takes the
// projection's input h and tells whether this path can run (knob: qkv; kqk off turns it off too).
bool FusedQkvApplies(const torch::Tensor& h, int64_t heads, int64_t kv_heads, int64_t head_dim);
std::vector<torch::Tensor> QkvNormRope(const torch::Tensor& qkv, const torch::Tensor& cos, const torch::Tensor& sin,
                                       const torch::Tensor& gain, int64_t heads, int64_t kv_heads, double eps);

// A residual update and the RmsNorm of its result in one pass each way: MixNorm = {mix[0]·x +
// mix[1]·x0, RmsNorm of it}, AddNorm = {x + scale·y, RmsNorm of it}. Backward takes both
// outputs' grads at once (no separate accumulation add). For bf16 (.., C), C a multiple of 256
// up to 4096 (FusedResidNormApplies).                                              knob: kresnorm
bool FusedResidNormApplies(const torch::Tensor& x, const torch::Tensor& y);
std::vector<torch::Tensor> MixNorm(const torch::Tensor& x, const torch::Tensor& mix, const torch::Tensor& x0,
                                   double eps);
std::vector<torch::Tensor> AddNorm(const torch::Tensor& x, const torch::Tensor& scale, const torch::Tensor& y,
                                   double eps);

// Mean cross-entropy of cap·tanh(logits/cap) against targets, computed in fp32 from bf16 logits
// (N,V) in one pass forward and one backward (targets int64 (N) in [0, V); no ignore index).
// Applies for V % 8 == 0 and 0 < cap <= 40.                                        knob: kce
bool FusedSoftcapCeApplies(const torch::Tensor& logits, const torch::Tensor& targets, double cap);
torch::Tensor SoftcapCrossEntropy(const torch::Tensor& logits, const torch::Tensor& targets, double cap);

// Outputs filled with NaN instead of left uninitialised (the self-check's poison), per process.
void SetFusedOutputPoison(bool on);

// In model/fused_cuda_check.cc. Checks every fused kernel against the plain computation in float64 (values and gradients,
// fresh random bf16 inputs, outputs poisoned with NaN first); prints PASS/FAIL per kernel.
// Returns the number of failures (a missing GPU or kernels counts as one).
int SelfCheckFusedKernels();

}  // namespace caddie::model
