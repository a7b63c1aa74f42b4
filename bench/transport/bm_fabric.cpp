// bm-fabric: Google Benchmark micro-benchmarks of the shm fabric's data path,
// with both endpoints in this process (shm endpoints are independent objects;
// each one is driven by exactly one thread, as fabric.h requires).
//
//   ShmRoundTrip/SameThread/N  post_write_imm A->B, B polls the RecvImm and
//                              answers with post_write_imm B->A, A polls it.
//                              One thread: the software cost of the path,
//                              without cross-core cache traffic.
//   ShmRoundTrip/TwoThreads/N  the same with B answering from its own
//                              spinning thread: a real cross-core ping-pong
//                              (what rcpg-transport-bench --fabric shm measures
//                              between processes). Time per iteration is the
//                              round trip; one-way latency is half of it.
//   ShmStreamWrite/N           post_write of N bytes, signaled every 64th,
//                              128 outstanding, poll for completions.
#include <benchmark/benchmark.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "bench/transport/bench_common.h"

namespace {

using namespace rcpg::transport;
using Clock = std::chrono::steady_clock;

constexpr size_t kMaxBytes = size_t{1} << 20;

struct Pair {
  std::unique_ptr<Endpoint> a, b;
  Region* ra = nullptr;
  Region* rb = nullptr;
  ConnId ca = kNoConn, cb = kNoConn;
  std::string error;
};

// Two connected shm endpoints; `error` says why not.
std::unique_ptr<Pair> make_pair() {
  auto p = std::make_unique<Pair>();
  static int serial = 0;
  EndpointConfig cfg;
  for (size_t i = 0; i < cfg.cluster_key.size(); ++i) cfg.cluster_key[i] = static_cast<uint8_t>(i * 7 + 1);
  cfg.node_id = 2;
  cfg.listen_address = "@rcpg-bm-fabric-" + std::to_string(getpid()) + "-" + std::to_string(++serial);
  std::string why;
  p->b = rcpg::bench::make_endpoint("shm", cfg, why);
  if (!p->b) {
    p->error = "shm endpoint B: " + why;
    return p;
  }
  EndpointConfig ca = cfg;
  ca.node_id = 1;
  ca.listen_address.clear();
  p->a = rcpg::bench::make_endpoint("shm", ca, why);
  if (!p->a) {
    p->error = "shm endpoint A: " + why;
    return p;
  }
  p->ra = p->a->register_region(2 * kMaxBytes);
  p->rb = p->b->register_region(2 * kMaxBytes);
  if (!p->ra || !p->rb) {
    p->error = "register_region failed";
    return p;
  }
  p->a->connect(cfg.listen_address, 2);
  auto deadline = Clock::now() + std::chrono::seconds(10);
  std::array<Completion, 16> wc;
  while ((p->ca == kNoConn || p->cb == kNoConn) && Clock::now() < deadline) {
    while (auto ev = p->a->next_event()) {
      if (ev->type == EventType::Connected) {
        p->ca = ev->conn;
      } else {
        p->error = std::string("A: ") + to_string(ev->type) + ": " + ev->detail;
        return p;
      }
    }
    while (auto ev = p->b->next_event()) {
      if (ev->type == EventType::Connected) p->cb = ev->conn;
    }
    p->a->poll(wc);
    p->b->poll(wc);
  }
  if (p->ca == kNoConn || p->cb == kNoConn) p->error = "shm endpoints did not connect within 10 s";
  return p;
}

// Spins on `ep` until a RecvImm arrives (other completions must be Ok).
inline bool await_imm(Endpoint& ep, std::array<Completion, 16>& wc) {
  for (;;) {
    size_t n = ep.poll(wc);
    bool got = false;
    for (size_t i = 0; i < n; ++i) {
      if (wc[i].status != Status::Ok) return false;
      if (wc[i].op == Op::RecvImm) got = true;
    }
    if (got) return true;
  }
}

void BM_ShmRoundTripSameThread(benchmark::State& state) {
  const size_t len = static_cast<size_t>(state.range(0));
  auto p = make_pair();
  if (!p->error.empty()) {
    state.SkipWithError(p->error.c_str());
    return;
  }
  std::array<Completion, 16> wc;
  uint32_t tag = 0;
  for (auto _ : state) {
    ++tag;
    const bool sig = tag % 64 == 0;
    if (!p->a->post_write_imm(p->ca, *p->ra, 0, p->rb->remote, 0, len, tag, tag, sig) ||
        !await_imm(*p->b, wc) ||
        !p->b->post_write_imm(p->cb, *p->rb, 0, p->ra->remote, kMaxBytes, len, tag, tag, sig) ||
        !await_imm(*p->a, wc)) {
      state.SkipWithError("round trip failed");
      break;
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(2 * len));
}

// The first two cores this process may use (-1 when fewer): the two threads
// of a ping-pong go on different cores, else they can share one and trade
// whole scheduler ticks.
std::pair<int, int> two_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return {-1, -1};
  int first = -1;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (!CPU_ISSET(c, &set)) continue;
    if (first < 0)
      first = c;
    else
      return {first, c};
  }
  return {-1, -1};
}

void pin_self(int core) {
  if (core < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(core, &set);
  pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

void BM_ShmRoundTripTwoThreads(benchmark::State& state) {
  const size_t len = static_cast<size_t>(state.range(0));
  auto p = make_pair();
  if (!p->error.empty()) {
    state.SkipWithError(p->error.c_str());
    return;
  }
  std::atomic<bool> stop{false};
  std::atomic<bool> failed{false};
  const auto [core_a, core_b] = two_cores();
  cpu_set_t saved;
  const bool restore = sched_getaffinity(0, sizeof(saved), &saved) == 0;
  pin_self(core_a);
  // B echoes every RecvImm from its own thread.
  std::thread echo([&, core_b = core_b] {
    pin_self(core_b);
    std::array<Completion, 16> wc;
    uint64_t n_replies = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      size_t n = p->b->poll(wc);
      for (size_t i = 0; i < n; ++i) {
        const Completion& c = wc[i];
        if (c.status != Status::Ok) {
          failed = true;
          return;
        }
        if (c.op != Op::RecvImm) continue;
        const bool sig = ++n_replies % 64 == 0;
        while (!p->b->post_write_imm(p->cb, *p->rb, 0, p->ra->remote, kMaxBytes, c.len, c.imm, n_replies, sig)) {
          if (stop.load(std::memory_order_relaxed)) return;
        }
      }
    }
  });
  std::array<Completion, 16> wc;
  uint32_t tag = 0;
  for (auto _ : state) {
    ++tag;
    if (!p->a->post_write_imm(p->ca, *p->ra, 0, p->rb->remote, 0, len, tag, tag, tag % 64 == 0) ||
        !await_imm(*p->a, wc) || failed.load(std::memory_order_relaxed)) {
      state.SkipWithError("round trip failed");
      break;
    }
  }
  stop = true;
  echo.join();
  if (restore) pthread_setaffinity_np(pthread_self(), sizeof(saved), &saved);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(2 * len));
}

void BM_ShmStreamWrite(benchmark::State& state) {
  const size_t len = static_cast<size_t>(state.range(0));
  auto p = make_pair();
  if (!p->error.empty()) {
    state.SkipWithError(p->error.c_str());
    return;
  }
  constexpr uint64_t kWindow = 128, kSignal = 64;
  std::array<Completion, 16> wc;
  uint64_t posted = 0, completed = 0;
  for (auto _ : state) {
    const bool sig = (posted + 1) % kSignal == 0;
    while (posted - completed >= kWindow ||
           !p->a->post_write(p->ca, *p->ra, 0, p->rb->remote, 0, len, posted, sig)) {
      size_t n = p->a->poll(wc);
      for (size_t i = 0; i < n; ++i) {
        if (wc[i].status != Status::Ok) {
          state.SkipWithError("write failed");
          return;
        }
        if (wc[i].op == Op::Write) completed = wc[i].wr_id + 1;
      }
      // Keep B's side alive (it has nothing to do for one-sided writes).
      p->b->poll(wc);
    }
    ++posted;
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(len));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

void sizes(benchmark::internal::Benchmark* b, bool large) {
  for (int64_t n : {8, 64, 512, 4096, 65536}) b->Arg(n);
  if (large) b->Arg(1 << 20);
}
BENCHMARK(BM_ShmRoundTripSameThread)->Name("ShmRoundTrip/SameThread")->Apply([](auto* b) { sizes(b, true); });
BENCHMARK(BM_ShmRoundTripTwoThreads)
    ->Name("ShmRoundTrip/TwoThreads")
    ->Apply([](auto* b) { sizes(b, true); })
    ->UseRealTime();
BENCHMARK(BM_ShmStreamWrite)->Name("ShmStreamWrite")->Apply([](auto* b) { sizes(b, true); });

}  // namespace

BENCHMARK_MAIN();
