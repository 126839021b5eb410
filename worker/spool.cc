#include "worker/spool.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "spdlog/spdlog.h"

namespace caddie::worker {
namespace {

namespace fs = std::filesystem;
constexpr char kEventsExt[] = ".events";
constexpr char kCompleteExt[] = ".complete";

absl::Status FsyncPath(const std::string& path, int flags) {
  const int fd = open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat("spool: open ", path, ": ", std::strerror(errno)));
  const int r = fsync(fd);
  const int e = errno;
  close(fd);
  if (r != 0) return absl::InternalError(absl::StrCat("spool: fsync ", path, ": ", std::strerror(e)));
  return absl::OkStatus();
}

}  // namespace

const std::string& SpoolRecord::job_id() const {
  return std::visit([](const auto& m) -> const std::string& { return m.lease().job_id(); }, message);
}

absl::StatusOr<std::unique_ptr<Spool>> Spool::Open(std::string dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("spool: cannot create ", dir, ": ", ec.message()));
  std::unique_ptr<Spool> spool(new Spool(dir));
  std::vector<SpoolRecord> loaded;
  uint64_t max_id = 0;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const fs::path p = entry.path();
    const std::string ext = p.extension().string();
    if (ext == ".tmp") {  // a write that never completed: it was never sent either
      fs::remove(p, ec);
      continue;
    }
    if (ext != kEventsExt && ext != kCompleteExt) continue;
    const std::string stem = p.stem().string();
    uint64_t id = 0;
    bool numeric = !stem.empty() && std::all_of(stem.begin(), stem.end(), ::isdigit);
    if (numeric) id = std::stoull(stem);
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    SpoolRecord r;
    r.id = id;
    r.bytes = static_cast<size_t>(ss.tellp());
    bool parsed = false;
    if (ext == kEventsExt) {
      caddie::v1::ReportEventsRequest m;
      parsed = m.ParseFromString(ss.str());
      r.message = std::move(m);
    } else {
      caddie::v1::CompleteJobRequest m;
      parsed = m.ParseFromString(ss.str());
      r.message = std::move(m);
    }
    if (!numeric || !parsed || id == 0) {
      spdlog::error("spool: {} does not parse; moved aside", p.string());
      fs::rename(p, p.string() + ".bad", ec);
      continue;
    }
    max_id = std::max(max_id, id);
    loaded.push_back(std::move(r));
  }
  if (ec) return absl::InternalError(absl::StrCat("spool: cannot read ", dir, ": ", ec.message()));
  std::sort(loaded.begin(), loaded.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  absl::MutexLock l(&spool->mu_);
  spool->records_ = std::move(loaded);
  spool->next_id_ = max_id + 1;
  return spool;
}

std::string Spool::PathOf(const SpoolRecord& r) const {
  return absl::StrCat(dir_, "/", absl::StrFormat("%020d", r.id), r.is_completion() ? kCompleteExt : kEventsExt);
}

namespace {
std::string Serialize(const SpoolMessage& m) {
  std::string bytes;
  std::visit([&](const auto& v) { v.SerializeToString(&bytes); }, m);
  return bytes;
}
}  // namespace

absl::Status Spool::WriteLocked(const SpoolRecord& r, const std::string& bytes) {
  const std::string path = PathOf(r);
  const std::string tmp = path + ".tmp";
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat("spool: create ", tmp, ": ", std::strerror(errno)));
  size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t n = write(fd, bytes.data() + off, bytes.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int e = n == 0 ? ENOSPC : errno;
      close(fd);
      unlink(tmp.c_str());
      return absl::InternalError(absl::StrCat("spool: write ", tmp, ": ", std::strerror(e)));
    }
    off += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0) {
    const int e = errno;
    close(fd);
    unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("spool: fsync ", tmp, ": ", std::strerror(e)));
  }
  close(fd);
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("spool: rename ", tmp, ": ", std::strerror(e)));
  }
  return FsyncPath(dir_, O_RDONLY | O_DIRECTORY);
}

absl::Status Spool::FlushLocked() {
  for (auto& r : records_) {
    if (r.durable) continue;
    if (absl::Status s = WriteLocked(r, Serialize(r.message)); !s.ok()) return s;
    r.durable = true;
    --held_;
    held_bytes_ -= r.bytes;
  }
  return absl::OkStatus();
}

absl::Status Spool::Flush() {
  absl::MutexLock l(&mu_);
  return FlushLocked();
}

Spool::Appended Spool::Append(SpoolMessage message) {
  // Ids are handed out and files written under the lock so that the file order
  // on disk always matches the order in memory.
  absl::MutexLock l(&mu_);
  SpoolRecord r;
  r.id = next_id_++;
  r.message = std::move(message);
  const std::string bytes = Serialize(r.message);
  r.bytes = bytes.size();
  Appended out{r.id, absl::OkStatus()};
  // Older held records go first, or a restart could replay this one without them.
  out.write_error = FlushLocked();
  if (out.write_error.ok()) out.write_error = WriteLocked(r, bytes);
  if (!out.write_error.ok()) {
    r.durable = false;
    ++held_;
    held_bytes_ += r.bytes;
  }
  records_.push_back(std::move(r));
  return out;
}

size_t Spool::held() const {
  absl::MutexLock l(&mu_);
  return held_;
}

size_t Spool::held_bytes() const {
  absl::MutexLock l(&mu_);
  return held_bytes_;
}

void Spool::ForgetLocked(std::vector<SpoolRecord>::iterator it) {
  if (!it->durable) {
    --held_;
    held_bytes_ -= it->bytes;
  }
  records_.erase(it);
}

std::optional<SpoolRecord> Spool::Front() const {
  absl::MutexLock l(&mu_);
  if (records_.empty()) return std::nullopt;
  return records_.front();
}

std::vector<SpoolRecord> Spool::List() const {
  absl::MutexLock l(&mu_);
  return records_;
}

size_t Spool::size() const {
  absl::MutexLock l(&mu_);
  return records_.size();
}

absl::Status Spool::Remove(uint64_t id) {
  absl::MutexLock l(&mu_);
  auto it = std::find_if(records_.begin(), records_.end(), [&](const auto& r) { return r.id == id; });
  if (it == records_.end()) return absl::OkStatus();
  const std::string path = PathOf(*it);
  if (it->durable && unlink(path.c_str()) != 0 && errno != ENOENT) {
    return absl::InternalError(absl::StrCat("spool: remove ", path, ": ", std::strerror(errno)));
  }
  ForgetLocked(it);
  return absl::OkStatus();
}

int Spool::RemoveJob(const std::string& job_id) {
  absl::MutexLock l(&mu_);
  int n = 0;
  for (auto it = records_.begin(); it != records_.end();) {
    if (it->job_id() == job_id) {
      if (it->durable) unlink(PathOf(*it).c_str());
      const size_t at = static_cast<size_t>(it - records_.begin());
      ForgetLocked(it);
      it = records_.begin() + static_cast<std::ptrdiff_t>(at);
      ++n;
    } else {
      ++it;
    }
  }
  return n;
}

}  // namespace caddie::worker
