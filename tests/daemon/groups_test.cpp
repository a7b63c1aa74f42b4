// Group membership state machine: the confchg lists of join/leave/procdown
// sequences (compared with the reference transcripts of Corosync 3.1.7 in
// /work/shared/reference) and the local admission rules.
#include <gtest/gtest.h>

#include "daemon/groups.h"

namespace rcpg::daemon {
namespace {

struct Table {
  GroupTable t;
  std::string join(uint32_t node, uint32_t idx, uint32_t pid, const std::string& name) {
    Confchg c;
    std::string why;
    if (!t.apply_join(node, idx, pid, name, c, why)) return "refused: " + why;
    return format_confchg(c);
  }
  std::string leave(uint32_t node, uint32_t idx, uint32_t pid, uint32_t reason,
                    const std::string& name) {
    Confchg c;
    std::string why;
    if (!t.apply_leave(node, idx, pid, reason, name, c, why)) return "refused: " + why;
    return format_confchg(c);
  }
};

// Section D of corosync-3.1.7-cpg-behaviour.txt, one node.
TEST(GroupTable, ObserverSequenceMatchesCorosync) {
  Table g;
  EXPECT_EQ(g.join(1, 1, 11839, "memb"),
            "members[1]={(1,11839,UNDEFINED)} left[0]={} joined[1]={(1,11839,JOIN)}");
  EXPECT_EQ(g.join(1, 1, 11915, "memb"),
            "members[2]={(1,11839,UNDEFINED),(1,11915,UNDEFINED)} left[0]={} "
            "joined[1]={(1,11915,JOIN)}");
  for (uint32_t pid : {11916u, 11917u, 11918u, 11919u}) g.join(1, 1, pid, "memb");
  EXPECT_EQ(g.t.find("memb")->members.size(), 6u);
  EXPECT_EQ(g.leave(1, 1, 11915, kReasonLeave, "memb"),
            "members[5]={(1,11839,UNDEFINED),(1,11916,UNDEFINED),(1,11917,UNDEFINED),"
            "(1,11918,UNDEFINED),(1,11919,UNDEFINED)} left[1]={(1,11915,LEAVE)} joined[0]={}");
  EXPECT_EQ(g.leave(1, 1, 11916, kReasonProcDown, "memb"),
            "members[4]={(1,11839,UNDEFINED),(1,11917,UNDEFINED),(1,11918,UNDEFINED),"
            "(1,11919,UNDEFINED)} left[1]={(1,11916,PROCDOWN)} joined[0]={}");
  g.leave(1, 1, 11917, kReasonProcDown, "memb");
  g.leave(1, 1, 11918, kReasonProcDown, "memb");
  g.leave(1, 1, 11919, kReasonProcDown, "memb");
  EXPECT_EQ(g.leave(1, 1, 11839, kReasonLeave, "memb"),
            "members[0]={} left[1]={(1,11839,LEAVE)} joined[0]={}");
  EXPECT_TRUE(g.t.active().empty());
}

// corosync-3.1.7-cluster3-membership.txt: members are ordered by (nodeid,
// pid), not by join order (W2 joined first, yet node 1 is listed first).
TEST(GroupTable, MembersOrderedByNodeThenPid) {
  Table g;
  g.join(2, 7, 13983, "watch");
  EXPECT_EQ(g.join(1, 3, 13984, "watch"),
            "members[2]={(1,13984,UNDEFINED),(2,13983,UNDEFINED)} left[0]={} "
            "joined[1]={(1,13984,JOIN)}");
  EXPECT_EQ(g.join(3, 1, 13985, "watch"),
            "members[3]={(1,13984,UNDEFINED),(2,13983,UNDEFINED),(3,13985,UNDEFINED)} left[0]={} "
            "joined[1]={(3,13985,JOIN)}");
  // Node 2's new process (a restarted daemon would use new indexes).
  g.leave(2, 7, 13983, kReasonProcDown, "watch");
  EXPECT_EQ(g.join(2, 8, 14169, "watch"),
            "members[3]={(1,13984,UNDEFINED),(2,14169,UNDEFINED),(3,13985,UNDEFINED)} left[0]={} "
            "joined[1]={(2,14169,JOIN)}");
}

TEST(GroupTable, DataRoutesByNodeLocalIndex) {
  Table g;
  g.join(1, 1, 10, "a");
  g.join(2, 1, 20, "b");  // same index, other node, other group
  g.join(2, 2, 21, "a");
  ASSERT_NE(g.t.route(1, 1), nullptr);
  EXPECT_EQ(g.t.route(1, 1)->name, "a");
  EXPECT_EQ(g.t.route(2, 1)->name, "b");
  EXPECT_EQ(g.t.route(2, 2), g.t.route(1, 1));
  EXPECT_EQ(g.t.route(3, 1), nullptr);
  // Indexes stay bound after the group empties (never reused by a node).
  g.leave(1, 1, 10, kReasonLeave, "a");
  EXPECT_EQ(g.t.route(1, 1)->name, "a");
}

TEST(GroupTable, RefusesInconsistentEntries) {
  Table g;
  g.join(1, 1, 10, "a");
  EXPECT_EQ(g.join(1, 1, 10, "a").rfind("refused", 0), 0u);                 // same member twice
  EXPECT_EQ(g.join(1, 1, 11, "b").rfind("refused", 0), 0u);                 // index bound to "a"
  EXPECT_EQ(g.leave(1, 1, 99, kReasonLeave, "a").rfind("refused", 0), 0u);  // not a member
  EXPECT_EQ(g.leave(1, 5, 10, kReasonLeave, "a").rfind("refused", 0), 0u);  // unknown index
  EXPECT_EQ(g.leave(1, 1, 10, 7, "a").rfind("refused", 0), 0u);             // bad reason
  EXPECT_EQ(g.join(1, 2, 10, std::string(129, 'x')).rfind("refused", 0), 0u);
  EXPECT_EQ(g.t.find("a")->members.size(), 1u);
}

TEST(GroupTable, EmptyAndMaximalNames) {
  Table g;
  EXPECT_EQ(g.join(1, 1, 5, ""), "members[1]={(1,5,UNDEFINED)} left[0]={} joined[1]={(1,5,JOIN)}");
  std::string m(128, 'M');
  EXPECT_EQ(g.join(1, 2, 5, m), "members[1]={(1,5,UNDEFINED)} left[0]={} joined[1]={(1,5,JOIN)}");
  EXPECT_EQ(g.t.find(m)->name.size(), 128u);
}

TEST(GroupTable, DropNodesOneConfchgPerGroupAndForgetsIndexes) {
  Table g;
  g.join(1, 1, 10, "a");
  g.join(2, 1, 20, "a");
  g.join(2, 1, 21, "a");
  g.join(3, 1, 30, "a");
  g.join(2, 2, 22, "b");
  g.join(1, 2, 11, "c");
  auto out = g.t.drop_nodes([](uint32_t n) { return n == 2 || n == 3; });
  ASSERT_EQ(out.size(), 2u);  // "c" lost nobody
  EXPECT_EQ(out[0].group->name, "a");
  EXPECT_EQ(format_confchg(out[0]),
            "members[1]={(1,10,UNDEFINED)} left[3]={(2,20,NODEDOWN),(2,21,NODEDOWN),"
            "(3,30,NODEDOWN)} joined[0]={}");
  EXPECT_EQ(format_confchg(out[1]), "members[0]={} left[1]={(2,22,NODEDOWN)} joined[0]={}");
  EXPECT_EQ(g.t.route(2, 1), nullptr);
  EXPECT_EQ(g.t.route(3, 1), nullptr);
  EXPECT_NE(g.t.route(1, 1), nullptr);
  // A restarted node 2 binds its indexes afresh.
  EXPECT_EQ(g.join(2, 1, 40, "c"),
            "members[2]={(1,11,UNDEFINED),(2,40,UNDEFINED)} left[0]={} joined[1]={(2,40,JOIN)}");
  EXPECT_TRUE(g.t.drop_nodes([](uint32_t n) { return n == 9; }).empty());
}

TEST(GroupTable, SyncAddsOnlyUnknownMembersWithNodeup) {
  Table g;
  g.join(2, 4, 20, "a");
  Confchg c;
  std::string why;
  std::vector<uint32_t> pids = {22, 20, 21};
  ASSERT_TRUE(g.t.apply_sync(2, 4, "a", pids, c, why)) << why;
  EXPECT_EQ(format_confchg(c),
            "members[3]={(2,20,UNDEFINED),(2,21,UNDEFINED),(2,22,UNDEFINED)} left[0]={} "
            "joined[2]={(2,21,NODEUP),(2,22,NODEUP)}");
  ASSERT_TRUE(g.t.apply_sync(2, 4, "a", pids, c, why)) << why;
  EXPECT_TRUE(c.empty());  // all known: no confchg
  EXPECT_TRUE(g.t.find("a")->has(2, 21));
  EXPECT_FALSE(g.t.find("a")->has(1, 21));
  EXPECT_FALSE(g.t.apply_sync(2, 4, "other", pids, c, why));  // index bound to "a"
  EXPECT_FALSE(g.t.apply_sync(2, 5, std::string(129, 'x'), pids, c, why));
  // The announcement binds the index: the node's Data routes.
  ASSERT_TRUE(g.t.apply_sync(3, 1, "b", std::vector<uint32_t>{30}, c, why)) << why;
  EXPECT_EQ(g.t.route(3, 1), g.t.find("b"));
}

// ---------------------------------------------------------------- local rules

TEST(LocalRules, OneGroupPerHandleForLife) {
  LocalRules r;
  Handle h;
  h.pid = 100;
  ASSERT_EQ(r.check_join(h, "api"), ipc::Status::Ok);
  r.joined(h, "api");
  EXPECT_EQ(r.check_join(h, "api"), ipc::Status::Exist);        // same group again
  EXPECT_EQ(r.check_join(h, "api-other"), ipc::Status::Exist);  // second group
  EXPECT_EQ(r.check_leave(h, "api-other"), ipc::Status::NotExist);
  ASSERT_EQ(r.check_leave(h, "api"), ipc::Status::Ok);
  r.leaving(h);
  EXPECT_EQ(r.check_leave(h, "api"), ipc::Status::NotExist);  // leave twice
  EXPECT_EQ(r.check_join(h, "api"), ipc::Status::Exist);      // join after leave
}

TEST(LocalRules, OneHandlePerProcessInAGroup) {
  LocalRules r;
  Handle a, b, other;
  a.pid = b.pid = 100;
  other.pid = 200;
  r.joined(a, "api");
  EXPECT_EQ(r.check_join(b, "api"), ipc::Status::Exist);
  EXPECT_EQ(r.check_join(b, "api-2"), ipc::Status::Ok);
  EXPECT_EQ(r.check_join(other, "api"), ipc::Status::Ok);
  // Once the first handle's leave is submitted, the process may join again.
  r.leaving(a);
  EXPECT_EQ(r.check_join(b, "api"), ipc::Status::Ok);
}

TEST(LocalRules, LeaveBeforeJoinAndLongNames) {
  LocalRules r;
  Handle h;
  h.pid = 1;
  EXPECT_EQ(r.check_leave(h, "api"), ipc::Status::NotExist);
  EXPECT_EQ(r.check_join(h, std::string(129, 'x')), ipc::Status::NameTooLong);
  EXPECT_EQ(r.check_leave(h, std::string(129, 'x')), ipc::Status::NameTooLong);
  EXPECT_EQ(r.check_join(h, std::string(128, 'x')), ipc::Status::Ok);
}

TEST(LocalRules, ProcdownKeepsThePidClaimedUntilTheLeaveIsSubmitted) {
  LocalRules r;
  Handle dead, fresh;
  dead.pid = fresh.pid = 42;
  r.joined(dead, "g");
  Handle copy = dead;
  ASSERT_TRUE(r.gone(dead));  // joined: a PROCDOWN leave is needed
  EXPECT_EQ(r.check_join(fresh, "g"), ipc::Status::Exist);
  r.leaving(copy);  // the PROCDOWN Leave went into the log
  EXPECT_EQ(r.check_join(fresh, "g"), ipc::Status::Ok);
  Handle never;
  EXPECT_FALSE(r.gone(never));  // never joined: nothing to announce
  Handle left;
  left.pid = 7;
  r.joined(left, "h");
  r.leaving(left);
  EXPECT_FALSE(r.gone(left));  // already left
}

TEST(LocalRules, IndexesAreStablePerNameAndNeverReused) {
  LocalRules r;
  uint32_t a = r.index_for("a");
  uint32_t b = r.index_for("b");
  EXPECT_NE(a, b);
  EXPECT_EQ(r.index_for("a"), a);
  Handle h;
  h.pid = 3;
  r.joined(h, "c");
  EXPECT_NE(h.index, a);
  EXPECT_NE(h.index, b);
}

}  // namespace
}  // namespace rcpg::daemon
