// One transport conformance suite, instantiated for every Fabric (sim, shm,
// verbs). Each test talks to a PeerAgent; for shm and verbs that agent is a
// different process (on a different soft-RoCE host for verbs), so data that
// round-trips through it really crossed the fabric.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/transport/harness.h"
#include "tests/transport/peer_agent.h"
#include "transport/auth.h"

namespace rcpg::test {
namespace {

using namespace rcpg::transport;

constexpr NodeId kTester = 1;
constexpr NodeId kPeer = 2;

ClusterKey test_key(uint8_t fill) {
  ClusterKey k;
  k.fill(fill);
  return k;
}

EndpointConfig config(NodeId node, uint8_t key_fill = 7) {
  EndpointConfig cfg;
  cfg.node_id = node;
  auto k = test_key(key_fill);
  std::memcpy(cfg.cluster_key.data(), k.data(), k.size());
  cfg.log = [](std::string_view) {};  // rejections are expected here
  return cfg;
}

void fill_pattern(std::byte* p, size_t len, uint32_t seed) {
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < len; ++i) {
    x = x * 1664525u + 1013904223u;
    p[i] = static_cast<std::byte>(x >> 24);
  }
}

// Everything one connection to the agent produced, gathered while waiting.
struct Conn {
  ConnId id = kNoConn;
  bool connected = false;
  bool disconnected = false;
  bool failed = false;  // Rejected or Unreachable
  EventType failure{};
  std::optional<RemoteRegion> region;
  std::deque<std::vector<std::byte>> echoes;
  std::deque<AgentImmSeenMsg> imms;
};

class Conformance : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    h_ = make_harness(GetParam(), ::testing::UnitTest::GetInstance()->random_seed());
    std::string why = h_->unavailable();
    if (!why.empty()) {
      if (GetParam() == "verbs" && std::getenv("RCPG_REQUIRE_VERBS"))
        FAIL() << "verbs required but unavailable: " << why;
      GTEST_SKIP() << why;
    }
  }

  std::unique_ptr<Endpoint> tester(uint8_t key_fill = 7, NodeId node = kTester) {
    auto ep = h_->make_endpoint(config(node, key_fill));
    EXPECT_NE(ep, nullptr);
    return ep;
  }

  std::string peer(std::vector<NodeId> allowed = {}) {
    auto cfg = config(kPeer);
    cfg.allowed_peers = std::move(allowed);
    std::string addr = h_->start_peer(cfg);
    EXPECT_FALSE(addr.empty()) << "peer agent did not start";
    return addr;
  }

  // Drains events and completions of `ep` into the per-connection records.
  void pump(Endpoint& ep) {
    h_->progress(ep);
    while (auto ev = ep.next_event()) {
      Conn& c = conns_[ev->conn];
      switch (ev->type) {
        case EventType::Connected:
          c.connected = true;
          break;
        case EventType::Disconnected:
          c.disconnected = true;
          break;
        case EventType::Rejected:
        case EventType::Unreachable:
          c.failed = true;
          c.failure = ev->type;
          break;
        case EventType::PeerRejected:
          break;
      }
    }
    std::array<Completion, 64> wc;
    size_t n;
    while ((n = ep.poll(wc)) > 0) {
      for (size_t i = 0; i < n; ++i) {
        const Completion& c = wc[i];
        if (c.op == Op::Recv && c.status == Status::Ok) {
          AgentMsg type{};
          if (c.len > 0) std::memcpy(&type, c.data, std::min<size_t>(c.len, sizeof(type)));
          Conn& conn = conns_[c.conn];
          if (type == AgentMsg::Region && c.len == sizeof(AgentRegionMsg)) {
            AgentRegionMsg m;
            std::memcpy(&m, c.data, sizeof(m));
            conn.region = m.region;
          } else if (type == AgentMsg::ImmSeen && c.len == sizeof(AgentImmSeenMsg)) {
            AgentImmSeenMsg m;
            std::memcpy(&m, c.data, sizeof(m));
            conn.imms.push_back(m);
          } else {
            conn.echoes.emplace_back(c.data, c.data + c.len);
          }
        } else {
          done_.push_back(c);
        }
      }
    }
  }

  bool wait(Endpoint& ep, const std::function<bool()>& pred) {
    return h_->wait_for(ep, [&] {
      pump(ep);
      return pred();
    });
  }

  // Connects and waits for the agent's region advertisement.
  ConnId open(Endpoint& ep, const std::string& addr) {
    ConnId id = ep.connect(addr, kPeer);
    EXPECT_TRUE(wait(ep, [&] { return conns_[id].region.has_value() || conns_[id].failed; }))
        << "no connection within patience";
    EXPECT_TRUE(conns_[id].connected);
    EXPECT_TRUE(conns_[id].region.has_value());
    return id;
  }

  std::optional<Completion> wait_completion(Endpoint& ep, uint64_t wr_id) {
    std::optional<Completion> found;
    wait(ep, [&] {
      for (auto it = done_.begin(); it != done_.end(); ++it)
        if (it->wr_id == wr_id) {
          found = *it;
          done_.erase(it);
          return true;
        }
      return false;
    });
    return found;
  }

  std::unique_ptr<Harness> h_;
  std::map<ConnId, Conn> conns_;
  std::deque<Completion> done_;
};

TEST_P(Conformance, ConnectsAndPeerAdvertisesRegion) {
  auto addr = peer();
  auto ep = tester();
  ConnId c = open(*ep, addr);
  EXPECT_EQ(conns_[c].region->length, kAgentRegionBytes);
}

TEST_P(Conformance, WrongClusterKeyIsRejected) {
  auto addr = peer();
  auto bad = tester(/*key_fill=*/99);
  ConnId c = bad->connect(addr, kPeer);
  ASSERT_TRUE(wait(*bad, [&] { return conns_[c].failed || conns_[c].connected; }));
  EXPECT_FALSE(conns_[c].connected);
  EXPECT_EQ(conns_[c].failure, EventType::Rejected);
  // The peer is undisturbed: a tester with the right key still gets in.
  conns_.clear();
  auto good = tester();
  open(*good, addr);
}

TEST_P(Conformance, UnconfiguredNodeIsRejected) {
  auto addr = peer(/*allowed=*/{5, 6});
  auto ep = tester();
  ConnId c = ep->connect(addr, kPeer);
  ASSERT_TRUE(wait(*ep, [&] { return conns_[c].failed || conns_[c].connected; }));
  EXPECT_FALSE(conns_[c].connected);
  EXPECT_EQ(conns_[c].failure, EventType::Rejected);
}

TEST_P(Conformance, ConnectToNobodyFailsWithAnEvent) {
  auto ep = tester();
  ConnId c = ep->connect(h_->unused_address(), kPeer);
  ASSERT_TRUE(wait(*ep, [&] { return conns_[c].failed || conns_[c].connected; }));
  EXPECT_FALSE(conns_[c].connected);
}

TEST_P(Conformance, WriteThenReadBackAllSizes) {
  auto addr = peer();
  auto ep = tester();
  ConnId c = open(*ep, addr);
  const RemoteRegion remote = *conns_[c].region;
  const size_t kMax = size_t{16} << 20;
  Region* out = ep->register_region(kMax);
  Region* in = ep->register_region(kMax);
  ASSERT_NE(out, nullptr);
  ASSERT_NE(in, nullptr);
  uint64_t wr = 100;
  for (size_t size : {size_t{0}, size_t{1}, size_t{8}, size_t{63}, size_t{4096}, size_t{65536},
                      size_t{1} << 20, kMax}) {
    SCOPED_TRACE("size " + std::to_string(size));
    fill_pattern(out->data, size, static_cast<uint32_t>(size));
    std::memset(in->data, 0xEE, std::min(size + 1, kMax));
    // Land at an odd offset to catch alignment assumptions.
    uint64_t roff = size == kMax ? 0 : 13;
    ASSERT_TRUE(ep->post_write(c, *out, 0, remote, roff, size, ++wr));
    auto w = wait_completion(*ep, wr);
    ASSERT_TRUE(w.has_value());
    EXPECT_EQ(w->status, Status::Ok);
    EXPECT_EQ(w->op, Op::Write);
    ASSERT_TRUE(ep->post_read(c, *in, 0, remote, roff, size, ++wr));
    auto r = wait_completion(*ep, wr);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->status, Status::Ok);
    EXPECT_EQ(r->op, Op::Read);
    EXPECT_EQ(std::memcmp(out->data, in->data, size), 0);
  }
}

// Memory another local process shares (a client's buffer pool at the
// daemon) works as the local side of writes, and the region's own memfd
// (Region::fd) shows the same bytes to anyone who maps it.
TEST_P(Conformance, ExternalMemoryIsASourceOfWrites) {
  auto addr = peer();
  auto ep = tester();
  ConnId c = open(*ep, addr);
  const RemoteRegion remote = *conns_[c].region;
  const size_t kBytes = size_t{1} << 20;
  int fd = memfd_create("conformance-pool", MFD_ALLOW_SEALING | MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(kBytes)), 0);
  // Unsealed memory could be truncated under the fabric: refused.
  EXPECT_EQ(ep->register_external(fd, kBytes), nullptr);
  ASSERT_EQ(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
  EXPECT_EQ(ep->register_external(fd, kBytes * 2), nullptr);  // larger than the file
  Region* ext = ep->register_external(fd, kBytes);
  ASSERT_NE(ext, nullptr);
  auto* view =
      static_cast<std::byte*>(mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  ASSERT_NE(view, MAP_FAILED);
  close(fd);                       // the endpoint keeps its own mapping
  fill_pattern(view, kBytes, 77);  // written by "the other process"
  Region* in = ep->register_region(kBytes);
  ASSERT_NE(in, nullptr);
  uint64_t wr = 500;
  ASSERT_TRUE(ep->post_write(c, *ext, 4096, remote, 8, 60000, ++wr));
  auto w = wait_completion(*ep, wr);
  ASSERT_TRUE(w.has_value());
  EXPECT_EQ(w->status, Status::Ok);
  ASSERT_TRUE(ep->post_read(c, *in, 0, remote, 8, 60000, ++wr));
  auto r = wait_completion(*ep, wr);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(std::memcmp(view + 4096, in->data, 60000), 0);
  if (in->fd >= 0) {  // sim memory is not file-backed
    auto* mirror =
        static_cast<const std::byte*>(mmap(nullptr, kBytes, PROT_READ, MAP_SHARED, in->fd, 0));
    ASSERT_NE(mirror, MAP_FAILED);
    EXPECT_EQ(std::memcmp(mirror, in->data, 60000), 0);
    munmap(const_cast<std::byte*>(mirror), kBytes);
  } else {
    EXPECT_EQ(GetParam(), std::string("sim"));
  }
  ep->deregister(ext);
  munmap(view, kBytes);
}

// The same memory registered in two steps: the slow part on another thread
// while this one keeps using the connection (rcpgd registers client
// segments that way), then adopted here. Refusals surface in either step; a
// prepared registration dropped unadopted is released.
TEST_P(Conformance, ExternalMemoryPreparedOnAnotherThreadIsASourceOfWrites) {
  auto addr = peer();
  auto ep = tester();
  ConnId c = open(*ep, addr);
  const RemoteRegion remote = *conns_[c].region;
  const size_t kBytes = size_t{4} << 20;
  int fd = memfd_create("conformance-prepared", MFD_ALLOW_SEALING | MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(kBytes)), 0);
  auto two_steps = [&](size_t bytes) -> Region* {
    std::string why;
    auto p = ep->prepare_external(fd, bytes, why);
    if (!p) {
      EXPECT_FALSE(why.empty());
      return nullptr;
    }
    return ep->adopt_external(std::move(p));
  };
  EXPECT_EQ(two_steps(kBytes), nullptr);  // not sealed
  ASSERT_EQ(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
  EXPECT_EQ(two_steps(kBytes * 2), nullptr);  // larger than the file
  {
    std::string why;
    auto dropped = ep->prepare_external(fd, kBytes, why);
    ASSERT_NE(dropped, nullptr) << why;
  }
  auto* view =
      static_cast<std::byte*>(mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  ASSERT_NE(view, MAP_FAILED);
  fill_pattern(view, kBytes, 91);

  Region* scratch = ep->register_region(4096);
  ASSERT_NE(scratch, nullptr);
  std::unique_ptr<PreparedRegion> prepared;
  std::string why;
  std::atomic<bool> done{false};
  std::thread worker([&] {
    prepared = ep->prepare_external(fd, kBytes, why);
    done = true;
  });
  uint64_t wr = 700;
  size_t busy = 0;
  while (!done || busy == 0) {  // the connection stays in use meanwhile
    ASSERT_TRUE(ep->post_write(c, *scratch, 0, remote, 0, 4096, ++wr));
    auto w = wait_completion(*ep, wr);
    ASSERT_TRUE(w.has_value());
    ASSERT_EQ(w->status, Status::Ok);
    ++busy;
  }
  worker.join();
  close(fd);  // the endpoint holds what it needs
  ASSERT_NE(prepared, nullptr) << why;
  Region* ext = ep->adopt_external(std::move(prepared));
  ASSERT_NE(ext, nullptr);
  EXPECT_EQ(ext->size, kBytes);
  Region* in = ep->register_region(kBytes);
  ASSERT_NE(in, nullptr);
  ASSERT_TRUE(ep->post_write(c, *ext, 8192, remote, 16, 100000, ++wr));
  auto w = wait_completion(*ep, wr);
  ASSERT_TRUE(w.has_value());
  EXPECT_EQ(w->status, Status::Ok);
  ASSERT_TRUE(ep->post_read(c, *in, 0, remote, 16, 100000, ++wr));
  auto r = wait_completion(*ep, wr);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(std::memcmp(view + 8192, in->data, 100000), 0);
  ep->deregister(ext);
  munmap(view, kBytes);
}

TEST_P(Conformance, WriteWithImmediateArrivesAfterItsData) {
  auto addr = peer();
  auto ep = tester();
  ConnId c = open(*ep, addr);
  const RemoteRegion remote = *conns_[c].region;
  constexpr uint32_t kBlocks = 48;
  Region* buf = ep->register_region(kBlocks * kAgentBlock);
  ASSERT_NE(buf, nullptr);
  std::vector<uint64_t> expect(kBlocks);
  uint64_t wr = 0;
  for (uint32_t b = 0; b < kBlocks; ++b) {
    std::byte* block = buf->data + b * kAgentBlock;
    fill_pattern(block, kAgentBlock, b + 1000);
    expect[b] = checksum(block, kAgentBlock);
    // Even blocks: data by a plain WRITE, then an empty WRITE_WITH_IMM.
    // Odd blocks: the data travels in the WRITE_WITH_IMM itself.
    if (b % 2 == 0) {
      ASSERT_TRUE(wait(*ep, [&] {
        return ep->post_write(c, *buf, b * kAgentBlock, remote, b * kAgentBlock, kAgentBlock, ++wr,
                              /*signaled=*/false);
      }));
      ASSERT_TRUE(
          wait(*ep, [&] { return ep->post_write_imm(c, *buf, 0, remote, 0, 0, b, ++wr, false); }));
    } else {
      ASSERT_TRUE(wait(*ep, [&] {
        return ep->post_write_imm(c, *buf, b * kAgentBlock, remote, b * kAgentBlock, kAgentBlock, b,
                                  ++wr, false);
      }));
    }
  }
  ASSERT_TRUE(wait(*ep, [&] { return conns_[c].imms.size() == kBlocks; }))
      << conns_[c].imms.size() << " of " << kBlocks << " immediates seen";
  for (uint32_t i = 0; i < kBlocks; ++i) {
    const auto& m = conns_[c].imms[i];
    EXPECT_EQ(m.imm, i) << "immediates out of order";
    EXPECT_EQ(m.len, i % 2 == 0 ? 0u : kAgentBlock);
    EXPECT_EQ(m.checksum, expect[m.imm]) << "block " << m.imm << " not visible at its immediate";
  }
  EXPECT_TRUE(done_.empty()) << "unsignaled operations produced completions";
}

TEST_P(Conformance, SendsAreDeliveredInOrderAndOversizeIsRefused) {
  auto addr = peer();
  auto ep = tester();
  ConnId c = open(*ep, addr);
  constexpr int kMsgs = 40;
  uint64_t wr = 0;
  for (int i = 0; i < kMsgs; ++i) {
    std::vector<std::byte> msg(sizeof(AgentMsg) + static_cast<size_t>(i) * 97 % 4000);
    AgentMsg type = AgentMsg::Echo;
    std::memcpy(msg.data(), &type, sizeof(type));
    fill_pattern(msg.data() + sizeof(type), msg.size() - sizeof(type), static_cast<uint32_t>(i));
    ASSERT_TRUE(wait(*ep, [&] { return ep->post_send(c, msg, ++wr); }));
  }
  ASSERT_TRUE(wait(*ep, [&] { return conns_[c].echoes.size() == kMsgs; }));
  for (int i = 0; i < kMsgs; ++i) {
    const auto& e = conns_[c].echoes[static_cast<size_t>(i)];
    ASSERT_EQ(e.size(), sizeof(AgentMsg) + static_cast<size_t>(i) * 97 % 4000) << "message " << i;
    std::vector<std::byte> want(e.size() - sizeof(AgentMsg));
    fill_pattern(want.data(), want.size(), static_cast<uint32_t>(i));
    if (!want.empty()) {
      EXPECT_EQ(std::memcmp(e.data() + sizeof(AgentMsg), want.data(), want.size()), 0);
    }
  }
  std::vector<std::byte> huge(8192);
  bool posted = ep->post_send(c, huge, 777);
  if (posted) {
    auto r = wait_completion(*ep, 777);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->status, Status::TooLarge);
  }
}

TEST_P(Conformance, OutOfBoundsRemoteAccessFailsCleanly) {
  auto addr = peer();
  auto ep = tester();
  Region* buf = ep->register_region(8192);
  ASSERT_NE(buf, nullptr);
  struct Case {
    const char* what;
    bool read;
    uint64_t off;
    size_t len;
    bool bad_key;
  };
  for (Case k : {Case{"write past end", false, kAgentRegionBytes - 100, 4096, false},
                 Case{"read past end", true, kAgentRegionBytes, 8, false},
                 Case{"write with a bad key", false, 0, 64, true}}) {
    SCOPED_TRACE(k.what);
    conns_.clear();
    done_.clear();
    ConnId c = open(*ep, addr);
    RemoteRegion remote = *conns_[c].region;
    if (k.bad_key) remote.rkey ^= 0x5a5a5a;
    ASSERT_TRUE(k.read ? ep->post_read(c, *buf, 0, remote, k.off, k.len, 1)
                       : ep->post_write(c, *buf, 0, remote, k.off, k.len, 1));
    auto r = wait_completion(*ep, 1);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->status, Status::RemoteAccess);
    ASSERT_TRUE(wait(*ep, [&] { return conns_[c].disconnected; }))
        << "a remote access error must break the connection";
    EXPECT_FALSE(ep->post_write(c, *buf, 0, *conns_[c].region, 0, 8, 2));
  }
  // The endpoint and the peer survive: a new connection works.
  conns_.clear();
  ConnId c = open(*ep, addr);
  ASSERT_TRUE(ep->post_write(c, *buf, 0, *conns_[c].region, 0, 64, 9));
  auto r = wait_completion(*ep, 9);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, Status::Ok);
}

TEST_P(Conformance, LocalRangeOutsideRegionFailsCleanly) {
  auto addr = peer();
  auto ep = tester();
  ConnId c = open(*ep, addr);
  Region* buf = ep->register_region(4096);
  ASSERT_NE(buf, nullptr);
  if (ep->post_write(c, *buf, 4000, *conns_[c].region, 0, 200, 5)) {
    auto r = wait_completion(*ep, 5);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->status, Status::LocalAccess);
  }
}

TEST_P(Conformance, PeerDeathIsReportedAndNothingHangs) {
  auto addr = peer();
  auto ep = tester();
  ConnId c = open(*ep, addr);
  Region* buf = ep->register_region(65536);
  ASSERT_NE(buf, nullptr);
  ASSERT_TRUE(ep->post_write(c, *buf, 0, *conns_[c].region, 0, 65536, 1));
  ASSERT_TRUE(wait_completion(*ep, 1).has_value());
  h_->kill_peer();
  // Keep posting: every accepted post must complete (Ok before the death was
  // noticed, Flushed after), and the death must surface as Disconnected.
  uint64_t posted = 0;
  ASSERT_TRUE(wait(*ep, [&] {
    if (!conns_[c].disconnected &&
        ep->post_write(c, *buf, 0, *conns_[c].region, 0, 64, 100 + posted))
      ++posted;
    return conns_[c].disconnected;
  }));
  ASSERT_TRUE(wait(*ep, [&] { return done_.size() >= posted; }))
      << done_.size() << " of " << posted << " posts completed";
  for (const auto& d : done_) EXPECT_TRUE(d.status == Status::Ok || d.status == Status::Flushed);
  EXPECT_FALSE(ep->post_write(c, *buf, 0, *conns_[c].region, 0, 64, 9999));
}

TEST_P(Conformance, PeerDisconnectIsDetected) {
  auto addr = peer();
  auto ep = tester();
  ConnId c = open(*ep, addr);
  AgentMsg bye = AgentMsg::Disconnect;
  ASSERT_TRUE(ep->post_send(c, std::as_bytes(std::span(&bye, 1)), 1));
  ASSERT_TRUE(wait(*ep, [&] { return conns_[c].disconnected; }));
}

TEST_P(Conformance, ManyConcurrentConnections) {
  auto addr = peer();
  auto ep = tester();
  constexpr int kConns = 64;
  std::vector<ConnId> ids;
  for (int i = 0; i < kConns; ++i) ids.push_back(ep->connect(addr, kPeer));
  ASSERT_TRUE(wait(*ep, [&] {
    for (ConnId id : ids)
      if (!conns_[id].region) return false;
    return true;
  })) << "not all connections came up";
  Region* out = ep->register_region(kConns * 256);
  Region* in = ep->register_region(kConns * 256);
  ASSERT_NE(out, nullptr);
  ASSERT_NE(in, nullptr);
  fill_pattern(out->data, kConns * 256, 42);
  // Each connection writes its own slice, then reads it back over the same
  // connection: per-connection order makes the read see the write.
  for (int i = 0; i < kConns; ++i) {
    size_t off = static_cast<size_t>(i) * 256;
    ASSERT_TRUE(
        ep->post_write(ids[i], *out, off, *conns_[ids[i]].region, off, 256, 1000 + i, false));
    ASSERT_TRUE(ep->post_read(ids[i], *in, off, *conns_[ids[i]].region, off, 256, 2000 + i));
  }
  ASSERT_TRUE(wait(*ep, [&] { return done_.size() >= kConns; }));
  for (const auto& d : done_) EXPECT_EQ(d.status, Status::Ok);
  EXPECT_EQ(std::memcmp(out->data, in->data, kConns * 256), 0);
}

INSTANTIATE_TEST_SUITE_P(Fabrics, Conformance, ::testing::Values("sim", "shm", "verbs"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace rcpg::test
