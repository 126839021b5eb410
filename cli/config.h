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
  std::string tls_ca;        // path of the CA file ("" = plaintext); from the config file as resolved by ResolveConfigFilePath
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

// A path-valued config-file key (tls_ca) as the CLI uses it: "~" or a leading
// "~/" is `home`; any other relative path is relative to the directory of the
// config file `config_path`; an absolute path is kept. InvalidArgument naming the
// file and `key` for "~" without a HOME and for "~user/" (not expanded). Paths
// given by flag or environment variable are not passed through this: they are
// relative to the working directory, as the shell gave them.
absl::StatusOr<std::string> ResolveConfigFilePath(const std::string& key, const std::string& value,
                                                  const std::string& config_path, const std::string& home);

// ConfigInputs from the process's environment.
ConfigInputs InputsFromEnvironment();

// Checks "HOST:PORT" (port 1..65535); InvalidArgument naming the value otherwise.
absl::Status CheckAddress(const std::string& addr);

}  // namespace caddie::cli
