// Handle lifetime and per-handle properties.
#include <sys/wait.h>

#include <set>
#include <thread>

#include "api_test_util.h"

using namespace rcpg::test;

namespace {

const cpg_handle_t kGarbage = 0xdeadbeefcafef00dull;

TEST(cpg_initialize, GivesDistinctUnguessableHandles) {
  auto cb = Recorder::callbacks();
  cpg_handle_t a = 0, b = 0;
  ASSERT_CS_OK(cpg_initialize(&a, &cb));
  ASSERT_CS_OK(cpg_initialize(&b, &cb));
  EXPECT_NE(a, b);
  EXPECT_NE(a >> 32, 0u);
  void* ctx = reinterpret_cast<void*>(1);
  ASSERT_CS_OK(cpg_context_get(a, &ctx));
  EXPECT_EQ(ctx, nullptr);
  ASSERT_CS_OK(cpg_finalize(a));
  cpg_handle_t c = 0;
  ASSERT_CS_OK(cpg_initialize(&c, &cb));
  EXPECT_NE(c, a);  // never handed out again
  EXPECT_EQ(cpg_fd_get(a, nullptr), CS_ERR_BAD_HANDLE);
  EXPECT_CS_OK(cpg_finalize(b));
  EXPECT_CS_OK(cpg_finalize(c));
}

TEST(cpg_initialize, NullArguments) {
  auto cb = Recorder::callbacks();
  EXPECT_EQ(cpg_initialize(nullptr, &cb), CS_ERR_INVALID_PARAM);
  cpg_handle_t h;
  ASSERT_CS_OK(cpg_initialize(&h, nullptr));  // no callbacks is allowed
  EXPECT_CS_OK(cpg_finalize(h));
}

TEST(cpg_initialize, NoDaemonIsLibraryError) {
  std::string saved = shared_daemon().socket_path();
  ::setenv("RCPG_SOCKET", "/nonexistent/rcpg/rcpgd.sock", 1);
  cpg_handle_t h;
  auto cb = Recorder::callbacks();
  EXPECT_EQ(cpg_initialize(&h, &cb), CS_ERR_LIBRARY);
  ::setenv("RCPG_SOCKET", saved.c_str(), 1);
}

TEST(cpg_model_initialize, ContextModelAndFlags) {
  int ctxval = 0;
  auto m = Recorder::model();
  cpg_handle_t h;
  ASSERT_CS_OK(
      cpg_model_initialize(&h, CPG_MODEL_V1, reinterpret_cast<cpg_model_data_t*>(&m), &ctxval));
  void* ctx = nullptr;
  ASSERT_CS_OK(cpg_context_get(h, &ctx));
  EXPECT_EQ(ctx, &ctxval);
  EXPECT_CS_OK(cpg_finalize(h));

  EXPECT_EQ(cpg_model_initialize(&h, static_cast<cpg_model_t>(99),
                                 reinterpret_cast<cpg_model_data_t*>(&m), nullptr),
            CS_ERR_INVALID_PARAM);
  m.flags = 0x80;
  EXPECT_EQ(
      cpg_model_initialize(&h, CPG_MODEL_V1, reinterpret_cast<cpg_model_data_t*>(&m), nullptr),
      CS_ERR_INVALID_PARAM);
  EXPECT_EQ(cpg_model_initialize(nullptr, CPG_MODEL_V1, nullptr, nullptr), CS_ERR_INVALID_PARAM);
  // NULL model data: a handle without callbacks that still works.
  ASSERT_CS_OK(cpg_model_initialize(&h, CPG_MODEL_V1, nullptr, nullptr));
  cpg_name g = group_name(unique_group());
  ASSERT_CS_OK(cpg_join(h, &g));
  iovec iov{const_cast<char*>("x"), 1};
  EXPECT_CS_OK(cpg_mcast_joined(h, CPG_TYPE_AGREED, &iov, 1));
  EXPECT_CS_OK(cpg_dispatch(h, CS_DISPATCH_ALL));
  EXPECT_CS_OK(cpg_finalize(h));
}

TEST(cpg_model_initialize, InitialTotemConfchgOnlyWithFlag) {
  Client with(CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF);
  Client without;
  std::string g = unique_group();
  ASSERT_CS_OK(with.join(g));
  ASSERT_TRUE(with.dispatch_until([&] { return with.rec.count(Event::Totem) == 1; }));
  ASSERT_EQ(with.rec.events.back().kind, Event::Totem);
  EXPECT_EQ(with.rec.events.back().totem_members, std::vector<uint32_t>{1});
  ASSERT_CS_OK(without.join(g + "2"));
  ASSERT_TRUE(without.wait_events(1));
  without.dispatch_until([] { return false; }, std::chrono::milliseconds(200));
  EXPECT_EQ(without.rec.count(Event::Totem), 0u);
}

TEST(cpg_finalize, TwiceAndBadHandles) {
  Client c;
  EXPECT_EQ(cpg_finalize(0), CS_ERR_BAD_HANDLE);
  EXPECT_EQ(cpg_finalize(kGarbage), CS_ERR_BAD_HANDLE);
  ASSERT_CS_OK(cpg_finalize(c.h));
  EXPECT_EQ(cpg_finalize(c.h), CS_ERR_BAD_HANDLE);
  int fd;
  EXPECT_EQ(cpg_fd_get(c.h, &fd), CS_ERR_BAD_HANDLE);
  EXPECT_EQ(cpg_dispatch(c.h, CS_DISPATCH_ALL), CS_ERR_BAD_HANDLE);
  c.forget();
}

TEST(cpg_finalize, WorksInsideACallback) {
  Client c;
  ASSERT_CS_OK(c.join(unique_group()));
  ASSERT_TRUE(c.wait_events(1));
  bool finalized_inside = false;
  c.rec.on_event = [&](const Event& e) {
    if (e.kind == Event::Deliver) finalized_inside = cpg_finalize(c.h) == CS_OK;
  };
  ASSERT_CS_OK(c.send("bye"));
  ASSERT_CS_OK(c.send("after"));
  for (int i = 0; i < 5000 && !finalized_inside; ++i) {
    ASSERT_CS_OK(cpg_dispatch(c.h, CS_DISPATCH_ALL));
    if (!finalized_inside) ::usleep(1000);
  }
  ASSERT_TRUE(finalized_inside);
  // Dispatch stopped right after the callback that finalized.
  EXPECT_EQ(c.rec.count(Event::Deliver), 1u);
  EXPECT_EQ(cpg_dispatch(c.h, CS_DISPATCH_ALL), CS_ERR_BAD_HANDLE);
  c.forget();
}

TEST(cpg_finalize, OthersSeeProcdown) {
  Client obs;
  std::string g = unique_group();
  ASSERT_CS_OK(obs.join(g));
  ASSERT_TRUE(obs.wait_events(1));
  Peer finalizer(g), killed(g);
  ASSERT_CS_OK(finalizer.join_status());
  ASSERT_CS_OK(killed.join_status());
  ASSERT_TRUE(obs.dispatch_until([&] { return obs.rec.count(Event::Confchg) == 3; }));
  const auto finalizer_pid = static_cast<uint32_t>(finalizer.pid());
  const auto killed_pid = static_cast<uint32_t>(killed.pid());
  ASSERT_CS_OK(finalizer.finalize());
  killed.kill();
  ASSERT_TRUE(obs.dispatch_until([&] { return obs.rec.count(Event::Confchg) == 5; }));
  std::set<uint32_t> gone;
  for (size_t i = obs.rec.events.size() - 2; i < obs.rec.events.size(); ++i) {
    const Event& e = obs.rec.events[i];
    ASSERT_EQ(e.left.size(), 1u) << e.describe();
    EXPECT_EQ(e.left[0].reason, static_cast<uint32_t>(CPG_REASON_PROCDOWN)) << e.describe();
    gone.insert(e.left[0].pid);
  }
  EXPECT_EQ(gone, (std::set<uint32_t>{finalizer_pid, killed_pid}));
  EXPECT_EQ(obs.rec.events.back().members,
            (std::vector<Member>{{1, static_cast<uint32_t>(::getpid()), CPG_REASON_UNDEFINED}}));
}

TEST(cpg_fd_get, ReadableExactlyWhenEventsWait) {
  Client c;
  int fd = -1;
  ASSERT_CS_OK(cpg_fd_get(c.h, &fd));
  EXPECT_GE(fd, 0);
  EXPECT_EQ(cpg_fd_get(c.h, nullptr), CS_ERR_INVALID_PARAM);
  EXPECT_EQ(cpg_fd_get(kGarbage, &fd), CS_ERR_BAD_HANDLE);
  EXPECT_FALSE(fd_readable(fd, 0));
  ASSERT_CS_OK(c.join(unique_group()));
  EXPECT_TRUE(fd_readable(fd, 5000));  // the join's confchg
  ASSERT_CS_OK(cpg_dispatch(c.h, CS_DISPATCH_ALL));
  EXPECT_EQ(c.rec.events.size(), 1u);
  EXPECT_FALSE(fd_readable(fd, 50));
  ASSERT_CS_OK(c.send("a"));
  ASSERT_CS_OK(c.send("b"));
  ASSERT_CS_OK(c.send("c"));
  // CS_DISPATCH_ONE after each poll: the fd stays readable while events wait.
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(fd_readable(fd, 5000)) << "message " << i;
    ASSERT_CS_OK(cpg_dispatch(c.h, CS_DISPATCH_ONE));
  }
  EXPECT_EQ(c.rec.count(Event::Deliver), 3u);
  ASSERT_CS_OK(cpg_dispatch(c.h, CS_DISPATCH_ALL));
  EXPECT_FALSE(fd_readable(fd, 50));
}

TEST(cpg_max_atomic_msgsize_get, ReportsDaemonValue) {
  Client c;
  uint32_t size = 0;
  ASSERT_CS_OK(cpg_max_atomic_msgsize_get(c.h, &size));
  EXPECT_GT(size, 0u);
  EXPECT_EQ(cpg_max_atomic_msgsize_get(c.h, nullptr), CS_ERR_INVALID_PARAM);
  EXPECT_EQ(cpg_max_atomic_msgsize_get(kGarbage, &size), CS_ERR_BAD_HANDLE);
  // A message of exactly that size goes through.
  ASSERT_CS_OK(c.join(unique_group()));
  std::string big(size, 'z');
  ASSERT_CS_OK(c.send_retry(big.data(), big.size()));
  ASSERT_TRUE(c.dispatch_until([&] { return c.rec.count(Event::Deliver) == 1; }));
  EXPECT_EQ(c.rec.events.back().data, big);
}

TEST(cpg_context_get, NullAndBadHandle) {
  Client c;
  void* ctx;
  EXPECT_EQ(cpg_context_get(c.h, nullptr), CS_ERR_INVALID_PARAM);
  EXPECT_EQ(cpg_context_get(kGarbage, &ctx), CS_ERR_BAD_HANDLE);
  ASSERT_CS_OK(cpg_context_get(c.h, &ctx));
  EXPECT_EQ(ctx, &c.rec);
}

TEST(cpg_context_set, SetThenGet) {
  Client c;
  void* ctx;
  ASSERT_CS_OK(cpg_context_set(c.h, reinterpret_cast<void*>(0x1234)));
  ASSERT_CS_OK(cpg_context_get(c.h, &ctx));
  EXPECT_EQ(ctx, reinterpret_cast<void*>(0x1234));
  ASSERT_CS_OK(cpg_context_set(c.h, nullptr));
  ASSERT_CS_OK(cpg_context_get(c.h, &ctx));
  EXPECT_EQ(ctx, nullptr);
  EXPECT_EQ(cpg_context_set(kGarbage, nullptr), CS_ERR_BAD_HANDLE);
  ASSERT_CS_OK(cpg_context_set(c.h, &c.rec));
}

TEST(cpg_local_get, NodeIdOfTheDaemon) {
  Client c;
  unsigned nodeid = 0;
  ASSERT_CS_OK(cpg_local_get(c.h, &nodeid));
  EXPECT_EQ(nodeid, 1u);
  EXPECT_EQ(cpg_local_get(c.h, nullptr), CS_ERR_INVALID_PARAM);
  EXPECT_EQ(cpg_local_get(kGarbage, &nodeid), CS_ERR_BAD_HANDLE);
}

TEST(cpg_flow_control_state_get, IdleIsDisabled) {
  Client c;
  cpg_flow_control_state_t st = CPG_FLOW_CONTROL_ENABLED;
  ASSERT_CS_OK(cpg_flow_control_state_get(c.h, &st));
  EXPECT_EQ(st, CPG_FLOW_CONTROL_DISABLED);
  EXPECT_EQ(cpg_flow_control_state_get(c.h, nullptr), CS_ERR_INVALID_PARAM);
  EXPECT_EQ(cpg_flow_control_state_get(kGarbage, &st), CS_ERR_BAD_HANDLE);
}

// Every call after the daemon is gone: CS_ERR_LIBRARY (a daemon of its own).
TEST(DaemonGone, EveryCallReturnsLibraryError) {
  RcpgdProcess d;
  std::string why;
  ASSERT_TRUE(d.start(why)) << why;
  std::string saved = shared_daemon().socket_path();
  d.export_socket();
  {
    Client c;
    ::setenv("RCPG_SOCKET", saved.c_str(), 1);
    ASSERT_CS_OK(c.join("dg"));
    ASSERT_TRUE(c.wait_events(1));
    int fd;
    ASSERT_CS_OK(cpg_fd_get(c.h, &fd));
    d.stop();
    EXPECT_TRUE(fd_readable(fd, 5000));
    EXPECT_EQ(cpg_dispatch(c.h, CS_DISPATCH_ALL), CS_ERR_LIBRARY);
    EXPECT_EQ(cpg_dispatch(c.h, CS_DISPATCH_ALL), CS_ERR_LIBRARY);
    EXPECT_EQ(cpg_dispatch(c.h, CS_DISPATCH_BLOCKING), CS_ERR_LIBRARY);
    EXPECT_EQ(c.send("x"), CS_ERR_LIBRARY);
    unsigned nodeid;
    EXPECT_EQ(cpg_local_get(c.h, &nodeid), CS_ERR_LIBRARY);
    cpg_address list[8];
    int n = 8;
    cpg_name g = group_name("dg");
    EXPECT_EQ(cpg_membership_get(c.h, &g, list, &n), CS_ERR_LIBRARY);
    EXPECT_EQ(cpg_leave(c.h, &g), CS_ERR_LIBRARY);
    EXPECT_EQ(cpg_join(c.h, &g), CS_ERR_LIBRARY);
    void* buf;
    EXPECT_EQ(cpg_zcb_alloc(c.h, 64, &buf), CS_ERR_LIBRARY);
    cpg_iteration_handle_t it;
    EXPECT_EQ(cpg_iteration_initialize(c.h, CPG_ITERATION_ALL, nullptr, &it), CS_ERR_LIBRARY);
    EXPECT_EQ(cpg_finalize(c.h), CS_ERR_LIBRARY);
    EXPECT_EQ(cpg_finalize(c.h), CS_ERR_BAD_HANDLE);  // released all the same
    c.forget();
  }
  d.export_socket();
  cpg_handle_t h;
  EXPECT_EQ(cpg_initialize(&h, nullptr), CS_ERR_LIBRARY);
  ::setenv("RCPG_SOCKET", saved.c_str(), 1);
}

// kill -9 of the daemon: a thread blocked in cpg_dispatch returns, and a
// sender that never dispatches is told too (within a tick of the coarse
// clock: sends poll the socket at most that often); every call is then
// CS_ERR_LIBRARY, as with Corosync. The daemon restarted on the same socket
// (the node's next incarnation) serves new handles as if nothing happened.
TEST(DaemonGone, KilledDaemonThenRestartedServesNewHandles) {
  using namespace std::chrono_literals;
  RcpgdProcess d;
  std::string why;
  ASSERT_TRUE(d.start(why)) << why;
  std::string saved = shared_daemon().socket_path();
  d.export_socket();
  {
    Client sender, waiter;
    ASSERT_CS_OK(sender.join("k9"));
    ASSERT_CS_OK(waiter.join("k9-wait"));  // one process: one handle per group
    ASSERT_TRUE(sender.wait_events(1));
    ASSERT_TRUE(waiter.wait_events(1));
    ASSERT_CS_OK(sender.send("before"));
    ASSERT_TRUE(sender.wait_events(2));
    void* buf = nullptr;
    ASSERT_CS_OK(cpg_zcb_alloc(sender.h, 8192, &buf));
    std::memset(buf, 'k', 8192);
    cs_error_t blocked = CS_OK;
    std::thread t([&] { blocked = cpg_dispatch(waiter.h, CS_DISPATCH_BLOCKING); });
    std::this_thread::sleep_for(50ms);
    d.stop(true);  // SIGKILL
    t.join();
    EXPECT_EQ(blocked, CS_ERR_LIBRARY);
    std::this_thread::sleep_for(20ms);
    EXPECT_EQ(sender.send("after"), CS_ERR_LIBRARY);  // no dispatch in between
    EXPECT_EQ(sender.send("after"), CS_ERR_LIBRARY);
    EXPECT_EQ(cpg_zcb_mcast_joined(sender.h, CPG_TYPE_AGREED, buf, 8192), CS_ERR_LIBRARY);
    EXPECT_EQ(cpg_zcb_mcast_joined(sender.h, CPG_TYPE_AGREED, buf, 16), CS_ERR_LIBRARY);
    EXPECT_EQ(cpg_dispatch(sender.h, CS_DISPATCH_ALL), CS_ERR_LIBRARY);
    unsigned nodeid;
    EXPECT_EQ(cpg_local_get(sender.h, &nodeid), CS_ERR_LIBRARY);
    cpg_name g = group_name("k9");
    EXPECT_EQ(cpg_leave(sender.h, &g), CS_ERR_LIBRARY);
    EXPECT_CS_OK(cpg_zcb_free(sender.h, buf));  // local: the pool stays mapped
    EXPECT_EQ(cpg_finalize(sender.h), CS_ERR_LIBRARY);
    EXPECT_EQ(cpg_finalize(waiter.h), CS_ERR_LIBRARY);
    sender.forget();
    waiter.forget();
    cpg_handle_t none;
    EXPECT_EQ(cpg_initialize(&none, nullptr), CS_ERR_LIBRARY);  // nobody serves the socket

    ASSERT_TRUE(d.restart(why)) << why;
    Client again;
    ASSERT_CS_OK(again.init_status);
    ASSERT_CS_OK(again.join("k9"));
    ASSERT_TRUE(again.wait_events(1));
    ASSERT_EQ(again.rec.events[0].kind, Event::Confchg);
    // The restarted daemon knows nothing of the old handles.
    EXPECT_EQ(again.rec.events[0].members.size(), 1u);
    ASSERT_CS_OK(again.send("again"));
    ASSERT_TRUE(again.wait_events(2));
    EXPECT_EQ(again.rec.events[1].data, "again");
    EXPECT_CS_OK(cpg_local_get(again.h, &nodeid));
    EXPECT_EQ(nodeid, 1u);
  }
  ::setenv("RCPG_SOCKET", saved.c_str(), 1);
}

}  // namespace
