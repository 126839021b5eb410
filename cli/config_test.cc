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

}  // namespace
}  // namespace caddie::cli
