// Version guards between LibTorch 1.13 (CPU, Debian) and 2.x (CUDA, GPU machine).
// The one place that knows which LibTorch calls exist where.
#pragma once

#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <cstdint>
#include <string>

#define CADDIE_TORCH_AT_LEAST_2 (TORCH_VERSION_MAJOR >= 2)
// at::autocast::set_autocast_enabled(device, ...) replaced set_enabled() in 2.4.
#define CADDIE_TORCH_AT_LEAST_2_4 \
  (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4))

namespace caddie::model {

// "1.13.1" / "2.11.0" — the LibTorch this binary was built against.
std::string TorchVersionString();

// bf16 autocast on CUDA for the lifetime of the guard (Python's
// `with torch.autocast("cuda", dtype=torch.bfloat16)`); a no-op when !enabled.
// On exit the cast cache is cleared, so updated weights are re-cast next time.
// Not thread-safe: autocast state is thread-local, use on one thread.
class AutocastGuard {
 public:
  explicit AutocastGuard(bool enabled) : enabled_(enabled) {
    if (!enabled_) return;
#if CADDIE_TORCH_AT_LEAST_2_4
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
#else
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(true);
#endif
  }
  ~AutocastGuard() {
    if (!enabled_) return;
#if CADDIE_TORCH_AT_LEAST_2_4
    at::autocast::set_autocast_enabled(at::kCUDA, false);
#else
    at::autocast::set_enabled(false);
#endif
    at::autocast::clear_cache();
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool enabled_;
};

// Bytes of accelerator memory in use now / at peak on `device_index` (CUDA),
// or this process's resident set now / at peak on the CPU.
int64_t MemoryBytesNow(bool cuda, int device_index);
int64_t PeakMemoryBytes(bool cuda, int device_index);

}  // namespace caddie::model
