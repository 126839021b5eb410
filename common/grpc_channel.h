// Client-side transport security for caddie's clients (caddie-worker, the CLI):
// TLS trusting the CA certificate(s) in a PEM file, or plaintext when no CA is
// given. One place for reading the CA and for the advice printed when a
// connection fails, so worker and CLI say the same thing.
//
// Thread-safe: pure functions (ReadTlsCa reads a file).
#pragma once

#include <memory>
#include <string>

#include <grpcpp/security/credentials.h>

#include "absl/status/statusor.h"

namespace caddie {

// The PEM text of the CA file at `path`. InvalidArgument naming the path and
// `source` (e.g. "--tls-ca", "CADDIE_TLS_CA") when the file cannot be read or
// holds no PEM certificate.
absl::StatusOr<std::string> ReadTlsCa(const std::string& path, const std::string& source);

// TLS credentials trusting `ca_pem` (the server's certificate must be signed by
// it and name the address's host); plaintext credentials when `ca_pem` is "".
std::shared_ptr<grpc::ChannelCredentials> ClientChannelCredentials(const std::string& ca_pem);

// What to check when the controller at `addr` cannot be reached, naming the
// address and TLS: with TLS (`tls`, CA from `ca_source`), that the controller
// serves TLS with a certificate signed by that CA; in plaintext, that a
// TLS-only controller needs its CA, given by `ca_options` (e.g. "--tls-ca").
std::string TransportAdvice(const std::string& addr, bool tls, const std::string& ca_source,
                            const std::string& ca_options);

}  // namespace caddie
