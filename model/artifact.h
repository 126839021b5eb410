// The caddie-train artifact: a model's named tensors quantised (model/quant.h),
// written into a self-describing container and compressed with zstd or zlib;
// and the way back. Also the 16,000,000-byte budget verdict.
//
// Layout (all integers little-endian). Outer, uncompressed, 28 bytes:
//   "CADDIEAR" | u32 format version (1) | u8 codec (1 zstd, 2 zlib) | 3 zero bytes
//   | u64 payload bytes | u32 CRC-32 of the payload
// then the compressed payload:
//   u32 tensor count, then per tensor:
//   u16 name length | name | u8 kind (0 kept, 1 quantised) | u8 dtype (original)
//   | u8 storage dtype (kept: what the data holds) | u8 bits | u8 code bits
//   | u8 ndim | i64 dims[ndim] | data
//   kept: numel values of the storage dtype;
//   quantised: rows fp16 scales, then PackCodes(codes, code bits) where code
//   bits is `bits` (packed) or 8 (one code per byte; see CodePacking).
// Every function is pure: safe to call from any thread.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/core/lite_status.h"
#include "model/quant.h"

namespace caddie::model {

// Named tensors in a fixed order: a model's state dict.
using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

enum class Compression { kZstd, kZlib };

// "zstd" / "zlib" -> Compression; anything else is an error naming it.
LiteStatusOr<Compression> ParseCompression(const std::string& name);
const char* CompressionName(Compression c);

// How codes narrower than 8 bits are laid out. Packed codes make the smallest
// payload, but zstd and zlib code whole bytes, and codes that straddle bytes
// can compress worse than one code per byte (int6 with zstd: by ~9 %, see
// docs/artifact-sizes.md).
enum class CodePacking {
  kPacked,          // `bits` bits per code
  kOneBytePerCode,  // 8 bits per code
  kSmallest,        // both, compressed; keep the smaller artifact (twice the work)
};

struct ExportOptions {
  QuantOptions quant;
  Compression compression = Compression::kZstd;
  int zstd_level = 22;  // 1..22; zstd runs in long-distance mode
  CodePacking packing = CodePacking::kSmallest;
};

// Returns the artifact bytes of `state` under `options`; an error naming the
// tensor for a bad option, duplicate or empty name, non-finite values or a
// dtype the container cannot hold. Tensors may live on any device.
LiteStatusOr<std::string> ExportArtifact(const NamedTensors& state, const ExportOptions& options);

// Returns the tensors of an artifact, dequantised, on the CPU, in their original
// dtypes and export order. Corrupted, truncated or foreign bytes give an error
// saying what is wrong; nothing is allocated beyond what the (CRC-checked)
// payload describes, and the payload is at most kMaxPayloadBytes.
LiteStatusOr<NamedTensors> ImportArtifact(const std::string& bytes);

inline constexpr int64_t kMaxPayloadBytes = int64_t{1} << 30;

// ImportArtifact on the bytes of the file at `path`; every error starts with
// the path (e.g. a header declaring more than the file's bytes can hold names
// both sizes).
LiteStatusOr<NamedTensors> ImportArtifactFile(const std::string& path);

// What the container says about one tensor (without dequantising it).
struct ArtifactTensorInfo {
  std::string name;
  std::vector<int64_t> shape;
  c10::ScalarType dtype;          // original dtype, restored on import
  c10::ScalarType storage_dtype;  // kept tensors: as stored; quantised: kChar
  int bits = 0;                   // 0 = kept, else the quantisation width
  int code_bits = 0;              // bits per stored code (bits or 8)
};
LiteStatusOr<std::vector<ArtifactTensorInfo>> DescribeArtifact(const std::string& bytes);

// Sizes of one state under both codecs, to compare them.
struct ArtifactSizes {
  int64_t payload_bytes = 0;  // uncompressed container
  int64_t zstd_bytes = 0;     // whole artifact (outer header included)
  int64_t zlib_bytes = 0;     // whole artifact, zlib level 9
  int64_t quantized_tensors = 0;
  int64_t kept_tensors = 0;
  int64_t params = 0;
};
// options.compression is ignored: both are measured. With kSmallest each codec
// reports its smaller layout (what ExportArtifact would write), and
// payload_bytes is that of the layout zstd chose.
LiteStatusOr<ArtifactSizes> MeasureArtifactSizes(const NamedTensors& state,
                                                 const ExportOptions& options);

// The Parameter Golf budget: compressed model bytes + code bytes, decimal.
inline constexpr int64_t kArtifactLimitBytes = 16'000'000;

struct BudgetVerdict {
  int64_t artifact_bytes = 0;
  int64_t limit_bytes = kArtifactLimitBytes;
  bool within_budget = false;
};
// within_budget = artifact_bytes <= limit_bytes (16,000,000 is within, 16,000,001 over).
BudgetVerdict CheckBudget(int64_t artifact_bytes, int64_t limit_bytes = kArtifactLimitBytes);

}  // namespace caddie::model
