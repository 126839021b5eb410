#include "worker/log_tailer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "spdlog/spdlog.h"

namespace caddie::worker {

LogTailer::LogTailer(LogTailerOptions options, int32_t attempt) : options_(options), attempt_(attempt) {}

LogTailer::~LogTailer() {
  for (File& f : files_) {
    if (f.fd >= 0) close(f.fd);
  }
}

void LogTailer::Add(int32_t rank, std::string stream, std::string path) {
  File f;
  f.rank = rank;
  f.stream = std::move(stream);
  f.path = std::move(path);
  files_.push_back(std::move(f));
}

std::vector<caddie::v1::LogChunk> LogTailer::Poll(bool final) {
  std::vector<caddie::v1::LogChunk> out;
  const size_t chunk = std::max<size_t>(1, options_.chunk_bytes);
  const int64_t limit = static_cast<int64_t>(final ? options_.final_bytes : options_.poll_bytes);
  for (File& f : files_) {
    if (f.fd < 0) {
      f.fd = open(f.path.c_str(), O_RDONLY | O_CLOEXEC);
      if (f.fd < 0) continue;  // not created yet
    }
    struct stat st {};
    if (fstat(f.fd, &st) != 0) continue;
    const int64_t size = static_cast<int64_t>(st.st_size);
    if (size <= f.offset) continue;  // nothing new (the files are only appended to)
    if (size - f.offset > limit) {
      const int64_t skip = size - limit - f.offset;
      skipped_ += skip;
      if (!f.warned) {
        spdlog::warn("{}: {} bytes written faster than the log rate ({} bytes per poll): not sent to the "
                     "controller (further skips of this file are not logged)",
                     f.path, skip, limit);
        f.warned = true;
      }
      f.offset += skip;
    }
    std::string data(static_cast<size_t>(size - f.offset), '\0');
    size_t got = 0;
    while (got < data.size()) {
      const ssize_t n = pread(f.fd, data.data() + got, data.size() - got, static_cast<off_t>(f.offset) + got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    data.resize(got);
    for (size_t at = 0; at < data.size(); at += chunk) {
      caddie::v1::LogChunk c;
      c.set_attempt(attempt_);
      c.set_rank(f.rank);
      c.set_stream(f.stream);
      c.set_offset(f.offset + static_cast<int64_t>(at));
      c.set_data(data.substr(at, chunk));
      out.push_back(std::move(c));
    }
    f.offset += static_cast<int64_t>(got);
  }
  return out;
}

std::vector<std::vector<caddie::v1::LogChunk>> GroupByBytes(std::vector<caddie::v1::LogChunk> chunks,
                                                             size_t max_bytes) {
  std::vector<std::vector<caddie::v1::LogChunk>> groups;
  size_t bytes = 0;
  for (auto& c : chunks) {
    if (groups.empty() || (!groups.back().empty() && bytes + c.data().size() > max_bytes)) {
      groups.emplace_back();
      bytes = 0;
    }
    bytes += c.data().size();
    groups.back().push_back(std::move(c));
  }
  return groups;
}

}  // namespace caddie::worker
