// Where the CLI finds its controller: address, bearer token and TLS CA, each
// resolved from (highest first) command-line flags, environment (CADDIE_ADDR,
// CADDIE_TOKEN, CADDIE_TLS_CA), a config file (--config FILE, else
// $XDG_CONFIG_HOME/caddie/config.yaml or ~/.config/caddie/config.yaml), the
// address file a running `caddie up` leaves in ./.caddie/controller.addr, and the
// default 127.0.0.1:7070 (the address only: no TLS CA anywhere means plaintext).
// Each value remembers its source so errors can say where the CLI looked.
// Thread-safe: free functions over value types.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace caddie::cli {

inline constexpr char kDefaultAddr[] = "127.0.0.1:7070";

// Inputs of the resolution (so tests need not touch the real environment).
struct ConfigInputs {
  std::string flag_addr;                     // --addr ("" = not given)
  std::string flag_token;                    // --token
  std::string flag_tls_ca;                   // --tls-ca
  std::string flag_config;                   // --config ("" = default path)
  std::map<std::string, std::string> env;    // CADDIE_ADDR, CADDIE_TOKEN, CADDIE_TLS_CA, HOME, XDG_CONFIG_HOME
  std::string cwd = ".";                     // where ./.caddie/controller.addr is looked for
};

struct Connection {
  std::string addr;
  std::string addr_source;   // "--addr", "CADDIE_ADDR", "config file <path>", "caddie up (<path>)", "default"
  std::string token;         // "" = none
  std::string token_source;
  std::string tls_ca;        // path of the CA file ("" = plaintext)
  std::string tls_ca_source; // "--tls-ca", "CADDIE_TLS_CA", "config file <path>"
  std::string tls_ca_pem;    // its contents
  std::string config_path;   // the config file consulted ("" = none found)
};

// Resolves the connection. InvalidArgument when --config names a missing or
// unreadable file, when a config file is not valid YAML (with line/column), has an
// unknown key (with the closest valid one), when an address is not HOST:PORT, or
// when the TLS CA file cannot be read or holds no PEM certificate (naming the
// file and where its name came from).
absl::StatusOr<Connection> ResolveConnection(const ConfigInputs& in);

// ConfigInputs from the process's environment.
ConfigInputs InputsFromEnvironment();

// Checks "HOST:PORT" (port 1..65535); InvalidArgument naming the value otherwise.
absl::Status CheckAddress(const std::string& addr);

}  // namespace caddie::cli
