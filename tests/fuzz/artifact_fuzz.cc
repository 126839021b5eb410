// libFuzzer target: the artifact reader (model/artifact.h). Any bytes must give
// tensors or an error; an artifact that imports must describe the same tensors
// (names, shapes, dtypes).
//
// Under libFuzzer (CADDIE_FUZZ_MUTATOR, set for fuzz_artifact only) a custom
// mutator makes the inputs reach the tensor table: an artifact's payload is
// compressed and CRC-32-checked, so byte-level mutations almost never get past
// the outer header. The mutator decompresses the input's payload, mutates that
// with libFuzzer's own mutator, recompresses it (the input's codec, or the other
// one) and writes a header with the payload's size and CRC. Now and then it
// instead exports a small random state with ExportArtifact (quantised and kept
// tensors of every dtype, 2..8 bits, both code packings and codecs), or mutates
// the raw bytes (header fields, framing) and fixes up the CRC when the data still
// decompresses.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "model/artifact.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  auto described = caddie::model::DescribeArtifact(bytes);
  auto imported = caddie::model::ImportArtifact(bytes);
  if (imported.ok()) {
    if (!described.ok() || described->size() != imported->size()) __builtin_trap();
    for (size_t i = 0; i < imported->size(); ++i) {
      const auto& info = (*described)[i];
      const torch::Tensor& t = (*imported)[i].second;
      if (info.name != (*imported)[i].first || t.scalar_type() != info.dtype ||
          t.sizes().vec() != info.shape) {
        __builtin_trap();
      }
    }
  }
  return 0;
}

#ifdef CADDIE_FUZZ_MUTATOR
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <iterator>
#include <random>
#include <vector>

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace {

// Outer header (model/artifact.h): magic, u32 version, u8 codec, 3 zero bytes,
// u64 payload bytes, u32 CRC-32 of the payload; 28 bytes.
constexpr size_t kHeader = 28;
constexpr size_t kCodecAt = 12, kSizeAt = 16, kCrcAt = 24;
constexpr uint8_t kZstd = 1, kZlib = 2;
// Payloads the mutator works on stay small: the fuzzer's inputs are bounded anyway.
constexpr size_t kMaxPayload = 1 << 20;

void PutLE(uint8_t* at, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) at[i] = static_cast<uint8_t>(v >> (8 * i));
}

uint32_t Crc(const std::string& s) {
  return static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(s.data()), static_cast<uInt>(s.size())));
}

// The payload of an artifact-shaped input (right magic, a known codec, data that
// decompresses to at most kMaxPayload bytes), whatever its header's size and CRC.
bool Decompress(const uint8_t* data, size_t size, std::string* payload, uint8_t* codec) {
  if (size < kHeader || std::memcmp(data, "CADDIEAR", 8) != 0) return false;
  *codec = data[kCodecAt];
  const uint8_t* src = data + kHeader;
  const size_t n = size - kHeader;
  if (*codec == kZstd) {
    const unsigned long long content = ZSTD_getFrameContentSize(src, n);
    if (content == ZSTD_CONTENTSIZE_ERROR || content == ZSTD_CONTENTSIZE_UNKNOWN || content > kMaxPayload) return false;
    payload->resize(content);
    const size_t r = ZSTD_decompress(payload->data(), payload->size(), src, n);
    return !ZSTD_isError(r) && r == content;
  }
  if (*codec == kZlib) {
    uLongf len = static_cast<uLongf>(std::min<size_t>(kMaxPayload, 1032 * n + 64));
    payload->resize(len);
    if (uncompress(reinterpret_cast<Bytef*>(payload->data()), &len, src, static_cast<uLong>(n)) != Z_OK) return false;
    payload->resize(len);
    return true;
  }
  return false;
}

// A well-formed artifact of `payload` under `codec` (level 1: the fuzzer wants speed).
std::string Compress(const std::string& payload, uint8_t codec) {
  std::string out(kHeader, '\0');
  std::memcpy(out.data(), "CADDIEAR", 8);
  auto* h = reinterpret_cast<uint8_t*>(out.data());
  PutLE(h + 8, 1, 4);
  h[kCodecAt] = codec;
  PutLE(h + kSizeAt, payload.size(), 8);
  PutLE(h + kCrcAt, Crc(payload), 4);
  std::string body;
  if (codec == kZstd) {
    body.resize(ZSTD_compressBound(payload.size()));
    const size_t r = ZSTD_compress(body.data(), body.size(), payload.data(), payload.size(), 1);
    if (ZSTD_isError(r)) return "";
    body.resize(r);
  } else {
    uLongf len = compressBound(static_cast<uLong>(payload.size()));
    body.resize(len);
    if (compress2(reinterpret_cast<Bytef*>(body.data()), &len, reinterpret_cast<const Bytef*>(payload.data()),
                  static_cast<uLong>(payload.size()), 1) != Z_OK) {
      return "";
    }
    body.resize(len);
  }
  return out + body;
}

// ExportArtifact of 1..4 small random tensors: quantised (float dtypes over a
// zero keep-float threshold) or kept, under random bits, packing and codec.
std::string RandomExport(std::minstd_rand& rng) {
  using caddie::model::CodePacking;
  const c10::ScalarType dtypes[] = {torch::kFloat32, torch::kFloat16, torch::kBFloat16, torch::kFloat64, torch::kInt64,
                                    torch::kInt32,   torch::kInt16,   torch::kInt8,     torch::kUInt8,   torch::kBool};
  torch::manual_seed(rng());  // the same seed mutates the same way
  caddie::model::NamedTensors state;
  const int count = 1 + static_cast<int>(rng() % 4);
  for (int i = 0; i < count; ++i) {
    std::vector<int64_t> shape(rng() % 4);
    for (auto& d : shape) d = static_cast<int64_t>(rng() % 6);  // 0 included: empty tensors
    const c10::ScalarType dt = dtypes[rng() % std::size(dtypes)];
    torch::Tensor t = torch::randn(shape, torch::TensorOptions().dtype(torch::kFloat64)) * 4;
    t = t.to(dt);
    state.emplace_back((i == 0 && rng() % 2 ? "norm" : "w") + std::to_string(i), t);
  }
  caddie::model::ExportOptions o;
  o.quant.bits = 2 + static_cast<int>(rng() % 7);
  o.quant.keep_float_max_numel = rng() % 3 == 0 ? 8 : 0;
  o.quant.min_scale = rng() % 2 ? 0.0 : o.quant.min_scale;
  o.compression = rng() % 2 ? caddie::model::Compression::kZstd : caddie::model::Compression::kZlib;
  o.zstd_level = 1;
  o.packing = rng() % 2 ? CodePacking::kPacked : CodePacking::kOneBytePerCode;
  auto bytes = caddie::model::ExportArtifact(state, o);
  return bytes.ok() ? *bytes : "";
}

}  // namespace

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned int seed) {
  std::minstd_rand rng(seed);
  const unsigned pick = rng() % 16;
  std::string payload;
  uint8_t codec = 0;
  std::string out;
  if (pick == 0 || (pick < 13 && !Decompress(data, size, &payload, &codec))) {
    out = RandomExport(rng);
  } else if (pick < 13) {
    // Mutate the payload (tensor count, names, kinds, dtypes, bits, dims, data).
    if (payload.empty()) payload.assign(4, '\0');  // no tensors: give the mutator bytes to work on
    const size_t n = payload.size();
    payload.resize(std::min(kMaxPayload, std::max<size_t>(2 * n, 256)));
    payload.resize(LLVMFuzzerMutate(reinterpret_cast<uint8_t*>(payload.data()), n, payload.size()));
    if (rng() % 8 == 0) codec = codec == kZstd ? kZlib : kZstd;
    out = Compress(payload, codec == kZlib ? kZlib : kZstd);
  }
  if (!out.empty() && out.size() <= max_size) {
    std::memcpy(data, out.data(), out.size());
    return out.size();
  }
  // Raw bytes: header fields and framing; keep the CRC right when it still decompresses.
  size = LLVMFuzzerMutate(data, size, max_size);
  if (rng() % 4 != 0 && Decompress(data, size, &payload, &codec)) PutLE(data + kCrcAt, Crc(payload), 4);
  return size;
}
#endif  // CADDIE_FUZZ_MUTATOR
