// Launchers of the hand-written CUDA kernels in model/fused_cuda.cu. Plain pointers and
// sizes only, so that this header and the .cu need no LibTorch (nvcc compiles just the
// kernels); model/fused_cuda.cc wraps them as autograd functions. bf16 tensors are
// contiguous, 16-byte aligned, with the last dim a multiple of 8; fp32 vectors contiguous.
// Each launcher enqueues on `stream` (a cudaStream_t) and returns the launch's
// cudaError_t as int (0 = success).
#pragma once

#include <cstdint>

namespace caddie::model::cuda {

// out = (a ? a[c] : 1)·x + b[c]·y over rows × c bf16 (a, b: fp32 per channel).
int MixForward(const void* x, const float* a, const void* y, const float* b, void* out, int64_t rows, int64_t c,
               void* stream);

// Backward of MixForward: dx = a·g (skipped when dx is null), dy = b·g; da[c] += Σ g·x (skipped
// when da is null), db[c] += Σ g·y. da, db: fp32, zeroed by the caller.
int MixBackward(const void* g, const void* x, const float* a, const void* y, const float* b, void* dx, void* dy,
                float* da, float* db, int64_t rows, int64_t c, void* stream);

// out = relu(u)², n elements (n % 8 == 0).
int ReluSqForward(const void* u, void* out, int64_t n, void* stream);
// du = 2·relu(u)·g.
int ReluSqBackward(const void* u, const void* g, void* du, int64_t n, void* stream);

// q/k head vectors: rows = B·T·H vectors of d (32, 64 or 128), row r at time (r / h) % t,
// head r % h. out = gain[head] · rope(x · rsqrt(mean(x²) + eps)), rope rotating halves with
// cos/sin (t, d/2) fp32 tables (rounded to bf16, as the reference's); gain may be null (1).
int QkNormRopeForward(const void* x, const float* cos, const float* sin, const float* gain, void* out,
                      int64_t rows, int64_t t, int64_t h, int64_t d, float eps, void* stream);
// dx from dy; dgain[head] += Σ dy·rope(norm(x)) when gain is given (fp32, zeroed by the caller).
int QkNormRopeBackward(const void* x, const void* dy, const float* cos, const float* sin, const float* gain,
                       void* dx, float* dgain, int64_t rows, int64_t t, int64_t h, int64_t d, float eps,
                       void* stream);

// out = x · rsqrt(mean(x²) + eps) over rows of c ∈ {256, 512, 768, 1024} bf16.
int RmsNormForward(const void* x, void* out, int64_t rows, int64_t c, float eps, void* stream);
// dx = inv·(g − n·mean(g·n)), n = x·inv.
int RmsNormBackward(const void* x, const void* g, void* dx, int64_t rows, int64_t c, float eps, void* stream);

}  // namespace caddie::model::cuda
