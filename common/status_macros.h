// Status helpers Abseil 20220623 (Debian 12) lacks: RETURN_IF_ERROR and
// ASSIGN_OR_RETURN. The one home of these macros in caddie.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define CADDIE_STATUS_CONCAT_INNER_(a, b) a##b
#define CADDIE_STATUS_CONCAT_(a, b) CADDIE_STATUS_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function if `expr` is not OK.
#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    ::absl::Status caddie_status_ = (expr);        \
    if (!caddie_status_.ok()) return caddie_status_; \
  } while (0)

// ASSIGN_OR_RETURN(auto x, StatusOrExpr()); returns the error if not OK.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  CADDIE_ASSIGN_OR_RETURN_IMPL_(CADDIE_STATUS_CONCAT_(caddie_statusor_, __LINE__), lhs, rexpr)
#define CADDIE_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                  \
  if (!statusor.ok()) return std::move(statusor).status();  \
  lhs = std::move(statusor).value()
