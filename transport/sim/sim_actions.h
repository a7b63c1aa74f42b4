// What travels through the simulated fabric: connection setup messages and
// posted operations, queued per connection direction (a channel).
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "transport/auth.h"
#include "transport/fabric.h"

namespace rcpg::transport {

struct SimAction {
  enum class Kind : uint8_t { ConnectRequest, ConnectReply, Op };
  Kind kind = Kind::Op;
  Op op = Op::Write;
  NodeId from = 0;  // node ids: for cuts and delays
  NodeId to = 0;
  uint64_t from_ep = 0;  // endpoint serials: node ids repeat across restarts
  uint64_t to_ep = 0;
  ConnId from_conn = kNoConn;
  ConnId to_conn = kNoConn;
  uint64_t ready_at = 0;
  // ConnectRequest / ConnectReply
  Hello hello{};
  bool accepted = false;
  std::string reason;
  // Op
  uint32_t local_region = 0;
  size_t local_off = 0;
  RemoteRegion remote{};
  uint64_t remote_off = 0;
  size_t len = 0;
  uint32_t imm = 0;
  uint64_t wr_id = 0;
  bool signaled = true;
  std::vector<std::byte> payload;
};

struct SimChannel {
  NodeId from = 0;
  NodeId to = 0;
  std::deque<SimAction> queue;
};

}  // namespace rcpg::transport
