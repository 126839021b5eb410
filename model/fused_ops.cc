#include "model/fused_ops.h"

#include <c10/core/impl/LocalDispatchKeySet.h>

#include "model/torch_compat.h"

namespace caddie::model {

bool CudaAutocastEnabled() {
#if CADDIE_TORCH_AT_LEAST_2_4
  return at::autocast::is_autocast_enabled(at::kCUDA);
#else
  return at::autocast::is_enabled();
#endif
}

torch::Tensor FusedRmsNorm(const torch::Tensor& x, double eps) {
#if CADDIE_TORCH_AT_LEAST_2_4
  // Autocast's policy for rms_norm is fp32; the reference's compiled graph keeps bf16.
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  return at::rms_norm(x, {x.size(-1)}, std::optional<at::Tensor>(), eps);
#else
  return x * torch::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps);
#endif
}

torch::Tensor ZeroPowerNewtonSchulz5Batched(const torch::Tensor& g, int64_t steps, torch::ScalarType dtype) {
  const double a = 3.4445, b = -4.7750, c = 2.0315;
  auto x = g.to(dtype);
  // Each matrix over its own Frobenius norm.
  x = x / (x.flatten(1).norm(2, {1}).view({-1, 1, 1}) + 1e-7);
  const bool transposed = g.size(1) > g.size(2);
  if (transposed) x = x.transpose(1, 2);
  for (int64_t i = 0; i < steps; ++i) {
    auto A = torch::bmm(x, x.transpose(1, 2));
    auto B = torch::baddbmm(A, A, A, /*beta=*/b, /*alpha=*/c);  // b·A + c·A·A
    x = torch::baddbmm(x, B, x, /*beta=*/a, /*alpha=*/1.0);     // a·X + B·X
  }
  return transposed ? x.transpose(1, 2) : x;
}

}  // namespace caddie::model
