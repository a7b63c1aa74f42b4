// Configuration parsing: a good file, each kind of bad file (the message
// names the key and the line), and rcpgd's exit status 2 for a bad file.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "daemon/config.h"

namespace rcpg::daemon {
namespace {

const char* kGood = R"(
[cluster]
name = "prod"
key_file = "authkey"
fabric = "shm"

[local]
nodeid = 2

[[nodes]]
nodeid = 1
address = "/run/rcpg/n1"

[[nodes]]
nodeid = 2
address = "/run/rcpg/n2"

[engine]
log_bytes = "32MiB"
inbound_bytes = 4194304
zero_copy_receive = false

[ipc]
socket = "/tmp/x.sock"
socket_mode = "0600"
event_bytes = "16M"

[timeouts]
max_sleep_ms = 20

[spin]
iterations = 500
yield = true
pin_core = 1

[membership]
heartbeat_interval_ms = 5
suspect_timeout_ms = 40
form_timeout_ms = 1500
two_node = true
)";

std::optional<Config> parse(const std::string& text, std::string& err) {
  return parse_config(text, "/etc/rcpg/test.toml", err);
}

// Replaces the first occurrence of `from` in the good file.
std::string good_with(const std::string& from, const std::string& to) {
  std::string s = kGood;
  auto at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) s.replace(at, from.size(), to);
  return s;
}

TEST(Config, GoodFile) {
  std::string err;
  auto c = parse(kGood, err);
  ASSERT_TRUE(c) << err;
  EXPECT_EQ(c->cluster_name, "prod");
  EXPECT_EQ(c->key_file, "/etc/rcpg/authkey");  // relative to the file
  EXPECT_EQ(c->fabric, "shm");
  EXPECT_EQ(c->nodeid, 2u);
  ASSERT_EQ(c->nodes.size(), 2u);
  EXPECT_EQ(c->nodes[1].address, "/run/rcpg/n2");
  EXPECT_EQ(c->log_bytes, size_t{32} << 20);
  EXPECT_EQ(c->inbound_bytes, size_t{4} << 20);
  EXPECT_FALSE(c->zero_copy_receive);
  EXPECT_EQ(c->socket_path, "/tmp/x.sock");
  EXPECT_EQ(c->socket_mode, 0600u);
  EXPECT_EQ(c->event_bytes, size_t{16} << 20);
  EXPECT_EQ(c->max_sleep_ms, 20u);
  EXPECT_EQ(c->spin_iterations, 500u);
  EXPECT_TRUE(c->spin_yield);
  EXPECT_EQ(c->pin_core, 1);
  EXPECT_EQ(c->request_bytes, size_t{4} << 20);  // default kept
  EXPECT_EQ(c->heartbeat_interval_ms, 5u);
  EXPECT_EQ(c->suspect_timeout_ms, 40u);
  EXPECT_EQ(c->form_timeout_ms, 1500u);
  EXPECT_TRUE(c->two_node);
}

TEST(Config, DefaultsNeedOnlyKeyAndNodes) {
  std::string err;
  auto c =
      parse("[cluster]\nkey_file = \"/k\"\n[[nodes]]\nnodeid = 1\naddress = \"10.0.0.1:1\"\n", err);
  ASSERT_TRUE(c) << err;
  EXPECT_EQ(c->fabric, "verbs");
  EXPECT_EQ(c->nodeid, 0u);
  EXPECT_TRUE(c->zero_copy_receive);
  EXPECT_EQ(c->heartbeat_interval_ms, 10u);
  EXPECT_EQ(c->suspect_timeout_ms, 100u);
  EXPECT_EQ(c->form_timeout_ms, 3000u);
  EXPECT_FALSE(c->two_node);
  EXPECT_EQ(c->state_dir, "/var/lib/rcpg");
}

TEST(Config, StateDirIsRelativeToTheFileOrOff) {
  std::string err;
  auto c = parse(good_with("nodeid = 2", "nodeid = 2\nstate_dir = \"state\""), err);
  ASSERT_TRUE(c) << err;
  EXPECT_EQ(c->state_dir, "/etc/rcpg/state");
  c = parse(good_with("nodeid = 2", "nodeid = 2\nstate_dir = \"\""), err);
  ASSERT_TRUE(c) << err;
  EXPECT_EQ(c->state_dir, "");  // not kept
}

struct Bad {
  std::string text;
  std::string expect;  // substring of the message (key and line)
};

class BadConfig : public ::testing::TestWithParam<Bad> {};

TEST_P(BadConfig, NamesTheKeyAndLine) {
  std::string err;
  auto c = parse(GetParam().text, err);
  EXPECT_FALSE(c);
  EXPECT_NE(err.find(GetParam().expect), std::string::npos) << "message: " << err;
  EXPECT_EQ(err.rfind("/etc/rcpg/test.toml:", 0), 0u) << err;
}

INSTANTIATE_TEST_SUITE_P(
    Kinds, BadConfig,
    ::testing::Values(
        // TOML syntax error: the parser's line.
        Bad{good_with("name = \"prod\"", "name = \"prod"), "test.toml:3:"},
        Bad{good_with("[cluster]", "[cluster]\nnmae = \"x\""), "3: unknown key 'cluster.nmae'"},
        Bad{good_with("[spin]", "[spinn]"), "unknown key 'spinn'"},
        Bad{good_with("fabric = \"shm\"", "fabric = \"tcp\""), "5: 'cluster.fabric' = \"tcp\""},
        Bad{good_with("fabric = \"shm\"", "fabric = 3"), "'cluster.fabric' must be a string"},
        Bad{good_with("nodeid = 2", "nodeid = \"two\""), "8: 'local.nodeid' must be an integer"},
        Bad{good_with("nodeid = 2", "nodeid = 0"), "'local.nodeid' = 0 is out of range"},
        Bad{good_with("nodeid = 2", "nodeid = 9"), "local.nodeid = 9 is not in [[nodes]]"},
        Bad{good_with("log_bytes = \"32MiB\"", "log_bytes = \"32 parsecs\""),
            "19: 'engine.log_bytes' must be a size"},
        Bad{good_with("log_bytes = \"32MiB\"", "log_bytes = 3000000"),
            "'engine.log_bytes' = 3000000 must be a power of two"},
        Bad{good_with("zero_copy_receive = false", "zero_copy_receive = 1"),
            "'engine.zero_copy_receive' must be true or false"},
        Bad{good_with("socket_mode = \"0600\"", "socket_mode = \"0999\""),
            "'ipc.socket_mode' = \"0999\" is not an octal mode"},
        Bad{good_with("socket_mode = \"0600\"", "socket_mode = 600"),
            "'ipc.socket_mode' must be an octal string"},
        Bad{good_with("max_sleep_ms = 20", "max_sleep_ms = -5"),
            "'timeouts.max_sleep_ms' = -5 is out of range"},
        Bad{good_with("key_file = \"authkey\"\n", ""), "missing 'cluster.key_file'"},
        Bad{good_with("nodeid = 1\naddress", "nodeid = 2\naddress"), "nodeid 2 is listed twice"},
        Bad{good_with("address = \"/run/rcpg/n2\"", "address = \"/run/rcpg/n1\""),
            "address \"/run/rcpg/n1\" is listed twice"},
        Bad{good_with("nodeid = 1\naddress = \"/run/rcpg/n1\"", "address = \"/run/rcpg/n1\""),
            "has no 'nodeid'"},
        Bad{good_with("address = \"/run/rcpg/n1\"", "adress = \"/run/rcpg/n1\""),
            "unknown key 'nodes.adress'"},
        Bad{"[cluster]\nkey_file = \"/k\"\n", "no [[nodes]] entries"},
        Bad{"spin = 5\n[cluster]\nkey_file = \"/k\"\n[[nodes]]\nnodeid = 1\naddress = \"a\"\n",
            "1: 'spin' must be a table"},
        Bad{good_with("inbound_bytes = 4194304",
                      "inbound_bytes = 4194304\nmax_fragment = \"3MiB\""),
            "engine.max_fragment"},
        // [membership]
        Bad{good_with("heartbeat_interval_ms = 5", "heartbeat_interval_ms = 0"),
            "37: 'membership.heartbeat_interval_ms' = 0 is out of range"},
        Bad{good_with("heartbeat_interval_ms = 5", "heartbeat_ms = 5"),
            "37: unknown key 'membership.heartbeat_ms'"},
        Bad{good_with("suspect_timeout_ms = 40", "suspect_timeout_ms = 9"),
            "38: 'membership.suspect_timeout_ms' = 9 must be at least twice "
            "'membership.heartbeat_interval_ms' (5)"},
        Bad{good_with("suspect_timeout_ms = 40", "suspect_timeout_ms = \"40ms\""),
            "38: 'membership.suspect_timeout_ms' must be an integer"},
        Bad{good_with("form_timeout_ms = 1500", "form_timeout_ms = -1"),
            "39: 'membership.form_timeout_ms' = -1 is out of range"},
        Bad{good_with("two_node = true", "two_node = \"yes\""),
            "40: 'membership.two_node' must be true or false"},
        Bad{good_with("[[nodes]]\nnodeid = 2",
                      "[[nodes]]\nnodeid = 3\naddress = \"/n3\"\n"
                      "[[nodes]]\nnodeid = 2"),
            "43: 'membership.two_node' = true needs exactly 2 [[nodes]] (there are 3)"},
        Bad{"membership = 1\n[cluster]\nkey_file = \"/k\"\n[[nodes]]\nnodeid = 1\naddress = "
            "\"a\"\n",
            "1: 'membership' must be a table"}));

TEST(Config, SizesWithUnits) {
  EXPECT_EQ(parse_size("4096"), 4096u);
  EXPECT_EQ(parse_size("4k"), 4096u);
  EXPECT_EQ(parse_size("16MiB"), size_t{16} << 20);
  EXPECT_EQ(parse_size("1 GiB"), size_t{1} << 30);
  EXPECT_FALSE(parse_size("MiB"));
  EXPECT_FALSE(parse_size("12 furlongs"));
  EXPECT_FALSE(parse_size("99999999999999999999999"));
}

TEST(Config, NodeIdResolution) {
  std::string err;
  auto c = parse(good_with("[local]\nnodeid = 2\n", ""), err);
  ASSERT_TRUE(c) << err;
  Config a = *c;
  EXPECT_FALSE(resolve_nodeid(a, 0, err));  // shm: no way to guess
  EXPECT_NE(err.find("--nodeid"), std::string::npos);
  EXPECT_TRUE(resolve_nodeid(a, 1, err));
  EXPECT_EQ(a.nodeid, 1u);
  EXPECT_FALSE(resolve_nodeid(a, 5, err));
  EXPECT_NE(err.find("--nodeid 5"), std::string::npos);
  // verbs: the node whose IP is local.
  auto v = parse(
      "[cluster]\nkey_file = \"/k\"\n[[nodes]]\nnodeid = 4\naddress = \"127.0.0.1:7000\"\n"
      "[[nodes]]\nnodeid = 5\naddress = \"192.0.2.77:7000\"\n",
      err);
  ASSERT_TRUE(v) << err;
  EXPECT_TRUE(resolve_nodeid(*v, 0, err)) << err;
  EXPECT_EQ(v->nodeid, 4u);
}

TEST(Config, SocketPathPrecedence) {
  Config c;
  unsetenv("RCPG_SOCKET");
  EXPECT_EQ(socket_path(c, ""), "/run/rcpg/rcpgd.sock");
  c.socket_path = "/cfg.sock";
  EXPECT_EQ(socket_path(c, ""), "/cfg.sock");
  setenv("RCPG_SOCKET", "/env.sock", 1);
  EXPECT_EQ(socket_path(c, ""), "/env.sock");
  EXPECT_EQ(socket_path(c, "/cli.sock"), "/cli.sock");
  unsetenv("RCPG_SOCKET");
}

TEST(Config, KeyFileErrorsNameTheFile) {
  Config c;
  c.source = "x.toml";
  c.key_file = "/nonexistent/rcpg.key";
  std::string err;
  EXPECT_FALSE(load_cluster_key(c, err));
  EXPECT_NE(err.find("cluster.key_file \"/nonexistent/rcpg.key\""), std::string::npos) << err;
}

// The daemon itself: a bad file is a clear message and exit status 2.
int run_rcpgd(const std::vector<std::string>& args, std::string& out) {
  std::string cmd = RCPGD_PATH;
  for (const auto& a : args) cmd += " '" + a + "'";
  cmd += " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  char buf[512];
  while (fgets(buf, sizeof(buf), p)) out += buf;
  int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(Rcpgd, BadConfigurationExitsWithStatus2) {
  char tmpl[] = "/tmp/rcpgd-cfg-XXXXXX";
  ASSERT_TRUE(mkdtemp(tmpl));
  std::string dir = tmpl;
  {
    std::ofstream f(dir + "/bad.toml");
    f << good_with("iterations = 500", "iterations = \"many\"");
  }
  std::string out;
  EXPECT_EQ(run_rcpgd({"--config", dir + "/bad.toml"}, out), 2);
  EXPECT_NE(out.find("bad.toml:32: 'spin.iterations' must be an integer"), std::string::npos)
      << out;
  out.clear();
  EXPECT_EQ(run_rcpgd({"--config", dir + "/missing.toml"}, out), 2);
  EXPECT_NE(out.find("cannot open"), std::string::npos) << out;
  // A good file whose key file is missing.
  {
    std::ofstream f(dir + "/nokey.toml");
    f << kGood;
  }
  out.clear();
  EXPECT_EQ(run_rcpgd({"--config", dir + "/nokey.toml", "--check"}, out), 2);
  EXPECT_NE(out.find("cluster.key_file"), std::string::npos) << out;
  // With the key, --check passes.
  {
    std::ofstream k(dir + "/authkey");
    k << std::string(64, 'a') << "\n";
  }
  out.clear();
  EXPECT_EQ(run_rcpgd({"--config", dir + "/nokey.toml", "--check"}, out), 0) << out;
  out.clear();
  EXPECT_EQ(run_rcpgd({"--config", dir + "/nokey.toml", "--nodeid", "7", "--check"}, out), 2);
  EXPECT_NE(out.find("--nodeid 7"), std::string::npos) << out;
  out.clear();
  EXPECT_EQ(run_rcpgd({"--bogus-flag"}, out), 2);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace rcpg::daemon
