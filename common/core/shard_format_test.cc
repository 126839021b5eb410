#include "common/core/shard_format.h"

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace caddie {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class ShardFormatTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("caddie_shard_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  // A shard as the spec defines it, byte by byte (little-endian), independent of WriteShard.
  static std::string SpecShard(int32_t magic, int32_t version, int32_t count,
                               const std::vector<uint16_t>& tokens) {
    std::string bytes(kShardHeaderBytes, '\0');
    auto put32 = [&](int idx, int32_t v) {
      const auto u = static_cast<uint32_t>(v);
      for (int b = 0; b < 4; ++b) bytes[idx * 4 + b] = static_cast<char>((u >> (8 * b)) & 0xFF);
    };
    put32(0, magic);
    put32(1, version);
    put32(2, count);
    for (uint16_t t : tokens) {
      bytes.push_back(static_cast<char>(t & 0xFF));
      bytes.push_back(static_cast<char>(t >> 8));
    }
    return bytes;
  }
  void WriteRaw(const std::string& name, const std::string& bytes) const {
    std::ofstream(Path(name), std::ios::binary) << bytes;
  }

  fs::path dir_;
};

TEST_F(ShardFormatTest, WrittenAndReadBackIdentical) {
  std::vector<uint16_t> tokens;
  for (int i = 0; i < 100000; ++i) tokens.push_back(static_cast<uint16_t>((i * 7919) % 65536));
  tokens.push_back(65535);
  ASSERT_TRUE(WriteShard(Path("train_000000.bin"), tokens).ok());
  auto back = ReadShard(Path("train_000000.bin"));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(*back, tokens);
  auto count = ReadShardTokenCount(Path("train_000000.bin"));
  ASSERT_TRUE(count.ok());
  EXPECT_EQ(*count, static_cast<int64_t>(tokens.size()));
  EXPECT_EQ(fs::file_size(Path("train_000000.bin")), kShardHeaderBytes + tokens.size() * 2);
  EXPECT_FALSE(fs::exists(Path("train_000000.bin.tmp"))) << "temp file renamed away";
  // Empty shards are legal.
  ASSERT_TRUE(WriteShard(Path("val_000000.bin"), {}).ok());
  auto empty = ReadShard(Path("val_000000.bin"));
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST_F(ShardFormatTest, WriterOutputMatchesTheSpecByteForByte) {
  const std::vector<uint16_t> tokens = {1, 300, 2, 65535, 0, 1023};
  ASSERT_TRUE(WriteShard(Path("w.bin"), tokens).ok());
  std::ifstream in(Path("w.bin"), std::ios::binary);
  const std::string ours((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(ours, SpecShard(20240520, 1, 6, tokens));
}

TEST_F(ShardFormatTest, HandBuiltReferenceShardReads) {
  const std::vector<uint16_t> tokens = {1, 412, 37, 1023, 1, 5, 0x1234};
  WriteRaw("fineweb_val_000000.bin", SpecShard(20240520, 1, 7, tokens));
  auto back = ReadShard(Path("fineweb_val_000000.bin"));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(*back, tokens);
  EXPECT_EQ((*back)[6], 0x1234) << "little-endian uint16";
}

TEST_F(ShardFormatTest, WrongMagic) {
  WriteRaw("m.bin", SpecShard(20240521, 1, 2, {1, 2}));
  auto r = ReadShard(Path("m.bin"));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr(Path("m.bin") + ": wrong magic 20240521 (expected 20240520)"));
}

TEST_F(ShardFormatTest, WrongVersion) {
  WriteRaw("v.bin", SpecShard(20240520, 2, 2, {1, 2}));
  auto r = ReadShardTokenCount(Path("v.bin"));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr(Path("v.bin") + ": unsupported version 2 (expected 1)"));
}

TEST_F(ShardFormatTest, TruncatedHeaderAndBody) {
  WriteRaw("h.bin", SpecShard(20240520, 1, 0, {}).substr(0, 100));
  auto h = ReadShard(Path("h.bin"));
  ASSERT_FALSE(h.ok());
  EXPECT_THAT(h.status().message(), HasSubstr(Path("h.bin") + ": truncated header (100 of 1024 bytes)"));

  WriteRaw("b.bin", SpecShard(20240520, 1, 10, {1, 2, 3}));
  auto b = ReadShard(Path("b.bin"));
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(b.status().message(),
              HasSubstr(Path("b.bin") + ": truncated body: header says 10 tokens (1044 bytes) but the file has 1030 bytes"));
}

TEST_F(ShardFormatTest, CountNotMatchingTheSize) {
  WriteRaw("c.bin", SpecShard(20240520, 1, 2, {1, 2, 3, 4}));
  auto c = ReadShard(Path("c.bin"));
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(),
              HasSubstr(Path("c.bin") + ": token count 2 does not match the file size 1032 (expected 1028 bytes)"));
  WriteRaw("n.bin", SpecShard(20240520, 1, -5, {}));
  auto n = ReadShardTokenCount(Path("n.bin"));
  ASSERT_FALSE(n.ok());
  EXPECT_THAT(n.status().message(), HasSubstr("negative token count -5"));
  auto missing = ReadShard(Path("absent.bin"));
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("absent.bin: cannot open shard"));
}

TEST_F(ShardFormatTest, ListShardsSortsAndFilters) {
  for (const char* n : {"fineweb_train_000001.bin", "fineweb_train_000000.bin", "fineweb_val_000000.bin",
                        "train_notes.txt"}) {
    WriteRaw(n, SpecShard(20240520, 1, 0, {}));
  }
  auto train = ListShards(dir_.string(), "train");
  ASSERT_TRUE(train.ok());
  ASSERT_EQ(train->size(), 2u);
  EXPECT_THAT((*train)[0], HasSubstr("fineweb_train_000000.bin"));
  EXPECT_THAT((*train)[1], HasSubstr("fineweb_train_000001.bin"));
  fs::remove(Path("fineweb_val_000000.bin"));
  auto val = ListShards(dir_.string(), "val");
  ASSERT_FALSE(val.ok());
  EXPECT_THAT(val.status().message(), HasSubstr("no val shards"));
}

TEST_F(ShardFormatTest, ByteTableRoundTripAndErrors) {
  ByteTable t;
  t.base_bytes = {0, 0, 0, 0, 1, 3, 2};
  t.has_leading_space = {0, 0, 0, 0, 0, 1, 0};
  t.is_boundary = {1, 1, 1, 1, 0, 0, 0};
  ASSERT_TRUE(WriteByteTable(Path("byte_table.json"), t).ok());
  auto back = ReadByteTable(Path("byte_table.json"));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->base_bytes, t.base_bytes);
  EXPECT_EQ(back->has_leading_space, t.has_leading_space);
  EXPECT_EQ(back->is_boundary, t.is_boundary);
  // "▁the" after a normal token counts its space; after BOS (a boundary) it does not.
  EXPECT_EQ(back->TokenBytes(4, 5), 4);
  EXPECT_EQ(back->TokenBytes(1, 5), 3);

  t.is_boundary.pop_back();
  auto bad = WriteByteTable(Path("bad.json"), t);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.message(), HasSubstr("arrays differ in length"));
  WriteRaw("short.json", R"({"vocab_size": 5, "base_bytes": [1], "has_leading_space": [0], "is_boundary": [0]})");
  auto s = ReadByteTable(Path("short.json"));
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("vocab_size 5 does not match the table lengths"));
  WriteRaw("junk.json", "{not json");
  auto j = ReadByteTable(Path("junk.json"));
  ASSERT_FALSE(j.ok());
  EXPECT_THAT(j.status().message(), HasSubstr("junk.json: not valid JSON"));
}

}  // namespace
}  // namespace caddie
