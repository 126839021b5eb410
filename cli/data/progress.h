// A progress bar on stderr for the long steps of `caddie data`. On a terminal it
// redraws one line at most ten times a second; otherwise it prints only the final
// line, so logs stay short. Not thread-safe: one owner updates it.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

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

}  // namespace caddie::data
