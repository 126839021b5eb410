#include "cli/data/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <utility>

namespace caddie::data {

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit, bool enabled)
    : label_(std::move(label)),
      total_(total),
      unit_(std::move(unit)),
      enabled_(enabled),
      tty_(::isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

ProgressBar::~ProgressBar() { Finish(); }

void ProgressBar::Add(int64_t n) {
  done_ += n;
  if (!enabled_ || !tty_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  Draw(false);
}

void ProgressBar::Finish() {
  if (finished_) return;
  finished_ = true;
  if (enabled_) Draw(true);
}

void ProgressBar::Draw(bool final_line) {
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  char line[256];
  if (total_ > 0) {
    const double frac = std::min(1.0, static_cast<double>(done_) / static_cast<double>(total_));
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(frac * kWidth);
    std::string bar(filled, '#');
    bar.append(kWidth - filled, '.');
    std::snprintf(line, sizeof(line), "%-24s [%s] %5.1f%% %lld/%lld %s %6.1fs", label_.c_str(),
                  bar.c_str(), frac * 100.0, static_cast<long long>(done_),
                  static_cast<long long>(total_), unit_.c_str(), secs);
  } else {
    std::snprintf(line, sizeof(line), "%-24s %lld %s %6.1fs", label_.c_str(),
                  static_cast<long long>(done_), unit_.c_str(), secs);
  }
  std::fprintf(stderr, "%s%s%s", tty_ ? "\r\033[K" : "", line, final_line ? "\n" : "");
  std::fflush(stderr);
}

ElapsedTicker::ElapsedTicker(std::string label, bool enabled)
    : label_(std::move(label)),
      enabled_(enabled),
      tty_(::isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()) {
  if (!enabled_ || !tty_) return;
  thread_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(mu_);
    while (!cv_.wait_for(lock, std::chrono::milliseconds(500), [this] { return stop_; })) {
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      std::fprintf(stderr, "\r\033[K%s %6.1fs", label_.c_str(), secs);
      std::fflush(stderr);
    }
  });
}

ElapsedTicker::~ElapsedTicker() {
  if (thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  if (!enabled_) return;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::fprintf(stderr, "%s%s %6.1fs\n", tty_ ? "\r\033[K" : "", label_.c_str(), secs);
}

}  // namespace caddie::data
