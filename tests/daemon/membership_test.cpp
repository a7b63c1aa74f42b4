// View changes as CPG sees them (daemon/membership.h): which nodes' processes
// leave with NODEDOWN, when the local members are announced again, and the
// sync announcement payload; then the same rules applied to a GroupTable at
// three daemons, checked to give identical confchgs everywhere.
#include <gtest/gtest.h>

#include <unistd.h>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "daemon/epoch_store.h"
#include "daemon/groups.h"
#include "daemon/membership.h"
#include "daemon/sync_barrier.h"

namespace rcpg::daemon {
namespace {

using V = std::vector<ViewMember>;

std::vector<std::byte> bytes_of(const V& v) {
  std::vector<std::byte> b(v.size() * sizeof(ViewMember));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

TEST(ParseView, MembersWithIncarnations) {
  V in = {{1, 70}, {2, 71}, {5, 9}};
  auto b = bytes_of(in);
  V out;
  std::string why;
  ASSERT_TRUE(parse_view(b.data(), b.size(), out, why)) << why;
  EXPECT_EQ(out, in);
  EXPECT_EQ(format_view(out), "1/70 2/71 5/9");
}

TEST(ParseView, RefusesWhatIsNotAView) {
  V out;
  std::string why;
  std::vector<std::byte> old_format(12);  // three uint32 ids (the old View payload)
  EXPECT_FALSE(parse_view(old_format.data(), old_format.size(), out, why));
  EXPECT_NE(why.find("12 bytes"), std::string::npos) << why;
  EXPECT_FALSE(parse_view(nullptr, 0, out, why));
  auto unsorted = bytes_of({{2, 1}, {1, 1}});
  EXPECT_FALSE(parse_view(unsorted.data(), unsorted.size(), out, why));
  auto twice = bytes_of({{2, 1}, {2, 3}});
  EXPECT_FALSE(parse_view(twice.data(), twice.size(), out, why));
  auto zero = bytes_of({{0, 1}});
  EXPECT_FALSE(parse_view(zero.data(), zero.size(), out, why));
  EXPECT_TRUE(out.empty());
}

TEST(DiffViews, FirstViewIsFreshAndAnnounces) {
  ViewDiff d = diff_views({}, V{{1, 5}, {2, 6}, {3, 7}}, true, 2);
  EXPECT_TRUE(d.departed.empty());
  EXPECT_EQ(d.added, (std::vector<uint32_t>{1, 3}));
  EXPECT_TRUE(d.drop_all_remote);
  EXPECT_TRUE(d.announce);
}

TEST(DiffViews, NodeGone) {
  ViewDiff d = diff_views(V{{1, 5}, {2, 6}, {3, 7}}, V{{1, 5}, {2, 6}}, false, 1);
  EXPECT_EQ(d.departed, (std::vector<uint32_t>{3}));
  EXPECT_TRUE(d.added.empty());
  EXPECT_FALSE(d.drop_all_remote);
  EXPECT_FALSE(d.announce);  // nobody new: nothing to tell
}

TEST(DiffViews, SequencerGoneSeenFromTheNewSequencer) {
  ViewDiff d = diff_views(V{{1, 5}, {2, 6}, {3, 7}}, V{{2, 6}, {3, 7}}, false, 2);
  EXPECT_EQ(d.departed, (std::vector<uint32_t>{1}));
  EXPECT_FALSE(d.announce);
}

TEST(DiffViews, RestartedNodeLeavesAndComesBack) {
  // Node 3 restarted between two views: its old processes are gone (NODEDOWN)
  // and the new daemon must learn the groups (announce).
  ViewDiff d = diff_views(V{{1, 5}, {2, 6}, {3, 7}}, V{{1, 5}, {2, 6}, {3, 8}}, false, 1);
  EXPECT_EQ(d.departed, (std::vector<uint32_t>{3}));
  EXPECT_EQ(d.added, (std::vector<uint32_t>{3}));
  EXPECT_TRUE(d.announce);
}

TEST(DiffViews, NodeAdded) {
  ViewDiff d = diff_views(V{{1, 5}, {3, 7}}, V{{1, 5}, {2, 9}, {3, 7}}, false, 3);
  EXPECT_TRUE(d.departed.empty());
  EXPECT_EQ(d.added, (std::vector<uint32_t>{2}));
  EXPECT_TRUE(d.announce);
}

TEST(DiffViews, CutOffNodeComesBackFresh) {
  // Node 3 was excluded while alive; its next view starts a new history:
  // everything it knew of 1 and 2 is void, even though they are still there.
  ViewDiff d = diff_views(V{{1, 5}, {2, 6}, {3, 7}}, V{{1, 5}, {2, 6}, {3, 7}}, true, 3);
  EXPECT_EQ(d.departed, (std::vector<uint32_t>{1, 2}));
  EXPECT_EQ(d.added, (std::vector<uint32_t>{1, 2}));
  EXPECT_TRUE(d.drop_all_remote);
  EXPECT_TRUE(d.announce);
}

TEST(DiffViews, SameViewAgainChangesNothing) {
  ViewDiff d = diff_views(V{{1, 5}, {2, 6}}, V{{1, 5}, {2, 6}}, false, 1);
  EXPECT_TRUE(d.departed.empty());
  EXPECT_TRUE(d.added.empty());
  EXPECT_FALSE(d.announce);
}

TEST(SyncPayload, RoundTrip) {
  for (std::string name : {std::string(), std::string("g"), std::string(128, 'n')}) {
    std::vector<uint32_t> pids = {3, 17, 4000000000u};
    auto b = encode_sync(name, pids);
    EXPECT_EQ(b.size() % 4, 0u);
    std::string_view got;
    std::vector<uint32_t> back;
    std::string why;
    ASSERT_TRUE(decode_sync(b.data(), b.size(), got, back, why)) << why;
    EXPECT_EQ(got, name);
    EXPECT_EQ(back, pids);
  }
}

TEST(SyncPayload, RefusesInconsistentLengths) {
  std::string_view name;
  std::vector<uint32_t> pids;
  std::string why;
  auto b = encode_sync("grp", std::vector<uint32_t>{1, 2});
  EXPECT_FALSE(decode_sync(b.data(), b.size() - 4, name, pids, why));  // one pid short
  EXPECT_FALSE(decode_sync(b.data(), b.size() + 0 - 1, name, pids, why));
  EXPECT_FALSE(decode_sync(b.data(), 7, name, pids, why));
  auto big = encode_sync(std::string(129, 'x'), {});
  EXPECT_FALSE(decode_sync(big.data(), big.size(), name, pids, why));
  EXPECT_NE(why.find("129"), std::string::npos) << why;
  // A count that would overflow a naive size computation.
  auto huge = encode_sync("g", {});
  uint32_t n = 0xffffffffu;
  std::memcpy(huge.data() + 4, &n, 4);
  EXPECT_FALSE(decode_sync(huge.data(), huge.size(), name, pids, why));
}

TEST(SyncPayload, CapacityFitsTheEntry) {
  EXPECT_EQ(sync_capacity(8 + 4 + 40, 3), 10u);
  EXPECT_EQ(sync_capacity(8, 0), 0u);
  size_t cap = sync_capacity(1024, 128);
  std::vector<uint32_t> pids(cap, 1);
  EXPECT_LE(encode_sync(std::string(128, 'a'), pids).size(), 1024u);
  pids.push_back(1);
  EXPECT_GT(encode_sync(std::string(128, 'a'), pids).size(), 1024u);
}

// Three daemons' tables, fed the same log: a join on every node, node 3
// killed (NODEDOWN at 1 and 2), node 3 restarted with a new process (the
// sync announcements let it learn the others; they learn nothing new), and
// a node cut off while alive (fresh) coming back: NODEUP both ways.
struct Daemon {
  uint32_t self;
  GroupTable t;
  V view;
  std::vector<std::string> seen;  // confchgs, as format_confchg shows them

  void record(const Confchg& c) {
    if (!c.empty()) seen.push_back(c.group->name + " " + format_confchg(c));
  }
  void view_change(const V& next, bool fresh) {
    ViewDiff d = diff_views(view, next, fresh, self);
    auto gone = [&](uint32_t n) {
      return d.drop_all_remote
                 ? n != self
                 : std::find(d.departed.begin(), d.departed.end(), n) != d.departed.end();
    };
    for (const Confchg& c : t.drop_nodes(gone)) record(c);
    view = next;
  }
  void join(uint32_t node, uint32_t idx, uint32_t pid, const std::string& g) {
    Confchg c;
    std::string why;
    ASSERT_TRUE(t.apply_join(node, idx, pid, g, c, why)) << why;
    record(c);
  }
  void sync(uint32_t node, uint32_t idx, const std::string& g, std::vector<uint32_t> pids) {
    Confchg c;
    std::string why;
    ASSERT_TRUE(t.apply_sync(node, idx, g, pids, c, why)) << why;
    record(c);
  }
};

TEST(ViewsAndGroups, NodeDownRestartAndCutOffGiveIdenticalConfchgs) {
  Daemon d[3] = {{1, {}, {}, {}}, {2, {}, {}, {}}, {3, {}, {}, {}}};
  V all = {{1, 10}, {2, 20}, {3, 30}};
  for (Daemon& x : d) {
    x.view_change(all, true);
    x.join(1, 1, 100, "g");
    x.join(3, 1, 300, "g");
    x.join(3, 2, 301, "h");
    x.join(2, 1, 200, "g");
  }
  // Node 3 dies: 1 and 2 apply the same View.
  for (int k : {0, 1}) {
    d[k].seen.clear();
    d[k].view_change({{1, 10}, {2, 20}}, false);
  }
  EXPECT_EQ(d[0].seen, d[1].seen);
  EXPECT_EQ(d[0].seen,
            (std::vector<std::string>{
                "g members[2]={(1,100,UNDEFINED),(2,200,UNDEFINED)} left[1]={(3,300,NODEDOWN)} "
                "joined[0]={}",
                "h members[0]={} left[1]={(3,301,NODEDOWN)} joined[0]={}"}));
  // Node 3 restarts (new incarnation, empty table) and is added; 1 and 2
  // announce their members, 3 has none yet. Its new process reuses index 1
  // for another group: allowed, the old binding went with NODEDOWN.
  d[2] = Daemon{3, {}, {}, {}};
  V again = {{1, 10}, {2, 20}, {3, 31}};
  for (Daemon& x : d) {
    x.seen.clear();
    x.view_change(again, &x == &d[2]);
    x.sync(1, 1, "g", {100});
    x.sync(2, 1, "g", {200});
  }
  EXPECT_TRUE(d[0].seen.empty());  // knew them all
  EXPECT_TRUE(d[1].seen.empty());
  EXPECT_EQ(d[2].seen, (std::vector<std::string>{
                           "g members[1]={(1,100,UNDEFINED)} left[0]={} joined[1]={(1,100,NODEUP)}",
                           "g members[2]={(1,100,UNDEFINED),(2,200,UNDEFINED)} left[0]={} "
                           "joined[1]={(2,200,NODEUP)}"}));
  for (Daemon& x : d) {
    x.seen.clear();
    x.join(3, 1, 302, "h");
  }
  EXPECT_EQ(d[0].seen, d[2].seen);
  EXPECT_EQ(d[1].seen, d[2].seen);
  // Node 3 is cut off and comes back with a new history (same process).
  for (int k : {0, 1}) d[k].view_change({{1, 10}, {2, 20}}, false);
  for (Daemon& x : d) {
    x.seen.clear();
    x.view_change(again, &x == &d[2]);
    x.sync(1, 1, "g", {100});
    x.sync(2, 1, "g", {200});
    x.sync(3, 1, "h", {302});
  }
  EXPECT_EQ(d[0].seen, (std::vector<std::string>{"h members[1]={(3,302,UNDEFINED)} left[0]={} "
                                                 "joined[1]={(3,302,NODEUP)}"}));
  EXPECT_EQ(d[1].seen, d[0].seen);
  EXPECT_EQ(d[2].seen,
            (std::vector<std::string>{
                "g members[0]={} left[2]={(1,100,NODEDOWN),(2,200,NODEDOWN)} joined[0]={}",
                "g members[1]={(1,100,UNDEFINED)} left[0]={} joined[1]={(1,100,NODEUP)}",
                "g members[2]={(1,100,UNDEFINED),(2,200,UNDEFINED)} left[0]={} "
                "joined[1]={(2,200,NODEUP)}"}));
  for (const Daemon& x : d) {
    EXPECT_EQ(x.t.find("g")->members.size(), 2u);
    EXPECT_EQ(x.t.find("h")->members.size(), 1u);
  }
}

// ---------------------------------------------------------------- merge point

ordering::Delivery join_entry(uint32_t sender, uint32_t pid, const std::vector<std::byte>& data) {
  ordering::Delivery d;
  d.kind = ordering::EntryKind::Join;
  d.sender = sender;
  d.group = 1;
  d.pid = pid;
  d.aux = kJoinSync;
  d.data = data.data();
  d.len = data.size();
  return d;
}

TEST(SyncBarrier, FreshNodeHoldsEveryoneUntilTheLastMarker) {
  SyncBarrier b;
  V view = {{1, 10}, {2, 20}, {3, 31}};
  std::vector<uint32_t> added = {1, 2}, departed = {1, 2};
  ASSERT_TRUE(b.on_view(7, view, added, departed, true, 3));
  EXPECT_TRUE(b.learning());
  EXPECT_TRUE(b.holds(1));
  EXPECT_TRUE(b.holds(2));
  EXPECT_FALSE(b.holds(3));
  std::vector<std::byte> payload = encode_sync("g", std::vector<uint32_t>{100});
  b.hold(join_entry(1, 0, payload));
  b.hold(join_entry(2, 0, payload));
  EXPECT_FALSE(b.marker(1, 6));  // an older view's marker counts for nothing
  EXPECT_FALSE(b.marker(1, 7));
  EXPECT_FALSE(b.marker(3, 7));
  EXPECT_TRUE(b.learning());
  EXPECT_TRUE(b.marker(2, 7));
  EXPECT_FALSE(b.pending());
  EXPECT_FALSE(b.learning());
  EXPECT_FALSE(b.holds(1));
  std::vector<HeldEntry> held = b.release();
  ASSERT_EQ(held.size(), 2u);
  EXPECT_EQ(held[0].sender, 1u);
  EXPECT_EQ(held[1].sender, 2u);
  EXPECT_EQ(held[1].data, payload);
  ordering::Delivery again = held[1].delivery();
  EXPECT_EQ(again.sender, 2u);
  EXPECT_EQ(again.aux, kJoinSync);
  ASSERT_EQ(again.len, payload.size());
  EXPECT_EQ(std::memcmp(again.data, payload.data(), again.len), 0);
  EXPECT_EQ(b.held(), 0u);
  EXPECT_FALSE(b.marker(2, 7));  // late duplicates change nothing
}

TEST(SyncBarrier, ContinuingNodeHoldsOnlyTheNewcomers) {
  SyncBarrier b;
  V view = {{1, 10}, {2, 20}, {3, 31}};
  std::vector<uint32_t> added = {3}, departed = {3};
  ASSERT_TRUE(b.on_view(7, view, added, departed, false, 1));
  EXPECT_FALSE(b.learning());
  EXPECT_FALSE(b.holds(2));
  EXPECT_TRUE(b.holds(3));
  // A view that only drops nodes, with nothing pending, needs no merge.
  SyncBarrier c;
  EXPECT_FALSE(c.on_view(7, V{{1, 10}, {2, 20}}, {}, std::vector<uint32_t>{3}, false, 1));
  EXPECT_FALSE(c.holds(3));
  // Alone in a fresh view: nobody to learn.
  EXPECT_FALSE(c.on_view(8, V{{1, 10}}, {}, {}, true, 1));
  EXPECT_FALSE(c.learning());
}

TEST(SyncBarrier, ViewChangeBeforeTheMergeRestartsItWithoutTheDeparted) {
  SyncBarrier b;
  std::vector<uint32_t> added = {3, 4}, none;
  ASSERT_TRUE(b.on_view(7, V{{1, 10}, {2, 20}, {3, 31}, {4, 40}}, added, none, false, 1));
  std::vector<std::byte> payload = encode_sync("g", std::vector<uint32_t>{300});
  b.hold(join_entry(3, 0, payload));
  b.hold(join_entry(4, 0, payload));
  EXPECT_FALSE(b.marker(1, 7));
  EXPECT_FALSE(b.marker(2, 7));
  EXPECT_FALSE(b.marker(3, 7));
  // Node 4 dies before its marker: the merge starts over in view 8, and
  // every member must say again that its announcements are in.
  std::vector<uint32_t> gone = {4};
  ASSERT_TRUE(b.on_view(8, V{{1, 10}, {2, 20}, {3, 31}}, none, gone, false, 1));
  EXPECT_TRUE(b.holds(3));
  EXPECT_FALSE(b.holds(4));
  EXPECT_EQ(b.held(), 1u);
  EXPECT_FALSE(b.marker(1, 8));
  EXPECT_FALSE(b.marker(2, 8));
  EXPECT_FALSE(b.marker(4, 8));  // not a member any more
  EXPECT_TRUE(b.marker(3, 8));
  ASSERT_EQ(b.release().size(), 1u);
  // The only newcomer leaves before the merge point: nothing to merge.
  ASSERT_TRUE(b.on_view(9, V{{1, 10}, {2, 20}, {3, 31}, {5, 50}}, std::vector<uint32_t>{5}, none,
                        false, 1));
  b.hold(join_entry(5, 0, payload));
  EXPECT_FALSE(
      b.on_view(10, V{{1, 10}, {2, 20}, {3, 31}}, none, std::vector<uint32_t>{5}, false, 1));
  EXPECT_FALSE(b.pending());
  EXPECT_EQ(b.held(), 0u);
}

// Three daemons read the same log: 1 and 2 continue, 3 is new. Data is
// handed out on both sides exactly from the same point on.
TEST(SyncBarrier, EveryDaemonMergesAtTheSameEntry) {
  struct Entry {
    uint32_t sender;
    bool marker;
  };
  // Data and markers in log order after the view (marker epoch 7).
  std::vector<Entry> log = {{1, false}, {3, false}, {2, true},  {2, false}, {3, true},
                            {1, false}, {1, true},  {3, false}, {2, false}};
  V view = {{1, 10}, {2, 20}, {3, 30}};
  std::vector<std::vector<bool>> handed(3);
  for (uint32_t self = 1; self <= 3; ++self) {
    SyncBarrier b;
    std::vector<uint32_t> added, departed;
    if (self == 3)
      added = {1, 2};
    else
      added = {3};
    b.on_view(7, view, added, departed, self == 3, self);
    for (const Entry& e : log) {
      if (e.marker) {
        b.marker(e.sender, 7);
        handed[self - 1].push_back(false);
      } else {
        handed[self - 1].push_back(!b.learning() && !b.holds(e.sender));
      }
    }
  }
  // Before the merge (entry 6, node 1's marker) nodes 1 and 2 hand out each
  // other's data only, node 3 nothing; afterwards everyone everything.
  EXPECT_EQ(handed[0],
            (std::vector<bool>{true, false, false, true, false, true, false, true, true}));
  EXPECT_EQ(handed[1], handed[0]);
  EXPECT_EQ(handed[2],
            (std::vector<bool>{false, false, false, false, false, false, false, true, true}));
}

TEST(SyncBarrier, MarkerPayload) {
  uint32_t epoch = 0;
  std::vector<std::byte> m = encode_marker(42);
  ASSERT_TRUE(decode_marker(m.data(), m.size(), epoch));
  EXPECT_EQ(epoch, 42u);
  EXPECT_FALSE(decode_marker(m.data(), 3, epoch));
  EXPECT_FALSE(decode_marker(nullptr, 0, epoch));
}

// ---------------------------------------------------------------- epoch on disk

TEST(EpochStore, KeepsTheHighestEpochAcrossRestarts) {
  auto dir = std::filesystem::temp_directory_path() / ("rcpg-epoch-" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::string why;
  uint32_t e = 99;
  EpochStore first(dir.string(), 3);
  ASSERT_TRUE(first.load(e, why)) << why;
  EXPECT_EQ(e, 0u);  // first start: nothing kept yet
  ASSERT_TRUE(first.save(7, why)) << why;
  ASSERT_TRUE(first.save(5, why)) << why;  // never goes down
  EpochStore again(dir.string(), 3);
  ASSERT_TRUE(again.load(e, why)) << why;
  EXPECT_EQ(e, 7u);
  EXPECT_EQ(again.path(), (dir / "node3.epoch").string());
  // Another node id on the same host keeps its own.
  EpochStore other(dir.string(), 4);
  ASSERT_TRUE(other.load(e, why)) << why;
  EXPECT_EQ(e, 0u);
  // A damaged file is an error that names it, not a silent 0.
  std::ofstream(dir / "node3.epoch") << "seven\n";
  EXPECT_FALSE(again.load(e, why));
  EXPECT_NE(why.find("node3.epoch"), std::string::npos) << why;
  // Nowhere to write: save says why.
  EpochStore nowhere((dir / "missing" / "dir").string(), 1);
  ASSERT_TRUE(nowhere.load(e, why)) << why;
  EXPECT_FALSE(nowhere.save(2, why));
  EXPECT_NE(why.find("missing"), std::string::npos) << why;
  // No directory configured: nothing kept, nothing fails.
  EpochStore off("", 1);
  EXPECT_TRUE(off.save(9, why));
  EXPECT_TRUE(off.load(e, why));
  EXPECT_EQ(e, 0u);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace rcpg::daemon
