// Basic end-to-end behaviour of the engine on the simulated fabric.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include "ordering/engine.h"
#include "transport/sim/sim_world.h"

namespace rcpg::ordering {
namespace {

using namespace rcpg::transport;

struct SimCluster {
  explicit SimCluster(int n, uint64_t seed, EngineConfig base = {}) : world(seed) {
    for (int i = 1; i <= n; ++i) base.nodes.push_back({NodeId(i), "node" + std::to_string(i)});
    for (int i = 1; i <= n; ++i) {
      EndpointConfig ec;
      ec.node_id = NodeId(i);
      ec.listen_address = "node" + std::to_string(i);
      eps.push_back(world.create_endpoint(ec));
      EngineConfig cfg = base;
      cfg.self = NodeId(i);
      auto* log = &delivered[NodeId(i)];
      engines.push_back(std::make_unique<Engine>(*eps.back(), cfg, [log](const Delivery& d) {
        log->push_back(
            {d.kind, d.sender, d.sseq, std::string(reinterpret_cast<const char*>(d.data), d.len)});
      }));
    }
    for (auto& e : engines) {
      std::string why;
      EXPECT_TRUE(e->start(why)) << why;
    }
  }
  void run(int rounds) {
    for (int r = 0; r < rounds; ++r) {
      world.run(50);
      for (auto& e : engines) e->progress();
    }
  }
  struct Got {
    EntryKind kind;
    NodeId sender;
    uint64_t sseq;
    std::string data;
  };
  SimWorld world;
  std::vector<std::unique_ptr<Endpoint>> eps;
  std::vector<std::unique_ptr<Engine>> engines;
  std::map<NodeId, std::vector<Got>> delivered;
};

TEST(EngineSmoke, ThreeNodesAgreeOnOrder) {
  SimCluster c(3, 1);
  c.run(50);
  for (auto& e : c.engines) ASSERT_TRUE(e->all_connected());
  for (int i = 0; i < 20; ++i)
    for (auto& e : c.engines) {
      // (built with append: GCC 12 -O3 flags "literal + string" with a false -Wrestrict)
      std::string msg = std::to_string(e->self());
      msg.append("-").append(std::to_string(i));
      ASSERT_EQ(e->send(EntryKind::Data, Guarantee::Agreed, 1, 0, std::as_bytes(std::span(msg))),
                SendResult::Ok);
    }
  c.run(200);
  auto& a = c.delivered[1];
  ASSERT_EQ(a.size(), 61u);  // the view + 60 messages
  EXPECT_EQ(a[0].kind, EntryKind::View);
  for (NodeId n : {2u, 3u}) {
    auto& b = c.delivered[n];
    ASSERT_EQ(b.size(), a.size());
    for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].data, b[i].data) << "position " << i;
  }
}

TEST(EngineSmoke, LargeMessageArrivesWhole) {
  EngineConfig cfg;
  cfg.log_bytes = 64 << 10;
  cfg.inbound_bytes = 16 << 10;
  SimCluster c(3, 2, cfg);
  c.run(50);
  std::string big(1 << 20, 'x');
  for (size_t i = 0; i < big.size(); ++i) big[i] = char('a' + (i * 7) % 26);
  ASSERT_EQ(
      c.engines[2]->send(EntryKind::Data, Guarantee::Safe, 1, 0, std::as_bytes(std::span(big))),
      SendResult::Ok);
  for (int r = 0; r < 20000 && (c.delivered[1].size() < 2 || c.delivered[2].size() < 2 ||
                                c.delivered[3].size() < 2);
       ++r)
    c.run(1);
  for (NodeId n : {1u, 2u, 3u}) {
    ASSERT_EQ(c.delivered[n].size(), 2u) << "node " << n;
    EXPECT_EQ(c.delivered[n][1].data, big);
  }
}

}  // namespace
}  // namespace rcpg::ordering
