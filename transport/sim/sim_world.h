// The simulated fabric: every endpoint of a test cluster lives in one process
// and one thread; a SimWorld holds all of them and executes in-flight
// operations one at a time in an order fixed by a seed. Ordered per
// connection direction, unordered across connections, like RC.
//
// Faults: kill an endpoint, cut and heal a link, delay a link. A cut link
// breaks its connections (as an RC retry-exceeded error would): both ends get
// Disconnected and their outstanding operations complete Flushed.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "transport/fabric.h"
#include "transport/sim/sim_actions.h"

namespace rcpg::transport {

class SimEndpoint;

class SimWorld {
 public:
  explicit SimWorld(uint64_t seed);
  ~SimWorld();
  SimWorld(const SimWorld&) = delete;
  SimWorld& operator=(const SimWorld&) = delete;

  // The endpoint's listen_address (if any) is its name for connect().
  std::unique_ptr<Endpoint> create_endpoint(const EndpointConfig& cfg);

  // Executes one in-flight action chosen by the seeded generator. Returns
  // false when nothing is in flight (or everything left is delayed and time
  // was advanced instead).
  bool step();
  // Steps until nothing is in flight or `max_steps` were taken; returns steps.
  size_t run(size_t max_steps = 1'000'000);
  bool idle() const;
  uint64_t now() const { return now_; }
  std::mt19937_64& rng() { return rng_; }

  // --- faults -----------------------------------------------------------
  // The node's endpoint stops: its connections break at the peers.
  void kill(NodeId node);
  // No traffic between a and b until heal(); existing connections break.
  void cut(NodeId a, NodeId b);
  void heal(NodeId a, NodeId b);
  bool is_cut(NodeId a, NodeId b) const;
  // Every action on links between a and b waits `steps` extra logical steps.
  void set_delay(NodeId a, NodeId b, uint32_t steps);

  // Counters for tests.
  uint64_t actions_executed() const { return executed_; }

 private:
  friend class SimEndpoint;

  void attach(SimEndpoint* ep);
  void detach(SimEndpoint* ep);
  SimEndpoint* find_by_address(const std::string& address) const;
  SimEndpoint* find_by_serial(uint64_t serial) const;
  uint32_t delay_between(NodeId a, NodeId b) const;
  uint64_t open_channel(NodeId from, NodeId to);
  void enqueue(uint64_t channel, SimAction action);
  void execute(SimAction& action);
  void execute_connect_request(SimAction& action);
  void execute_connect_reply(SimAction& action);
  void execute_op(SimAction& action);
  // Breaks one connection at both ends: flushes queued operations and raises
  // Disconnected on both sides.
  void break_connection(uint64_t ep, ConnId conn, const std::string& reason);
  void flush_channel(uint64_t channel);
  void kill_endpoint(SimEndpoint* ep);

  std::mt19937_64 rng_;
  uint64_t now_ = 0;
  uint64_t executed_ = 0;
  uint64_t next_channel_ = 1;
  uint64_t next_serial_ = 1;
  std::vector<SimEndpoint*> endpoints_;
  std::map<uint64_t, SimChannel> channels_;
  std::set<std::pair<NodeId, NodeId>> cuts_;
  std::map<std::pair<NodeId, NodeId>, uint32_t> delays_;
};

}  // namespace rcpg::transport
