// Five processes on one node join one group and all send at once (copied
// and zero-copy messages, some larger than one ring record); a sixth joins
// and leaves meanwhile. From the moment each of the five sees the full
// group, all five must deliver the same messages and membership changes in
// the same order.
#include <corosync/cpg.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "rcpgd_process.h"

namespace {

constexpr int kSenders = 5;
constexpr int kPerSender = 400;
const char* kGroup = "multiprocess";

struct Child {
  cpg_handle_t h = 0;
  std::vector<std::string> log;  // events from the full-group confchg on
  bool full = false;
  int deliveries = 0, confchgs_after = 0;
};

uint64_t fnv(const void* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<const uint8_t*>(p)[i]) * 1099511628211ull;
  return h;
}

Child* child_of(cpg_handle_t h) {
  void* ctx = nullptr;
  cpg_context_get(h, &ctx);
  return static_cast<Child*>(ctx);
}

void on_deliver(cpg_handle_t h, const cpg_name*, uint32_t nodeid, uint32_t pid, void* msg,
                size_t len) {
  Child* c = child_of(h);
  if (!c->full) return;
  ++c->deliveries;
  std::ostringstream o;
  o << "D " << nodeid << " " << pid << " " << len << " " << fnv(msg, len);
  c->log.push_back(o.str());
}

void on_confchg(cpg_handle_t h, const cpg_name*, const cpg_address* m, size_t mn,
                const cpg_address* l, size_t ln, const cpg_address* j, size_t jn) {
  Child* c = child_of(h);
  if (!c->full && mn == kSenders && ln == 0)
    c->full = true;
  else if (c->full)
    ++c->confchgs_after;
  if (!c->full) return;
  std::ostringstream o;
  o << "C";
  for (size_t i = 0; i < mn; ++i) o << " m" << m[i].pid;
  for (size_t i = 0; i < ln; ++i) o << " l" << l[i].pid << "/" << l[i].reason;
  for (size_t i = 0; i < jn; ++i) o << " j" << j[i].pid << "/" << j[i].reason;
  c->log.push_back(o.str());
}

int fail(const char* what, int st) {
  std::fprintf(stderr, "[%d] %s: %d\n", ::getpid(), what, st);
  return 1;
}

cs_error_t dispatch_some(cpg_handle_t h, int timeout_ms) {
  int fd;
  cpg_fd_get(h, &fd);
  pollfd p{fd, POLLIN, 0};
  ::poll(&p, 1, timeout_ms);
  return cpg_dispatch(h, CS_DISPATCH_ALL);
}

// A sender: waits for the full group, sends, records until it has every
// message and the observer's join and leave.
int run_sender(int index, const std::string& out, int ready_fd, int go_fd) {
  Child c;
  cpg_model_v1_data_t m{};
  m.model = CPG_MODEL_V1;
  m.cpg_deliver_fn = on_deliver;
  m.cpg_confchg_fn = on_confchg;
  cs_error_t st =
      cpg_model_initialize(&c.h, CPG_MODEL_V1, reinterpret_cast<cpg_model_data_t*>(&m), &c);
  if (st != CS_OK) return fail("initialize", st);
  cpg_name g{};
  g.length = std::strlen(kGroup);
  std::memcpy(g.value, kGroup, g.length);
  if ((st = cpg_join(c.h, &g)) != CS_OK) return fail("join", st);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!c.full) {
    if ((st = dispatch_some(c.h, 100)) != CS_OK) return fail("dispatch", st);
    if (std::chrono::steady_clock::now() > deadline) return fail("full group timeout", 0);
  }
  char one = 1;
  if (::write(ready_fd, &one, 1) != 1) return fail("ready pipe", errno);
  void* zbuf = nullptr;
  if ((st = cpg_zcb_alloc(c.h, 3 << 20, &zbuf)) != CS_OK) return fail("zcb_alloc", st);
  std::vector<char> payload(3 << 20);
  for (int i = 0; i < kPerSender; ++i) {
    size_t len = i % 97 == 0 ? (2 << 20) + i : 16 + (i * 31 + index * 7) % 3000;
    for (size_t k = 0; k < len; k += 61) payload[k] = static_cast<char>(i + index + k);
    std::snprintf(payload.data(), 32, "%d:%d", index, i);
    for (;;) {
      if (i % 3 == 1) {
        std::memcpy(zbuf, payload.data(), len);
        st = cpg_zcb_mcast_joined(c.h, CPG_TYPE_AGREED, zbuf, len);
      } else {
        iovec iov[2] = {{payload.data(), len / 3}, {payload.data() + len / 3, len - len / 3}};
        st = cpg_mcast_joined(c.h, CPG_TYPE_AGREED, iov, 2);
      }
      if (st != CS_ERR_TRY_AGAIN) break;
      if ((st = cpg_dispatch(c.h, CS_DISPATCH_ALL)) != CS_OK) return fail("dispatch", st);
    }
    if (st != CS_OK) return fail("mcast", st);
    if (i % 16 == 0 && (st = cpg_dispatch(c.h, CS_DISPATCH_ALL)) != CS_OK)
      return fail("dispatch", st);
  }
  deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (c.deliveries < kSenders * kPerSender || c.confchgs_after < 2) {
    if ((st = dispatch_some(c.h, 100)) != CS_OK) return fail("dispatch", st);
    if (std::chrono::steady_clock::now() > deadline) return fail("delivery timeout", c.deliveries);
  }
  {
    std::ofstream f(out + ".tmp");
    for (auto& line : c.log) f << line << "\n";
  }
  if (::rename((out + ".tmp").c_str(), out.c_str()) != 0) return fail("rename", errno);
  // Stay in the group until every sender has written its log (parent's signal).
  char go;
  if (::read(go_fd, &go, 1) != 1) return fail("go pipe", errno);
  cpg_finalize(c.h);
  return 0;
}

// The observer: joins while the senders are busy, then leaves.
int run_observer() {
  cpg_handle_t h;
  cs_error_t st = cpg_initialize(&h, nullptr);
  if (st != CS_OK) return fail("observer initialize", st);
  cpg_name g{};
  g.length = std::strlen(kGroup);
  std::memcpy(g.value, kGroup, g.length);
  if ((st = cpg_join(h, &g)) != CS_OK) return fail("observer join", st);
  for (int i = 0; i < 20; ++i) {
    dispatch_some(h, 5);
  }
  if ((st = cpg_leave(h, &g)) != CS_OK) return fail("observer leave", st);
  dispatch_some(h, 50);
  cpg_finalize(h);
  return 0;
}

TEST(MultiProcess, FiveSendersSeeTheSameOrder) {
  rcpg::test::RcpgdProcess daemon;
  std::string why;
  ASSERT_TRUE(daemon.start(why)) << why;
  daemon.export_socket();
  std::vector<pid_t> pids;
  std::vector<int> to_child;
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  for (int i = 0; i < kSenders; ++i) {
    int back[2];
    ASSERT_EQ(::pipe(back), 0);
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(ready[0]);
      ::close(back[1]);
      std::_Exit(
          run_sender(i, daemon.dir() + "/order-" + std::to_string(i) + ".txt", ready[1], back[0]));
    }
    ASSERT_GT(pid, 0);
    ::close(back[0]);
    pids.push_back(pid);
    to_child.push_back(back[1]);
  }
  ::close(ready[1]);
  for (int i = 0; i < kSenders; ++i) {
    char b;
    ASSERT_EQ(::read(ready[0], &b, 1), 1) << "a sender died before the group was complete";
  }
  pid_t observer = ::fork();
  if (observer == 0) std::_Exit(run_observer());
  int status;
  ASSERT_EQ(::waitpid(observer, &status, 0), observer);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  // Wait for every log file, then let the senders go.
  std::vector<std::vector<std::string>> logs(kSenders);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(180);
  for (int i = 0; i < kSenders; ++i) {
    std::string path = daemon.dir() + "/order-" + std::to_string(i) + ".txt";
    for (;;) {
      std::ifstream f(path);
      std::vector<std::string> lines;
      for (std::string l; std::getline(f, l);) lines.push_back(l);
      if (lines.size() >= kSenders * kPerSender + 3) {
        logs[i] = lines;
        break;
      }
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "sender " << i << " log incomplete";
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  for (int fd : to_child) {
    char b = 1;
    EXPECT_EQ(::write(fd, &b, 1), 1);
    ::close(fd);
  }
  for (pid_t p : pids) {
    ASSERT_EQ(::waitpid(p, &status, 0), p);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "sender " << p;
  }
  for (int i = 1; i < kSenders; ++i) {
    ASSERT_EQ(logs[i].size(), logs[0].size());
    for (size_t k = 0; k < logs[0].size(); ++k)
      ASSERT_EQ(logs[i][k], logs[0][k]) << "sender " << i << " differs at event " << k;
  }
  // The observer's join and leave are in there, once each.
  int confchgs = 0;
  for (auto& l : logs[0]) confchgs += l[0] == 'C';
  EXPECT_EQ(confchgs, 3);  // the full group, the observer's join, its leave
}

}  // namespace
