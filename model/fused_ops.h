// Faster CUDA paths for the GPT's hot spots, each computing the same function as the
// plain LibTorch expression it replaces (model/gpt.cc keeps the plain one for the CPU
// and for LibTorch 1.13): a fused RMSNorm that keeps bf16 under autocast, and
// Newton–Schulz batched over same-shape matrices. Stateless; thread-safe.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace caddie::model {

// True while bf16 autocast is on for CUDA on this thread.
bool CudaAutocastEnabled();

// x * rsqrt(mean(x², -1) + eps) through ATen's fused rms_norm (LibTorch ≥ 2.4), outside
// autocast so that a bf16 input stays bf16 (autocast would run the norm in fp32 and add
// a cast pass). Plain expression on older LibTorch.
torch::Tensor FusedRmsNorm(const torch::Tensor& x, double eps);

// Newton–Schulz quintic (a,b,c = 3.4445,-4.7750,2.0315) on each matrix of g (N,R,C),
// in `dtype`: the batched form of ZeroPowerNewtonSchulz5, with each step's two products
// fused into baddbmm (3 launches per iteration for the whole batch).
torch::Tensor ZeroPowerNewtonSchulz5Batched(const torch::Tensor& g, int64_t steps, torch::ScalarType dtype);

}  // namespace caddie::model
