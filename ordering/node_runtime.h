// One node's runtime: the fabric endpoint, the engine, and the progress loop
// that drives them (spin, then block on completions/doorbells so an idle node
// uses no CPU), with the polling thread pinned near the RDMA device.
// Used by rcpg-bench and the multi-process tests; the daemon builds on it.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "ordering/engine.h"
#include "transport/fabric.h"
#include "transport/placement.h"
#include "transport/spin_wait.h"

namespace rcpg::ordering {

struct NodeConfig {
  std::string fabric = "shm";          // shm | verbs
  transport::EndpointConfig endpoint;  // node_id, listen/source address, key
  EngineConfig engine;                 // nodes, ring sizes (self is set from endpoint)
  uint32_t spin_iterations = 50;       // polls before blocking
  bool spin_yield = false;             // sched_yield while spinning (more pollers than cores)
  bool pin = false;                    // bind the polling thread with hwloc
  int pin_core = -1;
};

class NodeRuntime {
 public:
  NodeRuntime(NodeConfig cfg, Engine::DeliverFn deliver);
  // Creates the endpoint and starts the engine; false + why on failure.
  bool start(std::string& why);
  // One progress round; blocks briefly (spin-then-block) if there was nothing to do.
  void run_once();
  // Runs until done() is true or the timeout passes; returns done().
  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds timeout);
  // Sends, progressing while back-pressured; waits until a large message
  // has been streamed. False on timeout or an engine failure.
  bool send_blocking(EntryKind kind, Guarantee g, uint32_t group, uint32_t pid,
                     std::span<const std::byte> payload, std::chrono::milliseconds timeout);

  Engine& engine() { return *engine_; }
  transport::Endpoint& endpoint() { return *ep_; }
  const transport::Placement& placement() const { return placement_; }
  uint64_t blocked_waits() const { return blocked_; }

 private:
  NodeConfig cfg_;
  Engine::DeliverFn deliver_;
  std::unique_ptr<transport::Endpoint> ep_;
  std::unique_ptr<Engine> engine_;
  transport::SpinWait spin_;
  transport::Placement placement_;
  uint64_t blocked_ = 0;
};

}  // namespace rcpg::ordering
