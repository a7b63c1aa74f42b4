// rcpgd as processes: clients speaking api/ipc/protocol.h directly (see
// ipc_test_client.h) against one daemon, and a 3-daemon cluster on shm with
// five client processes that must see identical message and confchg orders.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>

#include "daemon_cluster.h"
#include "ipc_test_client.h"

namespace rcpg::test {
namespace {

using namespace std::chrono_literals;
using ipc::RecordType;
using ipc::Status;

std::vector<std::byte> pattern(uint32_t a, uint32_t b, size_t n) {
  std::vector<std::byte> v(n);
  uint32_t x = a * 2654435761u + b * 40503u + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    v[i] = static_cast<std::byte>(x);
  }
  if (n >= 8) {
    std::memcpy(v.data(), &a, 4);
    std::memcpy(v.data() + 4, &b, 4);
  }
  return v;
}

// Forks a child running `body`; its return value is the exit status.
pid_t spawn(const std::function<int()>& body) {
  fflush(nullptr);
  pid_t p = fork();
  if (p == 0) _exit(body());
  return p;
}

int wait_exit(pid_t p) {
  int st = 0;
  waitpid(p, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

std::optional<TestEvent> next_of(IpcTestClient& c, RecordType t,
                                 std::chrono::milliseconds timeout = 10s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto e = c.next_event(100ms);
    if (e && e->type == t) return e;
  }
  return std::nullopt;
}

std::string member(uint32_t node, pid_t pid, const char* reason) {
  return "(" + std::to_string(node) + "," + std::to_string(pid) + "," + reason + ")";
}

class SingleNode : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    ASSERT_TRUE(cluster_.start(why)) << why;
  }
  void connect(IpcTestClient& c) {
    std::string why;
    ASSERT_TRUE(c.connect(cluster_.socket(1), why)) << why;
    ASSERT_TRUE(c.hello(why)) << why;
  }
  DaemonCluster cluster_{1};
};

TEST_F(SingleNode, JoinMcastDeliverLeave) {
  IpcTestClient c;
  connect(c);
  pid_t me = getpid();
  EXPECT_EQ(c.nodeid(), 1u);
  ASSERT_GT(c.hello_reply().max_atomic_msg, 1000u);
  ASSERT_GT(c.hello_reply().log_bytes, 0u);  // zero-copy receive on shm

  EXPECT_EQ(c.leave("g"), Status::NotExist);  // before join
  EXPECT_EQ(c.join(std::string(129, 'x')), Status::NameTooLong);
  ASSERT_EQ(c.join("g"), Status::Ok);
  auto cc = next_of(c, RecordType::Confchg);
  ASSERT_TRUE(cc);
  EXPECT_EQ(cc->describe(), "CONFCHG group=g members[1]={" + member(1, me, "UNDEFINED") +
                                "} left[0]={} joined[1]={" + member(1, me, "JOIN") + "}");
  auto totem = c.next_event(5s);
  ASSERT_TRUE(totem);
  EXPECT_EQ(totem->describe(), "TOTEM ring=(1,1) members[1]={1}");
  EXPECT_EQ(c.join("g"), Status::Exist);
  EXPECT_EQ(c.join("other"), Status::Exist);

  // Sizes around the record limit, a chunked message and zero-copy sends
  // (one sender, so every guarantee keeps the send order here).
  size_t atomic = c.hello_reply().max_atomic_msg;
  std::vector<size_t> sizes = {0, 1, 100, 4096, atomic, atomic + 1, 3 * atomic + 17};
  for (size_t i = 0; i < sizes.size(); ++i)
    ASSERT_TRUE(
        c.mcast(static_cast<uint32_t>(i % 4), pattern(1, static_cast<uint32_t>(i), sizes[i])));
  ASSERT_EQ(c.zcb_mcast(2, pattern(2, 0, 5000)), Status::Ok);
  ASSERT_EQ(c.zcb_mcast(2, pattern(2, 1, 2 * atomic + 5), 4096), Status::Ok);
  for (size_t i = 0; i < sizes.size(); ++i) {
    auto d = next_of(c, RecordType::Deliver);
    ASSERT_TRUE(d) << i;
    EXPECT_EQ(d->nodeid, 1u);
    EXPECT_EQ(d->pid, static_cast<uint32_t>(me));
    EXPECT_EQ(d->data, pattern(1, static_cast<uint32_t>(i), sizes[i])) << "message " << i;
    EXPECT_TRUE(d->by_reference);
  }
  for (uint32_t i = 0; i < 2; ++i) {
    auto d = next_of(c, RecordType::Deliver);
    ASSERT_TRUE(d);
    EXPECT_EQ(d->data, pattern(2, i, i == 0 ? 5000 : 2 * atomic + 5));
  }
  std::vector<ipc::MemberEntry> m;
  ASSERT_EQ(c.membership("g", m), Status::Ok);
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].pid, static_cast<uint32_t>(me));
  ASSERT_EQ(c.membership("nobody", m), Status::Ok);
  EXPECT_TRUE(m.empty());

  EXPECT_EQ(c.leave("other"), Status::NotExist);
  ASSERT_EQ(c.leave("g"), Status::Ok);
  cc = next_of(c, RecordType::Confchg);
  ASSERT_TRUE(cc);
  EXPECT_EQ(cc->describe(),
            "CONFCHG group=g members[0]={} left[1]={" + member(1, me, "LEAVE") + "} joined[0]={}");
  EXPECT_EQ(c.leave("g"), Status::NotExist);
  EXPECT_EQ(c.join("g"), Status::Exist);  // one join per handle, ever
  // Sends after leave are accepted and dropped, as with Corosync.
  ASSERT_TRUE(c.mcast(2, pattern(9, 9, 10)));
  EXPECT_EQ(c.zcb_mcast(2, pattern(9, 9, 10)), Status::NotExist);
  EXPECT_FALSE(next_of(c, RecordType::Deliver, 300ms));

  std::string text = c.status_text();
  EXPECT_NE(text.find("deliveries_by_log_reference"), std::string::npos) << text;
  EXPECT_EQ(c.finalize(), Status::Ok);
}

TEST_F(SingleNode, SecondHandleOfTheSameProcessCannotJoinTheSameGroup) {
  IpcTestClient a, b;
  connect(a);
  connect(b);
  ASSERT_EQ(a.join("g"), Status::Ok);
  EXPECT_EQ(b.join("g"), Status::Exist);
  EXPECT_EQ(b.join("g2"), Status::Ok);
}

// Corosync: a process's last messages come before its PROCDOWN; finalize
// without leave and exit/kill -9 all leave with PROCDOWN.
TEST_F(SingleNode, ProcessesThatGoAwayLeaveWithProcdown) {
  IpcTestClient obs;
  connect(obs);
  ASSERT_EQ(obs.join("memb"), Status::Ok);
  ASSERT_TRUE(next_of(obs, RecordType::TotemConfchg));
  pid_t me = getpid();
  std::string sock = cluster_.socket(1);
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  // how: 0 = finalize without leave, 1 = exit, 2 = mcast then wait for SIGKILL
  auto child = [&](int how) {
    return spawn([&, how] {
      IpcTestClient c;
      std::string why;
      if (!c.connect(sock, why) || !c.hello(why) || c.join("memb") != Status::Ok) return 1;
      if (!next_of(c, RecordType::Confchg)) return 2;
      if (how == 0) return c.finalize() == Status::Ok ? 0 : 3;
      if (how == 1) return 0;
      if (!c.mcast(2, pattern(7, 7, 12))) return 4;
      char b;
      [[maybe_unused]] ssize_t r = read(go[0], &b, 1);  // killed while waiting
      return 5;
    });
  };
  for (int how = 0; how < 3; ++how) {
    pid_t p = child(how);
    auto j = next_of(obs, RecordType::Confchg);
    ASSERT_TRUE(j);
    EXPECT_EQ(j->joined.size(), 1u);
    EXPECT_EQ(j->joined[0].pid, static_cast<uint32_t>(p));
    if (how == 2) {
      auto d = next_of(obs, RecordType::Deliver);
      ASSERT_TRUE(d);
      EXPECT_EQ(d->pid, static_cast<uint32_t>(p));
      kill(p, SIGKILL);
    }
    EXPECT_EQ(wait_exit(p), how == 2 ? 128 + SIGKILL : 0);
    auto l = next_of(obs, RecordType::Confchg);
    ASSERT_TRUE(l);
    EXPECT_EQ(l->describe(), "CONFCHG group=memb members[1]={" + member(1, me, "UNDEFINED") +
                                 "} left[1]={" + member(1, p, "PROCDOWN") + "} joined[0]={}")
        << "case " << how;
  }
  close(go[0]);
  close(go[1]);
}

// A client writing garbage is disconnected (and leaves with PROCDOWN); the
// others carry on.
TEST_F(SingleNode, GarbageInTheRequestRingDisconnectsOnlyThatClient) {
  IpcTestClient obs;
  connect(obs);
  ASSERT_EQ(obs.join("g"), Status::Ok);
  ASSERT_TRUE(next_of(obs, RecordType::TotemConfchg));
  std::string sock = cluster_.socket(1);
  struct Garbage {
    const char* what;
    std::function<bool(IpcTestClient&)> write;
  };
  std::vector<Garbage> kinds = {
      {"unknown record type",
       [](IpcTestClient& c) { return c.write_raw(static_cast<RecordType>(77), "abcdefgh", 8); }},
      {"mcast length mismatch",
       [](IpcTestClient& c) {
         ipc::McastRecord m{2, 0, 999};
         return c.write_raw(RecordType::Mcast, &m, sizeof(m));
       }},
      {"zcb outside the pool",
       [](IpcTestClient& c) {
         ipc::ZcbRecord z{2, 0, 0, 4096, 1};  // offset 0 = the segment header
         return c.write_raw(RecordType::ZcbMcast, &z, sizeof(z));
       }},
      {"chunk without first",
       [](IpcTestClient& c) {
         ipc::McastRecord m{2, ipc::kChunkLast, 0};
         return c.write_raw(RecordType::McastChunk, &m, sizeof(m));
       }},
      {"ring head beyond the ring",
       [](IpcTestClient& c) {
         c.header()->request.head.value.store(uint64_t{1} << 40);
         return true;
       }},
  };
  for (const Garbage& g : kinds) {
    pid_t p = spawn([&] {
      IpcTestClient c;
      std::string why;
      if (!c.connect(sock, why) || !c.hello(why) || c.join("g") != Status::Ok) return 1;
      if (!next_of(c, RecordType::Confchg)) return 2;
      if (!g.write(c)) return 3;
      uint64_t one = 1;  // make sure the daemon looks now
      [[maybe_unused]] ssize_t r = write(c.fd(), &one, 0);
      for (int i = 0; i < 100 && !c.daemon_gone(); ++i) c.next_event(50ms);
      return c.daemon_gone() ? 0 : 4;
    });
    auto j = next_of(obs, RecordType::Confchg);
    ASSERT_TRUE(j) << g.what;
    auto l = next_of(obs, RecordType::Confchg);
    ASSERT_TRUE(l) << g.what;
    ASSERT_EQ(l->left.size(), 1u) << g.what;
    EXPECT_EQ(l->left[0].pid, static_cast<uint32_t>(p));
    EXPECT_EQ(l->left[0].reason, 5u) << g.what;  // PROCDOWN
    EXPECT_EQ(wait_exit(p), 0) << g.what;
    // The observer still sends and receives.
    ASSERT_TRUE(obs.mcast(2, pattern(3, 3, 64)));
    auto d = next_of(obs, RecordType::Deliver);
    ASSERT_TRUE(d) << g.what;
    EXPECT_EQ(d->data, pattern(3, 3, 64));
  }
  EXPECT_NE(obs.status_text(2).find("protocol_violations            5"), std::string::npos)
      << obs.status_text(2);
}

TEST_F(SingleNode, DaemonGoneClosesClientSockets) {
  IpcTestClient c;
  connect(c);
  ASSERT_EQ(c.join("g"), Status::Ok);
  cluster_.stop();
  for (int i = 0; i < 100 && !c.daemon_gone(); ++i) c.next_event(20ms);
  EXPECT_TRUE(c.daemon_gone());
  EXPECT_EQ(c.join("h"), Status::Library);
}

// ---------------------------------------------------------------- 3 nodes

// Five client processes on three daemons (nodes 1,1,2,3,3) join one group,
// all send concurrently (every guarantee, atomic, chunked and zero-copy
// messages), and must see the same sequence of deliveries; then one leaves,
// one exits, and the rest see the same two confchgs.
TEST(Cluster, ThreeNodesFiveClientsSeeTheSameOrder) {
  DaemonCluster cluster(3);
  std::string why;
  ASSERT_TRUE(cluster.start(why)) << why;
  const int kClients = 5, kPerClient = 24;
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
  if (HasFailure())
    for (int n = 1; n <= 3; ++n) ADD_FAILURE() << "rcpgd " << n << " log:\n" << cluster.log_of(n);
}

}  // namespace
}  // namespace rcpg::test
