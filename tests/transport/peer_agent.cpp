#include "tests/transport/peer_agent.h"

#include <array>
#include <cstring>

#include "transport/spin_wait.h"

namespace rcpg::test {

using namespace rcpg::transport;

uint64_t checksum(const std::byte* data, size_t len) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (size_t i = 0; i < len; ++i) {
    h ^= static_cast<uint8_t>(data[i]);
    h *= 1099511628211ull;
  }
  return h;
}

PeerAgent::PeerAgent(std::unique_ptr<Endpoint> ep) : ep_(std::move(ep)) {
  if (ep_) region_ = ep_->register_region(kAgentRegionBytes);
}

bool PeerAgent::poll_once() {
  bool did = false;
  while (auto ev = ep_->next_event()) {
    did = true;
    if (ev->type == EventType::Connected && ev->inbound) {
      AgentRegionMsg msg;
      msg.region = region_->remote;
      ep_->post_send(ev->conn, std::as_bytes(std::span(&msg, 1)), 0);
    }
  }
  std::array<Completion, 32> wc;
  size_t n = ep_->poll(wc);
  // Replies are collected first: Recv payloads are only valid until the next poll.
  for (size_t i = 0; i < n; ++i) {
    did = true;
    const Completion& c = wc[i];
    if (c.status != Status::Ok) continue;
    if (c.op == Op::Recv && c.len >= sizeof(AgentMsg)) {
      AgentMsg type;
      std::memcpy(&type, c.data, sizeof(type));
      if (type == AgentMsg::Echo) {
        // A full send queue drops the echo; the tester notices the gap.
        ep_->post_send(c.conn, {c.data, c.len}, 0);
      } else if (type == AgentMsg::Disconnect) {
        ep_->disconnect(c.conn);
      }
    } else if (c.op == Op::RecvImm) {
      AgentImmSeenMsg msg;
      msg.imm = c.imm;
      msg.len = c.len;
      size_t off = size_t{c.imm} * kAgentBlock;
      if (off + kAgentBlock <= region_->size)
        msg.checksum = checksum(region_->data + off, kAgentBlock);
      ep_->post_send(c.conn, std::as_bytes(std::span(&msg, 1)), 0);
    }
  }
  return did;
}

void PeerAgent::run_forever() {
  SpinWait spin(2000, std::chrono::milliseconds(50));
  for (;;) {
    if (poll_once())
      spin.busy();
    else
      spin.idle(*ep_);
  }
}

}  // namespace rcpg::test
