#include "common/grpc_status.h"

#include <gtest/gtest.h>

#include "common/status_macros.h"

namespace caddie {
namespace {

TEST(GrpcStatusTest, CodesAndMessagesRoundTrip) {
  const absl::Status cases[] = {
      absl::InvalidArgumentError("bad key 'lr'"), absl::NotFoundError("job j-1"),
      absl::UnauthenticatedError("missing token"), absl::PermissionDeniedError("user token"),
      absl::FailedPreconditionError("stale fencing token"), absl::UnavailableError("down")};
  for (const absl::Status& s : cases) {
    grpc::Status g = ToGrpcStatus(s);
    EXPECT_EQ(static_cast<int>(g.error_code()), static_cast<int>(s.code()));
    EXPECT_EQ(g.error_message(), std::string(s.message()));
    EXPECT_EQ(FromGrpcStatus(g), s);
  }
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
}

TEST(GrpcStatusTest, LongValuesAreTruncatedAndMessagesCapped) {
  EXPECT_EQ(Truncated("short"), "short");
  EXPECT_EQ(Truncated(std::string(200, 'x'), 10), "xxxxxxxxxx…(200 bytes)");
  // "é" is two bytes: a cut inside it backs up to the character before.
  EXPECT_EQ(Truncated("abcdé" + std::string(20, 'z'), 5), "abcd…(26 bytes)");
  const grpc::Status g = ToGrpcStatus(absl::NotFoundError("no job '" + std::string(100 * 1024, 'j') + "'"));
  EXPECT_EQ(g.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_LE(g.error_message().size(), kMaxStatusMessageBytes + 32);
  EXPECT_NE(g.error_message().find("…(102409 bytes)"), std::string::npos) << g.error_message().substr(2040);
}

TEST(GrpcStatusTest, IdLengthsAreCheckedAgainstTheLimit) {
  EXPECT_TRUE(ValidateIdLength("job_id", std::string(kMaxIdBytes, 'j')).ok());
  const absl::Status s = ValidateIdLength("job_id", std::string(kMaxIdBytes + 1, 'j'));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "job_id is 1025 bytes long; the limit is 1024 bytes");
}

absl::StatusOr<int> Half(int x) {
  if (x % 2) return absl::InvalidArgumentError("odd");
  return x / 2;
}
absl::StatusOr<int> Quarter(int x) {
  ASSIGN_OR_RETURN(int h, Half(x));
  ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}
absl::Status CheckEven(int x) {
  RETURN_IF_ERROR(Half(x).status());
  return absl::OkStatus();
}

TEST(StatusMacrosTest, PropagateErrorsAndValues) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(Quarter(6).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(CheckEven(4).ok());
  EXPECT_EQ(CheckEven(3).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace caddie
