// rcpgd as a process: clients speaking api/ipc/protocol.h directly (see
// ipc_test_client.h) against one daemon. Multi-daemon tests: cluster_test.cpp.
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
#include "test_util.h"

namespace rcpg::test {
namespace {

using namespace std::chrono_literals;
using ipc::RecordType;
using ipc::Status;

class SingleNode : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    ASSERT_TRUE(cluster_.start(why)) << why;
  }
  void TearDown() override {
    cluster_.stop();
    EXPECT_EQ(cluster_.problems(), "");
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

// The empty name is a group like any other: a member that goes away is
// removed from it (found by the fuzzer: a stale slot got later members'
// confchgs twice, or a destroyed client's).
TEST_F(SingleNode, EmptyGroupNameMembersAreForgottenWhenTheyGo) {
  {
    IpcTestClient a;
    connect(a);
    ASSERT_EQ(a.join(""), Status::Ok);
    ASSERT_TRUE(next_of(a, RecordType::Confchg));
    EXPECT_EQ(a.finalize(), Status::Ok);
  }
  IpcTestClient b;
  connect(b);
  ASSERT_EQ(b.join(""), Status::Ok);
  auto cc = next_of(b, RecordType::Confchg);
  ASSERT_TRUE(cc);
  // Exactly one confchg for its join (after the first member's PROCDOWN
  // left, which b never saw), then its own message.
  EXPECT_NE(cc->describe().find("joined[1]"), std::string::npos) << cc->describe();
  ASSERT_TRUE(b.mcast(2, pattern(5, 0, 8)));
  auto e = b.next_event(5s);
  while (e && e->type == RecordType::TotemConfchg) e = b.next_event(5s);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->type, RecordType::Deliver) << e->describe();
}

// CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF: only a handle that asked for it
// gets the TotemConfchg after its join.
TEST_F(SingleNode, InitialTotemConfchgOnlyWhenAskedFor) {
  IpcTestClient with, without;
  std::string why;
  ASSERT_TRUE(with.connect(cluster_.socket(1), why) && with.hello(why)) << why;
  ASSERT_TRUE(without.connect(cluster_.socket(1), why) && without.hello(why, 0)) << why;
  ASSERT_EQ(with.join("t1"), Status::Ok);
  ASSERT_EQ(without.join("t2"), Status::Ok);
  auto e = with.next_event(5s);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->type, RecordType::Confchg);
  e = with.next_event(5s);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->describe(), "TOTEM ring=(1,1) members[1]={1}");
  e = without.next_event(5s);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->type, RecordType::Confchg);
  // A message sent after the join is the next event: no TotemConfchg between.
  ASSERT_TRUE(without.mcast(2, pattern(4, 4, 10)));
  e = without.next_event(5s);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->type, RecordType::Deliver) << e->describe();
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

}  // namespace
}  // namespace rcpg::test
