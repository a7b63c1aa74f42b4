// The passive side of the transport conformance tests. One-sided operations
// need nothing from the target's CPU, so the peer is a small agent that
// accepts connections, advertises one registered region, and answers a few
// control messages. It runs in a forked process on another (soft-RoCE) host
// for shm and verbs, and in-process for sim.
#pragma once

#include <cstdint>
#include <memory>

#include "transport/fabric.h"

namespace rcpg::test {

// Control messages exchanged with the agent (post_send / Recv).
enum class AgentMsg : uint32_t {
  Region = 1,      // agent -> tester: RemoteRegion of its test region
  Echo = 2,        // tester -> agent: send the same bytes back
  ImmSeen = 3,     // agent -> tester: a WRITE_WITH_IMM arrived (imm, len, block checksum)
  Disconnect = 4,  // tester -> agent: please disconnect this connection
};

struct AgentRegionMsg {
  AgentMsg type = AgentMsg::Region;
  uint32_t pad = 0;
  transport::RemoteRegion region{};
};

struct AgentImmSeenMsg {
  AgentMsg type = AgentMsg::ImmSeen;
  uint32_t imm = 0;
  uint32_t len = 0;
  uint32_t pad = 0;
  uint64_t checksum = 0;  // of block `imm` (kAgentBlock bytes) when the imm arrived
};

inline constexpr size_t kAgentBlock = 4096;
inline constexpr size_t kAgentRegionBytes = (size_t{16} << 20) + (size_t{1} << 20);

uint64_t checksum(const std::byte* data, size_t len);

class PeerAgent {
 public:
  // Creates the agent's endpoint (listening) through `ep`.
  explicit PeerAgent(std::unique_ptr<transport::Endpoint> ep);
  bool ok() const { return region_ != nullptr; }
  // Handles whatever is pending; returns true if it did anything.
  bool poll_once();
  // Runs until the process is killed.
  [[noreturn]] void run_forever();
  transport::Endpoint& endpoint() { return *ep_; }

 private:
  std::unique_ptr<transport::Endpoint> ep_;
  transport::Region* region_ = nullptr;
};

}  // namespace rcpg::test
