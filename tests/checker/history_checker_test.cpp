// The history checker on hand-made histories: each invariant is violated on
// purpose (and must be reported, naming the right place), and correct
// histories of the tricky but legal kinds pass. Plus the file format and the
// rcpg-check-history tool's exit codes.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/checker/history_checker.h"

namespace rcpg::checker {
namespace {

History parse(const std::string& source, const std::string& text) {
  std::istringstream in(text);
  History h;
  std::string error;
  EXPECT_TRUE(parse_history(in, source, h, error)) << error;
  return h;
}

CheckResult check(const std::vector<History>& hs, CheckOptions opt = {}) {
  return check_histories(hs, opt);
}

std::string all(const CheckResult& r) {
  std::string s = r.input_error;
  for (auto& v : r.violations) s += v + "\n";
  return s;
}

// Expects exactly the invariant `tag` (e.g. "(c)") among the violations and
// every `needle` in the first one of it.
void expect_violation(const CheckResult& r, const std::string& tag,
                      std::initializer_list<std::string> needles) {
  ASSERT_FALSE(r.ok()) << "no violation reported, expected " << tag;
  const std::string* hit = nullptr;
  for (auto& v : r.violations)
    if (v.rfind(tag, 0) == 0) {
      hit = &v;
      break;
    }
  ASSERT_NE(hit, nullptr) << "expected a " << tag << " violation, got:\n" << all(r);
  for (auto& n : needles) EXPECT_NE(hit->find(n), std::string::npos) << n << " not in: " << *hit;
}

// --- histories that must pass ----------------------------------------------

TEST(HistoryChecker, ConsistentHistoriesPass) {
  auto a = parse("a",
                 "H n1:1\nV 1 n1:1 n2:1 n3:1\nS n1:1 1\nM n1:1 1\nM n2:1 1 u\nM n2:1 2\n"
                 "M n3:1 1 f\nV 2 n1:1 n2:1\nM n2:1 3\nM n1:1 2 u\nS n1:1 2\n");
  auto b = parse("b",
                 "H n2:1\nV 1 n1:1 n2:1 n3:1\nS n2:1 1\nS n2:1 2\nM n2:1 1 u\nM n1:1 1\n"
                 "M n3:1 1 f\nM n2:1 2\nV 2 n1:1 n2:1\nS n2:1 3\nM n1:1 2 u\nM n2:1 3\n");
  auto c = parse("c", "H n3:1\nV 1 n1:1 n2:1 n3:1\nS n3:1 1\nM n1:1 1\nM n3:1 1 f\nX\n");
  CheckResult r = check({a, b, c}, {true, true});
  EXPECT_TRUE(r.ok()) << all(r);
  EXPECT_EQ(r.stats.histories, 3u);
  EXPECT_EQ(r.stats.views, 2u);
  EXPECT_EQ(r.stats.deliveries, 14u);
  EXPECT_EQ(r.stats.sends, 6u);
}

// Extended virtual synchrony: the old sequencer (n1) delivered n2#2 in view
// 1 before it was cut off; the survivors never saw it there, n2 re-sent it
// and they deliver it in view 2. n1 comes back fresh in view 3.
TEST(HistoryChecker, MinorityDeliversMoreOfTheOldViewAndComesBackFresh) {
  auto n1 = parse("n1", "H n1\nV 1 n1 n2 n3\nM n2 1\nM n2 2\nF\nV 3 n1 n2 n3\nM n3 1\n");
  auto n2 = parse("n2",
                  "H n2\nV 1 n1 n2 n3\nS n2 1\nS n2 2\nM n2 1\nV 2 n2 n3\nM n2 2\n"
                  "V 3 n1 n2 n3\nM n3 1\n");
  auto n3 = parse("n3",
                  "H n3\nV 1 n1 n2 n3\nM n2 1\nV 2 n2 n3\nM n2 2\nV 3 n1 n2 n3\nS n3 1\n"
                  "M n3 1\n");
  CheckResult r = check({n1, n2, n3}, {true, true});
  EXPECT_TRUE(r.ok()) << all(r);
}

// CPG style: members are node ids, origins "n<node>:<pid>"; a process that
// joins the group mid-view has only the end of that view's messages.
TEST(HistoryChecker, CpgProcessJoiningMidViewPasses) {
  auto p = parse("p",
                 "H n1:10\nV 7 1 2\nS n1:10 1\nM n1:10 1\nS n1:10 2\nM n1:10 2\nM n2:20 5\n"
                 "S n1:10 3\nM n1:10 3 u\nM n2:20 6\nV 8 1 2 3\nM n2:20 7\n");
  auto q = parse("q",
                 "H n2:20\nF\nV 7 1 2\nM n1:10 2\nS n2:20 5\nM n2:20 5\nS n2:20 6\n"
                 "M n1:10 3 u\nM n2:20 6\nV 8 1 2 3\nS n2:20 7\nM n2:20 7\n");
  CheckResult r = check({p, q});
  EXPECT_TRUE(r.ok()) << all(r);
  // With whole views the late joiner is a violation: it missed n1:10#1.
  expect_violation(check({p, q}, {true, false}), "(c)", {"view 7"});
}

// FIFO gaps are fine when filled by `u` messages, or across an F, or when
// the origin was out of a view in between.
TEST(HistoryChecker, ExcusedFifoGapsPass) {
  auto filled = parse("a", "H a\nV 1 a b\nM b 1\nM b 3\nM b 2 u\n");
  EXPECT_TRUE(check({filled}).ok()) << all(check({filled}));
  auto fresh = parse("a", "H a\nV 1 a b\nM b 1\nF\nV 4 a b\nM b 7\n");
  EXPECT_TRUE(check({fresh}).ok()) << all(check({fresh}));
  // A new history starts FIFO over: re-sent messages of the old one come
  // again, in order; out of order within it is still a violation.
  auto again = parse("a", "H a\nV 1 a b\nM b 5\nM b 6\nF\nV 4 a b\nM b 5\nM b 6\nM b 7\n");
  EXPECT_TRUE(check({again}).ok()) << all(check({again}));
  expect_violation(check({parse("a", "H a\nV 1 a b\nM b 5\nF\nV 4 a b\nM b 6\nM b 5\n")}),
                   "(b) FIFO:", {"a:7"});
  auto away = parse("a", "H a\nV 1 a b\nM b 1\nV 2 a\nV 3 a b\nM b 9\n");
  EXPECT_TRUE(check({away}).ok()) << all(check({away}));
}

// --- every invariant violated ----------------------------------------------

TEST(HistoryChecker, ViewViolations) {
  expect_violation(check({parse("f", "H a\nV 2 a\nV 2 a\n")}), "(v) view order", {"f:3", "view 2"});
  expect_violation(check({parse("f", "H a\nV 1 a b\n"), parse("g", "H b\nV 1 b\n")}),
                   "(v) view agreement", {"g:2", "f:2", "{a b}", "{b}"});
  expect_violation(check({parse("f", "H a\nM a 1\nV 1 a\n")}), "(v) delivery outside",
                   {"f:2", "a#1"});
  expect_violation(check({parse("f", "H a\nV 1 a\nF\nM a 1\n")}), "(v) delivery outside", {"f:4"});
  expect_violation(check({parse("f", "H a\nV 1 a b\nM c 1\n")}), "(v) sender not in view",
                   {"f:3", "c#1"});
  // "n12:5" does not belong to member "1".
  expect_violation(check({parse("f", "H x\nV 1 1 2\nM n12:5 1\n")}), "(v) sender not in view",
                   {"n12:5#1"});
  expect_violation(check({parse("f", "H a\nV 1 a a\n")}), "(v) view members", {"f:2"});
}

TEST(HistoryChecker, Duplicate) {
  auto h = parse("f", "H a\nV 1 a b\nM b 1\nV 2 a b\nM b 1\n");
  expect_violation(check({h}), "(a) duplicate", {"f:5", "b#1", "line 3"});
  // Back with a fresh history, a message of the old one may come again;
  // twice in the new one is a duplicate.
  EXPECT_TRUE(check({parse("f", "H a\nV 1 a b\nM b 1\nF\nV 2 a b\nM b 1\n")}).ok());
  expect_violation(check({parse("f", "H a\nV 1 a b\nM b 1\nF\nV 2 a b\nM b 1\nM b 1 u\n")}),
                   "(a) duplicate", {"f:7", "line 6"});
  // A u copy of an ordered message is a duplicate too.
  expect_violation(check({parse("f", "H a\nV 1 a b\nM b 1\nM b 1 u\n")}), "(a)", {"f:4"});
}

TEST(HistoryChecker, Fifo) {
  expect_violation(check({parse("f", "H a\nV 1 a b\nM b 2\nM b 1 f\n")}),
                   "(b) FIFO:", {"f:4", "b#1", "b#2", "line 3"});
  expect_violation(check({parse("f", "H a\nV 1 a b\nM b 1\nM b 4\nM b 2 u\n")}), "(b) FIFO gap",
                   {"f:4", "b#3"});
  // A view change that keeps the origin does not excuse a gap.
  expect_violation(check({parse("f", "H a\nV 1 a b c\nM b 1\nV 2 a b\nM b 3\n")}), "(b) FIFO gap",
                   {"b#2"});
  // u messages may come in any order.
  EXPECT_TRUE(check({parse("f", "H a\nV 1 a b\nM b 3 u\nM b 1 u\nM b 2\n")}).ok());
}

TEST(HistoryChecker, TotalOrder) {
  auto a = parse("a", "H a\nV 1 a b\nM a 1\nM b 1\nM a 2\n");
  auto b = parse("b", "H b\nV 1 a b\nM a 1\nM a 2\nM b 1\n");
  expect_violation(check({a, b}), "(c) total order", {"view 1", "a#1"});
  // Different first messages (when both start at the view's beginning; a
  // fresh history may have joined mid-view).
  auto c = parse("c", "H b\nV 1 a b\nM b 1\n");
  EXPECT_TRUE(check({a, c}).ok()) << all(check({a, c}));
  expect_violation(check({a, c}, {true, false}), "(c) total order", {"first"});
  // A late joiner's piece must fit: it delivers b#1 before a#2 (cycle-free
  // but its successor of a#1 differs)...
  auto late = parse("l", "H c\nV 1 a b c\nM b 1\nM a 1\n");
  auto x = parse("x", "H a\nV 1 a b c\nM a 1\nM b 1\n");
  expect_violation(check({x, late}), "(c) total order", {"cycle"});
  // ... and a fresh piece must not put something before the first message.
  auto xw = parse("x", "H a\nV 0 a b c\nV 1 a b c\nM a 1\nM b 1\n");  // not fresh: whole
  auto y = parse("y", "H d\nV 1 a b c\nM c 1\nM a 1\n");
  expect_violation(check({xw, y}), "(c) total order", {"before it", "c#1"});
  // u and f messages are outside the order.
  auto u1 = parse("a", "H a\nV 1 a b\nM a 1\nM b 1 u\nM a 2\n");
  auto u2 = parse("b", "H b\nV 1 a b\nM b 1 u\nM a 1\nM a 2\n");
  EXPECT_TRUE(check({u1, u2}).ok()) << all(check({u1, u2}));
}

TEST(HistoryChecker, VirtualSynchrony) {
  CheckOptions whole;
  whole.whole_views = true;
  // Both go from view 1 to view 2; a delivered one more message in view 1.
  auto a = parse("a", "H a\nV 1 a b c\nM a 1\nM c 1\nV 2 a b\n");
  auto b = parse("b", "H b\nV 1 a b c\nM a 1\nV 2 a b\n");
  expect_violation(check({a, b}, whole), "(d) virtual synchrony",
                   {"c#1", "a:4", "view 1 to view 2"});
  // The same for a u message (a set difference).
  auto au = parse("a", "H a\nV 1 a b c\nM a 1\nM c 1 u\nV 2 a b\n");
  expect_violation(check({au, b}, whole), "(d) virtual synchrony", {"c#1", "(u/f)"});
  // Different next views are not compared (a partition).
  auto b3 = parse("b", "H b\nV 1 a b c\nM a 1\nV 3 b c\n");
  EXPECT_TRUE(check({a, b3}).ok()) << all(check({a, b3}));
  // An F in between is not a common transition either.
  auto bf = parse("b", "H b\nV 1 a b c\nM a 1\nF\nV 2 a b\n");
  EXPECT_TRUE(check({a, bf}).ok()) << all(check({a, bf}));
  // A mid-view joiner that goes on with the others must have their suffix.
  auto j = parse("j", "H j\nV 1 a b c\nM c 1\nM a 2\nV 2 a b j\n");
  auto k = parse("k", "H k\nV 1 a b c\nM a 1\nM c 1\nV 2 a b j\n");
  expect_violation(check({j, k}), "(", {});
  auto j2 = parse("j", "H j\nV 1 a b c\nM c 1\nV 2 a b j\n");
  EXPECT_TRUE(check({j2, k}).ok()) << all(check({j2, k}));
  auto j3 = parse("j", "H j\nV 1 a b c\nM a 1\nV 2 a b j\n");  // not the end of k's
  expect_violation(check({j3, k}), "(d) virtual synchrony", {"not the end"});
}

TEST(HistoryChecker, QuiescedEnd) {
  auto a = parse("a", "H a\nV 1 a b\nS a 1\nM a 1\nS a 2\nM a 2\n");
  auto b = parse("b", "H b\nV 1 a b\nM a 1\n");
  // Without quiesced_end b may simply have stopped early.
  EXPECT_TRUE(check({a, b}).ok()) << all(check({a, b}));
  CheckOptions q;
  q.quiesced_end = true;
  q.whole_views = true;
  expect_violation(check({a, b}, q), "(d) virtual synchrony", {"quiesced", "a#2"});
  auto r = check({a, b}, q);
  bool loss = false;
  for (auto& v : r.violations)
    loss |= v.find("(e) loss") == 0 && v.find("b (b)") != std::string::npos;
  EXPECT_TRUE(loss) << all(r);
  // A killed receiver owes nothing.
  auto bx = parse("b", "H b\nV 1 a b\nM a 1\nX\n");
  EXPECT_TRUE(check({a, bx}, q).ok()) << all(check({a, bx}, q));
}

TEST(HistoryChecker, NoLossAndNoInvention) {
  // The sender stays but never delivers its own message.
  expect_violation(check({parse("f", "H a\nV 1 a\nS a 1\nS a 2\nM a 1\n")}), "(e) loss",
                   {"f:4", "a#2"});
  // After an F or an X it may be lost.
  EXPECT_TRUE(check({parse("f", "H a\nV 1 a\nS a 1\nF\nV 2 a\n")}).ok());
  EXPECT_TRUE(check({parse("f", "H a\nV 1 a\nS a 1\nX\n")}).ok());
  // Delivered but never sent.
  auto s = parse("s", "H a\nV 1 a b\nS a 1\nM a 1\n");
  auto r = parse("r", "H b\nV 1 a b\nM a 1\nM a 2\n");
  expect_violation(check({s, r}), "(e) invented", {"r:4", "a#2", "S lines of a are in s"});
  // Unless the sender was killed: its last S lines may be missing.
  auto sx = parse("s", "H a\nV 1 a b\nS a 1\nM a 1\nX\n");
  EXPECT_TRUE(check({sx, r}).ok()) << all(check({sx, r}));
  auto r0 = parse("r", "H b\nV 1 a b\nM a 0\n");
  expect_violation(check({sx, r0}), "(e) invented", {"a#0"});
  expect_violation(check({parse("f", "H a\nV 1 a\nS a 1\nS a 1\nM a 1\n")}), "(e) sent twice",
                   {"f:4"});
}

// --- the file format --------------------------------------------------------

TEST(HistoryFormat, WriteParseRoundTrip) {
  History h("n2:1", "mem");
  h.view(3, {"n1:1", "n2:1"});
  h.send("n2:1", 1);
  h.deliver("n2:1", 1);
  h.deliver("n1:1", 4, Order::None);
  h.deliver("n1:1", 5, Order::Fifo);
  h.fresh();
  h.view(9, {"n2:1"});
  h.kill();
  std::ostringstream os;
  h.write(os);
  EXPECT_EQ(os.str(),
            "H n2:1\nV 3 n1:1 n2:1\nS n2:1 1\nM n2:1 1\nM n1:1 4 u\nM n1:1 5 f\nF\nV 9 n2:1\nX\n");
  History back = parse("mem", "# a comment\n\n" + os.str());
  ASSERT_EQ(back.events.size(), h.events.size());
  for (size_t i = 0; i < h.events.size(); ++i) {
    EXPECT_EQ(back.events[i].type, h.events[i].type);
    EXPECT_EQ(back.events[i].number, h.events[i].number);
    EXPECT_EQ(back.events[i].origin, h.events[i].origin);
    EXPECT_EQ(back.events[i].order, h.events[i].order);
    EXPECT_EQ(back.events[i].members, h.events[i].members);
    EXPECT_EQ(back.events[i].line, h.events[i].line + 2);  // the comment and blank line
  }
  EXPECT_TRUE(back.killed());
}

TEST(HistoryFormat, MalformedInputIsRejectedWithTheLine) {
  struct Case {
    const char* text;
    const char* expect;
  } cases[] = {
      {"", "no 'H <name>'"},
      {"V 1 a\n", "f:1: expected 'H <name>'"},
      {"H a b\n", "f:1"},
      {"H a\nH b\n", "f:2: a second 'H'"},
      {"H a\nV x a\n", "f:2: expected 'V"},
      {"H a\nV -1 a\n", "f:2"},
      {"H a\nV\n", "f:2"},
      {"H a\nM a\n", "f:2: expected 'M"},
      {"H a\nM a 1 z\n", "f:2: the 4th field"},
      {"H a\nM a 1 u u\n", "f:2"},
      {"H a\nM a 99999999999999999999\n", "f:2"},
      {"H a\nS a 1 u\n", "f:2: expected 'S"},
      {"H a\nF x\n", "f:2: 'F' takes no fields"},
      {"H a\nX\nV 1 a\n", "f:3: an event after X"},
      {"H a\nQ 1\n", "f:2: unknown event 'Q'"},
  };
  for (const Case& c : cases) {
    std::istringstream in(c.text);
    History h;
    std::string error;
    EXPECT_FALSE(parse_history(in, "f", h, error)) << c.text;
    EXPECT_NE(error.find(c.expect), std::string::npos) << c.text << " -> " << error;
  }
}

TEST(HistoryFormat, DuplicateNamesAreAnInputError) {
  CheckResult r = check({parse("f", "H a\n"), parse("g", "H a\n")});
  EXPECT_NE(r.input_error.find("named 'a'"), std::string::npos) << r.input_error;
  History x("b", "mem");
  x.kill();
  x.view(1, {"b"});
  EXPECT_NE(check({x}).input_error.find("after X"), std::string::npos);
}

// --- the tool ---------------------------------------------------------------

int run_tool(const std::string& args) {
  std::string cmd = std::string(RCPG_CHECK_HISTORY_PATH) + " " + args + " >/dev/null 2>&1";
  int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(CheckHistoryTool, ExitCodes) {
  auto dir =
      std::filesystem::temp_directory_path() / ("rcpg-check-history-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  auto put = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir / name) << text;
    return (dir / name).string();
  };
  std::string a = put("a", "H a\nV 1 a b\nS a 1\nM a 1\n");
  std::string b = put("b", "H b\nV 1 a b\nM a 1\n");
  std::string bad_order = put("c", "H b\nV 1 a b\nM a 2\nM a 1\n");
  std::string junk = put("d", "H d\nwhat\n");
  EXPECT_EQ(run_tool(a + " " + b), 0);
  EXPECT_EQ(run_tool("--quiesced --whole-views " + a + " " + b), 0);
  EXPECT_EQ(run_tool(a + " " + bad_order), 1);
  EXPECT_EQ(run_tool(a + " " + junk), 2);
  EXPECT_EQ(run_tool(a + " " + (dir / "missing").string()), 2);
  EXPECT_EQ(run_tool(a + " " + a), 2);  // the same name twice
  EXPECT_EQ(run_tool(""), 2);
  EXPECT_EQ(run_tool("--bogus " + a), 2);
  EXPECT_EQ(run_tool("--max 0 " + a), 2);
  EXPECT_EQ(run_tool("--help"), 0);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace rcpg::checker
