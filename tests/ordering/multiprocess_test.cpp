// Real processes, real fabric: three nodes as three processes (shm natively,
// verbs on three soft-RoCE hosts), every node sending concurrently, sizes from
// 1 B to 4 MiB. Every member checks each payload and folds the delivery order
// into a digest; the parent checks that all digests are equal.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <vector>

#include "ordering/engine.h"
#include "ordering/node_runtime.h"
#include "transport/factory.h"

namespace rcpg::ordering {
namespace {

using namespace rcpg::transport;
using Clock = std::chrono::steady_clock;

constexpr int kNodes = 3;
constexpr uint32_t kDoneGroup = 0xD0;

// Message i of a sender: its size and bytes are a pure function of (sender, i).
size_t message_size(int i, bool emulated) {
  static const size_t kSizes[] = {1, 64, 1000, 4096, 65536, 1 << 20, 4 << 20};
  size_t s = kSizes[i % 7];
  if (emulated && s == (1u << 20)) s = 300000;  // soft-RoCE under TCG is slow
  return s;
}
void fill(std::vector<std::byte>& buf, NodeId sender, int i) {
  uint32_t x = sender * 7919u + static_cast<uint32_t>(i) * 104729u + 1;
  for (auto& b : buf) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<std::byte>(x);
  }
}

struct Result {
  uint64_t delivered = 0;
  uint64_t digest = 0;
  uint64_t bad = 0;  // payloads that did not match
};

std::string address_of(const std::string& fabric, int node, const std::vector<std::string>& hosts,
                       int port_base) {
  if (fabric == "verbs")
    return hosts[static_cast<size_t>(node - 1)] + ":" + std::to_string(port_base + node);
  return "@rcpg-mp-" + std::to_string(port_base) + "-" + std::to_string(node);
}

// Body of one node process. Returns the process exit code.
int run_node(const std::string& fabric, int self, int per_sender, int port_base, int result_fd) {
  auto hosts = softroce_hosts();
  bool emulated = fabric == "verbs";
  NodeConfig nc;
  nc.fabric = fabric;
  nc.endpoint.node_id = static_cast<NodeId>(self);
  nc.endpoint.listen_address = address_of(fabric, self, hosts, port_base);
  if (fabric == "verbs") nc.endpoint.source_address = hosts[static_cast<size_t>(self - 1)];
  nc.endpoint.cluster_key.fill(0x42);
  for (int n = 1; n <= kNodes; ++n)
    nc.engine.nodes.push_back({static_cast<NodeId>(n), address_of(fabric, n, hosts, port_base)});
  nc.engine.log_bytes = 4 << 20;
  nc.engine.inbound_bytes = 1 << 20;
  nc.spin_iterations = 2000;
  // This test is about ordering, not failures, and no view change is wanted:
  // soft-RoCE under emulation stalls nodes for hundreds of ms, and under
  // ASan filling and checking 4 MiB messages on a loaded 2-core host kept a
  // node silent beyond the 60 ms default (about 1 run in 10).
  nc.engine.heartbeat_interval_us = 50'000;
  nc.engine.suspect_timeout_us = 2'000'000;
  nc.engine.suspect_timeout_max_us = 10'000'000;

  // Message i of a sender has guarantee i % 4 and carries i in the pid
  // field. UNORDERED (i % 4 == 0) and FIFO ones may overtake a SAFE entry
  // waiting for stability, differently at each node: the order digest
  // covers AGREED and SAFE messages, FIFO is checked per sender for all but
  // UNORDERED, and every message must arrive exactly once.
  Result res;
  int done_seen = 0;
  std::map<NodeId, int> next_fifo;  // next non-UNORDERED index due per sender
  std::map<NodeId, std::set<int>> seen;
  std::vector<std::byte> expect;
  NodeRuntime node(nc, [&](const Delivery& d) {
    if (d.kind != EntryKind::Data) return;
    if (d.group == kDoneGroup) {
      ++done_seen;
      return;
    }
    int i = static_cast<int>(d.pid);
    if (!seen[d.sender].insert(i).second || static_cast<int>(d.guarantee) != i % 4) ++res.bad;
    if (d.guarantee != Guarantee::Unordered) {
      int& due = next_fifo.try_emplace(d.sender, 1).first->second;
      if (i != due) ++res.bad;
      due = i + 1 + ((i + 1) % 4 == 0 ? 1 : 0);
    }
    expect.resize(message_size(i, emulated));
    fill(expect, d.sender, i);
    if (d.len != expect.size() || std::memcmp(d.data, expect.data(), d.len) != 0) ++res.bad;
    if (d.guarantee == Guarantee::Agreed || d.guarantee == Guarantee::Safe)
      res.digest =
          (res.digest ^ (uint64_t{d.sender} << 32 | static_cast<uint64_t>(i))) * 1099511628211ull;
    ++res.delivered;
  });
  std::string why;
  if (!node.start(why)) {
    fprintf(stderr, "node %d: %s\n", self, why.c_str());
    return 11;
  }
  Engine& engine = node.engine();
  auto deadline = Clock::now() + std::chrono::seconds(emulated ? 240 : 60);
  auto pump = [&] {
    node.run_once();
    return Clock::now() < deadline;
  };
  while (!engine.all_connected())
    if (!pump()) return 12;
  int sent = 0;
  std::vector<std::byte> buf;
  bool done_sent = false;
  while (done_seen < kNodes) {
    if (sent < per_sender && !engine.large_send_pending()) {
      buf.resize(message_size(sent, emulated));
      fill(buf, static_cast<NodeId>(self), sent);
      auto r = engine.send(EntryKind::Data, static_cast<Guarantee>(sent % 4), 1,
                           static_cast<uint32_t>(sent), buf);
      if (r == SendResult::Ok) ++sent;
    } else if (sent == per_sender && !engine.large_send_pending() && !done_sent) {
      done_sent =
          engine.send(EntryKind::Data, Guarantee::Agreed, kDoneGroup, 0, {}) == SendResult::Ok;
    }
    if (!pump()) {
      fprintf(stderr, "node %d: timed out (sent %d, delivered %lu, done %d)\n", self, sent,
              static_cast<unsigned long>(res.delivered), done_seen);
      return 13;
    }
  }
  // Everyone has everything once all "done" markers are delivered here, but
  // peers may still be delivering: linger before closing connections.
  auto linger = Clock::now() + std::chrono::milliseconds(emulated ? 3000 : 300);
  while (Clock::now() < linger) pump();
  if (write(result_fd, &res, sizeof(res)) != sizeof(res)) return 14;
  return res.bad == 0 ? 0 : 15;
}

class MultiProcess : public ::testing::TestWithParam<std::string> {};

TEST_P(MultiProcess, ThreeNodesConcurrentSendersDeliverIdentically) {
  const std::string fabric = GetParam();
  if (fabric == "verbs" && softroce_hosts().size() < kNodes) {
    if (std::getenv("RCPG_REQUIRE_VERBS")) FAIL() << "verbs required but fewer than 3 hosts";
    GTEST_SKIP() << "needs 3 RDMA hosts (scripts/softroce --hosts 3)";
  }
  const int per_sender = fabric == "verbs" ? 14 : 28;
  const int port_base = 30000 + (getpid() % 1000) * 10;
  std::vector<pid_t> pids;
  std::vector<int> fds;
  for (int n = 1; n <= kNodes; ++n) {
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    pid_t pid = fork();
    if (pid == 0) {
      close(p[0]);
      _exit(run_node(fabric, n, per_sender, port_base, p[1]));
    }
    close(p[1]);
    pids.push_back(pid);
    fds.push_back(p[0]);
  }
  std::vector<Result> results(kNodes);
  for (int n = 0; n < kNodes; ++n) {
    int status = 0;
    waitpid(pids[static_cast<size_t>(n)], &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "node " << n + 1 << " exit status " << (WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    EXPECT_EQ(read(fds[static_cast<size_t>(n)], &results[static_cast<size_t>(n)], sizeof(Result)),
              static_cast<ssize_t>(sizeof(Result)));
    close(fds[static_cast<size_t>(n)]);
  }
  for (int n = 0; n < kNodes; ++n) {
    EXPECT_EQ(results[static_cast<size_t>(n)].delivered, static_cast<uint64_t>(kNodes * per_sender))
        << "node " << n + 1;
    EXPECT_EQ(results[static_cast<size_t>(n)].bad, 0u) << "node " << n + 1;
    EXPECT_EQ(results[static_cast<size_t>(n)].digest, results[0].digest)
        << "node " << n + 1 << " order differs";
  }
}

INSTANTIATE_TEST_SUITE_P(Fabrics, MultiProcess, ::testing::Values("shm", "verbs"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace rcpg::ordering
