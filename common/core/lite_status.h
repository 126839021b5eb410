// LiteStatus / LiteStatusOr<T>: the small error type of code that must build on
// the GPU machine, where Abseil is not installed (common/core/, model/).
// Everywhere else caddie uses absl::Status; convert at the boundary with the
// message unchanged. Thread-safe: value types.
#pragma once

#include <optional>
#include <string>
#include <utility>

namespace caddie {

class LiteStatus {
 public:
  LiteStatus() = default;
  static LiteStatus Ok() { return LiteStatus(); }
  static LiteStatus Error(std::string message) { return LiteStatus(std::move(message)); }

  bool ok() const { return !error_.has_value(); }
  const std::string& message() const {
    static const std::string kEmpty;
    return error_ ? *error_ : kEmpty;
  }

 private:
  explicit LiteStatus(std::string message) : error_(std::move(message)) {}
  std::optional<std::string> error_;
};

template <typename T>
class LiteStatusOr {
 public:
  LiteStatusOr(T value) : value_(std::move(value)) {}  // NOLINT: implicit like StatusOr
  LiteStatusOr(LiteStatus status) : status_(std::move(status)) {}  // NOLINT
  bool ok() const { return status_.ok(); }
  const LiteStatus& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }

 private:
  LiteStatus status_;
  std::optional<T> value_;
};

}  // namespace caddie
