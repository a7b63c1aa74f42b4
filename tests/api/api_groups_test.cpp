// Group membership: join, leave, membership_get, iteration.
#include "api_test_util.h"

using namespace rcpg::test;

namespace {

const cpg_handle_t kGarbage = 0xdeadbeefcafef00dull;
const uint32_t kPid = static_cast<uint32_t>(::getpid());

TEST(cpg_join, ConfchgWithSelfJoined) {
  Client c;
  std::string g = unique_group();
  ASSERT_CS_OK(c.join(g));
  ASSERT_TRUE(c.wait_events(1));
  const Event& e = c.rec.events[0];
  ASSERT_EQ(e.kind, Event::Confchg) << e.describe();
  EXPECT_EQ(e.group, g);
  EXPECT_EQ(e.members, (std::vector<Member>{{1, kPid, CPG_REASON_UNDEFINED}}));
  EXPECT_EQ(e.joined, (std::vector<Member>{{1, kPid, CPG_REASON_JOIN}}));
  EXPECT_TRUE(e.left.empty());
}

TEST(cpg_join, ErrorsAndNameLimits) {
  Client c;
  cpg_name long_name{};
  long_name.length = CPG_MAX_NAME_LENGTH + 1;
  EXPECT_EQ(cpg_join(c.h, &long_name), CS_ERR_NAME_TOO_LONG);
  EXPECT_EQ(cpg_join(c.h, nullptr), CS_ERR_INVALID_PARAM);
  cpg_name g = group_name(unique_group());
  EXPECT_EQ(cpg_join(kGarbage, &g), CS_ERR_BAD_HANDLE);
  ASSERT_CS_OK(cpg_join(c.h, &g));
  EXPECT_EQ(cpg_join(c.h, &g), CS_ERR_EXIST);
  cpg_name other = group_name(unique_group("other"));
  EXPECT_EQ(cpg_join(c.h, &other), CS_ERR_EXIST);  // one group per handle

  Client full;  // 128 bytes, no NUL
  cpg_name m{};
  m.length = CPG_MAX_NAME_LENGTH;
  std::memset(m.value, 'M', sizeof(m.value));
  ASSERT_CS_OK(cpg_join(full.h, &m));
  ASSERT_TRUE(full.wait_events(1));
  EXPECT_EQ(full.rec.events[0].group, std::string(CPG_MAX_NAME_LENGTH, 'M'));
  ASSERT_CS_OK(cpg_leave(full.h, &m));

  Client empty;
  cpg_name e{};
  ASSERT_CS_OK(cpg_join(empty.h, &e));
  ASSERT_TRUE(empty.wait_events(1));
  EXPECT_EQ(empty.rec.events[0].group, "");
  ASSERT_CS_OK(cpg_leave(empty.h, &e));
}

TEST(cpg_leave, ConfchgWithLeaveReasonAndErrors) {
  Client c;
  cpg_name g = group_name(unique_group());
  EXPECT_EQ(cpg_leave(c.h, &g), CS_ERR_NOT_EXIST);
  EXPECT_EQ(cpg_leave(c.h, nullptr), CS_ERR_INVALID_PARAM);
  EXPECT_EQ(cpg_leave(kGarbage, &g), CS_ERR_BAD_HANDLE);
  cpg_name long_name{};
  long_name.length = 200;
  EXPECT_EQ(cpg_leave(c.h, &long_name), CS_ERR_NAME_TOO_LONG);
  ASSERT_CS_OK(cpg_join(c.h, &g));
  ASSERT_TRUE(c.wait_events(1));
  ASSERT_CS_OK(c.send("before leave"));
  ASSERT_CS_OK(cpg_leave(c.h, &g));
  ASSERT_TRUE(c.wait_events(3));
  EXPECT_EQ(c.rec.events[1].kind, Event::Deliver);  // sent before: delivered before
  const Event& e = c.rec.events[2];
  ASSERT_EQ(e.kind, Event::Confchg);
  EXPECT_TRUE(e.members.empty());
  EXPECT_EQ(e.left, (std::vector<Member>{{1, kPid, CPG_REASON_LEAVE}}));
  EXPECT_EQ(cpg_leave(c.h, &g), CS_ERR_NOT_EXIST);
  EXPECT_EQ(c.send("after leave"), CS_ERR_NOT_EXIST);
}

TEST(cpg_membership_get, ListsMembersAndRefusesSmallArrays) {
  Client a;
  std::string gs = unique_group();
  cpg_name g = group_name(gs);
  ASSERT_CS_OK(cpg_join(a.h, &g));
  ASSERT_TRUE(a.wait_events(1));
  Client same_process;  // a process is one member: its second handle cannot join too
  EXPECT_EQ(cpg_join(same_process.h, &g), CS_ERR_EXIST);
  Peer b(gs);
  ASSERT_CS_OK(b.join_status());
  ASSERT_TRUE(a.dispatch_until([&] { return a.rec.count(Event::Confchg) == 2; }));
  cpg_address list[CPG_MEMBERS_MAX];
  int n = CPG_MEMBERS_MAX;
  ASSERT_CS_OK(cpg_membership_get(a.h, &g, list, &n));
  ASSERT_EQ(n, 2);
  EXPECT_EQ(list[0].pid, kPid);
  EXPECT_EQ(list[0].nodeid, 1u);
  // Too small: nothing written, the count needed reported.
  cpg_address one[1] = {{77, 77, 77}};
  n = 1;
  EXPECT_EQ(cpg_membership_get(a.h, &g, one, &n), CS_ERR_NO_SPACE);
  EXPECT_EQ(n, 2);
  EXPECT_EQ(one[0].nodeid, 77u);
  n = 0;
  EXPECT_EQ(cpg_membership_get(a.h, &g, nullptr, &n), CS_ERR_INVALID_PARAM);
  EXPECT_EQ(cpg_membership_get(a.h, &g, list, nullptr), CS_ERR_INVALID_PARAM);
  EXPECT_EQ(cpg_membership_get(a.h, nullptr, list, &n), CS_ERR_INVALID_PARAM);
  n = CPG_MEMBERS_MAX;
  EXPECT_EQ(cpg_membership_get(kGarbage, &g, list, &n), CS_ERR_BAD_HANDLE);
  cpg_name other = group_name(unique_group("none"));
  ASSERT_CS_OK(cpg_membership_get(a.h, &other, list, &n));
  EXPECT_EQ(n, 0);
  Client outsider;  // not joined: may still ask
  n = CPG_MEMBERS_MAX;
  ASSERT_CS_OK(cpg_membership_get(outsider.h, &g, list, &n));
  EXPECT_EQ(n, 2);
}

TEST(cpg_iteration_initialize, TypesAndErrors) {
  Client c;
  std::string gs = unique_group();
  cpg_name g = group_name(gs);
  ASSERT_CS_OK(cpg_join(c.h, &g));
  ASSERT_TRUE(c.wait_events(1));
  cpg_iteration_handle_t it;
  EXPECT_EQ(cpg_iteration_initialize(c.h, CPG_ITERATION_ONE_GROUP, nullptr, &it),
            CS_ERR_INVALID_PARAM);
  EXPECT_EQ(cpg_iteration_initialize(c.h, static_cast<cpg_iteration_type_t>(99), nullptr, &it),
            CS_ERR_INVALID_PARAM);
  EXPECT_EQ(cpg_iteration_initialize(c.h, CPG_ITERATION_ALL, nullptr, nullptr),
            CS_ERR_INVALID_PARAM);
  EXPECT_EQ(cpg_iteration_initialize(kGarbage, CPG_ITERATION_ALL, nullptr, &it), CS_ERR_BAD_HANDLE);

  ASSERT_CS_OK(cpg_iteration_initialize(c.h, CPG_ITERATION_ONE_GROUP, &g, &it));
  cpg_iteration_description_t d;
  ASSERT_CS_OK(cpg_iteration_next(it, &d));
  EXPECT_EQ(std::string(d.group.value, d.group.length), gs);
  EXPECT_EQ(d.nodeid, 1u);
  EXPECT_EQ(d.pid, kPid);
  EXPECT_EQ(cpg_iteration_next(it, &d), CS_ERR_NO_SECTIONS);
  ASSERT_CS_OK(cpg_iteration_finalize(it));

  bool found = false;
  ASSERT_CS_OK(cpg_iteration_initialize(c.h, CPG_ITERATION_ALL, nullptr, &it));
  while (cpg_iteration_next(it, &d) == CS_OK)
    found |= std::string(d.group.value, d.group.length) == gs && d.pid == kPid;
  EXPECT_TRUE(found);
  ASSERT_CS_OK(cpg_iteration_finalize(it));

  found = false;
  ASSERT_CS_OK(cpg_iteration_initialize(c.h, CPG_ITERATION_NAME_ONLY, nullptr, &it));
  while (cpg_iteration_next(it, &d) == CS_OK) {
    if (std::string(d.group.value, d.group.length) != gs) continue;
    found = true;
    EXPECT_EQ(d.nodeid, 0u);
    EXPECT_EQ(d.pid, 0u);
  }
  EXPECT_TRUE(found);
  ASSERT_CS_OK(cpg_iteration_finalize(it));
}

TEST(cpg_iteration_next, NullBadHandleAndEnd) {
  Client c;
  cpg_iteration_handle_t it;
  cpg_name g = group_name(unique_group("nobody"));
  ASSERT_CS_OK(cpg_iteration_initialize(c.h, CPG_ITERATION_ONE_GROUP, &g, &it));
  cpg_iteration_description_t d;
  EXPECT_EQ(cpg_iteration_next(it, nullptr), CS_ERR_INVALID_PARAM);
  EXPECT_EQ(cpg_iteration_next(it, &d), CS_ERR_NO_SECTIONS);
  EXPECT_EQ(cpg_iteration_next(kGarbage, &d), CS_ERR_BAD_HANDLE);
  ASSERT_CS_OK(cpg_iteration_finalize(it));
  EXPECT_EQ(cpg_iteration_next(it, &d), CS_ERR_BAD_HANDLE);
}

TEST(cpg_iteration_finalize, TwiceIsBadHandle) {
  Client c;
  cpg_iteration_handle_t it;
  ASSERT_CS_OK(cpg_iteration_initialize(c.h, CPG_ITERATION_ALL, nullptr, &it));
  ASSERT_CS_OK(cpg_iteration_finalize(it));
  EXPECT_EQ(cpg_iteration_finalize(it), CS_ERR_BAD_HANDLE);
  EXPECT_EQ(cpg_iteration_finalize(0), CS_ERR_BAD_HANDLE);
}

}  // namespace
