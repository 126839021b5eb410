// The one conversion between absl::Status and grpc::Status (codes map one to
// one), and the limits on what a status may echo back to a caller.
//
// Why the limits: gRPC carries the status message in a trailer, and a client
// refuses trailers over its metadata limit (8 KiB by default) with
// RESOURCE_EXHAUSTED, hiding the real answer. So ids are length-checked before
// use (ValidateIdLength) and any user-supplied value quoted in a message goes
// through Truncated(); ToGrpcStatus caps the whole message as a last resort.
//
// Thread-safe: pure functions.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace caddie {

// Longest id (job, sweep, worker) the API accepts.
inline constexpr size_t kMaxIdBytes = 1024;
// Longest value quoted in an error message, and longest message sent.
inline constexpr size_t kMaxEchoBytes = 128;
inline constexpr size_t kMaxStatusMessageBytes = 2048;
// Longest bearer token a server accepts (it answers UNAUTHENTICATED naming the
// limit; servers raise gRPC's metadata limit so such a token reaches them).
inline constexpr size_t kMaxTokenBytes = 4096;

// `value` as is when it fits in `max` bytes, else its first bytes (never
// splitting a UTF-8 sequence) + "…(N bytes)".
std::string Truncated(std::string_view value, size_t max = kMaxEchoBytes);

// InvalidArgument naming `field` and the limit when `value` is longer than
// `max` bytes; OK otherwise.
absl::Status ValidateIdLength(std::string_view field, std::string_view value, size_t max = kMaxIdBytes);

// Message capped at kMaxStatusMessageBytes.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace caddie
