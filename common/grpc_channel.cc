#include "common/grpc_channel.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace caddie {

absl::StatusOr<std::string> ReadTlsCa(const std::string& path, const std::string& source) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read the TLS CA file \"", path, "\" (from ", source, "): ", std::strerror(errno)));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  std::string pem = ss.str();
  if (!absl::StrContains(pem, "-----BEGIN CERTIFICATE-----")) {
    return absl::InvalidArgumentError(absl::StrCat("the TLS CA file \"", path, "\" (from ", source,
                                                   ") holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
  }
  return pem;
}

std::shared_ptr<grpc::ChannelCredentials> ClientChannelCredentials(const std::string& ca_pem) {
  if (ca_pem.empty()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = ca_pem;
  return grpc::SslCredentials(o);
}

std::string TransportAdvice(const std::string& addr, bool tls, const std::string& ca_source,
                            const std::string& ca_options) {
  return tls ? absl::StrCat("connecting to ", addr, " over TLS with the CA from ", ca_source,
                            ": check that the controller serves TLS with a certificate signed by that CA "
                            "and naming this host")
             : absl::StrCat("connecting to ", addr, " in plaintext (no TLS CA given): if the controller "
                            "serves TLS, give its CA with ", ca_options);
}

}  // namespace caddie
