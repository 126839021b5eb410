#include "common/core/shard_format.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace caddie {
namespace {

namespace fs = std::filesystem;

// Writes `data` to `path` via a temp file and rename, so a reader never sees half a file.
LiteStatus WriteFileAtomically(const std::string& path, const void* data, size_t size) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return LiteStatus::Error(tmp + ": cannot create: " + std::strerror(errno));
  const char* p = static_cast<const char*>(data);
  size_t left = size;
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::string err = std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      return LiteStatus::Error(tmp + ": write failed: " + err);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    std::string err = std::strerror(errno);
    ::unlink(tmp.c_str());
    return LiteStatus::Error(tmp + ": sync failed: " + err);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string err = std::strerror(errno);
    ::unlink(tmp.c_str());
    return LiteStatus::Error(path + ": rename failed: " + err);
  }
  return LiteStatus::Ok();
}

struct Header {
  int64_t count = 0;
};

LiteStatusOr<Header> ReadHeader(std::ifstream& in, const std::string& path) {
  int32_t header[kShardHeaderInts];
  in.read(reinterpret_cast<char*>(header), kShardHeaderBytes);
  if (in.gcount() != kShardHeaderBytes) {
    return LiteStatus::Error(path + ": truncated header (" + std::to_string(in.gcount()) +
                             " of " + std::to_string(kShardHeaderBytes) + " bytes)");
  }
  if (header[0] != kShardMagic) {
    return LiteStatus::Error(path + ": wrong magic " + std::to_string(header[0]) +
                             " (expected " + std::to_string(kShardMagic) + ")");
  }
  if (header[1] != kShardVersion) {
    return LiteStatus::Error(path + ": unsupported version " + std::to_string(header[1]) +
                             " (expected " + std::to_string(kShardVersion) + ")");
  }
  if (header[2] < 0) {
    return LiteStatus::Error(path + ": negative token count " + std::to_string(header[2]));
  }
  return Header{header[2]};
}

LiteStatusOr<int64_t> CheckedCount(const std::string& path, std::ifstream& in) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) return LiteStatus::Error(path + ": cannot stat: " + ec.message());
  auto header = ReadHeader(in, path);
  if (!header.ok()) return header.status();
  const int64_t expected = kShardHeaderBytes + header->count * 2;
  if (static_cast<int64_t>(size) < expected) {
    return LiteStatus::Error(path + ": truncated body: header says " +
                             std::to_string(header->count) + " tokens (" +
                             std::to_string(expected) + " bytes) but the file has " +
                             std::to_string(size) + " bytes");
  }
  if (static_cast<int64_t>(size) > expected) {
    return LiteStatus::Error(path + ": token count " + std::to_string(header->count) +
                             " does not match the file size " + std::to_string(size) +
                             " (expected " + std::to_string(expected) + " bytes)");
  }
  return header->count;
}

}  // namespace

LiteStatusOr<int64_t> ReadShardTokenCount(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return LiteStatus::Error(path + ": cannot open shard");
  return CheckedCount(path, in);
}

LiteStatusOr<std::vector<uint16_t>> ReadShard(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return LiteStatus::Error(path + ": cannot open shard");
  auto count = CheckedCount(path, in);
  if (!count.ok()) return count.status();
  std::vector<uint16_t> tokens(static_cast<size_t>(*count));
  in.read(reinterpret_cast<char*>(tokens.data()), *count * 2);
  if (in.gcount() != *count * 2) return LiteStatus::Error(path + ": short read of body");
  return tokens;  // little-endian on every platform caddie targets (x86-64, aarch64)
}

LiteStatus WriteShard(const std::string& path, const std::vector<uint16_t>& tokens) {
  if (tokens.size() > static_cast<size_t>(INT32_MAX)) {
    return LiteStatus::Error(path + ": too many tokens for one shard");
  }
  std::vector<char> buf(kShardHeaderBytes + tokens.size() * 2);
  int32_t header[kShardHeaderInts] = {};
  header[0] = kShardMagic;
  header[1] = kShardVersion;
  header[2] = static_cast<int32_t>(tokens.size());
  std::memcpy(buf.data(), header, kShardHeaderBytes);
  if (!tokens.empty()) std::memcpy(buf.data() + kShardHeaderBytes, tokens.data(), tokens.size() * 2);
  return WriteFileAtomically(path, buf.data(), buf.size());
}

LiteStatusOr<std::vector<std::string>> ListShards(const std::string& dir,
                                                  const std::string& split) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return LiteStatus::Error(dir + ": not a data directory");
  std::vector<std::string> out;
  const std::string needle = split + "_";
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && name.size() > 4 &&
        name.compare(name.size() - 4, 4, ".bin") == 0 && name.find(needle) != std::string::npos) {
      out.push_back(entry.path().string());
    }
  }
  if (ec) return LiteStatus::Error(dir + ": cannot list: " + ec.message());
  if (out.empty()) return LiteStatus::Error(dir + ": no " + split + " shards (*" + needle + "*.bin)");
  std::sort(out.begin(), out.end());
  return out;
}

LiteStatus WriteByteTable(const std::string& path, const ByteTable& table) {
  const size_t v = table.base_bytes.size();
  if (table.has_leading_space.size() != v || table.is_boundary.size() != v) {
    return LiteStatus::Error(path + ": byte table arrays differ in length");
  }
  nlohmann::json j;
  j["vocab_size"] = v;
  j["base_bytes"] = table.base_bytes;
  j["has_leading_space"] = table.has_leading_space;
  j["is_boundary"] = table.is_boundary;
  const std::string text = j.dump();
  return WriteFileAtomically(path, text.data(), text.size());
}

LiteStatusOr<ByteTable> ReadByteTable(const std::string& path) {
  std::ifstream in(path);
  if (!in) return LiteStatus::Error(path + ": cannot open byte table");
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return LiteStatus::Error(path + ": not valid JSON");
  ByteTable t;
  try {
    const int v = j.at("vocab_size").get<int>();
    t.base_bytes = j.at("base_bytes").get<std::vector<int16_t>>();
    t.has_leading_space = j.at("has_leading_space").get<std::vector<uint8_t>>();
    t.is_boundary = j.at("is_boundary").get<std::vector<uint8_t>>();
    if (v <= 0 || t.vocab_size() != v || t.has_leading_space.size() != t.base_bytes.size() ||
        t.is_boundary.size() != t.base_bytes.size()) {
      return LiteStatus::Error(path + ": vocab_size " + std::to_string(v) +
                               " does not match the table lengths");
    }
  } catch (const nlohmann::json::exception& e) {
    return LiteStatus::Error(path + ": malformed byte table: " + e.what());
  }
  return t;
}

}  // namespace caddie
