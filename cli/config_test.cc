#include "cli/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace caddie::cli {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("caddie_config_test_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "home/.config/caddie");
    fs::create_directories(dir_ / "cwd");
    in_.env["HOME"] = (dir_ / "home").string();
    in_.cwd = (dir_ / "cwd").string();
  }
  void TearDown() override { fs::remove_all(dir_); }
  void WriteHomeConfig(const std::string& text) { std::ofstream(dir_ / "home/.config/caddie/config.yaml") << text; }

  fs::path dir_;
  ConfigInputs in_;
};

TEST_F(ConfigTest, DefaultWhenNothingIsSet) {
  auto c = ResolveConnection(in_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->addr, "127.0.0.1:7070");
  EXPECT_EQ(c->addr_source, "default");
  EXPECT_EQ(c->token, "");
  EXPECT_EQ(c->config_path, "");
}

TEST_F(ConfigTest, FlagBeatsEnvBeatsFileBeatsUpAddressFile) {
  WriteHomeConfig("addr: file-host:3\ntoken: file-token\n");
  std::ofstream(dir_ / "cwd/.caddie/controller.addr") << "ignored";  // dir missing: not written
  fs::create_directories(dir_ / "cwd/.caddie");
  std::ofstream(dir_ / "cwd/.caddie/controller.addr") << "127.0.0.1:4567\n";
  in_.flag_addr = "flag-host:1";
  in_.flag_token = "flag-token";
  in_.env["CADDIE_ADDR"] = "env-host:2";
  in_.env["CADDIE_TOKEN"] = "env-token";

  auto c = ResolveConnection(in_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->addr, "flag-host:1");
  EXPECT_EQ(c->addr_source, "--addr");
  EXPECT_EQ(c->token, "flag-token");
  EXPECT_EQ(c->token_source, "--token");

  in_.flag_addr.clear();
  in_.flag_token.clear();
  c = ResolveConnection(in_);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->addr, "env-host:2");
  EXPECT_EQ(c->addr_source, "CADDIE_ADDR");
  EXPECT_EQ(c->token, "env-token");
  EXPECT_EQ(c->token_source, "CADDIE_TOKEN");

  in_.env.erase("CADDIE_ADDR");
  in_.env.erase("CADDIE_TOKEN");
  c = ResolveConnection(in_);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->addr, "file-host:3");
  EXPECT_THAT(c->addr_source, HasSubstr("config file"));
  EXPECT_EQ(c->token, "file-token");

  WriteHomeConfig("token: only-token\n");
  c = ResolveConnection(in_);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->addr, "127.0.0.1:4567");
  EXPECT_THAT(c->addr_source, HasSubstr("caddie up"));
  EXPECT_EQ(c->token, "only-token");
}

TEST_F(ConfigTest, ExplicitConfigAndXdg) {
  std::ofstream(dir_ / "other.yaml") << "addr: other:9\n";
  in_.flag_config = (dir_ / "other.yaml").string();
  WriteHomeConfig("addr: home:8\n");
  auto c = ResolveConnection(in_);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->addr, "other:9");

  in_.flag_config.clear();
  fs::create_directories(dir_ / "xdg/caddie");
  std::ofstream(dir_ / "xdg/caddie/config.yaml") << "addr: xdg:7\n";
  in_.env["XDG_CONFIG_HOME"] = (dir_ / "xdg").string();
  c = ResolveConnection(in_);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->addr, "xdg:7");
}

TEST_F(ConfigTest, BadConfigFilesAreInvalidArgumentWithPositions) {
  in_.flag_config = (dir_ / "missing.yaml").string();
  auto c = ResolveConnection(in_);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("cannot read config file"));

  in_.flag_config.clear();
  WriteHomeConfig("address: x:1\n");
  c = ResolveConnection(in_);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("config.yaml:1:1: unknown config key \"address\" (did you mean \"addr\"?)"));

  WriteHomeConfig("addr: [x\n");
  c = ResolveConnection(in_);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("YAML syntax error"));
}

TEST_F(ConfigTest, AddressMustBeHostPort) {
  in_.env["CADDIE_ADDR"] = "localhost";
  auto c = ResolveConnection(in_);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("\"localhost\" is not HOST:PORT"));
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("from CADDIE_ADDR"));
  EXPECT_FALSE(CheckAddress("h:70000").ok());
  EXPECT_TRUE(CheckAddress("[::1]:7070").ok());
}

// --tls-ca > CADDIE_TLS_CA > `tls_ca:`; the file is read (its PEM kept), and an
// unreadable or non-PEM file is InvalidArgument naming it and its source.
TEST_F(ConfigTest, TlsCaPrecedenceAndErrors) {
  const std::string pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  for (const char* name : {"flag.pem", "env.pem", "file.pem"}) std::ofstream(dir_ / name) << name << "\n" << pem;
  auto c = ResolveConnection(in_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->tls_ca, "");
  EXPECT_EQ(c->tls_ca_pem, "");

  WriteHomeConfig("tls_ca: " + (dir_ / "file.pem").string() + "\n");
  in_.env["CADDIE_TLS_CA"] = (dir_ / "env.pem").string();
  in_.flag_tls_ca = (dir_ / "flag.pem").string();
  c = ResolveConnection(in_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->tls_ca_source, "--tls-ca");
  EXPECT_THAT(c->tls_ca_pem, HasSubstr("flag.pem\n-----BEGIN CERTIFICATE-----"));

  in_.flag_tls_ca.clear();
  c = ResolveConnection(in_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->tls_ca_source, "CADDIE_TLS_CA");
  EXPECT_THAT(c->tls_ca_pem, HasSubstr("env.pem"));

  in_.env.erase("CADDIE_TLS_CA");
  c = ResolveConnection(in_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->tls_ca_source, HasSubstr("config file"));
  EXPECT_EQ(c->tls_ca, (dir_ / "file.pem").string());
  EXPECT_THAT(c->tls_ca_pem, HasSubstr("file.pem"));

  in_.env["CADDIE_TLS_CA"] = (dir_ / "missing.pem").string();
  c = ResolveConnection(in_);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("missing.pem\" (from CADDIE_TLS_CA)"));

  std::ofstream(dir_ / "key.pem") << "-----BEGIN PRIVATE KEY-----\n";
  in_.flag_tls_ca = (dir_ / "key.pem").string();
  c = ResolveConnection(in_);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("(from --tls-ca) holds no PEM certificate"));

  WriteHomeConfig("tls-ca: x\n");
  c = ResolveConnection(in_);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("(did you mean \"tls_ca\"?)"));
}

// tls_ca in a config file: relative to the file's directory (not the working
// directory), a leading ~/ is HOME, absolute paths as written; flags and the
// environment stay relative to the working directory.
TEST_F(ConfigTest, ConfigFileTlsCaIsRelativeToTheFileAndExpandsHome) {
  const std::string pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  fs::create_directories(dir_ / "conf/certs");
  std::ofstream(dir_ / "conf/certs/ca.pem") << "beside-config\n" << pem;
  std::ofstream(dir_ / "home/ca.pem") << "in-home\n" << pem;
  fs::create_directories(dir_ / "cwd/certs");
  std::ofstream(dir_ / "cwd/certs/ca.pem") << "in-cwd\n" << pem;
  // The process's working directory is where a cwd-relative open would look:
  // make that the decoy, so reading it instead of the config's copy fails the test.
  struct CwdGuard {
    fs::path old = fs::current_path();
    ~CwdGuard() { fs::current_path(old); }
  } guard;
  fs::current_path(dir_ / "cwd");

  std::ofstream(dir_ / "conf/config.yaml") << "tls_ca: certs/ca.pem\n";
  in_.flag_config = (dir_ / "conf/config.yaml").string();
  auto c = ResolveConnection(in_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(fs::path(c->tls_ca), dir_ / "conf/certs/ca.pem");
  EXPECT_THAT(c->tls_ca_pem, HasSubstr("beside-config"));

  std::ofstream(dir_ / "conf/config.yaml") << "tls_ca: ./certs/../certs/ca.pem\n";
  c = ResolveConnection(in_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->tls_ca_pem, HasSubstr("beside-config"));

  std::ofstream(dir_ / "conf/config.yaml") << "tls_ca: ~/ca.pem\n";
  c = ResolveConnection(in_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(fs::path(c->tls_ca), dir_ / "home/ca.pem");
  EXPECT_THAT(c->tls_ca_pem, HasSubstr("in-home"));

  std::ofstream(dir_ / "conf/config.yaml") << "tls_ca: " << (dir_ / "cwd/certs/ca.pem").string() << "\n";
  c = ResolveConnection(in_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->tls_ca_pem, HasSubstr("in-cwd"));

  // A missing file names the resolved path and the config file it came from.
  std::ofstream(dir_ / "conf/config.yaml") << "tls_ca: nope.pem\n";
  c = ResolveConnection(in_);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr((dir_ / "conf/nope.pem").string()));
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("config file " + in_.flag_config));

  // The same relative name from the flag or the environment is the working directory's.
  in_.flag_tls_ca = "certs/ca.pem";
  c = ResolveConnection(in_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->tls_ca_pem, HasSubstr("in-cwd"));
  in_.flag_tls_ca.clear();
  in_.env["CADDIE_TLS_CA"] = "certs/ca.pem";
  c = ResolveConnection(in_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->tls_ca_pem, HasSubstr("in-cwd"));
  in_.env.erase("CADDIE_TLS_CA");

  // The default config file (~/.config/caddie/config.yaml) resolves against its own directory.
  in_.flag_config.clear();
  fs::create_directories(dir_ / "home/.config/caddie/certs");
  std::ofstream(dir_ / "home/.config/caddie/certs/ca.pem") << "in-default-config-dir\n" << pem;
  WriteHomeConfig("tls_ca: certs/ca.pem\n");
  c = ResolveConnection(in_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->tls_ca_pem, HasSubstr("in-default-config-dir"));

  // ~ without a HOME, and ~user/, are errors naming the key and the file.
  in_.env.erase("HOME");
  in_.flag_config = (dir_ / "conf/config.yaml").string();
  std::ofstream(dir_ / "conf/config.yaml") << "tls_ca: ~/ca.pem\n";
  c = ResolveConnection(in_);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()),
              HasSubstr("config.yaml: tls_ca \"~/ca.pem\" starts with ~ but HOME is not set"));
  std::ofstream(dir_ / "conf/config.yaml") << "tls_ca: ~bob/ca.pem\n";
  c = ResolveConnection(in_);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("only ~/ (your HOME) is expanded, not ~user/"));
}

TEST(ResolveConfigFilePath, Forms) {
  EXPECT_EQ(*ResolveConfigFilePath("tls_ca", "ca.pem", "/etc/caddie/config.yaml", "/home/u"), "/etc/caddie/ca.pem");
  EXPECT_EQ(*ResolveConfigFilePath("tls_ca", "../ca.pem", "/etc/caddie/config.yaml", "/home/u"),
            "/etc/caddie/../ca.pem");
  EXPECT_EQ(*ResolveConfigFilePath("tls_ca", "/abs/ca.pem", "/etc/caddie/config.yaml", "/home/u"), "/abs/ca.pem");
  EXPECT_EQ(*ResolveConfigFilePath("tls_ca", "~/ca.pem", "/etc/caddie/config.yaml", "/home/u"), "/home/u/ca.pem");
  EXPECT_EQ(*ResolveConfigFilePath("tls_ca", "~", "/etc/caddie/config.yaml", "/home/u"), "/home/u");
  // A config file named without a directory: relative to the working directory, as it is.
  EXPECT_EQ(*ResolveConfigFilePath("tls_ca", "ca.pem", "config.yaml", "/home/u"), "ca.pem");
  EXPECT_EQ(*ResolveConfigFilePath("tls_ca", "ca.pem", "sub/config.yaml", "/home/u"), "sub/ca.pem");
  EXPECT_FALSE(ResolveConfigFilePath("tls_ca", "~x/ca.pem", "/etc/c.yaml", "/home/u").ok());
  EXPECT_FALSE(ResolveConfigFilePath("tls_ca", "~/ca.pem", "/etc/c.yaml", "").ok());
}

}  // namespace
}  // namespace caddie::cli
