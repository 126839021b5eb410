#include "model/artifact.h"

#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <fstream>
#include <memory>
#include <set>

namespace caddie::model {
namespace {

// The compiler's macro, not C++20's std::endian: the fuzz target builds this file as C++17.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "tensor bytes are copied as they lie in memory: little-endian hosts only");

constexpr char kMagic[8] = {'C', 'A', 'D', 'D', 'I', 'E', 'A', 'R'};
constexpr uint32_t kFormatVersion = 1;
constexpr size_t kOuterHeaderBytes = 28;
constexpr uint8_t kCodecZstd = 1;
constexpr uint8_t kCodecZlib = 2;
constexpr uint8_t kKindKept = 0;
constexpr uint8_t kKindQuantized = 1;
constexpr int kMaxDims = 8;
constexpr int64_t kMaxDim = int64_t{1} << 40;
constexpr double kMaxFp16 = 65504.0;

// The container's dtype codes: fixed forever, unlike c10::ScalarType's numbering.
struct DtypeCode {
  uint8_t code;
  c10::ScalarType type;
};
constexpr DtypeCode kDtypes[] = {
    {1, torch::kFloat32}, {2, torch::kFloat16}, {3, torch::kBFloat16}, {4, torch::kFloat64},
    {5, torch::kInt64},   {6, torch::kInt32},   {7, torch::kInt16},    {8, torch::kInt8},
    {9, torch::kUInt8},   {10, torch::kBool},
};

bool CodeOf(c10::ScalarType t, uint8_t* code) {
  for (const DtypeCode& d : kDtypes) {
    if (d.type == t) {
      *code = d.code;
      return true;
    }
  }
  return false;
}

bool TypeOf(uint8_t code, c10::ScalarType* t) {
  for (const DtypeCode& d : kDtypes) {
    if (d.code == code) {
      *t = d.type;
      return true;
    }
  }
  return false;
}

bool IsFloat(c10::ScalarType t) {
  return t == torch::kFloat32 || t == torch::kFloat16 || t == torch::kBFloat16 ||
         t == torch::kFloat64;
}

void PutLE(std::string* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// Bounds-checked little-endian reader over the payload.
class Reader {
 public:
  explicit Reader(const std::string& s) : s_(s) {}
  size_t remaining() const { return s_.size() - pos_; }
  bool Read(int bytes, uint64_t* v) {
    if (remaining() < static_cast<size_t>(bytes)) return false;
    *v = 0;
    for (int i = 0; i < bytes; ++i) {
      *v |= static_cast<uint64_t>(static_cast<uint8_t>(s_[pos_ + i])) << (8 * i);
    }
    pos_ += bytes;
    return true;
  }
  bool ReadBytes(size_t n, std::string* out) {
    if (remaining() < n) return false;
    out->assign(s_, pos_, n);
    pos_ += n;
    return true;
  }
  bool ReadInto(size_t n, void* out) {
    if (remaining() < n) return false;
    if (n > 0) std::memcpy(out, s_.data() + pos_, n);  // out is null for empty tensors
    pos_ += n;
    return true;
  }
  void Skip(size_t n) { pos_ += std::min(n, remaining()); }
  size_t pos() const { return pos_; }

 private:
  const std::string& s_;
  size_t pos_ = 0;
};

LiteStatus Truncated(const std::string& what, size_t pos) {
  return LiteStatus::Error("artifact payload truncated reading " + what + " at byte " +
                           std::to_string(pos));
}

LiteStatusOr<std::string> CompressZstd(const std::string& src, int level) {
  std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> cctx(ZSTD_createCCtx(), ZSTD_freeCCtx);
  if (!cctx) return LiteStatus::Error("zstd: cannot create a compression context");
  for (auto [param, value] : {std::pair{ZSTD_c_compressionLevel, level},
                              std::pair{ZSTD_c_enableLongDistanceMatching, 1},
                              std::pair{ZSTD_c_checksumFlag, 1}}) {
    const size_t r = ZSTD_CCtx_setParameter(cctx.get(), param, value);
    if (ZSTD_isError(r)) return LiteStatus::Error(std::string("zstd: ") + ZSTD_getErrorName(r));
  }
  std::string out(ZSTD_compressBound(src.size()), '\0');
  const size_t n = ZSTD_compress2(cctx.get(), out.data(), out.size(), src.data(), src.size());
  if (ZSTD_isError(n)) return LiteStatus::Error(std::string("zstd: ") + ZSTD_getErrorName(n));
  out.resize(n);
  return out;
}

LiteStatusOr<std::string> CompressZlib(const std::string& src) {
  uLongf n = compressBound(static_cast<uLong>(src.size()));
  std::string out(n, '\0');
  const int r = compress2(reinterpret_cast<Bytef*>(out.data()), &n,
                          reinterpret_cast<const Bytef*>(src.data()), src.size(), 9);
  if (r != Z_OK) return LiteStatus::Error("zlib: compress2 failed with code " + std::to_string(r));
  out.resize(n);
  return out;
}

// The decoders stream into `out`, growing it as output really arrives and
// never past `declared`: a header that claims 1 GiB in front of 40 bytes costs
// what those bytes expand to, not the claim.
size_t InitialCapacity(size_t compressed, uint64_t declared) {
  return static_cast<size_t>(std::min<uint64_t>(declared, uint64_t{4} * compressed + (1 << 16)));
}
void Grow(std::string* out, uint64_t declared) {
  out->resize(static_cast<size_t>(std::min<uint64_t>(declared, uint64_t{2} * out->size() + (1 << 16))));
}

LiteStatus DecompressZstd(const char* src, size_t n, uint64_t declared, std::string* out) {
  const unsigned long long frame_content = ZSTD_getFrameContentSize(src, n);
  if (frame_content == ZSTD_CONTENTSIZE_ERROR) {
    return LiteStatus::Error("artifact zstd data is not a zstd frame (corrupted)");
  }
  if (frame_content != declared) {
    return LiteStatus::Error("artifact zstd frame holds " + std::to_string(frame_content) +
                             " bytes, header says " + std::to_string(declared));
  }
  const size_t frame = ZSTD_findFrameCompressedSize(src, n);
  if (ZSTD_isError(frame)) {
    return LiteStatus::Error(std::string("artifact zstd data truncated or corrupted: ") +
                             ZSTD_getErrorName(frame));
  }
  if (frame != n) {
    return LiteStatus::Error("artifact has " + std::to_string(n - frame) +
                             " bytes after its zstd frame");
  }
  std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> dctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  if (!dctx) return LiteStatus::Error("zstd: cannot create a decompression context");
  // Long mode may use windows above the decoder's default limit of 2^27; allow
  // up to 2^31 (ZSTD_WINDOWLOG_MAX on 64-bit hosts).
  ZSTD_DCtx_setParameter(dctx.get(), ZSTD_d_windowLogMax, 31);
  out->resize(InitialCapacity(n, declared));
  ZSTD_inBuffer in{src, n, 0};
  size_t produced = 0;
  for (;;) {
    if (produced == out->size() && out->size() < declared) Grow(out, declared);
    ZSTD_outBuffer ob{out->data(), out->size(), produced};
    const size_t in_before = in.pos;
    const size_t r = ZSTD_decompressStream(dctx.get(), &ob, &in);
    if (ZSTD_isError(r)) {
      return LiteStatus::Error(std::string("artifact zstd data corrupted: ") + ZSTD_getErrorName(r));
    }
    const bool progress = in.pos != in_before || ob.pos != produced;
    produced = ob.pos;
    if (r == 0) break;  // frame decoded and flushed
    if (!progress) {
      return LiteStatus::Error(produced == declared
                                   ? "artifact zstd data decompresses to more than the declared " +
                                         std::to_string(declared) + " bytes"
                                   : "artifact zstd data truncated after " + std::to_string(produced) +
                                         " of " + std::to_string(declared) + " bytes");
    }
  }
  if (produced != declared) {
    return LiteStatus::Error("artifact zstd data decompressed to " + std::to_string(produced) +
                             " bytes, want " + std::to_string(declared));
  }
  out->resize(produced);
  return LiteStatus::Ok();
}

// Deflate cannot expand data by more than 1032:1 (RFC 1951 block limits).
constexpr uint64_t kDeflateMaxRatio = 1032;

LiteStatus DecompressZlib(const char* src, size_t n, uint64_t declared, std::string* out) {
  if (declared > kDeflateMaxRatio * n + 64) {
    return LiteStatus::Error("artifact header declares a payload of " + std::to_string(declared) +
                             " bytes, but its " + std::to_string(n) +
                             " zlib bytes expand to at most " + std::to_string(kDeflateMaxRatio * n + 64) +
                             " (header corrupted or forged)");
  }
  z_stream zs{};
  if (inflateInit(&zs) != Z_OK) return LiteStatus::Error("zlib: cannot create a decompression stream");
  std::unique_ptr<z_stream, decltype(&inflateEnd)> guard(&zs, inflateEnd);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(src));
  zs.avail_in = static_cast<uInt>(n);
  out->resize(InitialCapacity(n, declared));
  size_t produced = 0;
  int r = Z_OK;
  for (;;) {
    if (produced == out->size() && out->size() < declared) Grow(out, declared);
    zs.next_out = reinterpret_cast<Bytef*>(out->data() + produced);
    zs.avail_out = static_cast<uInt>(out->size() - produced);
    r = inflate(&zs, Z_NO_FLUSH);
    produced = out->size() - zs.avail_out;
    if (r == Z_STREAM_END) break;
    if (r == Z_BUF_ERROR && zs.avail_in != 0 && produced == declared) {
      return LiteStatus::Error("artifact zlib data decompresses to more than the declared " +
                               std::to_string(declared) + " bytes");
    }
    if (r != Z_OK) {
      return LiteStatus::Error(std::string("artifact zlib data truncated or corrupted (") +
                               (r == Z_DATA_ERROR  ? "data error"
                                : r == Z_BUF_ERROR ? "incomplete or larger than declared"
                                                   : "code " + std::to_string(r)) +
                               ")");
    }
  }
  const size_t consumed = n - zs.avail_in;
  if (produced != declared || consumed != n) {
    return LiteStatus::Error("artifact zlib data decompressed to " + std::to_string(produced) +
                             " bytes from " + std::to_string(consumed) + " of " +
                             std::to_string(n) + ", want " + std::to_string(declared));
  }
  out->resize(produced);
  return LiteStatus::Ok();
}

// Validates the outer header and returns the CRC-checked payload.
LiteStatusOr<std::string> Unwrap(const std::string& bytes) {
  if (bytes.size() < kOuterHeaderBytes) {
    return LiteStatus::Error("artifact too short: " + std::to_string(bytes.size()) +
                             " bytes, the header alone is " + std::to_string(kOuterHeaderBytes));
  }
  if (std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return LiteStatus::Error("not a caddie artifact: bad magic (want \"CADDIEAR\")");
  }
  Reader r(bytes);
  uint64_t skip, version, codec, reserved, payload_bytes, crc;
  r.Read(8, &skip);
  r.Read(4, &version);
  r.Read(1, &codec);
  r.Read(3, &reserved);
  r.Read(8, &payload_bytes);
  r.Read(4, &crc);
  if (version != kFormatVersion) {
    return LiteStatus::Error("unsupported artifact format version " + std::to_string(version) +
                             " (this build reads " + std::to_string(kFormatVersion) + ")");
  }
  if (codec != kCodecZstd && codec != kCodecZlib) {
    return LiteStatus::Error("unknown artifact codec " + std::to_string(codec));
  }
  if (reserved != 0) return LiteStatus::Error("artifact header reserved bytes are not zero");
  if (payload_bytes > static_cast<uint64_t>(kMaxPayloadBytes)) {
    return LiteStatus::Error("artifact payload size " + std::to_string(payload_bytes) +
                             " exceeds the limit " + std::to_string(kMaxPayloadBytes));
  }
  std::string payload;
  const char* src = bytes.data() + kOuterHeaderBytes;
  const size_t n = bytes.size() - kOuterHeaderBytes;
  const LiteStatus s = codec == kCodecZstd ? DecompressZstd(src, n, payload_bytes, &payload)
                                           : DecompressZlib(src, n, payload_bytes, &payload);
  if (!s.ok()) return s;
  const uint32_t actual = static_cast<uint32_t>(
      crc32(0, reinterpret_cast<const Bytef*>(payload.data()), static_cast<uInt>(payload.size())));
  if (actual != crc) {
    return LiteStatus::Error("artifact payload CRC mismatch (corrupted): stored " +
                             std::to_string(crc) + ", computed " + std::to_string(actual));
  }
  return payload;
}

std::string Wrap(const std::string& compressed, uint8_t codec, const std::string& payload) {
  std::string out(kMagic, sizeof(kMagic));
  PutLE(&out, kFormatVersion, 4);
  PutLE(&out, codec, 1);
  PutLE(&out, 0, 3);
  PutLE(&out, payload.size(), 8);
  PutLE(&out,
        crc32(0, reinterpret_cast<const Bytef*>(payload.data()), static_cast<uInt>(payload.size())),
        4);
  out += compressed;
  return out;
}

struct EncodeStats {
  int64_t quantized = 0;
  int64_t kept = 0;
  int64_t params = 0;
};

// The payload of `state`, codes packed (`pack`) or one per byte.
LiteStatusOr<std::string> Encode(const NamedTensors& state, const ExportOptions& options,
                                 bool pack, EncodeStats* stats) {
  if (LiteStatus s = ValidateQuantOptions(options.quant); !s.ok()) return s;
  if (options.zstd_level < 1 || options.zstd_level > ZSTD_maxCLevel()) {
    return LiteStatus::Error("zstd_level " + std::to_string(options.zstd_level) +
                             " out of range [1, " + std::to_string(ZSTD_maxCLevel()) + "]");
  }
  if (state.size() > 0xffffffffu) return LiteStatus::Error("too many tensors");
  std::string out;
  PutLE(&out, state.size(), 4);
  std::set<std::string> seen;
  for (const auto& [name, tensor] : state) {
    if (name.empty() || name.size() > 0xffff) {
      return LiteStatus::Error("tensor name \"" + name.substr(0, 64) + "\" has length " +
                               std::to_string(name.size()) + " (want 1..65535)");
    }
    if (!seen.insert(name).second) return LiteStatus::Error("duplicate tensor name " + name);
    if (!tensor.defined()) return LiteStatus::Error("tensor " + name + " is undefined");
    uint8_t dtype = 0;
    if (!CodeOf(tensor.scalar_type(), &dtype)) {
      return LiteStatus::Error("tensor " + name + " has dtype " +
                               std::string(c10::toString(tensor.scalar_type())) +
                               " which the artifact cannot hold");
    }
    if (tensor.dim() > kMaxDims) {
      return LiteStatus::Error("tensor " + name + " has " + std::to_string(tensor.dim()) +
                               " dimensions (at most " + std::to_string(kMaxDims) + ")");
    }
    const torch::Tensor t = tensor.detach().cpu().contiguous();
    const bool is_float = IsFloat(t.scalar_type());
    if (is_float && t.numel() > 0 && !torch::isfinite(t).all().item<bool>()) {
      return LiteStatus::Error("tensor " + name + " has non-finite values");
    }
    stats->params += t.numel();
    PutLE(&out, name.size(), 2);
    out += name;
    if (ShouldQuantize(name, t, options.quant)) {
      const int bits = options.quant.bits;
      const int code_bits = pack ? bits : 8;
      const QuantizedRows q = QuantizeRows(t, bits, options.quant.clip_percentile, options.quant.min_scale);
      PutLE(&out, kKindQuantized, 1);
      PutLE(&out, dtype, 1);
      PutLE(&out, 8 /* int8 codes */, 1);
      PutLE(&out, bits, 1);
      PutLE(&out, code_bits, 1);
      PutLE(&out, t.dim(), 1);
      for (int64_t d : t.sizes()) PutLE(&out, static_cast<uint64_t>(d), 8);
      out.append(static_cast<const char*>(q.scales.data_ptr()), q.scales.numel() * 2);
      LiteStatusOr<std::string> packed =
          PackCodes(q.codes.data_ptr<int8_t>(), q.codes.numel(), code_bits);
      if (!packed.ok()) return packed.status();
      out += *packed;
      ++stats->quantized;
      continue;
    }
    torch::Tensor stored = t;
    if (is_float) {
      // fp16 unless some value would overflow it.
      const bool fits = t.numel() == 0 || t.abs().max().item<double>() <= kMaxFp16;
      stored = t.to(fits ? torch::kFloat16 : torch::kFloat32).contiguous();
    }
    uint8_t storage = 0;
    CodeOf(stored.scalar_type(), &storage);
    PutLE(&out, kKindKept, 1);
    PutLE(&out, dtype, 1);
    PutLE(&out, storage, 1);
    PutLE(&out, 0, 1);
    PutLE(&out, 0, 1);
    PutLE(&out, t.dim(), 1);
    for (int64_t d : t.sizes()) PutLE(&out, static_cast<uint64_t>(d), 8);
    out.append(static_cast<const char*>(stored.data_ptr()), stored.numel() * stored.element_size());
    ++stats->kept;
  }
  if (static_cast<int64_t>(out.size()) > kMaxPayloadBytes) {
    return LiteStatus::Error("artifact payload of " + std::to_string(out.size()) +
                             " bytes exceeds the limit " + std::to_string(kMaxPayloadBytes));
  }
  return out;
}

// Parses a payload; with `tensors` set also materialises and dequantises.
LiteStatus Parse(const std::string& payload, std::vector<ArtifactTensorInfo>* infos,
                 NamedTensors* tensors) {
  Reader r(payload);
  uint64_t count = 0;
  if (!r.Read(4, &count)) return Truncated("the tensor count", r.pos());
  std::set<std::string> seen;
  for (uint64_t i = 0; i < count; ++i) {
    const std::string where = "tensor #" + std::to_string(i);
    uint64_t name_len = 0;
    if (!r.Read(2, &name_len)) return Truncated(where + " name length", r.pos());
    ArtifactTensorInfo info;
    if (name_len == 0) return LiteStatus::Error(where + " has an empty name");
    if (!r.ReadBytes(name_len, &info.name)) return Truncated(where + " name", r.pos());
    if (!seen.insert(info.name).second) {
      return LiteStatus::Error("duplicate tensor name " + info.name + " in artifact");
    }
    const std::string what = "tensor " + info.name;
    uint64_t kind, dtype, storage, bits, code_bits, ndim;
    if (!r.Read(1, &kind) || !r.Read(1, &dtype) || !r.Read(1, &storage) || !r.Read(1, &bits) ||
        !r.Read(1, &code_bits) || !r.Read(1, &ndim)) {
      return Truncated(what + " header", r.pos());
    }
    if (kind != kKindKept && kind != kKindQuantized) {
      return LiteStatus::Error(what + " has unknown kind " + std::to_string(kind));
    }
    if (!TypeOf(static_cast<uint8_t>(dtype), &info.dtype)) {
      return LiteStatus::Error(what + " has unknown dtype code " + std::to_string(dtype));
    }
    if (!TypeOf(static_cast<uint8_t>(storage), &info.storage_dtype)) {
      return LiteStatus::Error(what + " has unknown storage dtype code " + std::to_string(storage));
    }
    if (ndim > kMaxDims) {
      return LiteStatus::Error(what + " has " + std::to_string(ndim) + " dimensions (at most " +
                               std::to_string(kMaxDims) + ")");
    }
    // The product of the non-zero dims is bounded by the payload size before
    // multiplying on, an empty tensor's too (torch's strides must fit).
    int64_t extent = 1;
    bool empty = false;
    for (uint64_t d = 0; d < ndim; ++d) {
      uint64_t dim = 0;
      if (!r.Read(8, &dim)) return Truncated(what + " shape", r.pos());
      if (dim > static_cast<uint64_t>(kMaxDim)) {
        return LiteStatus::Error(what + " has dimension " + std::to_string(dim) + " out of range");
      }
      info.shape.push_back(static_cast<int64_t>(dim));
      empty |= dim == 0;
      if (dim != 0 && extent > kMaxPayloadBytes * 8 / static_cast<int64_t>(dim)) {
        return LiteStatus::Error(what + " has a shape larger than the payload can hold");
      }
      if (dim != 0) extent *= static_cast<int64_t>(dim);
    }
    const int64_t numel = empty ? 0 : extent;
    if (kind == kKindKept) {
      if (bits != 0 || code_bits != 0) {
        return LiteStatus::Error(what + " is kept but has bits " + std::to_string(bits));
      }
      const bool ok_storage = IsFloat(info.dtype)
                                  ? (info.storage_dtype == torch::kFloat16 ||
                                     info.storage_dtype == torch::kFloat32)
                                  : info.storage_dtype == info.dtype;
      if (!ok_storage) {
        return LiteStatus::Error(what + " stores " +
                                 std::string(c10::toString(info.storage_dtype)) + " for " +
                                 std::string(c10::toString(info.dtype)));
      }
      const size_t nbytes = static_cast<size_t>(numel) * c10::elementSize(info.storage_dtype);
      if (r.remaining() < nbytes) return Truncated(what + " data", r.pos());
      if (tensors) {
        torch::Tensor t = torch::empty(info.shape, torch::TensorOptions().dtype(info.storage_dtype));
        r.ReadInto(nbytes, t.data_ptr());
        tensors->emplace_back(info.name, t.to(info.dtype));
      } else {
        r.Skip(nbytes);
      }
    } else {
      if (!ValidateBits(static_cast<int>(bits)).ok() ||
          (code_bits != bits && code_bits != 8)) {
        return LiteStatus::Error(what + " has invalid bits " + std::to_string(bits) +
                                 " / code bits " + std::to_string(code_bits));
      }
      if (!IsFloat(info.dtype) || info.storage_dtype != torch::kInt8 || ndim == 0 || numel == 0) {
        return LiteStatus::Error(what + " is quantised but is not a non-empty float tensor");
      }
      info.bits = static_cast<int>(bits);
      info.code_bits = static_cast<int>(code_bits);
      const int64_t rows = ndim >= 2 ? info.shape[0] : 1;
      const int64_t cols = numel / rows;
      const size_t scale_bytes = static_cast<size_t>(rows) * 2;
      const size_t code_bytes = static_cast<size_t>(PackedBytes(numel, info.code_bits));
      if (r.remaining() < scale_bytes + code_bytes) return Truncated(what + " data", r.pos());
      QuantizedRows q;
      q.bits = info.bits;
      q.scales = torch::empty({rows}, torch::TensorOptions().dtype(torch::kFloat16));
      r.ReadInto(scale_bytes, q.scales.data_ptr());
      std::string packed;
      r.ReadBytes(code_bytes, &packed);
      const torch::Tensor s32 = q.scales.to(torch::kFloat32);
      if (!torch::isfinite(s32).all().item<bool>() || !(s32 > 0).all().item<bool>()) {
        return LiteStatus::Error(what + " has a non-positive or non-finite scale");
      }
      if (tensors) {
        q.codes = torch::empty({rows, cols}, torch::TensorOptions().dtype(torch::kInt8));
        if (LiteStatus s = UnpackCodes(packed, numel, info.code_bits, q.codes.data_ptr<int8_t>());
            !s.ok()) {
          return LiteStatus::Error(what + ": " + s.message());
        }
        if (info.code_bits != info.bits) {
          const int qmax = QMax(info.bits);
          if ((q.codes.abs() > qmax).any().item<bool>()) {
            return LiteStatus::Error(what + " has codes beyond +-" + std::to_string(qmax));
          }
        }
        tensors->emplace_back(info.name, DequantizeRows(q, info.shape).to(info.dtype));
      }
    }
    if (infos) infos->push_back(std::move(info));
  }
  if (r.remaining() != 0) {
    return LiteStatus::Error("artifact payload has " + std::to_string(r.remaining()) +
                             " bytes after its last tensor");
  }
  return LiteStatus::Ok();
}

}  // namespace

LiteStatusOr<Compression> ParseCompression(const std::string& name) {
  if (name == "zstd") return Compression::kZstd;
  if (name == "zlib") return Compression::kZlib;
  return LiteStatus::Error("unknown compression \"" + name + "\" (want zstd or zlib)");
}

const char* CompressionName(Compression c) { return c == Compression::kZstd ? "zstd" : "zlib"; }

namespace {

// The layouts ExportOptions asks for: one, or both when it wants the smaller.
std::vector<bool> Packings(const ExportOptions& options) {
  switch (options.packing) {
    case CodePacking::kPacked:
      return {true};
    case CodePacking::kOneBytePerCode:
      return {false};
    case CodePacking::kSmallest:
      break;
  }
  // At 8 bits both layouts are the same bytes.
  return options.quant.bits == 8 ? std::vector<bool>{true} : std::vector<bool>{true, false};
}

LiteStatusOr<std::string> Compress(const std::string& payload, Compression c, int zstd_level) {
  LiteStatusOr<std::string> z =
      c == Compression::kZstd ? CompressZstd(payload, zstd_level) : CompressZlib(payload);
  if (!z.ok()) return z.status();
  return Wrap(*z, c == Compression::kZstd ? kCodecZstd : kCodecZlib, payload);
}

}  // namespace

LiteStatusOr<std::string> ExportArtifact(const NamedTensors& state, const ExportOptions& options) {
  std::string best;
  for (bool pack : Packings(options)) {
    EncodeStats stats;
    LiteStatusOr<std::string> payload = Encode(state, options, pack, &stats);
    if (!payload.ok()) return payload.status();
    LiteStatusOr<std::string> art = Compress(*payload, options.compression, options.zstd_level);
    if (!art.ok()) return art.status();
    if (best.empty() || art->size() < best.size()) best = std::move(*art);
  }
  return best;
}

LiteStatusOr<NamedTensors> ImportArtifact(const std::string& bytes) {
  LiteStatusOr<std::string> payload = Unwrap(bytes);
  if (!payload.ok()) return payload.status();
  NamedTensors out;
  try {  // a backstop: the checks in Parse are meant to leave torch nothing to refuse
    if (LiteStatus s = Parse(*payload, nullptr, &out); !s.ok()) return s;
  } catch (const c10::Error& e) {
    return LiteStatus::Error(std::string("artifact tensors cannot be built: ") + e.what_without_backtrace());
  }
  return out;
}

LiteStatusOr<NamedTensors> ImportArtifactFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return LiteStatus::Error(path + ": cannot open the artifact");
  const std::streamoff size = in.tellg();
  // The outer header may add to the payload bound, never a whole second one.
  if (size < 0 || size > 2 * kMaxPayloadBytes) {
    return LiteStatus::Error(path + ": artifact file of " + std::to_string(size) + " bytes is over the limit");
  }
  std::string bytes(static_cast<size_t>(size), '\0');
  in.seekg(0);
  if (!in.read(bytes.data(), size)) return LiteStatus::Error(path + ": cannot read the artifact");
  LiteStatusOr<NamedTensors> out = ImportArtifact(bytes);
  if (!out.ok()) return LiteStatus::Error(path + ": " + out.status().message());
  return out;
}

LiteStatusOr<std::vector<ArtifactTensorInfo>> DescribeArtifact(const std::string& bytes) {
  LiteStatusOr<std::string> payload = Unwrap(bytes);
  if (!payload.ok()) return payload.status();
  std::vector<ArtifactTensorInfo> infos;
  if (LiteStatus s = Parse(*payload, &infos, nullptr); !s.ok()) return s;
  return infos;
}

LiteStatusOr<ArtifactSizes> MeasureArtifactSizes(const NamedTensors& state,
                                                 const ExportOptions& options) {
  ArtifactSizes sizes;
  for (bool pack : Packings(options)) {
    EncodeStats stats;
    LiteStatusOr<std::string> payload = Encode(state, options, pack, &stats);
    if (!payload.ok()) return payload.status();
    LiteStatusOr<std::string> zstd = Compress(*payload, Compression::kZstd, options.zstd_level);
    if (!zstd.ok()) return zstd.status();
    LiteStatusOr<std::string> zlib = Compress(*payload, Compression::kZlib, options.zstd_level);
    if (!zlib.ok()) return zlib.status();
    if (sizes.zstd_bytes == 0 || static_cast<int64_t>(zstd->size()) < sizes.zstd_bytes) {
      sizes.zstd_bytes = static_cast<int64_t>(zstd->size());
      sizes.payload_bytes = static_cast<int64_t>(payload->size());
    }
    if (sizes.zlib_bytes == 0 || static_cast<int64_t>(zlib->size()) < sizes.zlib_bytes) {
      sizes.zlib_bytes = static_cast<int64_t>(zlib->size());
    }
    sizes.quantized_tensors = stats.quantized;
    sizes.kept_tensors = stats.kept;
    sizes.params = stats.params;
  }
  return sizes;
}

BudgetVerdict CheckBudget(int64_t artifact_bytes, int64_t limit_bytes) {
  return BudgetVerdict{artifact_bytes, limit_bytes, artifact_bytes <= limit_bytes};
}

}  // namespace caddie::model
