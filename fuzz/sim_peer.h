// A hostile node on the simulated fabric for the engine fuzz targets: a bare
// endpoint, no engine, with the engine's memory layout (log mirror, inbound
// rings, staging, ack slots) so that it can introduce itself like a real
// node and then write whatever the input says into the engines' memory.
// It completes the authenticated connection like a configured node (the sim
// checks node ids the same way), re-connects to lower ids after a
// disconnect when asked to, and hands received control messages and RDMA
// READ completions to whoever drives it (fuzz/member_agent.h).
#pragma once

#include <array>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fuzz/fuzz_input.h"
#include "ordering/engine.h"
#include "ordering/engine_peer.h"
#include "transport/sim/sim_world.h"

namespace rcpg::fuzz {

using ordering::AckSlot;
using ordering::HelloMsg;
using transport::Completion;
using transport::ConnId;
using transport::Endpoint;
using transport::NodeId;
using transport::Region;

struct ClusterShape {
  std::vector<NodeId> nodes;  // ascending; the first is the sequencer
  size_t log_bytes = 0, inbound_bytes = 0;
  size_t slot_of(NodeId id) const {
    for (size_t i = 0; i < nodes.size(); ++i)
      if (nodes[i] == id) return i;
    return 0;
  }
};

class SimPeer {
 public:
  SimPeer(transport::SimWorld& world, NodeId self, const ClusterShape& shape)
      : self_(self), shape_(shape) {
    transport::EndpointConfig ec;
    ec.node_id = self;
    ec.listen_address = "n" + std::to_string(self);
    ec.send_queue_depth = 1 << 16;
    ec.log = [](std::string_view) {};
    ep_ = world.create_endpoint(ec);
    size_t n = shape.nodes.size();
    log_ = ep_->register_region(shape.log_bytes);
    inbound_ = ep_->register_region(n * shape.inbound_bytes);
    staging_ = ep_->register_region(shape.inbound_bytes);
    ctrl_ = ep_->register_region(n * sizeof(AckSlot));
    scratch_ = ep_->register_region(kScratch);
  }

  static constexpr size_t kScratch = size_t{256} << 10;

  // The higher id connects (as the engine does); ids with a connection or an
  // attempt under way are skipped.
  void connect_lower() {
    for (NodeId id : shape_.nodes)
      if (id < self_ && !conn_.count(id) && !connecting_.count(id))
        connecting_[id] = ep_->connect("n" + std::to_string(id), id);
  }
  // Drops the connection to `id` (the engine sees Disconnected).
  void disconnect(NodeId id) {
    auto it = conn_.find(id);
    if (it == conn_.end()) return;
    ep_->disconnect(it->second);
    forget(id);
  }

  NodeId id() const { return self_; }
  Endpoint& ep() { return *ep_; }
  Region& log() { return *log_; }
  Region& inbound() { return *inbound_; }
  Region& staging() { return *staging_; }
  Region& ctrl() { return *ctrl_; }
  Region& scratch() { return *scratch_; }

  // What each engine told us about itself (once its HelloMsg arrived).
  const HelloMsg* hello_of(NodeId id) const {
    auto it = hello_.find(id);
    return it == hello_.end() ? nullptr : &it->second;
  }
  ConnId conn_to(NodeId id) const {
    auto it = conn_.find(id);
    return it == conn_.end() ? transport::kNoConn : it->second;
  }

  // What own_hello() claims: a process incarnation (never 0 for a real
  // node) and the installed view's epoch.
  uint32_t incarnation = 1;
  uint32_t epoch = 0;

  HelloMsg own_hello() const {
    HelloMsg m;
    m.node = self_;
    m.incarnation = incarnation;
    m.epoch = epoch;
    m.log_bytes = shape_.log_bytes;
    m.inbound_bytes = shape_.inbound_bytes;
    m.log = log_->remote;
    m.inbound = inbound_->remote;
    m.ctrl = ctrl_->remote;
    return m;
  }

  // Events and completions. `on_recv_imm(peer, imm)` sees immediates.
  void pump(const std::function<void(NodeId, uint32_t)>& on_recv_imm = {}) {
    while (auto ev = ep_->next_event()) {
      switch (ev->type) {
        case transport::EventType::Connected: {
          connecting_.erase(ev->peer);
          // A newer connection replaces an older one (as in the engine).
          if (auto old = conn_.find(ev->peer); old != conn_.end() && old->second != ev->conn) {
            ep_->disconnect(old->second);
            forget(ev->peer);
          }
          conn_[ev->peer] = ev->conn;
          peer_of_[ev->conn] = ev->peer;
          if (!hello_sent_[ev->peer] && send_hello_) {
            hello_sent_[ev->peer] = true;
            send_hello_(ev->peer, ev->conn);
          }
          break;
        }
        case transport::EventType::Disconnected:
          if (auto it = conn_.find(ev->peer); it != conn_.end() && it->second == ev->conn)
            forget(ev->peer);
          break;
        case transport::EventType::Rejected:
        case transport::EventType::Unreachable:
          if (auto it = connecting_.find(ev->peer);
              it != connecting_.end() && it->second == ev->conn)
            connecting_.erase(it);
          break;
        case transport::EventType::PeerRejected:
          break;
      }
    }
    std::array<Completion, 64> wc;
    size_t n;
    while ((n = ep_->poll(wc)) > 0) {
      for (size_t i = 0; i < n; ++i) {
        const Completion& c = wc[i];
        if (c.op == transport::Op::Read) {
          if (on_read_) on_read_(c.wr_id, c.status == transport::Status::Ok);
          continue;
        }
        auto p = peer_of_.find(c.conn);
        if (p == peer_of_.end() || c.status != transport::Status::Ok) continue;
        if (c.op == transport::Op::Recv) {
          if (c.len == sizeof(HelloMsg)) {
            HelloMsg m;
            std::memcpy(&m, c.data, sizeof(m));
            if (m.magic == HelloMsg{}.magic && m.node == p->second) hello_[p->second] = m;
          }
          if (on_recv_) on_recv_(p->second, reinterpret_cast<const uint8_t*>(c.data), c.len);
        } else if (c.op == transport::Op::RecvImm && on_recv_imm) {
          on_recv_imm(p->second, c.imm);
        }
      }
    }
  }

  // Every two-sided message received (hellos included), and every RDMA READ
  // completion (wr_id, ok).
  void on_recv(std::function<void(NodeId, const uint8_t*, size_t)> fn) { on_recv_ = std::move(fn); }
  void on_read(std::function<void(uint64_t, bool)> fn) { on_read_ = std::move(fn); }
  // Connected peers whose introduction arrived.
  std::vector<NodeId> introduced() const {
    std::vector<NodeId> out;
    for (auto& [id, c] : conn_)
      if (hello_.count(id)) out.push_back(id);
    return out;
  }

  // How we introduce ourselves to a newly connected engine (default: honestly).
  void on_connected(std::function<void(NodeId, ConnId)> fn) { send_hello_ = std::move(fn); }
  // Called from that hook when it did not introduce us after all (a silent
  // node): introduce_pending() tries again.
  void hello_declined(NodeId id) { hello_sent_[id] = false; }
  void introduce_pending() {
    for (auto& [id, c] : conn_)
      if (!hello_sent_[id] && send_hello_) {
        hello_sent_[id] = true;
        send_hello_(id, c);
      }
  }

  // Sends our introduction again on every connection (after a restart).
  void hello_all() {
    for (auto& [id, c] : conn_) send_honest_hello(c);
  }

  void send_honest_hello(ConnId conn) {
    HelloMsg m = own_hello();
    ep_->post_send(conn, std::as_bytes(std::span(&m, 1)), 0);
  }

  // Writes `bytes` (staged in the scratch region) at `remote_off` of `to`'s
  // region, the last write carrying `imm` when given.
  bool write(NodeId to, const transport::RemoteRegion& remote, uint64_t remote_off,
             std::span<const uint8_t> bytes, std::optional<uint32_t> imm) {
    ConnId c = conn_to(to);
    if (c == transport::kNoConn) return false;
    // Posted bytes must stay unchanged until the operation executes: each
    // write gets its own piece of the scratch region.
    size_t len = std::min(bytes.size(), kScratch / 4);
    if (scratch_used_ + len > kScratch) scratch_used_ = 0;
    size_t off = scratch_used_;
    scratch_used_ += (len + 7) & ~size_t{7};
    if (len) std::memcpy(scratch_->data + off, bytes.data(), len);
    if (imm) return ep_->post_write_imm(c, *scratch_, off, remote, remote_off, len, *imm, 0, false);
    return ep_->post_write(c, *scratch_, off, remote, remote_off, len, 0, false);
  }

 private:
  void forget(NodeId id) {
    auto it = conn_.find(id);
    if (it == conn_.end()) return;
    peer_of_.erase(it->second);
    conn_.erase(it);
    hello_.erase(id);
    hello_sent_.erase(id);
  }

  NodeId self_;
  ClusterShape shape_;
  std::unique_ptr<Endpoint> ep_;
  size_t scratch_used_ = 0;
  Region *log_ = nullptr, *inbound_ = nullptr, *staging_ = nullptr, *ctrl_ = nullptr,
         *scratch_ = nullptr;
  std::map<NodeId, ConnId> conn_;
  std::map<ConnId, NodeId> peer_of_;
  std::map<NodeId, HelloMsg> hello_;
  std::map<NodeId, bool> hello_sent_;
  std::map<NodeId, ConnId> connecting_;
  std::function<void(NodeId, ConnId)> send_hello_;
  std::function<void(NodeId, const uint8_t*, size_t)> on_recv_;
  std::function<void(uint64_t, bool)> on_read_;
};

// Checks common to every delivery an engine makes, whatever the input.
struct DeliveryChecker {
  const ordering::Engine* engine = nullptr;
  const ClusterShape* shape = nullptr;
  bool deliver_fragments = false;

  void check(const ordering::Delivery& d) const {
    const Region& log = engine->log_region();
    bool in_log = d.data >= log.data && d.data <= log.data + log.size;
    if (in_log) FUZZ_CHECK(d.len <= static_cast<size_t>(log.data + log.size - d.data));
    if (!in_log) FUZZ_CHECK(d.len == 0 || (!deliver_fragments && d.flags == 0));
    if (d.len) FUZZ_CHECK(d.data != nullptr);
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < d.len; ++i) sink = sink ^ static_cast<uint8_t>(d.data[i]);
    FUZZ_CHECK(d.position <= engine->received_position());
    FUZZ_CHECK(d.release_to <= d.position);
  }
};

}  // namespace rcpg::fuzz
