// Engine set-up, connections and the progress loop. The sender, sequencer
// and member roles live in engine_sender.cpp, engine_sequencer.cpp and
// engine_member.cpp.
#include "ordering/engine.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <iostream>

#include "ordering/engine_peer.h"

namespace rcpg::ordering {

using namespace rcpg::transport;

Engine::Engine(Endpoint& ep, EngineConfig cfg, DeliverFn deliver, LogFn log)
    : ep_(ep), cfg_(std::move(cfg)), deliver_fn_(std::move(deliver)), log_fn_(std::move(log)) {
  if (!log_fn_)
    log_fn_ = [self = cfg_.self](const std::string& line) {
      std::cerr << "rcpg node " << self << ": " << line << "\n";
    };
}

Engine::~Engine() {
  for (Region* r : {log_, inbound_, staging_, ctrl_, ack_src_})
    if (r) ep_.deregister(r);
}

void Engine::fail(const std::string& why) {
  if (!failed_) log_fn_("engine stopped: " + why);
  failed_ = true;
}

bool Engine::start(std::string& why) {
  auto bad_ring = [](size_t n) { return n < 4096 || n > kMaxRingBytes || n % kAlign != 0; };
  if (bad_ring(cfg_.log_bytes) || bad_ring(cfg_.inbound_bytes)) {
    why = "ring sizes must be multiples of 8 between 4 KiB and 1 GiB";
    return false;
  }
  if (cfg_.max_fragment == 0) cfg_.max_fragment = cfg_.inbound_bytes / 4;
  if (record_bytes(cfg_.max_fragment) > std::min(cfg_.inbound_bytes, cfg_.log_bytes) / 2) {
    why = "max_fragment must leave room for two records in each ring";
    return false;
  }
  std::vector<NodeAddress> nodes = cfg_.nodes;
  std::sort(nodes.begin(), nodes.end(), [](auto& a, auto& b) { return a.id < b.id; });
  for (size_t i = 1; i < nodes.size(); ++i)
    if (nodes[i].id == nodes[i - 1].id) {
      why = "node " + std::to_string(nodes[i].id) + " is configured twice";
      return false;
    }
  auto me = std::find_if(nodes.begin(), nodes.end(), [&](auto& n) { return n.id == cfg_.self; });
  if (me == nodes.end()) {
    why = "this node (" + std::to_string(cfg_.self) + ") is not in the node list";
    return false;
  }
  peers_.resize(nodes.size());
  for (size_t i = 0; i < nodes.size(); ++i) {
    peers_[i].id = nodes[i].id;
    peers_[i].address = nodes[i].address;
    peers_[i].slot = i;
    peers_[i].self = nodes[i].id == cfg_.self;
  }
  self_slot_ = static_cast<size_t>(me - nodes.begin());
  peers_[self_slot_].connected = peers_[self_slot_].introduced = true;
  sequencer_ = nodes.front().id;
  reassembly_.resize(nodes.size());
  ahead_blocked_.assign(nodes.size(), 0);
  early_.reserve(kMaxEarly);

  size_t n = nodes.size();
  log_ = ep_.register_region(cfg_.log_bytes);
  inbound_ = ep_.register_region(n * cfg_.inbound_bytes);
  staging_ = ep_.register_region(cfg_.inbound_bytes);
  ctrl_ = ep_.register_region(n * sizeof(AckSlot));
  ack_src_ = ep_.register_region(sizeof(AckSlot));
  if (!log_ || !inbound_ || !staging_ || !ctrl_ || !ack_src_) {
    why = "could not register the engine's memory";
    return false;
  }
  staging_writer_ = RingWriter{staging_->data, cfg_.inbound_bytes, 0};
  staging_marks_.assign(cfg_.inbound_bytes / sizeof(EntryHeader) + 1, 0);
  log_writer_ = RingWriter{log_->data, cfg_.log_bytes, 0};

  // The higher node id connects; the lower one accepts.
  for (Peer& p : peers_)
    if (p.id < cfg_.self) {
      p.conn = ep_.connect(p.address, p.id);
      if (conn_to_slot_.size() <= p.conn) conn_to_slot_.resize(p.conn + 1, SIZE_MAX);
      conn_to_slot_[p.conn] = p.slot;
    }
  return true;
}

Engine::Peer* Engine::peer_by_conn(ConnId c) {
  if (c >= conn_to_slot_.size() || conn_to_slot_[c] == SIZE_MAX) return nullptr;
  Peer& p = peers_[conn_to_slot_[c]];
  return p.conn == c ? &p : nullptr;
}

Engine::Peer* Engine::peer_by_id(NodeId id) {
  for (Peer& p : peers_)
    if (p.id == id) return &p;
  return nullptr;
}

uint64_t Engine::inbound_consumed(NodeId sender) const {
  if (!is_sequencer()) return 0;
  for (const Peer& p : peers_)
    if (p.id == sender) return p.inbound_read;
  return 0;
}

const char* to_string(Membership m) {
  switch (m) {
    case Membership::Forming: return "forming";
    case Membership::Normal: return "normal";
    case Membership::Changing: return "changing";
    case Membership::NoQuorum: return "no-quorum";
  }
  return "?";
}

bool Engine::quorate() const {
  return !failed_ && view_.state == Membership::Normal;
}

bool Engine::can_send() const {
  if (failed_ || peers_.empty()) return false;
  for (const Peer& p : peers_)
    if (p.id == sequencer_) return p.introduced;
  return false;
}

bool Engine::all_connected() const {
  return !failed_ && !peers_.empty() &&
         std::all_of(peers_.begin(), peers_.end(), [](const Peer& p) { return p.introduced; });
}

double Engine::send_backlog() const {
  return static_cast<double>(staging_writer_.tail - staging_credit_) /
         static_cast<double>(cfg_.inbound_bytes);
}

void Engine::send_hello(Peer& p) {
  HelloMsg m;
  m.node = cfg_.self;
  m.log_bytes = cfg_.log_bytes;
  m.inbound_bytes = cfg_.inbound_bytes;
  m.log = log_->remote;
  m.inbound = inbound_->remote;
  m.ctrl = ctrl_->remote;
  if (!ep_.post_send(p.conn, std::as_bytes(std::span(&m, 1)), 0))
    fail("cannot introduce ourselves to node " + std::to_string(p.id));
}

void Engine::on_hello(Peer& p, const std::byte* data, size_t len) {
  HelloMsg m;
  if (len != sizeof(m)) {
    ++counters_.protocol_errors;
    log_fn_("node " + std::to_string(p.id) + " sent a malformed introduction");
    return;
  }
  std::memcpy(&m, data, sizeof(m));
  if (m.magic != HelloMsg{}.magic || m.node != p.id) {
    ++counters_.protocol_errors;
    log_fn_("node " + std::to_string(p.id) + " sent an introduction for node " +
            std::to_string(m.node));
    return;
  }
  if (m.log_bytes != cfg_.log_bytes || m.inbound_bytes != cfg_.inbound_bytes ||
      m.log.length < cfg_.log_bytes || m.inbound.length < peers_.size() * cfg_.inbound_bytes ||
      m.ctrl.length < peers_.size() * sizeof(AckSlot)) {
    fail("node " + std::to_string(p.id) + " uses different ring sizes (log " +
         std::to_string(m.log_bytes) + ", inbound " + std::to_string(m.inbound_bytes) + ")");
    return;
  }
  p.hello = m;
  p.introduced = true;
}

void Engine::handle_events() {
  while (auto ev = ep_.next_event()) {
    Peer* p = peer_by_id(ev->peer);
    switch (ev->type) {
      case EventType::Connected:
        if (!p || p->self) {
          log_fn_("connection from unconfigured node " + std::to_string(ev->peer));
          ep_.disconnect(ev->conn);
          break;
        }
        p->conn = ev->conn;
        p->connected = true;
        if (conn_to_slot_.size() <= ev->conn) conn_to_slot_.resize(ev->conn + 1, SIZE_MAX);
        conn_to_slot_[ev->conn] = p->slot;
        send_hello(*p);
        break;
      case EventType::Disconnected:
        if (p && p->conn == ev->conn) {
          p->connected = p->introduced = false;
          // Membership changes after failures are handled by the view-change
          // protocol; without it a lost peer stops the engine.
          fail("lost node " + std::to_string(ev->peer) + ": " + ev->detail);
        }
        break;
      case EventType::Rejected:
      case EventType::Unreachable:
        if (p && p->conn == ev->conn) {
          // The peer may simply not be up yet: try again.
          p->conn = ep_.connect(p->address, p->id);
          if (conn_to_slot_.size() <= p->conn) conn_to_slot_.resize(p->conn + 1, SIZE_MAX);
          conn_to_slot_[p->conn] = p->slot;
        }
        break;
      case EventType::PeerRejected:
        log_fn_("refused a connection: " + ev->detail);
        break;
    }
  }
}

void Engine::handle_completions() {
  std::array<Completion, 64> wc;
  size_t n;
  while ((n = ep_.poll(wc)) > 0) {
    for (size_t i = 0; i < n; ++i) {
      const Completion& c = wc[i];
      if ((c.op == Op::Write || c.op == Op::WriteImm) && (c.wr_id & kZeroCopyTag)) {
        finish_send(c.wr_id & ~kZeroCopyTag, c.status == Status::Ok);
        if (c.status == Status::Ok || c.status == Status::Flushed) continue;
      }
      Peer* p = peer_by_conn(c.conn);
      if (c.status != Status::Ok) {
        if (c.status != Status::Flushed) {
          ++counters_.protocol_errors;
          log_fn_(std::string("operation failed: ") + to_string(c.op) + ": " + to_string(c.status));
        }
        continue;
      }
      if (!p) continue;
      if (c.op == Op::Recv) {
        on_hello(*p, c.data, c.len);
      } else if (c.op == Op::RecvImm) {
        switch (imm_type(c.imm)) {
          case ImmType::Log: {
            if (p->id != sequencer_) break;
            uint64_t pos = imm_pos(c.imm, received_);
            if (pos > received_ + cfg_.log_bytes) {
              fail("sequencer announced an impossible log position");
              return;
            }
            received_ = pos;
            break;
          }
          case ImmType::Inbound: {
            uint64_t pos = imm_pos(c.imm, p->inbound_end);
            if (pos > p->inbound_read + cfg_.inbound_bytes) {
              ++counters_.protocol_errors;
              log_fn_("node " + std::to_string(p->id) + " overran its inbound ring");
              break;
            }
            p->inbound_end = pos;
            break;
          }
          case ImmType::Credit:
            if (p->id == sequencer_) {
              uint64_t pos = imm_pos(c.imm, staging_credit_);
              if (pos <= staging_writer_.tail) staging_credit_ = pos;
            }
            break;
          case ImmType::Stable:
            if (p->id == sequencer_) {
              // The watermark is published only while a SAFE entry waits, so
              // it may have moved by more than an immediate's 2 GiB range
              // since the last one: decode it against what we have received
              // instead (it is at most a log size behind that).
              uint64_t base = received_ > cfg_.log_bytes ? received_ - cfg_.log_bytes : 0;
              stable_ = std::max(stable_, imm_pos(c.imm, std::max(stable_, base)));
            }
            break;
          case ImmType::Ack: {
            AckSlot a;
            std::memcpy(&a, ctrl_->data + p->slot * sizeof(AckSlot), sizeof(a));
            if (a.delivered <= a.received && a.received <= log_writer_.tail) {
              p->acked.received = std::max(p->acked.received, a.received);
              p->acked.delivered = std::max(p->acked.delivered, a.delivered);
            }
            break;
          }
          default:
            ++counters_.protocol_errors;
            break;
        }
      }
    }
  }
}

bool Engine::progress() {
  if (failed_) return false;
  uint64_t before = counters_.delivered_msgs + counters_.sequenced_entries +
                    counters_.inbound_batches + counters_.log_batches;
  handle_events();
  handle_completions();
  if (failed_) return false;
  bool did = false;
  if (is_sequencer() && all_connected()) {
    did |= sequence_inbound();
    did |= replicate();
    did |= publish_stability();
  }
  did |= continue_large_send();
  did |= flush_staging();
  did |= deliver();
  did |= send_ack();
  uint64_t after = counters_.delivered_msgs + counters_.sequenced_entries +
                   counters_.inbound_batches + counters_.log_batches;
  return did || after != before;
}

}  // namespace rcpg::ordering
