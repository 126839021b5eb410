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
// head r % h; vector r of x (and dx) starts at (r / h)·ldx + (r % h)·d, of out (and dy) at
// (r / h)·ldy + (r % h)·d (ld = h·d: contiguous (B,T,H,D); larger: a slice of a fused q/k/v
// projection). out = gain[head] · rope(x · rsqrt(mean(x²) + eps)), rope rotating halves with
// cos/sin (t, d/2) fp32 tables (rounded to bf16, as the reference's); gain may be null (1).
int QkNormRopeForward(const void* x, const float* cos, const float* sin, const float* gain, void* out,
                      int64_t rows, int64_t t, int64_t h, int64_t d, int64_t ldx, int64_t ldy, float eps,
                      void* stream);
// dx from dy; dgain[head] += Σ dy·rope(norm(x)) when gain is given (fp32, zeroed by the caller).
int QkNormRopeBackward(const void* x, const void* dy, const float* cos, const float* sin, const float* gain,
                       void* dx, float* dgain, int64_t rows, int64_t t, int64_t h, int64_t d, int64_t ldx,
                       int64_t ldy, float eps, void* stream);

// out = x · rsqrt(mean(x²) + eps) over rows of c ∈ {256, 512, 768, 1024} bf16.
int RmsNormForward(const void* x, void* out, int64_t rows, int64_t c, float eps, void* stream);
// dx = inv·(g − n·mean(g·n)), n = x·inv.
int RmsNormBackward(const void* x, const void* g, void* dx, int64_t rows, int64_t c, float eps, void* stream);

// Residual update and its RmsNorm: out = a·x + b·y (a null: 1; rounded to bf16), nout =
// out · rsqrt(mean(out²) + eps), rows × c bf16 with c a multiple of 256 up to 4096.
int ResidNormForward(const void* x, const float* a, const void* y, const float* b, void* out, void* nout,
                     int64_t rows, int64_t c, float eps, void* stream);
// Backward from g1 = d out (null: 0) and g2 = d nout: with t = g1 + RmsNorm's backward of g2,
// dx = a·t, dy = b·t; da[c] += Σ t·x (skipped when da is null), db[c] += Σ t·y (zeroed by the caller).
int ResidNormBackward(const void* g1, const void* g2, const void* x, const float* a, const void* y, const float* b,
                      void* dx, void* dy, float* da, float* db, int64_t rows, int64_t c, float eps, void* stream);

// Copies rows × cols bf16 (cols % 8 == 0, rows ld_src / ld_dst elements apart, both
// multiples of 8): v out of a fused q/k/v projection and its grad back in.
int RowCopy(const void* src, int64_t ld_src, void* dst, int64_t ld_dst, int64_t rows, int64_t cols, void* stream);

// Cross-entropy of z = cap·tanh(l/cap) (fp32 arithmetic) over rows × v bf16 logits (v % 8 == 0,
// 0 < cap <= 40, targets in [0, v)): loss[r] = logsumexp(z_r) − z_r[t_r], lse[r] kept for backward.
int SoftcapCeForward(const void* logits, const int64_t* targets, float* loss, float* lse, int64_t rows, int64_t v,
                     float cap, void* stream);
// dlogits = gscale[0]·(softmax(z) − onehot(t))·(1 − tanh²(l/cap)), bf16; gscale on the device.
int SoftcapCeBackward(const void* logits, const int64_t* targets, const float* lse, const float* gscale,
                      void* dlogits, int64_t rows, int64_t v, float cap, void* stream);

}  // namespace caddie::model::cuda
