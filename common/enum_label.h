// EnumLabel: the lower-case label of a protobuf enum value name without its
// prefix (EXIT_REASON_TIME_BUDGET → "time_budget", JOB_STATE_SUCCEEDED →
// "succeeded"), as metrics labels, logs and the CLI show them. Pure; thread-safe.
#pragma once

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace caddie {

// `name` is the enum's generated Name() (e.g. v1::ExitReason_Name(r)); a name
// without `prefix` is only lower-cased.
inline std::string EnumLabel(absl::string_view name, absl::string_view prefix) {
  if (absl::StartsWith(name, prefix)) name.remove_prefix(prefix.size());
  return absl::AsciiStrToLower(name);
}

}  // namespace caddie
