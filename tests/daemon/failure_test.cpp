// Node failures as CPG clients see them, with three rcpgd processes on the
// shm fabric:
//  * a daemon killed with SIGKILL (the sequencer, or another node): the
//    other nodes' clients get one NODEDOWN confchg for all its processes,
//    identical everywhere and within a second, and messages keep flowing;
//    restarted, it rejoins with a new incarnation, learns the groups from
//    the others' sync announcements, and its new clients join as usual;
//  * a daemon stopped (SIGSTOP) long enough to be excluded and then resumed:
//    it is cut off (its clients see the others leave), comes back with a new
//    history and everybody sees everybody again with NODEUP, as after a
//    healed partition on Corosync;
//  * two of three daemons killed: the survivor has no quorum, its libcpg
//    client gets CS_ERR_TRY_AGAIN and rcpg-tool says why; one restarted
//    daemon brings the quorum back and sends go through again.
#include <corosync/cpg.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>

#include "daemon_cluster.h"
#include "ipc_test_client.h"
#include "test_util.h"

namespace rcpg::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using ipc::RecordType;
using ipc::Status;

constexpr uint32_t kNodeDown = 3, kNodeUp = 4, kJoin = 1;

std::string status_json(const DaemonCluster& cluster, int node) {
  IpcTestClient q;
  std::string err;
  return q.connect(cluster.socket(node), err) ? q.status_text(0, 1) : std::string();
}

// Adds every daemon's log and status to a failing test, however it ends.
struct LogsOnFailure {
  const DaemonCluster& cluster;
  int nodes;
  ~LogsOnFailure() {
    if (::testing::Test::HasFailure())
      for (int n = 1; n <= nodes; ++n)
        ADD_FAILURE() << "rcpgd " << n << " log:\n"
                      << cluster.log_of(n) << "rcpgd " << n << " status:\n"
                      << status_json(cluster, n);
  }
};

// The incarnation node `id` has in `node`'s view (0 if absent).
uint32_t incarnation_of(const DaemonCluster& cluster, int node, uint32_t id) {
  std::string js = status_json(cluster, node);
  std::string key = "{\"id\":" + std::to_string(id) + ",\"incarnation\":";
  auto at = js.find(key);
  return at == std::string::npos
             ? 0
             : static_cast<uint32_t>(std::strtoul(js.c_str() + at + key.size(), nullptr, 10));
}

std::string run_tool(const std::string& socket, const std::string& args) {
  std::string cmd = std::string(RCPG_TOOL_PATH) + " --socket '" + socket + "' " + args + " 2>&1";
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

// Pumps several in-process clients in turn (none may hold log space the
// others wait for), appending deliveries and confchgs (and totem confchgs
// when `totem`) to each one's history until `enough` holds for each or the
// timeout passes.
using Events = std::vector<TestEvent>;
using Enough = std::function<bool(const Events&)>;
void gather(const std::vector<IpcTestClient*>& clients, std::vector<Events>& hist,
            const Enough& enough, std::chrono::milliseconds timeout = 20s, bool totem = false) {
  hist.resize(clients.size());
  auto deadline = Clock::now() + timeout;
  for (bool done = false; !done && Clock::now() < deadline;) {
    done = true;
    for (size_t k = 0; k < clients.size(); ++k) {
      if (enough(hist[k])) continue;
      done = false;
      auto e = clients[k]->next_event(2ms);
      if (e && (e->type != RecordType::TotemConfchg || totem)) hist[k].push_back(std::move(*e));
    }
  }
}

Enough until_members(size_t n) {
  return [n](const Events& e) {
    return !e.empty() && e.back().type == RecordType::Confchg && e.back().members.size() == n;
  };
}

std::string transcript(const Events& ev) {
  std::string s;
  for (const TestEvent& e : ev) s += e.describe() + "\n";
  return s;
}

// Message indexes delivered from `node` (the second word of pattern()).
std::vector<uint32_t> indexes_from(const Events& ev, uint32_t node) {
  std::vector<uint32_t> out;
  for (const TestEvent& e : ev)
    if (e.type == RecordType::Deliver && e.nodeid == node && e.data.size() >= 8) {
      uint32_t b;
      std::memcpy(&b, e.data.data() + 4, 4);
      out.push_back(b);
    }
  return out;
}

std::vector<uint32_t> iota(uint32_t n) {
  std::vector<uint32_t> v(n);
  for (uint32_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

const TestEvent* last_confchg(const Events& ev) {
  for (auto it = ev.rbegin(); it != ev.rend(); ++it)
    if (it->type == RecordType::Confchg) return &*it;
  return nullptr;
}

// ---------------------------------------------------------------- kill -9

class KilledNode : public ::testing::TestWithParam<int> {};

TEST_P(KilledNode, OthersSeeNodedownAndItRejoinsWithANewIncarnation) {
  const int dead = GetParam();
  DaemonCluster cluster(3);
  LogsOnFailure logs{cluster, 3};
  std::string why;
  ASSERT_TRUE(cluster.start(why)) << why;
  std::vector<int> live;
  for (int n = 1; n <= 3; ++n)
    if (n != dead) live.push_back(n);
  const auto u = [](int n) { return static_cast<uint32_t>(n); };

  // One in-process client per node (all with this process's pid) asking for
  // totem confchgs, plus a child process on the node that dies, so that it
  // takes two processes with it.
  IpcTestClient c[3];
  for (int n = 1; n <= 3; ++n) {
    ASSERT_TRUE(c[n - 1].connect(cluster.socket(n), why)) << why;
    ASSERT_TRUE(c[n - 1].hello(why, ipc::kWantsTotemConfchg)) << why;
  }
  int go[2], ready[2];
  ASSERT_EQ(pipe(go), 0);
  ASSERT_EQ(pipe(ready), 0);
  std::string dead_sock = cluster.socket(dead);
  pid_t child = spawn([&]() -> int {
    IpcTestClient e;
    std::string err;
    if (!e.connect(dead_sock, err) || !e.hello(err) || e.join("fail") != Status::Ok) return 1;
    if (write(ready[1], "r", 1) != 1) return 2;
    char b;
    if (read(go[0], &b, 1) != 1) return 3;              // the test kills our daemon meanwhile
    return e.join("other") == Status::Library ? 0 : 4;  // every request fails now
  });
  char b;
  ASSERT_EQ(read(ready[0], &b, 1), 1);
  for (auto& x : c) ASSERT_EQ(x.join("fail"), Status::Ok);
  std::vector<IpcTestClient*> all = {&c[0], &c[1], &c[2]};
  std::vector<Events> h;
  gather(all, h, until_members(4));
  for (int k = 0; k < 3; ++k) ASSERT_TRUE(until_members(4)(h[k])) << transcript(h[k]);

  const uint32_t me = static_cast<uint32_t>(getpid());
  const uint32_t inc_before = incarnation_of(cluster, live[0], u(dead));
  ASSERT_NE(inc_before, 0u) << status_json(cluster, live[0]);
  // Everybody sends; the doomed node's daemon is killed while its client's
  // messages are still being ordered.
  const uint32_t kEach = 20;
  for (uint32_t i = 0; i < kEach; ++i)
    for (int n = 1; n <= 3; ++n) ASSERT_TRUE(c[n - 1].mcast(2, pattern(u(n), i, 64)));
  auto t0 = Clock::now();
  cluster.kill_node(dead);
  std::vector<IpcTestClient*> survivors = {&c[live[0] - 1], &c[live[1] - 1]};
  std::vector<Events> s;  // the survivors' histories from here on
  // Until the NODEDOWN confchg and the totem confchg that follows it.
  gather(
      survivors, s,
      [](const Events& e) {
        return e.size() >= 2 && e.back().type == RecordType::TotemConfchg &&
               e[e.size() - 2].type == RecordType::Confchg && !e[e.size() - 2].left.empty();
      },
      10s, true);
  auto detected = Clock::now() - t0;
  ASSERT_EQ(transcript(s[0]), transcript(s[1])) << "the survivors disagree";
  ASSERT_GE(s[0].size(), 2u) << transcript(s[0]);
  const TestEvent& down = s[0][s[0].size() - 2];
  ASSERT_EQ(down.left.size(), 2u) << down.describe();
  EXPECT_EQ(down.left[0].nodeid, u(dead));
  EXPECT_EQ(down.left[0].pid, std::min(me, u(child)));
  EXPECT_EQ(down.left[1].nodeid, u(dead));
  EXPECT_EQ(down.left[1].pid, std::max(me, u(child)));
  EXPECT_EQ(down.left[0].reason, kNodeDown);
  EXPECT_EQ(down.left[1].reason, kNodeDown);
  EXPECT_TRUE(down.joined.empty());
  ASSERT_EQ(down.members.size(), 2u);
  EXPECT_EQ(down.members[0].nodeid, u(live[0]));
  EXPECT_EQ(down.members[1].nodeid, u(live[1]));
  const TestEvent& totem = s[0].back();
  EXPECT_EQ(totem.nodes, (std::vector<uint32_t>{u(live[0]), u(live[1])}));
  EXPECT_EQ(totem.ring_nodeid, u(live[0]));  // the lowest id sequences
  EXPECT_LT(detected, 1s) << "NODEDOWN after "
                          << std::chrono::duration_cast<std::chrono::milliseconds>(detected).count()
                          << " ms";
  std::printf(
      "node %d killed: both survivors had the NODEDOWN confchg after %ld ms\n", dead,
      static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(detected).count()));
  ASSERT_EQ(write(go[1], "g", 1), 1);
  EXPECT_EQ(wait_exit(child), 0);

  // Messages keep flowing: every survivor message arrives once, in order,
  // at both; of the dead node's, both delivered the same prefix.
  for (uint32_t i = kEach; i < 2 * kEach; ++i)
    for (int n : live) ASSERT_TRUE(c[n - 1].mcast(3, pattern(u(n), i, 100)));
  gather(survivors, s, [&](const Events& e) {
    return indexes_from(e, u(live[0])).size() >= 2 * kEach &&
           indexes_from(e, u(live[1])).size() >= 2 * kEach;
  });
  EXPECT_EQ(transcript(s[0]), transcript(s[1])) << "the survivors disagree";
  for (int k = 0; k < 2; ++k) {
    for (int n : live) EXPECT_EQ(indexes_from(s[k], u(n)), iota(2 * kEach)) << "from node " << n;
    auto d = indexes_from(s[k], u(dead));
    EXPECT_EQ(d, iota(static_cast<uint32_t>(d.size()))) << "from the dead node";
  }

  // Restarted: a new incarnation, in the view everywhere; it learns the
  // group from the survivors' announcements before any client of its own
  // joins, and then its new client's join looks the same everywhere.
  ASSERT_TRUE(cluster.restart_node(dead, why)) << why;
  ASSERT_TRUE(cluster.wait_view({1, 2, 3}, why)) << why;
  const uint32_t inc_after = incarnation_of(cluster, live[0], u(dead));
  EXPECT_NE(inc_after, 0u);
  EXPECT_NE(inc_after, inc_before);
  EXPECT_EQ(incarnation_of(cluster, dead, u(dead)), inc_after);
  IpcTestClient fresh;
  ASSERT_TRUE(fresh.connect(cluster.socket(dead), why) && fresh.hello(why)) << why;
  std::vector<ipc::MemberEntry> known;
  for (auto until = Clock::now() + 10s; Clock::now() < until;) {
    ASSERT_EQ(fresh.membership("fail", known), Status::Ok);
    if (known.size() == 2) break;
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(known.size(), 2u) << "the restarted daemon did not learn the group";
  EXPECT_EQ(known[0].nodeid, u(live[0]));
  EXPECT_EQ(known[1].nodeid, u(live[1]));
  ASSERT_EQ(fresh.join("fail"), Status::Ok);
  std::vector<IpcTestClient*> three = {survivors[0], survivors[1], &fresh};
  std::vector<Events> j;
  gather(three, j, until_members(3));
  for (int k = 0; k < 3; ++k) {
    const TestEvent* cc = last_confchg(j[k]);
    ASSERT_NE(cc, nullptr) << "client " << k;
    ASSERT_EQ(cc->joined.size(), 1u) << cc->describe();
    EXPECT_EQ(cc->joined[0].nodeid, u(dead));
    EXPECT_EQ(cc->joined[0].reason, kJoin);
    EXPECT_EQ(cc->describe(), last_confchg(j[0])->describe()) << "client " << k;
  }
  ASSERT_TRUE(fresh.mcast(2, pattern(u(dead), 0, 32)));
  gather(three, j, [&](const Events& e) { return !indexes_from(e, u(dead)).empty(); });
  for (int k = 0; k < 3; ++k) EXPECT_EQ(indexes_from(j[k], u(dead)), iota(1)) << "client " << k;
  std::string st = status_json(cluster, live[0]);
  EXPECT_GE(json_number(st, "views_applied").value_or(0), 3u) << st;
  EXPECT_EQ(json_number(st, "nodedown_members"), 2u) << st;
  EXPECT_EQ(json_number(st, "bad_membership_entries"), 0u) << st;
  cluster.stop();
  EXPECT_EQ(cluster.problems(), "");
}

INSTANTIATE_TEST_SUITE_P(Failures, KilledNode, ::testing::Values(1, 3), [](const auto& info) {
  return info.param == 1 ? std::string("Sequencer") : std::string("OtherNode");
});

// ---------------------------------------------------------------- cut off

// A daemon that stops answering (SIGSTOP) is excluded like a dead one; when
// it runs again it finds itself cut off, comes back with a new history, and
// the members on both sides come back with NODEUP (Corosync's healed
// partition in reference/corosync-3.1.7-cluster3-membership.txt).
TEST(Failures, StoppedNodeIsCutOffAndComesBackWithNodeup) {
  DaemonCluster cluster(3);
  LogsOnFailure logs{cluster, 3};
  std::string why;
  ASSERT_TRUE(cluster.start(why)) << why;
  IpcTestClient c[3];
  for (int n = 1; n <= 3; ++n) {
    ASSERT_TRUE(c[n - 1].connect(cluster.socket(n), why) && c[n - 1].hello(why)) << why;
    ASSERT_EQ(c[n - 1].join("cut"), Status::Ok);
  }
  std::vector<IpcTestClient*> all = {&c[0], &c[1], &c[2]}, two = {&c[0], &c[1]};
  std::vector<Events> h;
  gather(all, h, until_members(3));
  const uint32_t me = static_cast<uint32_t>(getpid());

  auto t0 = Clock::now();
  kill(cluster.pid(3), SIGSTOP);
  std::vector<Events> s;
  gather(two, s, until_members(2));
  auto detected = Clock::now() - t0;
  ASSERT_EQ(transcript(s[0]), transcript(s[1]));
  ASSERT_TRUE(until_members(2)(s[0])) << transcript(s[0]);
  EXPECT_EQ(s[0].back().describe(), "CONFCHG group=cut members[2]={" + member(1, me, "UNDEFINED") +
                                        "," + member(2, me, "UNDEFINED") + "} left[1]={" +
                                        member(3, me, "NODEDOWN") + "} joined[0]={}");
  EXPECT_LT(detected, 1s);
  ASSERT_TRUE(cluster.wait_view({1, 2}, why)) << why;
  std::this_thread::sleep_for(200ms);
  kill(cluster.pid(3), SIGCONT);

  // The majority sees node 3's member come back; node 3 sees the others go
  // (it was cut off) and come back.
  gather(two, s, until_members(3));
  std::vector<Events> t;
  gather({&c[2]}, t, until_members(3));
  ASSERT_EQ(transcript(s[0]), transcript(s[1]));
  EXPECT_EQ(s[0].back().describe(), "CONFCHG group=cut members[3]={" + member(1, me, "UNDEFINED") +
                                        "," + member(2, me, "UNDEFINED") + "," +
                                        member(3, me, "UNDEFINED") + "} left[0]={} joined[1]={" +
                                        member(3, me, "NODEUP") + "}");
  std::vector<std::string> left3, joined3;
  for (const TestEvent& e : t[0]) {
    if (e.type != RecordType::Confchg) continue;
    for (const auto& m : e.left)
      left3.push_back(
          member(m.nodeid, static_cast<pid_t>(m.pid), m.reason == kNodeDown ? "NODEDOWN" : "?"));
    for (const auto& m : e.joined)
      joined3.push_back(
          member(m.nodeid, static_cast<pid_t>(m.pid), m.reason == kNodeUp ? "NODEUP" : "?"));
  }
  std::sort(joined3.begin(), joined3.end());
  EXPECT_EQ(left3, (std::vector<std::string>{member(1, me, "NODEDOWN"), member(2, me, "NODEDOWN")}))
      << transcript(t[0]);
  EXPECT_EQ(joined3, (std::vector<std::string>{member(1, me, "NODEUP"), member(2, me, "NODEUP")}))
      << transcript(t[0]);
  ASSERT_TRUE(cluster.wait_view({1, 2, 3}, why)) << why;

  // Back to normal: one order for everybody's messages.
  for (uint32_t i = 0; i < 10; ++i)
    for (int n = 1; n <= 3; ++n)
      ASSERT_TRUE(c[n - 1].mcast(2, pattern(static_cast<uint32_t>(n), i, 48)));
  std::vector<Events> m;
  gather(all, m, [](const Events& e) {
    return std::count_if(e.begin(), e.end(),
                         [](const TestEvent& x) { return x.type == RecordType::Deliver; }) >= 30;
  });
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ(transcript(m[k]), transcript(m[0])) << "client on node " << k + 1;
    for (uint32_t n = 1; n <= 3; ++n) EXPECT_EQ(indexes_from(m[k], n), iota(10));
  }
  cluster.stop();
  EXPECT_EQ(cluster.problems(), "");
}

// ---------------------------------------------------------------- quorum

struct CpgSeen {
  std::vector<std::string> delivered;
  std::vector<cpg_address> members, left;
  int confchgs = 0, totems = 0;
  uint64_t ring_seq = 0;
  std::vector<uint32_t> totem_members;
};
CpgSeen g_seen;

void on_deliver(cpg_handle_t, const cpg_name*, uint32_t, uint32_t, void* msg, size_t len) {
  g_seen.delivered.emplace_back(static_cast<const char*>(msg), len);
}
void on_confchg(cpg_handle_t, const cpg_name*, const cpg_address* m, size_t nm,
                const cpg_address* l, size_t nl, const cpg_address*, size_t) {
  ++g_seen.confchgs;
  g_seen.members.assign(m, m + nm);
  g_seen.left.insert(g_seen.left.end(), l, l + nl);
}
void on_totem(cpg_handle_t, cpg_ring_id ring, uint32_t n, const uint32_t* ids) {
  ++g_seen.totems;
  g_seen.ring_seq = ring.seq;
  g_seen.totem_members.assign(ids, ids + n);
}

bool dispatch_until(cpg_handle_t h, const std::function<bool()>& done,
                    std::chrono::milliseconds timeout = 10s) {
  for (auto until = Clock::now() + timeout; Clock::now() < until;) {
    if (cpg_dispatch(h, CS_DISPATCH_ALL) != CS_OK) return false;
    if (done()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return done();
}

cs_error_t send_text(cpg_handle_t h, const std::string& s) {
  iovec iov{const_cast<char*>(s.data()), s.size()};
  return cpg_mcast_joined(h, CPG_TYPE_AGREED, &iov, 1);
}

// Kill two of three: the survivor (not the sequencer) cannot order anything.
// Its libcpg client gets CS_ERR_TRY_AGAIN from every send, join and
// zero-copy send, its group stays as last agreed, and rcpg-tool shows the
// state and why; once one node is back, the quorum is too: the new view
// says who left (NODEDOWN) and sends go through.
TEST(Failures, WithoutQuorumSendsGetTryAgainUntilANodeComesBack) {
  DaemonCluster cluster(3);
  LogsOnFailure logs{cluster, 3};
  std::string why;
  ASSERT_TRUE(cluster.start(why)) << why;
  IpcTestClient other[2];
  for (int n = 1; n <= 2; ++n) {
    ASSERT_TRUE(other[n - 1].connect(cluster.socket(n), why) && other[n - 1].hello(why)) << why;
    ASSERT_EQ(other[n - 1].join("quorum"), Status::Ok);
  }
  ::setenv("RCPG_SOCKET", cluster.socket(3).c_str(), 1);
  cpg_model_v1_data_t model{};
  model.model = CPG_MODEL_V1;
  model.cpg_deliver_fn = on_deliver;
  model.cpg_confchg_fn = on_confchg;
  model.cpg_totem_confchg_fn = on_totem;
  cpg_handle_t h = 0;
  ASSERT_EQ(
      cpg_model_initialize(&h, CPG_MODEL_V1, reinterpret_cast<cpg_model_data_t*>(&model), nullptr),
      CS_OK);
  cpg_name g{};
  g.length = 6;
  std::memcpy(g.value, "quorum", 6);
  ASSERT_EQ(cpg_join(h, &g), CS_OK);
  ASSERT_TRUE(dispatch_until(h, [] { return g_seen.members.size() == 3; }));
  ASSERT_EQ(send_text(h, "before"), CS_OK);
  ASSERT_TRUE(dispatch_until(h, [] { return !g_seen.delivered.empty(); }));

  kill(cluster.pid(1), SIGKILL);
  kill(cluster.pid(2), SIGKILL);
  cluster.kill_node(1);
  cluster.kill_node(2);
  // Without a quorum: TRY_AGAIN (sends already queued before the node knew
  // go out once the quorum is back).
  cs_error_t r = CS_OK;
  for (auto until = Clock::now() + 5s; Clock::now() < until && r == CS_OK;) {
    r = send_text(h, "queued");
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(r, CS_ERR_TRY_AGAIN);
  // Nobody agreed that the others left (the node may yet continue with
  // them): the group is unchanged until a view says otherwise.
  for (auto until = Clock::now() + 300ms; Clock::now() < until;) cpg_dispatch(h, CS_DISPATCH_ALL);
  EXPECT_EQ(g_seen.members.size(), 3u);
  EXPECT_TRUE(g_seen.left.empty());
  for (int i = 0; i < 10; ++i) EXPECT_EQ(send_text(h, "refused"), CS_ERR_TRY_AGAIN);
  void* buf = nullptr;
  ASSERT_EQ(cpg_zcb_alloc(h, 8192, &buf), CS_OK);
  std::memset(buf, 'z', 8192);
  EXPECT_EQ(cpg_zcb_mcast_joined(h, CPG_TYPE_AGREED, buf, 8192), CS_ERR_TRY_AGAIN);
  EXPECT_EQ(cpg_zcb_mcast_joined(h, CPG_TYPE_AGREED, buf, 16), CS_ERR_TRY_AGAIN);
  cpg_handle_t h2 = 0;
  ASSERT_EQ(cpg_initialize(&h2, nullptr), CS_OK);
  cpg_name g2{};
  g2.length = 7;
  std::memcpy(g2.value, "quorum2", 7);
  EXPECT_EQ(cpg_join(h2, &g2), CS_ERR_TRY_AGAIN);
  EXPECT_EQ(cpg_leave(h, &g), CS_ERR_TRY_AGAIN);

  std::string js = run_tool(cluster.socket(3), "status --json");
  EXPECT_NE(js.find("\"state\":\"no-quorum\""), std::string::npos) << js;
  EXPECT_NE(js.find("\"blocked\":true"), std::string::npos) << js;
  EXPECT_NE(js.find("\"quorum\":{\"needed\":2,"), std::string::npos) << js;
  std::string text = run_tool(cluster.socket(3), "status");
  EXPECT_NE(text.find("membership no-quorum"), std::string::npos) << text;
  EXPECT_NE(text.find("CS_ERR_TRY_AGAIN"), std::string::npos) << text;
  EXPECT_NE(cluster.log_of(3).find("membership: no-quorum"), std::string::npos);

  // One node back: a quorum of two; the view without node 2 and with node
  // 1's new incarnation says both old processes are gone (NODEDOWN); sends,
  // joins and leaves work again.
  ASSERT_TRUE(cluster.restart_node(1, why)) << why;
  ASSERT_TRUE(cluster.wait_view({1, 3}, why)) << why;
  ASSERT_TRUE(dispatch_until(h, [] { return g_seen.members.size() == 1; }))
      << g_seen.members.size();
  std::vector<std::pair<uint32_t, uint32_t>> gone;
  for (const cpg_address& a : g_seen.left) {
    EXPECT_EQ(a.reason, static_cast<uint32_t>(CPG_REASON_NODEDOWN));
    gone.emplace_back(a.nodeid, a.pid);
  }
  std::sort(gone.begin(), gone.end());
  const uint32_t me = static_cast<uint32_t>(getpid());
  EXPECT_EQ(gone, (std::vector<std::pair<uint32_t, uint32_t>>{{1, me}, {2, me}}));
  r = CS_ERR_TRY_AGAIN;
  for (auto until = Clock::now() + 5s; Clock::now() < until && r == CS_ERR_TRY_AGAIN;) {
    r = send_text(h, "after");
    if (r == CS_ERR_TRY_AGAIN) std::this_thread::sleep_for(5ms);
  }
  ASSERT_EQ(r, CS_OK);
  ASSERT_TRUE(dispatch_until(h, [] {
    return std::find(g_seen.delivered.begin(), g_seen.delivered.end(), "after") !=
           g_seen.delivered.end();
  }));
  // No view forms without a quorum: the next totem confchg is the view
  // with node 1 back.
  EXPECT_GE(g_seen.totems, 1);
  EXPECT_EQ(g_seen.totem_members, (std::vector<uint32_t>{1, 3}));
  EXPECT_EQ(cpg_join(h2, &g2), CS_OK);
  js = run_tool(cluster.socket(3), "status --json");
  EXPECT_NE(js.find("\"state\":\"normal\""), std::string::npos) << js;
  EXPECT_NE(js.find("\"blocked\":false"), std::string::npos) << js;
  EXPECT_EQ(cpg_finalize(h2), CS_OK);
  EXPECT_EQ(cpg_finalize(h), CS_OK);
  cluster.stop();
  EXPECT_EQ(cluster.problems(), "");
}

// ---------------------------------------------------------------- streams

struct Received {
  std::vector<std::pair<uint32_t, std::vector<std::byte>>> messages;  // (nodeid, bytes)
  std::vector<cpg_address> left;
};
Received g_rx;

void rx_deliver(cpg_handle_t, const cpg_name*, uint32_t nodeid, uint32_t, void* msg, size_t len) {
  auto* b = static_cast<const std::byte*>(msg);
  g_rx.messages.emplace_back(nodeid, std::vector<std::byte>(b, b + len));
}
void rx_confchg(cpg_handle_t, const cpg_name*, const cpg_address*, size_t, const cpg_address* l,
                size_t nl, const cpg_address*, size_t) {
  g_rx.left.insert(g_rx.left.end(), l, l + nl);
}

// A node dies in the middle of a message streamed in parts: libcpg on the
// other nodes drops the unfinished message at the NODEDOWN confchg (nothing
// is delivered, nothing stays allocated), so when the restarted node's
// process with the same (nodeid, pid) streams again, its message arrives
// whole instead of being taken for a continuation.
TEST(Failures, PartsOfAMessageFromAKilledNodeAreDropped) {
  DaemonCluster cluster(3);
  LogsOnFailure logs{cluster, 3};
  std::string why;
  ASSERT_TRUE(cluster.start(why)) << why;
  ::setenv("RCPG_SOCKET", cluster.socket(1).c_str(), 1);
  cpg_callbacks_t cb{};
  cb.cpg_deliver_fn = rx_deliver;
  cb.cpg_confchg_fn = rx_confchg;
  cpg_handle_t h = 0;
  ASSERT_EQ(cpg_initialize(&h, &cb), CS_OK);
  cpg_name g{};
  g.length = 6;
  std::memcpy(g.value, "stream", 6);
  ASSERT_EQ(cpg_join(h, &g), CS_OK);
  auto tx = std::make_unique<IpcTestClient>();
  ASSERT_TRUE(tx->connect(cluster.socket(3), why) && tx->hello(why)) << why;
  ASSERT_EQ(tx->join("stream"), Status::Ok);
  std::vector<ipc::MemberEntry> m;
  for (auto until = Clock::now() + 10s; Clock::now() < until && m.size() < 2;) {
    ASSERT_EQ(cpg_dispatch(h, CS_DISPATCH_ALL), CS_OK);
    ASSERT_EQ(tx->membership("stream", m), Status::Ok);
  }
  ASSERT_EQ(m.size(), 2u);
  const size_t atomic = tx->hello_reply().max_atomic_msg;
  const size_t big = 256 * atomic + 5;  // hundreds of parts
  auto parts_delivered = [&] {
    return json_number(status_json(cluster, 1), "deliveries_by_log_reference").value_or(0) +
           json_number(status_json(cluster, 1), "deliveries_copied").value_or(0);
  };
  const uint64_t before = parts_delivered();
  std::vector<std::byte> payload = pattern(3, 1, big);
  std::thread sender([&] { tx->mcast(2, payload, 30s); });  // fails when its daemon dies
  bool started = false;
  for (auto until = Clock::now() + 20s; Clock::now() < until && !started;) {
    ASSERT_EQ(cpg_dispatch(h, CS_DISPATCH_ALL), CS_OK);
    started = parts_delivered() > before + 3;
  }
  ASSERT_TRUE(started) << "no part of the message arrived";
  cluster.kill_node(3);
  sender.join();
  tx.reset();
  ASSERT_TRUE(dispatch_until(h, [] { return !g_rx.left.empty(); }));
  EXPECT_EQ(g_rx.left[0].reason, static_cast<uint32_t>(CPG_REASON_NODEDOWN));
  const uint64_t parts = parts_delivered() - before;
  EXPECT_LT(parts, big / atomic + 1) << "the whole message arrived before the kill";
  EXPECT_TRUE(g_rx.messages.empty()) << "part of a message was delivered";

  ASSERT_TRUE(cluster.restart_node(3, why)) << why;
  ASSERT_TRUE(cluster.wait_view({1, 2, 3}, why)) << why;
  IpcTestClient again;  // the same pid on the same node
  ASSERT_TRUE(again.connect(cluster.socket(3), why) && again.hello(why)) << why;
  ASSERT_EQ(again.join("stream"), Status::Ok);
  const std::vector<std::byte> whole = pattern(3, 2, 3 * atomic + 7);
  ASSERT_TRUE(again.mcast(2, whole));
  ASSERT_TRUE(dispatch_until(h, [] { return !g_rx.messages.empty(); }));
  EXPECT_EQ(g_rx.messages[0].first, 3u);
  EXPECT_TRUE(g_rx.messages[0].second == whole) << g_rx.messages[0].second.size() << " bytes";
  EXPECT_EQ(cpg_finalize(h), CS_OK);
  cluster.stop();
  EXPECT_EQ(cluster.problems(), "");
}

}  // namespace
}  // namespace rcpg::test
