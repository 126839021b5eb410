// A progress bar on stderr for the long steps of `caddie data`. On a terminal it
// redraws one line at most ten times a second; otherwise it prints only the final
// line, so logs stay short. Not thread-safe: one owner updates it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace caddie::data {

class ProgressBar {
 public:
  // `total` is in `unit`s (e.g. "B", "docs"); 0 means unknown (a counter is shown).
  ProgressBar(std::string label, int64_t total, std::string unit, bool enabled = true);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  void Add(int64_t n);
  // Prints the final line (with the elapsed time); later calls do nothing.
  void Finish();

 private:
  void Draw(bool final_line);

  std::string label_;
  int64_t total_;
  std::string unit_;
  bool enabled_;
  bool tty_;
  bool finished_ = false;
  int64_t done_ = 0;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

// For steps whose progress cannot be measured (SentencePiece training): shows the
// label and the elapsed time on stderr, redrawn twice a second by its own thread
// on a terminal, and a final line when destroyed. Thread-safe: the ticker thread
// only reads what the constructor set; the destructor stops and joins it.
class ElapsedTicker {
 public:
  ElapsedTicker(std::string label, bool enabled);
  ~ElapsedTicker();
  ElapsedTicker(const ElapsedTicker&) = delete;
  ElapsedTicker& operator=(const ElapsedTicker&) = delete;

 private:
  const std::string label_;
  const bool enabled_;
  const bool tty_;
  const std::chrono::steady_clock::time_point start_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace caddie::data
