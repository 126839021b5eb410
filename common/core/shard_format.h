// The Parameter Golf token shard format and the per-token byte tables that
// val_bpb needs. The one home of both formats.
//
// Shard: 256 little-endian int32 header ([0] = 20240520 magic, [1] = 1 version,
// [2] = token count), then `count` little-endian uint16 tokens. The public
// fineweb10B_sp* shards use this format and are read unchanged.
//
// A data directory holds `*train_*.bin` and `*val_*.bin` shards (sorted by name),
// `byte_table.json` and, when caddie built it, `tokenizer.model` and `meta.json`.
//
// Thread-safe: free functions over files; no shared state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/core/lite_status.h"

namespace caddie {

inline constexpr int32_t kShardMagic = 20240520;
inline constexpr int32_t kShardVersion = 1;
inline constexpr int kShardHeaderInts = 256;
inline constexpr int64_t kShardHeaderBytes = kShardHeaderInts * 4;

// Reads a whole shard. Errors name the file and the problem (wrong magic,
// version, truncated body, count not matching the file size).
LiteStatusOr<std::vector<uint16_t>> ReadShard(const std::string& path);

// Reads only the header and checks it against the file size; returns the token count.
LiteStatusOr<int64_t> ReadShardTokenCount(const std::string& path);

// Writes a shard atomically: to `path.tmp`, fsync, then rename over `path`.
LiteStatus WriteShard(const std::string& path, const std::vector<uint16_t>& tokens);

// Sorted shard paths in `dir` whose file name contains "<split>_" and ends in
// ".bin" (split = "train" or "val"). Error if the directory has none.
LiteStatusOr<std::vector<std::string>> ListShards(const std::string& dir,
                                                  const std::string& split);

// Per-token byte accounting, as the reference's val_bpb computes it:
// bytes(target) = base_bytes[target] + (has_leading_space[target] && !is_boundary[prev]).
struct ByteTable {
  std::vector<int16_t> base_bytes;          // UTF-8 bytes of the piece without a leading "▁"
  std::vector<uint8_t> has_leading_space;   // piece starts with "▁"
  std::vector<uint8_t> is_boundary;         // control / unknown / unused token

  int vocab_size() const { return static_cast<int>(base_bytes.size()); }
  // Bytes that `target` stands for when it follows `prev`.
  int64_t TokenBytes(int prev, int target) const {
    return base_bytes[target] + ((has_leading_space[target] && !is_boundary[prev]) ? 1 : 0);
  }
};

// byte_table.json: {"vocab_size": V, "base_bytes": [...], "has_leading_space": [...],
// "is_boundary": [...]}. Written atomically.
LiteStatus WriteByteTable(const std::string& path, const ByteTable& table);
LiteStatusOr<ByteTable> ReadByteTable(const std::string& path);

}  // namespace caddie
