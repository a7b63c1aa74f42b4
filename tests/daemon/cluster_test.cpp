// Several rcpgd processes: a 3-daemon cluster whose clients must all see
// the same deliveries and confchgs (on shm natively; on verbs under
// `scripts/softroce --hosts 3`), and zero-copy sends from a node that is not
// the sequencer, including a client that exits with sends in flight.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>

#include "daemon_cluster.h"
#include "ipc_test_client.h"
#include "test_util.h"

namespace rcpg::test {
namespace {

using namespace std::chrono_literals;
using ipc::RecordType;
using ipc::Status;

size_t host_count() {
  const char* env = std::getenv("RCPG_HOST_ADDRS");
  if (!env || !*env) return 0;
  return 1 + static_cast<size_t>(std::count(env, env + std::strlen(env), ','));
}

// For tests that stop a daemon (SIGSTOP) on purpose, for well under a
// second: it must not be taken for dead and removed from the view meanwhile.
// (Not longer: the engine's round timeouts, e.g. for adding a node the first
// view missed, are 4 x suspect_timeout.)
constexpr const char* kNoSuspicion =
    "[membership]\nheartbeat_interval_ms = 20\nsuspect_timeout_ms = 2000\n";

// Adds every daemon's log to a failing test, however it ends.
struct LogsOnFailure {
  const DaemonCluster& cluster;
  int nodes;
  ~LogsOnFailure() {
    if (::testing::Test::HasFailure())
      for (int n = 1; n <= nodes; ++n)
        ADD_FAILURE() << "rcpgd " << n << " log:\n" << cluster.log_of(n);
  }
};

class Fabric : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "verbs" && host_count() < 3) {
      if (std::getenv("RCPG_REQUIRE_VERBS")) FAIL() << "verbs required but fewer than 3 hosts";
      GTEST_SKIP() << "needs 3 RDMA hosts (scripts/softroce --hosts 3)";
    }
  }
};

// Five client processes on three daemons (nodes 1,1,2,3,3) join one group,
// all send concurrently (every guarantee, atomic, chunked and zero-copy
// messages), and must see the same sequence of deliveries; then one leaves,
// one exits, and the rest see the same two confchgs. Zero-copy sends leave
// without a CPU copy everywhere but at the sequencer.
TEST_P(Fabric, ThreeNodesFiveClientsSeeTheSameOrder) {
  DaemonCluster cluster(3, GetParam());
  LogsOnFailure logs{cluster, 3};
  std::string why;
  ASSERT_TRUE(cluster.start(why)) << why;
  const int kClients = 5, kPerClient = GetParam() == "verbs" ? 10 : 24;
  const int node_of[kClients] = {1, 1, 2, 3, 3};
  int cmd[kClients][2], rep[kClients][2];
  pid_t pids[kClients];
  for (int k = 0; k < kClients; ++k) {
    ASSERT_EQ(pipe(cmd[k]), 0);
    ASSERT_EQ(pipe(rep[k]), 0);
  }
  auto report = [&](int k, const std::string& s) {
    uint32_t n = static_cast<uint32_t>(s.size());
    return write(rep[k][1], &n, 4) == 4 && write(rep[k][1], s.data(), n) == static_cast<ssize_t>(n);
  };
  for (int k = 0; k < kClients; ++k) {
    std::string sock = cluster.socket(node_of[k]);
    pids[k] = spawn([&, k, sock]() -> int {
      IpcTestClient c;
      std::string err;
      if (!c.connect(sock, err) || !c.hello(err)) return 10;
      if (c.join("order") != Status::Ok) return 11;
      std::string transcript;
      for (;;) {  // wait for everyone
        auto e = c.next_event(30s);
        if (!e) return 12;
        if (e->type == RecordType::Confchg && e->members.size() == kClients) {
          transcript = e->describe() + "\n";
          break;
        }
      }
      size_t atomic = c.hello_reply().max_atomic_msg;
      const size_t sizes[] = {1, 64, 1000, 4096, atomic, atomic + 3, 3 * atomic};
      for (int i = 0; i < kPerClient; ++i) {
        auto p = pattern(static_cast<uint32_t>(k), static_cast<uint32_t>(i), sizes[i % 7] + 8);
        // AGREED and SAFE: one total order. (UNORDERED/FIFO may be delivered
        // ahead of a SAFE entry, at a point that differs between nodes.)
        uint32_t g = 2 + static_cast<uint32_t>(i % 2);
        bool ok = i % 5 == 4 ? c.zcb_mcast(g, p) == Status::Ok : c.mcast(g, p);
        if (!ok) {
          fprintf(stderr, "client %d: send %d (%zu bytes%s) failed\n", k, i, p.size(),
                  i % 5 == 4 ? ", zero-copy" : "");
          return 13;
        }
      }
      int got = 0;
      std::map<uint32_t, uint32_t> next;  // sender client index -> next message index
      while (got < kClients * kPerClient) {
        auto e = c.next_event(30s);
        if (!e) return 14;
        if (e->type == RecordType::TotemConfchg) continue;  // after the last joiner's own confchg
        if (e->type != RecordType::Deliver) return 15;
        uint32_t a, b;
        std::memcpy(&a, e->data.data(), 4);
        std::memcpy(&b, e->data.data() + 4, 4);
        if (b != next[a]++ || e->data != pattern(a, b, sizes[b % 7] + 8)) {
          fprintf(stderr,
                  "client %d: delivery %d from (%u,%u) is message %u/%u of client %u, %zu bytes\n",
                  k, got, e->nodeid, e->pid, b, next[a] - 1, a, e->data.size());
          return 16;
        }
        transcript += e->describe() + "\n";
        ++got;
      }
      if (!report(k, transcript)) return 17;
      char what;
      if (read(cmd[k][0], &what, 1) != 1) return 18;
      if (what == 'X') return 0;  // exit without leaving: PROCDOWN
      if (what == 'L') {
        if (c.leave("order") != Status::Ok) return 19;
        auto e = next_of(c, RecordType::Confchg);
        return e && e->left.size() == 1 && e->left[0].reason == 2 ? 0 : 20;
      }
      std::string seen;  // 'W': the next two membership changes
      for (int i = 0; i < 2; ++i) {
        auto e = next_of(c, RecordType::Confchg, 30s);
        if (!e) return 21;
        seen += e->describe() + "\n";
      }
      return report(k, seen) ? 0 : 22;
    });
  }
  auto read_report = [&](int k) {
    uint32_t n = 0;
    if (read(rep[k][0], &n, 4) != 4) return std::string("<no report>");
    std::string s(n, '\0');
    size_t off = 0;
    while (off < n) {
      ssize_t r = read(rep[k][0], s.data() + off, n - off);
      if (r <= 0) return std::string("<short report>");
      off += static_cast<size_t>(r);
    }
    return s;
  };
  for (int k = 0; k < kClients; ++k) close(rep[k][1]);
  std::vector<std::string> transcripts;
  for (int k = 0; k < kClients; ++k) transcripts.push_back(read_report(k));
  for (int k = 0; k < kClients; ++k) {
    EXPECT_EQ(std::count(transcripts[k].begin(), transcripts[k].end(), '\n'),
              1 + kClients * kPerClient)
        << "client " << k;
    EXPECT_EQ(transcripts[k], transcripts[0]) << "client " << k << " saw another order";
  }
  // Expected member list: ordered by (nodeid, pid).
  std::vector<std::pair<int, pid_t>> members;
  for (int k = 0; k < kClients; ++k) members.push_back({node_of[k], pids[k]});
  std::sort(members.begin(), members.end());
  std::string all = "members[5]={";
  for (size_t i = 0; i < members.size(); ++i)
    all += (i ? "," : "") + member(members[i].first, members[i].second, "UNDEFINED");
  EXPECT_EQ(transcripts[0].find("CONFCHG group=order " + all + "}"), 0u) << transcripts[0];

  // Client 0 leaves, then client 3 exits; 1, 2 and 4 see both, identically.
  ASSERT_EQ(write(cmd[0][1], "L", 1), 1);
  EXPECT_EQ(wait_exit(pids[0]), 0);
  ASSERT_EQ(write(cmd[3][1], "X", 1), 1);
  EXPECT_EQ(wait_exit(pids[3]), 0);
  for (int k : {1, 2, 4}) ASSERT_EQ(write(cmd[k][1], "W", 1), 1);
  auto without = [&](std::vector<pid_t> gone) {
    std::string s;
    int n = 0;
    for (auto& [node, pid] : members) {
      if (std::find(gone.begin(), gone.end(), pid) != gone.end()) continue;
      s += (n++ ? "," : "") + member(node, pid, "UNDEFINED");
    }
    return "members[" + std::to_string(n) + "]={" + s + "}";
  };
  std::string expect = "CONFCHG group=order " + without({pids[0]}) + " left[1]={" +
                       member(1, pids[0], "LEAVE") + "} joined[0]={}\n" + "CONFCHG group=order " +
                       without({pids[0], pids[3]}) + " left[1]={" + member(3, pids[3], "PROCDOWN") +
                       "} joined[0]={}\n";
  for (int k : {1, 2, 4}) {
    EXPECT_EQ(read_report(k), expect) << "client " << k;
    EXPECT_EQ(wait_exit(pids[k]), 0) << "client " << k;
  }
  for (int k = 0; k < kClients; ++k) {
    close(cmd[k][0]);
    close(cmd[k][1]);
    close(rep[k][0]);
  }
  IpcTestClient probe;
  ASSERT_TRUE(probe.connect(cluster.socket(1), why)) << why;
  auto seq = json_number(probe.status_text(2, 1), "sequencer");
  ASSERT_TRUE(seq);
  for (int n = 1; n <= 3; ++n) {
    IpcTestClient q;
    ASSERT_TRUE(q.connect(cluster.socket(n), why)) << why;
    std::string js = q.status_text(2, 1);
    int zcb_senders = static_cast<int>(std::count(node_of, node_of + kClients, n));
    EXPECT_EQ(json_number(js, "zcb_msgs"), static_cast<uint64_t>(zcb_senders * (kPerClient / 5)))
        << js;
    EXPECT_EQ(json_number(js, "zcb_register_failures"), 0u) << js;
    if (static_cast<uint64_t>(n) == *seq) {
      EXPECT_EQ(json_number(js, "zero_copy_sends"), 0u) << js;
      EXPECT_GT(json_number(js, "copied_sends").value_or(0), 0u) << js;
    } else {
      EXPECT_GT(json_number(js, "zero_copy_sends").value_or(0), 0u) << js;
      EXPECT_GT(json_number(js, "zcb_bytes_not_copied").value_or(0), 0u) << js;
      EXPECT_EQ(json_number(js, "copied_sends"), 0u) << js;
    }
  }
  cluster.stop();
  EXPECT_EQ(cluster.problems(), "");
}

// Gathers deliveries and confchgs from several in-process clients, pumping
// them in turn so that none holds log space the others wait for, until
// `enough` holds for each client's list (or the timeout passes).
using Events = std::vector<TestEvent>;
std::vector<Events> gather(std::vector<IpcTestClient*> clients,
                           const std::function<bool(const Events&)>& enough,
                           std::chrono::milliseconds timeout = 30s) {
  std::vector<Events> got(clients.size());
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (bool done = false; !done && std::chrono::steady_clock::now() < deadline;) {
    done = true;
    for (size_t k = 0; k < clients.size(); ++k) {
      if (enough(got[k])) continue;
      done = false;
      auto e = clients[k]->next_event(5ms);
      if (e && (e->type == RecordType::Deliver || e->type == RecordType::Confchg))
        got[k].push_back(std::move(*e));
    }
  }
  return got;
}

std::vector<Events> gather(std::vector<IpcTestClient*> clients, size_t want) {
  return gather(clients, [want](const Events& e) { return e.size() >= want; });
}

// The Status report's counters (JSON) of one node.
std::string counters_json(const DaemonCluster& cluster, int node) {
  IpcTestClient q;
  std::string err;
  return q.connect(cluster.socket(node), err) ? q.status_text(2, 1) : std::string();
}

uint64_t counter(const std::string& js, const char* key) {
  return json_number(js, key).value_or(~uint64_t{0});
}

// One client per node of a 3-node cluster, all in group "zc" and all past
// the confchg that shows the three; `seq` = the sequencer's node id.
bool join_one_per_node(const DaemonCluster& cluster, IpcTestClient (&c)[3], int& seq,
                       std::string& why) {
  for (int n = 1; n <= 3; ++n) {
    if (!c[n - 1].connect(cluster.socket(n), why) || !c[n - 1].hello(why)) return false;
    if (c[n - 1].join("zc") != Status::Ok) return (why = "join failed"), false;
  }
  for (int k = 0; k < 3; ++k)
    for (;;) {
      auto e = next_of(c[k], RecordType::Confchg);
      if (!e) return (why = "no confchg at node " + std::to_string(k + 1)), false;
      if (e->members.size() == 3) break;
    }
  auto sq = json_number(counters_json(cluster, 1), "sequencer");
  if (!sq || *sq < 1 || *sq > 3) return (why = "no sequencer in the status report"), false;
  seq = static_cast<int>(*sq);
  return true;
}

// A client on a node that is not the sequencer sends zero-copy messages
// (empty, small, one fragment, several fragments): every byte leaves from
// its pool without a CPU copy (engine zero_copy_sends, daemon
// zcb_bytes_not_copied) and arrives intact at a client on every node. Then
// a client process posts several multi-fragment zero-copy messages and exits
// at once, their parts in flight: its daemon keeps the segment registered
// until the NIC is done, delivers them intact everywhere, reports the
// PROCDOWN and carries on (and, under ASan, stays clean).
TEST_P(Fabric, ZeroCopySendsFromANonSequencerNode) {
  DaemonCluster cluster(3, GetParam(), kNoSuspicion);
  LogsOnFailure logs{cluster, 3};
  std::string why;
  ASSERT_TRUE(cluster.start(why)) << why;
  IpcTestClient c[3];
  int seq = 0;
  ASSERT_TRUE(join_one_per_node(cluster, c, seq, why)) << why;
  std::vector<IpcTestClient*> all = {&c[0], &c[1], &c[2]};
  auto status = [&](int node) { return counters_json(cluster, node); };
  const int s = seq % 3 + 1;  // any node but the sequencer
  IpcTestClient& tx = c[s - 1];

  std::string before = status(s);
  const size_t atomic = tx.hello_reply().max_atomic_msg;
  const std::vector<size_t> sizes = {0, 1, 5000, atomic, atomic + 1, 3 * atomic + 17};
  uint64_t bytes = 0, wire_parts = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    auto p = pattern(static_cast<uint32_t>(s), static_cast<uint32_t>(i), sizes[i]);
    ASSERT_EQ(tx.zcb_mcast(2, p, 64 + 4160 * i), Status::Ok) << "message " << i;
    bytes += sizes[i];
    wire_parts += (sizes[i] + atomic - 1) / atomic;
  }
  auto got = gather(all, sizes.size());
  for (int k = 0; k < 3; ++k) {
    ASSERT_EQ(got[k].size(), sizes.size()) << "client on node " << k + 1;
    for (size_t i = 0; i < sizes.size(); ++i) {
      ASSERT_EQ(got[k][i].type, RecordType::Deliver);
      EXPECT_EQ(got[k][i].nodeid, static_cast<uint32_t>(s));
      EXPECT_EQ(got[k][i].pid, static_cast<uint32_t>(getpid()));
      EXPECT_EQ(got[k][i].data,
                pattern(static_cast<uint32_t>(s), static_cast<uint32_t>(i), sizes[i]))
          << "message " << i << " at node " << k + 1;
    }
  }
  std::string after = status(s);
  EXPECT_EQ(counter(after, "zero_copy_sends") - counter(before, "zero_copy_sends"), wire_parts)
      << after;
  EXPECT_EQ(counter(after, "copied_sends"), counter(before, "copied_sends")) << after;
  EXPECT_EQ(counter(after, "zcb_msgs") - counter(before, "zcb_msgs"), sizes.size()) << after;
  EXPECT_EQ(counter(after, "zcb_parts_zero_copy") - counter(before, "zcb_parts_zero_copy"),
            wire_parts)
      << after;
  EXPECT_EQ(counter(after, "zcb_bytes_not_copied") - counter(before, "zcb_bytes_not_copied"), bytes)
      << after;
  EXPECT_EQ(counter(after, "zcb_bytes_copied"), 0u) << after;

  // A client that exits with zero-copy sends outstanding. Its daemon is
  // stopped while it posts them and exits, so the daemon sees the hangup
  // with the messages still to send.
  int ready[2], go[2];
  ASSERT_EQ(pipe(ready), 0);
  ASSERT_EQ(pipe(go), 0);
  // One two-part message, then many small ones: the daemon needs a round
  // trip per message (one zero-copy message at a time), so it sees the
  // hangup before it is through them and ends the client with the last one's
  // parts still in flight. Together they fit the engine's inbound ring.
  const int kLast = 150;
  auto size_of = [atomic](uint32_t i) { return i == 0 ? atomic + 1 : size_t{100}; };
  std::string sock = cluster.socket(s);
  pid_t child = spawn([&]() -> int {
    IpcTestClient e;
    std::string err;
    if (!e.connect(sock, err) || !e.hello(err) || e.join("zc") != Status::Ok) return 1;
    for (;;) {
      auto ev = next_of(e, RecordType::Confchg);
      if (!ev) return 2;
      if (ev->members.size() == 4) break;
    }
    if (write(ready[1], "r", 1) != 1) return 3;
    char b;
    if (read(go[0], &b, 1) != 1) return 4;
    for (uint32_t i = 0, off = 64; i < kLast; off += static_cast<uint32_t>(size_of(i++)))
      if (!e.zcb_post(2, pattern(99, i, size_of(i)), off)) return 5;
    return 0;  // without waiting for a single ticket
  });
  char b;
  ASSERT_EQ(read(ready[0], &b, 1), 1);
  kill(cluster.pid(s), SIGSTOP);
  ASSERT_EQ(write(go[1], "g", 1), 1);
  EXPECT_EQ(wait_exit(child), 0);
  kill(cluster.pid(s), SIGCONT);
  close(ready[0]);
  close(ready[1]);
  close(go[0]);
  close(go[1]);
  // Each client: the join, the exited client's messages, its PROCDOWN. A
  // record whose first part found no engine credit was answered TryAgain
  // (the client would have retried): every other one arrives, intact, in
  // the same order everywhere.
  got = gather(all, [](const Events& e) {
    return !e.empty() && e.back().type == RecordType::Confchg && !e.back().left.empty();
  });
  uint64_t try_again = counter(status(s), "zcb_try_again") - counter(after, "zcb_try_again");
  std::string first;
  for (int k = 0; k < 3; ++k) {
    std::string seen;
    for (const TestEvent& e : got[k]) seen += e.describe() + "\n";
    if (k == 0) first = seen;
    EXPECT_EQ(seen, first) << "client on node " << k + 1;
    ASSERT_EQ(got[k].size(), kLast - try_again + 2) << "client on node " << k + 1 << ":\n" << seen;
    ASSERT_EQ(got[k][0].type, RecordType::Confchg);
    EXPECT_EQ(got[k][0].joined.size(), 1u);
    uint32_t next = 0;
    for (size_t i = 1; i + 1 < got[k].size(); ++i) {
      const TestEvent& d = got[k][i];
      ASSERT_EQ(d.type, RecordType::Deliver) << "event " << i << " at node " << k + 1;
      EXPECT_EQ(d.pid, static_cast<uint32_t>(child));
      ASSERT_GE(d.data.size(), 8u);
      uint32_t idx;
      std::memcpy(&idx, d.data.data() + 4, 4);
      EXPECT_GE(idx, next) << "at node " << k + 1;
      next = idx + 1;
      EXPECT_EQ(d.data, pattern(99, idx, size_of(idx)))
          << "message " << idx << " at node " << k + 1;
    }
    const TestEvent& l = got[k].back();
    ASSERT_EQ(l.left.size(), 1u);
    EXPECT_EQ(l.left[0].pid, static_cast<uint32_t>(child));
    EXPECT_EQ(l.left[0].reason, 5u);  // PROCDOWN
  }
  // Its daemon still serves zero-copy sends.
  ASSERT_EQ(tx.zcb_mcast(2, pattern(7, 7, atomic + 9), 64), Status::Ok);
  got = gather(all, 1);
  for (int k = 0; k < 3; ++k) {
    ASSERT_EQ(got[k].size(), 1u);
    ASSERT_EQ(got[k][0].type, RecordType::Deliver);
    EXPECT_EQ(got[k][0].data, pattern(7, 7, atomic + 9));
  }
  after = status(s);
  EXPECT_EQ(counter(after, "zcb_failed"), 0u) << after;
  EXPECT_EQ(try_again, 0u) << after;
  EXPECT_EQ(counter(after, "zcb_held_after_exit"), 1u) << after;
  RecordProperty("zcb_held_after_exit", std::to_string(counter(after, "zcb_held_after_exit")));
  std::printf("zero-copy sends in flight when the client went away: zcb_held_after_exit=%lu\n",
              static_cast<unsigned long>(counter(after, "zcb_held_after_exit")));
  cluster.stop();
  EXPECT_EQ(cluster.problems(), "");
}

// With the sequencer stopped no engine credit comes back. A zero-copy
// message larger than the sender's inbound ring then gets its first parts
// in and waits for the rest (no answer yet, the daemon still serving
// everyone); another handle's zero-copy message, whose first part finds no
// room, is answered TryAgain at once. Once the sequencer runs again the
// waiting parts follow and the message arrives intact everywhere.
TEST_P(Fabric, ZeroCopyMessageWaitsForCreditAndOthersGetTryAgain) {
  DaemonCluster cluster(3, GetParam(), kNoSuspicion);
  LogsOnFailure logs{cluster, 3};
  std::string why;
  ASSERT_TRUE(cluster.start(why)) << why;
  IpcTestClient c[3];
  int seq = 0;
  ASSERT_TRUE(join_one_per_node(cluster, c, seq, why)) << why;
  const int s = seq % 3 + 1;
  IpcTestClient& tx = c[s - 1];
  IpcTestClient other;  // same node, another group
  ASSERT_TRUE(other.connect(cluster.socket(s), why) && other.hello(why)) << why;
  ASSERT_EQ(other.join("zc-other"), Status::Ok);
  ASSERT_TRUE(next_of(other, RecordType::Confchg));
  const size_t atomic = tx.hello_reply().max_atomic_msg;
  const size_t big = 5 * atomic + 3;  // 6 parts: more than the 1 MiB inbound ring
  auto wait_ticket = [](IpcTestClient& cl, uint64_t ticket, std::chrono::milliseconds t) {
    auto until = std::chrono::steady_clock::now() + t;
    while (cl.header()->zcb_done.value.load(std::memory_order_acquire) < ticket)
      if (std::chrono::steady_clock::now() > until) return false;
    return true;
  };
  auto zcb_status = [](IpcTestClient& cl) {
    return static_cast<Status>(
        static_cast<int32_t>(cl.header()->zcb_status.value.load(std::memory_order_acquire)));
  };

  kill(cluster.pid(seq), SIGSTOP);
  uint64_t t1 = tx.zcb_post(3, pattern(1, 1, big), 64);
  ASSERT_NE(t1, 0u);
  EXPECT_FALSE(wait_ticket(tx, t1, 300ms)) << "answered without its last parts in the engine";
  std::string mid = counters_json(cluster, s);  // the daemon still answers
  EXPECT_GT(counter(mid, "credit_stalls"), 0u) << mid;
  EXPECT_EQ(counter(mid, "zcb_msgs"), 0u) << mid;
  uint64_t t2 = other.zcb_post(2, pattern(2, 2, atomic), 64);
  ASSERT_NE(t2, 0u);
  ASSERT_TRUE(wait_ticket(other, t2, 10s)) << "no answer while the engine is full";
  EXPECT_EQ(zcb_status(other), Status::TryAgain);
  EXPECT_FALSE(wait_ticket(tx, t1, 1ms));
  kill(cluster.pid(seq), SIGCONT);

  ASSERT_TRUE(wait_ticket(tx, t1, 30s));
  EXPECT_EQ(zcb_status(tx), Status::Ok);
  auto got = gather({&c[0], &c[1], &c[2]}, 1);
  for (int k = 0; k < 3; ++k) {
    ASSERT_EQ(got[k].size(), 1u) << "node " << k + 1;
    EXPECT_EQ(got[k][0].type, RecordType::Deliver);
    EXPECT_EQ(got[k][0].data, pattern(1, 1, big)) << "node " << k + 1;
  }
  // The refused message goes through when retried.
  ASSERT_EQ(other.zcb_mcast(2, pattern(2, 2, atomic), 64), Status::Ok);
  auto d = next_of(other, RecordType::Deliver);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->data, pattern(2, 2, atomic));
  std::string end = counters_json(cluster, s);
  EXPECT_EQ(counter(end, "zcb_try_again"), 1u) << end;
  EXPECT_EQ(counter(end, "zcb_msgs"), 2u) << end;
  EXPECT_EQ(counter(end, "zcb_bytes_not_copied"), big + atomic) << end;
  cluster.stop();
  EXPECT_EQ(cluster.problems(), "");
}

INSTANTIATE_TEST_SUITE_P(Cluster, Fabric, ::testing::Values("shm", "verbs"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace rcpg::test
