// libFuzzer target: the token shard reader and the byte-table reader
// (common/core/shard_format.h). Any file must give tokens or an error naming
// the file; a file that reads must hold exactly the count its header states.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>

#include "common/core/shard_format.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    const char* shm = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    return std::string(shm) + "/caddie_shard_fuzz_" + std::to_string(getpid());
  }();
  const std::string shard = dir + "_train_000000.bin", table = dir + "_byte_table.json";
  std::ofstream(shard, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data), size);
  auto tokens = caddie::ReadShard(shard);
  auto count = caddie::ReadShardTokenCount(shard);
  if (tokens.ok() != count.ok()) __builtin_trap();
  if (tokens.ok()) {
    int32_t header_count = 0;
    std::memcpy(&header_count, data + 8, 4);
    if (static_cast<int64_t>(tokens->size()) != header_count || *count != header_count) __builtin_trap();
  } else if (tokens.status().message().find(shard) == std::string::npos) {
    __builtin_trap();  // errors name the file
  }
  std::ofstream(table, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data), size);
  auto t = caddie::ReadByteTable(table);
  if (t.ok()) {
    const size_t v = t->base_bytes.size();
    if (t->has_leading_space.size() != v || t->is_boundary.size() != v) __builtin_trap();
  }
  unlink(shard.c_str());
  unlink(table.c_str());
  return 0;
}
