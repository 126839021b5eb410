// Bad-input table for the artifact reader (model/artifact.h): corrupted outer
// headers, truncations, bit flips, and hand-made payloads that pass the CRC but
// lie about their contents (huge dimensions, unknown dtypes, overlong names).
// Each row must give its exact error from both ImportArtifact and
// DescribeArtifact, and never crash or allocate what the payload cannot hold.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <sys/resource.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <new>
#include <string>
#include <vector>

#include "model/artifact.h"

namespace caddie::model {
namespace {

using ::testing::HasSubstr;

void PutLE(std::string* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// The outer header of docs: magic, version, codec, reserved, payload size, CRC.
std::string Header(uint32_t version, uint8_t codec, uint64_t payload_bytes, uint32_t crc, uint32_t reserved = 0) {
  std::string h = "CADDIEAR";
  PutLE(&h, version, 4);
  PutLE(&h, codec, 1);
  PutLE(&h, reserved, 3);
  PutLE(&h, payload_bytes, 8);
  PutLE(&h, crc, 4);
  return h;
}

// A zlib-coded artifact around `payload` with a correct CRC: only the payload lies.
std::string WrapZlib(const std::string& payload) {
  uLongf n = compressBound(payload.size());
  std::string z(n, '\0');
  compress2(reinterpret_cast<Bytef*>(z.data()), &n, reinterpret_cast<const Bytef*>(payload.data()), payload.size(), 9);
  z.resize(n);
  const uint32_t crc = crc32(0, reinterpret_cast<const Bytef*>(payload.data()), payload.size());
  return Header(1, 2, payload.size(), crc) + z;
}

// One tensor record: name, kind, dtype codes, bits, dims (data appended by the caller).
std::string Tensor(const std::string& name, uint8_t kind, uint8_t dtype, uint8_t storage, uint8_t bits,
                   uint8_t code_bits, const std::vector<uint64_t>& dims) {
  std::string t;
  PutLE(&t, name.size(), 2);
  t += name;
  for (uint8_t b : {kind, dtype, storage, bits, code_bits, static_cast<uint8_t>(dims.size())}) PutLE(&t, b, 1);
  for (uint64_t d : dims) PutLE(&t, d, 8);
  return t;
}

std::string Count(uint32_t n) {
  std::string s;
  PutLE(&s, n, 4);
  return s;
}

// A real artifact of a tiny model (one quantised matrix, one kept vector).
const std::string& GoodArtifact() {
  static const std::string bytes = [] {
    NamedTensors state = {{"blocks.0.w", torch::randn({256, 300})}, {"norm.gain", torch::ones({8})}};
    ExportOptions o;
    o.quant.keep_float_max_numel = 16;
    auto a = ExportArtifact(state, o);
    EXPECT_TRUE(a.ok()) << a.status().message();
    return a.ok() ? *a : std::string();
  }();
  return bytes;
}

std::string Flip(std::string s, size_t at) {
  s[at] = static_cast<char>(s[at] ^ 0x5a);
  return s;
}

// A hand-made zstd frame: content size field `claimed` (4 bytes), then one
// last RLE block of `n` 'a' bytes — 14 bytes whatever it claims.
std::string ZstdRleFrame(uint32_t claimed, uint32_t n) {
  std::string f("\x28\xb5\x2f\xfd", 4);  // magic 0xFD2FB528
  f += '\x80';                              // 4-byte content size, no single segment, no checksum
  f += '\x00';                              // window 1 KiB
  for (int i = 0; i < 4; ++i) f += static_cast<char>((claimed >> (8 * i)) & 0xff);
  const uint32_t block = 1u | (1u << 1) | (n << 3);  // last, RLE, size n
  for (int i = 0; i < 3; ++i) f += static_cast<char>((block >> (8 * i)) & 0xff);
  f += 'a';
  return f;
}

struct Row {
  const char* name;
  std::string bytes;
  std::string want;
};

std::vector<Row> Rows() {
  const std::string& good = GoodArtifact();
  std::string three_gb_tensor = Count(1) + Tensor("w", 0, 1, 1, 0, 0, {uint64_t{1} << 30, 3});
  return {
      {"Empty", "", "artifact too short: 0 bytes"},
      {"HeaderOnlyPrefix", good.substr(0, 20), "artifact too short: 20 bytes"},
      {"BadMagic", "CADDIEXX" + good.substr(8), "not a caddie artifact: bad magic"},
      {"TorchArchiveNotArtifact", std::string("PK\x03\x04", 4) + std::string(100, '\0'), "bad magic"},
      {"FutureVersion", Header(9, 1, 10, 0) + "x", "unsupported artifact format version 9"},
      {"UnknownCodec", Header(1, 7, 10, 0) + "x", "unknown artifact codec 7"},
      {"ReservedBytesSet", Header(1, 1, 10, 0, 5) + "x", "artifact header reserved bytes are not zero"},
      {"PayloadClaimOverLimit", Header(1, 1, uint64_t{1} << 40, 0) + "x", "exceeds the limit"},
      {"TruncatedBody", good.substr(0, good.size() / 2), "artifact zstd data"},
      {"FlippedPayloadByte", Flip(good, good.size() - 10), "artifact"},
      {"FlippedCrc", Flip(good, 24), "artifact payload CRC mismatch"},
      {"TrailingGarbage", good + "garbage", "artifact has"},
      {"ZlibNotZlib", Header(1, 2, 100, 0) + std::string(50, 'q'), "artifact zlib data truncated or corrupted"},
      // Payloads with a correct CRC that lie about their contents.
      {"PayloadTruncatedCount", WrapZlib("ab"), "artifact payload truncated reading the tensor count"},
      {"CountWithoutTensors", WrapZlib(Count(1000000)), "truncated reading tensor #0 name length"},
      {"EmptyName", WrapZlib(Count(1) + Tensor("", 0, 1, 1, 0, 0, {4})), "tensor #0 has an empty name"},
      {"NameLongerThanPayload", WrapZlib(Count(1) + std::string("\xff\xff", 2) + "abc"), "tensor #0 name"},
      {"UnknownKind", WrapZlib(Count(1) + Tensor("w", 9, 1, 1, 0, 0, {4})), "tensor w has unknown kind 9"},
      {"UnknownDtype", WrapZlib(Count(1) + Tensor("w", 0, 99, 1, 0, 0, {4})), "tensor w has unknown dtype code 99"},
      {"UnknownStorage", WrapZlib(Count(1) + Tensor("w", 0, 1, 77, 0, 0, {4})),
       "tensor w has unknown storage dtype code 77"},
      {"TooManyDims", WrapZlib(Count(1) + Tensor("w", 0, 1, 1, 0, 0, std::vector<uint64_t>(9, 1))),
       "tensor w has 9 dimensions (at most 8)"},
      {"DimOutOfRange", WrapZlib(Count(1) + Tensor("w", 0, 1, 1, 0, 0, {uint64_t{1} << 62})),
       "tensor w has dimension 4611686018427387904 out of range"},
      {"ElementsBeyondPayload", WrapZlib(three_gb_tensor), "tensor w"},
      {"EmptyTensorWithOverflowingStrides",  // fuzz_artifact: torch threw (abort) building it
       WrapZlib(Count(1) + Tensor("w", 0, 1, 1, 0, 0, {0, uint64_t{1} << 40, uint64_t{1} << 40})),
       "tensor w has a shape larger than the payload can hold"},
      {"KeptWithBits", WrapZlib(Count(1) + Tensor("w", 0, 1, 1, 4, 4, {4})), "tensor w is kept but has bits 4"},
      {"QuantisedBadBits", WrapZlib(Count(1) + Tensor("w", 1, 1, 8, 1, 1, {2, 2})), "tensor w has invalid bits 1"},
      {"DuplicateName",
       WrapZlib(Count(2) + Tensor("w", 0, 9, 9, 0, 0, {1}) + "x" + Tensor("w", 0, 9, 9, 0, 0, {1}) + "y"),
       "duplicate tensor name w in artifact"},
      {"ExtraPayloadBytes", WrapZlib(Count(0) + "leftover"), "artifact payload has 8"},
      // Headers that claim far more than their bytes hold (issue 13: 1 GiB was
      // allocated before decompressing).
      {"ZlibClaims1GiBFrom12Bytes", Header(1, 2, uint64_t{1} << 30, 0) + std::string(12, 'x'),
       "artifact header declares a payload of 1073741824 bytes, but its 12 zlib bytes expand to at most 12448"},
      {"ZstdFrameClaims1GiBHolds10Bytes", Header(1, 1, uint64_t{1} << 30, 0) + ZstdRleFrame(uint32_t{1} << 30, 10),
       "artifact zstd data corrupted: Data corruption detected"},
      {"ZstdFrameHoldsMoreThanDeclared", Header(1, 1, 4, 0) + ZstdRleFrame(4, 10),
       "artifact zstd data corrupted: Destination buffer is too small"},
  };
}

class ArtifactBadInput : public ::testing::TestWithParam<Row> {};

TEST_P(ArtifactBadInput, RejectedByImportAndDescribe) {
  const Row& r = GetParam();
  auto imported = ImportArtifact(r.bytes);
  ASSERT_FALSE(imported.ok()) << r.name << " was accepted";
  EXPECT_THAT(imported.status().message(), HasSubstr(r.want));
  auto described = DescribeArtifact(r.bytes);
  ASSERT_FALSE(described.ok()) << r.name << " was described";
  EXPECT_THAT(described.status().message(), HasSubstr(r.want));
}

INSTANTIATE_TEST_SUITE_P(Table, ArtifactBadInput, ::testing::ValuesIn(Rows()),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(ArtifactBadInputControl, TheUncorruptedArtifactImports) {
  auto t = ImportArtifact(GoodArtifact());
  ASSERT_TRUE(t.ok()) << t.status().message();
  ASSERT_EQ(t->size(), 2u);
  EXPECT_EQ((*t)[0].first, "blocks.0.w");
}

// Exits 0 when ImportArtifact rejects `forged` as corrupted while the address
// space is limited to 256 MiB above the current use; 2 on std::bad_alloc.
[[noreturn]] void ImportUnderAddressLimit(const std::string& forged) {
  std::ifstream status("/proc/self/status");
  long vm_kb = 0;
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmSize:", 0) == 0) vm_kb = std::stol(line.substr(7));
  }
  const rlim_t limit = static_cast<rlim_t>(vm_kb) * 1024 + (rlim_t{256} << 20);
  const rlimit rl{limit, limit};
  if (vm_kb == 0 || setrlimit(RLIMIT_AS, &rl) != 0) std::_Exit(3);
  try {
    auto r = ImportArtifact(forged);
    std::_Exit(!r.ok() && r.status().message().find("artifact zstd data corrupted") != std::string::npos ? 0 : 1);
  } catch (const std::bad_alloc&) {
    std::_Exit(2);
  }
}

// A 40-byte file claiming a 1 GiB payload is rejected without the allocation:
// under an address-space limit 256 MiB above the current use, it still fails
// with the size message, not std::bad_alloc.
TEST(ArtifactBadInputControl, ForgedPayloadSizeIsRejectedWithoutAllocatingIt) {
  const std::string forged = Header(1, 1, uint64_t{1} << 30, 0) + ZstdRleFrame(uint32_t{1} << 30, 10);
  ASSERT_LE(forged.size(), 42u);
  EXPECT_EXIT(ImportUnderAddressLimit(forged), ::testing::ExitedWithCode(0), "");
}

TEST(ArtifactBadInputControl, FileErrorsNameTheFileAndBothSizes) {
  const std::string path = ::testing::TempDir() + "/forged_" + std::to_string(getpid()) + ".caddie";
  std::ofstream(path, std::ios::binary) << Header(1, 2, uint64_t{1} << 30, 0) + std::string(12, 'x');
  auto r = ImportArtifactFile(path);
  std::remove(path.c_str());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), path + ": artifact header declares a payload of 1073741824 bytes, but its 12 "
                                         "zlib bytes expand to at most 12448 (header corrupted or forged)");
  EXPECT_THAT(ImportArtifactFile(path).status().message(), HasSubstr(path + ": cannot open"));
}

// Every single-byte truncation of a small artifact is an error, never a crash.
TEST(ArtifactBadInputControl, EveryPrefixIsRejected) {
  NamedTensors state = {{"a", torch::ones({4, 4})}};
  auto a = ExportArtifact(state, ExportOptions{});
  ASSERT_TRUE(a.ok());
  for (size_t n = 0; n < a->size(); ++n) {
    EXPECT_FALSE(ImportArtifact(a->substr(0, n)).ok()) << "prefix of " << n << " bytes accepted";
  }
}

}  // namespace
}  // namespace caddie::model
