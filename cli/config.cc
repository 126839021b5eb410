#include "cli/config.h"

#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "cli/sweep_file.h"
#include "common/grpc_channel.h"
#include "common/status_macros.h"

extern char** environ;

namespace caddie::cli {
namespace {

namespace fs = std::filesystem;

std::string Get(const std::map<std::string, std::string>& env, const std::string& k) {
  auto it = env.find(k);
  return it == env.end() ? "" : it->second;
}

std::string Trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

}  // namespace

absl::Status CheckAddress(const std::string& addr) {
  const size_t colon = addr.rfind(':');
  int port = 0;
  if (colon == std::string::npos || colon == 0 || !absl::SimpleAtoi(addr.substr(colon + 1), &port) ||
      port < 1 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("controller address \"", addr, "\" is not HOST:PORT with a port in 1..65535"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ResolveConfigFilePath(const std::string& key, const std::string& value,
                                                  const std::string& config_path, const std::string& home) {
  if (value.empty()) return value;
  if (value == "~" || value.rfind("~/", 0) == 0) {
    if (home.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(config_path, ": ", key, " \"", value,
                                                     "\" starts with ~ but HOME is not set; write the full path"));
    }
    return value.size() <= 2 ? home : (fs::path(home) / value.substr(2)).string();
  }
  if (value[0] == '~') {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": ", key, " \"", value,
                                                   "\": only ~/ (your HOME) is expanded, not ~user/; write the full path"));
  }
  const fs::path p(value);
  if (p.is_absolute()) return value;
  return (fs::path(config_path).parent_path() / p).string();
}

ConfigInputs InputsFromEnvironment() {
  ConfigInputs in;
  for (char** e = environ; e && *e; ++e) {
    std::string kv = *e;
    const size_t eq = kv.find('=');
    if (eq == std::string::npos) continue;
    const std::string k = kv.substr(0, eq);
    if (k == "CADDIE_ADDR" || k == "CADDIE_TOKEN" || k == "CADDIE_TLS_CA" || k == "HOME" || k == "XDG_CONFIG_HOME") {
      in.env[k] = kv.substr(eq + 1);
    }
  }
  std::error_code ec;
  in.cwd = fs::current_path(ec).string();
  return in;
}

// The first non-empty of flag, environment variable and config-file value, and where it came
// from; `value` and `source` stay as they are when all three are empty.
static void PickByPrecedence(const std::string& flag, const char* flag_name, const std::string& env,
                             const char* env_name, const std::string& file, const std::string& config_path,
                             std::string* value, std::string* source) {
  if (!flag.empty()) {
    *value = flag, *source = flag_name;
  } else if (!env.empty()) {
    *value = env, *source = env_name;
  } else if (!file.empty()) {
    *value = file, *source = "config file " + config_path;
  }
}

absl::StatusOr<Connection> ResolveConnection(const ConfigInputs& in) {
  Connection c;
  // The config file: explicit, else the XDG / home default when it exists.
  std::string path = in.flag_config;
  const bool explicit_path = !path.empty();
  if (!explicit_path) {
    const std::string xdg = Get(in.env, "XDG_CONFIG_HOME");
    const std::string home = Get(in.env, "HOME");
    if (!xdg.empty()) {
      path = xdg + "/caddie/config.yaml";
    } else if (!home.empty()) {
      path = home + "/.config/caddie/config.yaml";
    }
  }
  std::string file_addr, file_token, file_tls_ca;
  std::error_code ec;
  if (!path.empty() && (explicit_path || fs::exists(path, ec))) {
    std::ifstream f(path);
    if (!f) {
      return absl::InvalidArgumentError(absl::StrCat("cannot read config file ", path, ": ",
                                                     std::strerror(errno)));
    }
    std::stringstream ss;
    ss << f.rdbuf();
    YAML::Node root;
    try {
      root = YAML::Load(ss.str());
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", e.mark.line + 1, ":", e.mark.column + 1,
                                                     ": YAML syntax error in config file: ", e.msg));
    }
    if (!root.IsNull()) {
      if (!root.IsMap()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": a config file is a mapping with keys addr, token and tls_ca"));
      }
      for (auto it = root.begin(); it != root.end(); ++it) {
        const std::string k = it->first.Scalar();
        const int line = it->first.Mark().line + 1, col = it->first.Mark().column + 1;
        if (!it->second.IsScalar()) {
          return absl::InvalidArgumentError(absl::StrCat(path, ":", line, ":", col, ": ", k, " must be a string"));
        }
        if (k == "addr") {
          file_addr = it->second.Scalar();
        } else if (k == "token") {
          file_token = it->second.Scalar();
        } else if (k == "tls_ca") {
          ASSIGN_OR_RETURN(file_tls_ca, ResolveConfigFilePath(k, it->second.Scalar(), path, Get(in.env, "HOME")));
        } else {
          const std::string near = ClosestKey(k, {"addr", "token", "tls_ca"});
          return absl::InvalidArgumentError(absl::StrCat(
              path, ":", line, ":", col, ": unknown config key \"", k, "\"",
              near.empty() ? "; valid keys: addr, token, tls_ca" : absl::StrCat(" (did you mean \"", near, "\"?)")));
        }
      }
    }
    c.config_path = path;
  }

  if (!in.flag_addr.empty()) {
    c.addr = in.flag_addr;
    c.addr_source = "--addr";
  } else if (!Get(in.env, "CADDIE_ADDR").empty()) {
    c.addr = Get(in.env, "CADDIE_ADDR");
    c.addr_source = "CADDIE_ADDR";
  } else if (!file_addr.empty()) {
    c.addr = file_addr;
    c.addr_source = "config file " + c.config_path;
  } else {
    // A `caddie up` running from this directory leaves its address here.
    const std::string up_file = in.cwd + "/.caddie/controller.addr";
    std::ifstream f(up_file);
    std::string line;
    if (f && std::getline(f, line) && !Trim(line).empty()) {
      c.addr = Trim(line);
      c.addr_source = "caddie up (" + up_file + ")";
    } else {
      c.addr = kDefaultAddr;
      c.addr_source = "default";
    }
  }
  if (absl::Status s = CheckAddress(c.addr); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(s.message(), " (from ", c.addr_source, ")"));
  }

  PickByPrecedence(in.flag_token, "--token", Get(in.env, "CADDIE_TOKEN"), "CADDIE_TOKEN", file_token,
                   c.config_path, &c.token, &c.token_source);
  PickByPrecedence(in.flag_tls_ca, "--tls-ca", Get(in.env, "CADDIE_TLS_CA"), "CADDIE_TLS_CA", file_tls_ca,
                   c.config_path, &c.tls_ca, &c.tls_ca_source);
  if (!c.tls_ca.empty()) {
    ASSIGN_OR_RETURN(c.tls_ca_pem, ReadTlsCa(c.tls_ca, c.tls_ca_source));
  }
  return c;
}

}  // namespace caddie::cli
