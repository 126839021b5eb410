#include "cli/exit_codes.h"

namespace caddie::cli {

std::string ExitCodesHelp() {
  return "Exit codes:\n"
         "  0    success\n"
         "  1    unexpected error\n"
         "  2    bad input: flags, sweep file, out-of-range value\n"
         "  3    controller unreachable or timed out\n"
         "  4    no such job, sweep or worker\n"
         "  5    token missing or rejected\n"
         "  6    the watched job (or caddie up's sweep) did not succeed\n"
         "  7    conflicts with the current state (e.g. cancelling a finished job)\n"
         "  130  interrupted (Ctrl-C)\n";
}

int ExitCodeFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return kExitOk;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return kExitBadInput;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return kExitUnreachable;
    case absl::StatusCode::kNotFound:
      return kExitNotFound;
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      return kExitAuth;
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return kExitConflict;
    case absl::StatusCode::kCancelled:
      return kExitInterrupted;
    default:
      return kExitFailure;
  }
}

}  // namespace caddie::cli
