#include "common/grpc_status.h"

#include "common/str_cat.h"

namespace caddie {

std::string Truncated(std::string_view value, size_t max) {
  if (value.size() <= max) return std::string(value);
  size_t cut = max;
  // Back up over UTF-8 continuation bytes so the cut falls between characters.
  while (cut > 0 && (static_cast<unsigned char>(value[cut]) & 0xC0) == 0x80) --cut;
  return Cat(value.substr(0, cut), "…(", value.size(), " bytes)");
}

absl::Status ValidateIdLength(std::string_view field, std::string_view value, size_t max) {
  if (value.size() <= max) return absl::OkStatus();
  return absl::InvalidArgumentError(
      Cat(field, " is ", value.size(), " bytes long; the limit is ", max, " bytes"));
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl::StatusCode and grpc::StatusCode share their numeric values.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      Truncated(std::string_view(status.message().data(), status.message().size()),
                                kMaxStatusMessageBytes));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

}  // namespace caddie
