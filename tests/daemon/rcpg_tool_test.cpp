// rcpg-tool against a running 2-node cluster: the groups view lists groups
// and members like corosync-cpgtool, `status` and `counters` show what they
// promise, every --json output parses as JSON with the expected content, and
// a bad socket or command line is a clear message with a nonzero exit.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "daemon_cluster.h"
#include "ipc_test_client.h"
#include "json_check.h"
#include "test_util.h"

namespace rcpg::test {
namespace {

using namespace std::chrono_literals;
using ipc::RecordType;
using ipc::Status;

struct ToolRun {
  int exit = -1;
  std::string out, err;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs rcpg-tool with `args` (and RCPG_SOCKET = `env_socket` when given).
ToolRun run_tool(const std::string& dir, const std::vector<std::string>& args,
                 const std::string& env_socket = {}) {
  std::string out = dir + "/tool.out", err = dir + "/tool.err";
  fflush(nullptr);
  pid_t p = fork();
  if (p == 0) {
    int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(o, 1);
    dup2(e, 2);
    if (env_socket.empty()) {
      unsetenv(ipc::kSocketEnv);
    } else {
      setenv(ipc::kSocketEnv, env_socket.c_str(), 1);
    }
    std::vector<char*> argv{const_cast<char*>(RCPG_TOOL_PATH)};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(RCPG_TOOL_PATH, argv.data());
    _exit(127);
  }
  ToolRun r;
  r.exit = wait_exit(p);
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

std::string member_line(pid_t pid, uint32_t node) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "\t\t%10d\t%8u\n", static_cast<int>(pid), node);
  return buf;
}

// The "  name   value" row of a text counters report.
std::optional<uint64_t> text_counter(const std::string& text, const std::string& name) {
  auto at = text.find("\n  " + name + " ");
  if (at == std::string::npos) return std::nullopt;
  return std::strtoull(text.c_str() + at + 3 + name.size(), nullptr, 10);
}

TEST(JsonReader, AcceptsJsonAndRejectsWhatIsNot) {
  std::string why;
  auto v = parse_json(R"( {"a":[1,-2.5e3,true,null,"x\u0001\n"],"b":{}} )", why);
  ASSERT_TRUE(v) << why;
  EXPECT_EQ(v->get("a")->items.size(), 5u);
  EXPECT_EQ(v->get("a")->items[4].text, "x\x01\n");
  EXPECT_EQ(v->get("a")->items[0].integer(), 1u);
  for (const char* bad : {"", "{", R"({"a":1,})", R"({"a":01})", R"({"a":1} x)", "[1 2]",
                          R"({'a':1})", "\"tab\there\"", "[.5]", "{\"a\"}", "nul"})
    EXPECT_FALSE(parse_json(bad, why)) << bad;
}

class RcpgTool : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    ASSERT_TRUE(cluster_.start(why)) << why;
  }
  void TearDown() override {
    cluster_.stop();
    EXPECT_EQ(cluster_.problems(), "");
  }
  DaemonCluster cluster_{2};
};

TEST_F(RcpgTool, ShowsGroupsMembersStatusAndCountersAsTextAndJson) {
  const std::string sock1 = cluster_.socket(1), sock2 = cluster_.socket(2);
  const std::string odd("be\x01ta", 5);  // not printable: '.' in text, \u0001 in JSON
  IpcTestClient a, b, c;
  std::string why;
  ASSERT_TRUE(a.connect(sock1, why) && a.hello(why)) << why;
  ASSERT_TRUE(b.connect(sock2, why) && b.hello(why)) << why;
  ASSERT_TRUE(c.connect(sock1, why) && c.hello(why)) << why;
  ASSERT_EQ(a.join("alpha"), Status::Ok);
  ASSERT_EQ(b.join("alpha"), Status::Ok);
  ASSERT_EQ(c.join(odd), Status::Ok);
  for (;;) {  // both alpha members known on node 1
    auto e = next_of(a, RecordType::Confchg);
    ASSERT_TRUE(e);
    if (e->members.size() == 2) break;
  }
  ASSERT_TRUE(next_of(c, RecordType::Confchg));
  // A zero-copy send from node 2 (not the sequencer), seen by a.
  const size_t zbytes = 3000;
  ASSERT_EQ(b.zcb_mcast(2, pattern(5, 5, zbytes)), Status::Ok);
  auto d = next_of(a, RecordType::Deliver);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->data, pattern(5, 5, zbytes));
  const pid_t me = getpid();

  // Groups view (the default), by --socket and by $RCPG_SOCKET.
  ToolRun g = run_tool(cluster_.dir(), {"--socket", sock1});
  EXPECT_EQ(g.exit, 0) << g.err;
  EXPECT_EQ(g.err, "");
  EXPECT_EQ(g.out.rfind("Group Name\t       PID\t Node ID\n", 0), 0u) << g.out;
  EXPECT_NE(g.out.find("alpha\n" + member_line(me, 1) + member_line(me, 2)), std::string::npos)
      << g.out;
  EXPECT_NE(g.out.find("be.ta\n" + member_line(me, 1)), std::string::npos) << g.out;
  EXPECT_EQ(g.out.find("counters"), std::string::npos) << g.out;
  ToolRun g2 = run_tool(cluster_.dir(), {}, sock1);
  EXPECT_EQ(g2.exit, 0) << g2.err;
  EXPECT_EQ(g2.out, g.out);

  // status: node, view, groups, counters, clients.
  ToolRun st = run_tool(cluster_.dir(), {"status", "-s", sock1});
  EXPECT_EQ(st.exit, 0) << st.err;
  for (const char* want : {"cluster daemon-test  node 1  fabric shm", "view {1 2}", "Group Name",
                           "alpha\n", "daemon counters\n", "engine counters\n", "\nclients\n"})
    EXPECT_NE(st.out.find(want), std::string::npos) << want << " in\n" << st.out;
  EXPECT_NE(st.out.find(std::to_string(me) + " member   alpha"), std::string::npos) << st.out;

  // counters: counters only; node 2 sent the zero-copy message without a copy.
  ToolRun ct = run_tool(cluster_.dir(), {"counters", "--socket", sock2});
  EXPECT_EQ(ct.exit, 0) << ct.err;
  EXPECT_EQ(ct.out.find("Group Name"), std::string::npos) << ct.out;
  EXPECT_GE(text_counter(ct.out, "zero_copy_sends").value_or(0), 1u) << ct.out;
  EXPECT_EQ(text_counter(ct.out, "zcb_bytes_not_copied"), zbytes) << ct.out;
  EXPECT_EQ(text_counter(ct.out, "copied_sends"), 0u) << ct.out;
  EXPECT_EQ(text_counter(ct.out, "zcb_msgs"), 1u) << ct.out;

  // JSON, in every view and both argument orders.
  for (const auto& args : std::vector<std::vector<std::string>>{{"--json", "-s", sock1},
                                                                {"status", "--json", "-s", sock1},
                                                                {"--json", "counters", "-s", sock2},
                                                                {"-j", "status", "-s", sock2}}) {
    ToolRun j = run_tool(cluster_.dir(), args);
    std::string what = args[0] + " " + args[1];
    ASSERT_EQ(j.exit, 0) << what << ": " << j.err;
    auto v = parse_json(j.out, why);
    ASSERT_TRUE(v) << what << ": " << why << "\n" << j.out;
    ASSERT_EQ(v->type, Json::Type::Object) << what;
    bool node2 = args.back() == sock2;
    ASSERT_TRUE(v->get("nodeid")) << what;
    EXPECT_EQ(v->get("nodeid")->integer(), node2 ? 2u : 1u) << what;
    EXPECT_EQ(v->get("cluster")->text, "daemon-test");
    EXPECT_TRUE(v->get("all_connected")->boolean);
    bool groups = args[0] != "counters" && args[1] != "counters";
    bool counters = args[0] != "--json" || args[1] == "counters";
    ASSERT_EQ(v->get("groups") != nullptr, groups) << what << "\n" << j.out;
    ASSERT_EQ(v->get("engine") != nullptr, counters) << what << "\n" << j.out;
    if (groups) {
      std::map<std::string, std::vector<std::pair<uint64_t, uint64_t>>> seen;
      for (const Json& grp : v->get("groups")->items)
        for (const Json& m : grp.get("members")->items)
          seen[grp.get("name")->text].push_back(
              {*m.get("nodeid")->integer(), *m.get("pid")->integer()});
      using M = std::vector<std::pair<uint64_t, uint64_t>>;
      auto pid = static_cast<uint64_t>(me);
      EXPECT_EQ(seen["alpha"], (M{{1, pid}, {2, pid}})) << what;
      EXPECT_EQ(seen[odd], (M{{1, pid}})) << what << "\n" << j.out;
      EXPECT_EQ(seen.size(), 2u) << what;
    }
    if (counters) {
      const Json* e = v->get("engine");
      const Json* dm = v->get("daemon");
      ASSERT_TRUE(e && dm && e->get("zero_copy_sends") && dm->get("zcb_bytes_not_copied"));
      EXPECT_EQ(dm->get("zcb_bytes_not_copied")->integer(), node2 ? zbytes : 0u) << what;
      EXPECT_EQ(e->get("zero_copy_sends")->integer().value_or(0) > 0, node2) << what;
      // Connections, counting rcpg-tool's own.
      EXPECT_EQ(dm->get("clients")->integer(), node2 ? 2u : 3u) << what;
    }
    if (args[0] == "status" || args[1] == "status") {
      const Json* cl = v->get("clients");
      ASSERT_TRUE(cl) << what;
      EXPECT_EQ(cl->items.size(), node2 ? 1u : 2u) << what;
      for (const Json& x : cl->items) EXPECT_EQ(x.get("pid")->integer(), static_cast<uint64_t>(me));
    }
  }
}

TEST_F(RcpgTool, BadSocketOrCommandLineIsAClearErrorAndNonzeroExit) {
  const std::string dir = cluster_.dir();
  auto expect_error = [&](const std::vector<std::string>& args, int code, const std::string& msg,
                          const std::string& env = {}) {
    ToolRun r = run_tool(dir, args, env);
    const std::string what = args.empty() ? std::string("(no arguments)") : args.back();
    EXPECT_EQ(r.exit, code) << what << ": " << r.err;
    EXPECT_EQ(r.out, "") << what;
    EXPECT_NE(r.err.find(msg), std::string::npos) << "wanted \"" << msg << "\" in: " << r.err;
  };
  expect_error(
      {"--socket", dir + "/missing.sock"}, 1,
      "rcpg-tool: cannot reach rcpgd at " + dir + "/missing.sock: No such file or directory");
  expect_error({}, 1, "rcpg-tool: cannot reach rcpgd at " + dir + "/env.sock", dir + "/env.sock");
  { std::ofstream f(dir + "/plain-file"); }
  expect_error({"counters", "--socket", dir + "/plain-file"}, 1,
               "cannot reach rcpgd at " + dir + "/plain-file: Connection refused");
  expect_error({"--socket", dir + "/" + std::string(120, 'x')}, 1, "longer than 107 bytes");

  // Something listening that never answers: a timeout, not a hang.
  std::string mute = dir + "/mute.sock";
  int l = socket(AF_UNIX, SOCK_SEQPACKET, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", mute.c_str());
  ASSERT_EQ(bind(l, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  ASSERT_EQ(listen(l, 4), 0);
  auto t0 = std::chrono::steady_clock::now();
  expect_error({"--timeout", "0.3", "--socket", mute}, 1,
               "no answer from " + mute + " within 0.3 s");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  close(l);

  expect_error({"bogus", "-s", cluster_.socket(1)}, 2, "bogus");
  expect_error({"--timeout", "0", "-s", cluster_.socket(1)}, 2, "--timeout");
  // The same socket works once the arguments are right.
  EXPECT_EQ(run_tool(dir, {"-s", cluster_.socket(1)}).exit, 0);
  // A stopped daemon leaves no socket behind.
  cluster_.stop();
  expect_error({"-s", cluster_.socket(1)}, 1, "cannot reach rcpgd at " + cluster_.socket(1));
}

}  // namespace
}  // namespace rcpg::test
