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
  decided_epoch_ = cfg_.epoch_floor;
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
  // Every delivery looks its sender up: a table when the ids are small.
  if (nodes.back().id < (1u << 16)) {
    slot_of_id_.assign(nodes.back().id + 1, 0xFF);
    for (size_t i = 0; i < nodes.size(); ++i) slot_of_id_[nodes[i].id] = static_cast<uint8_t>(i);
  }
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

  if (nodes.size() > kMaxNodes) {
    why = "at most " + std::to_string(kMaxNodes) + " nodes";
    return false;
  }
  now_ = start_us_ = clock_now();
  incarnation_ = cfg_.incarnation;
  if (incarnation_ == 0) {
    // Distinct across restarts: the clock when none is given, else the
    // (virtual) time mixed with the node id.
    uint64_t x = cfg_.clock ? start_us_ * 0x9E3779B97F4A7C15ULL + cfg_.self
                            : (uint64_t{std::random_device{}()} << 32) ^ start_us_;
    incarnation_ = static_cast<uint32_t>(x ^ (x >> 32)) | 1;
  }
  rng_.seed(uint64_t{incarnation_} * 0x2545F4914F6CDD1DULL + cfg_.self);
  peers_[self_slot_].incarnation = incarnation_;
  view_.state = Membership::Forming;
  // The higher node id connects; the lower one accepts.
  for (Peer& p : peers_)
    if (p.id < cfg_.self) connect_peer(p);
  return true;
}

Engine::Peer* Engine::peer_by_conn(ConnId c) {
  if (c >= conn_to_slot_.size() || conn_to_slot_[c] == SIZE_MAX) return nullptr;
  Peer& p = peers_[conn_to_slot_[c]];
  return p.conn == c ? &p : nullptr;
}

// Slot of a configured node id, or SIZE_MAX.
size_t Engine::slot_of(NodeId id) const {
  if (!slot_of_id_.empty())
    return id < slot_of_id_.size() && slot_of_id_[id] != 0xFF ? slot_of_id_[id] : SIZE_MAX;
  for (const Peer& p : peers_)
    if (p.id == id) return p.slot;
  return SIZE_MAX;
}

Engine::Peer* Engine::peer_by_id(NodeId id) {
  size_t s = slot_of(id);
  return s == SIZE_MAX ? nullptr : &peers_[s];
}

uint64_t Engine::inbound_consumed(NodeId sender) const {
  if (!is_sequencer()) return 0;
  for (const Peer& p : peers_)
    if (p.id == sender) return p.inbound_read;
  return 0;
}

const char* to_string(Membership m) {
  switch (m) {
    case Membership::Forming:
      return "forming";
    case Membership::Normal:
      return "normal";
    case Membership::Changing:
      return "changing";
    case Membership::NoQuorum:
      return "no-quorum";
  }
  return "?";
}

bool Engine::quorate() const {
  return !failed_ && view_.state == Membership::Normal;
}

bool Engine::can_send() const {
  return send_gate() == SendResult::Ok;
}

// While a view change is under way sends are staged and go out to the new
// sequencer; without a view (or a quorum) they are refused.
SendResult Engine::send_gate() const {
  if (failed_ || !have_view_) return SendResult::NotReady;
  if (view_.state == Membership::NoQuorum) return SendResult::TryAgain;
  return SendResult::Ok;
}

bool Engine::all_connected() const {
  return !failed_ && have_view_ && view_.state == Membership::Normal &&
         installed_.count == peers_.size() &&
         std::all_of(peers_.begin(), peers_.end(), [](const Peer& p) { return p.introduced; });
}

double Engine::send_backlog() const {
  return static_cast<double>(staging_writer_.tail - staging_credit_) /
         static_cast<double>(cfg_.inbound_bytes);
}

void Engine::send_hello(Peer& p) {
  HelloMsg m;
  m.node = cfg_.self;
  m.incarnation = incarnation_;
  m.epoch = have_view_ ? installed_.epoch : 0;
  m.log_bytes = cfg_.log_bytes;
  m.inbound_bytes = cfg_.inbound_bytes;
  m.log = log_->remote;
  m.inbound = inbound_->remote;
  m.ctrl = ctrl_->remote;
  if (!ep_.post_send(p.conn, std::as_bytes(std::span(&m, 1)), 0))
    log_fn_("cannot introduce ourselves to node " + std::to_string(p.id));
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
  if (m.incarnation == 0) {
    ++counters_.protocol_errors;
    log_fn_("node " + std::to_string(p.id) + " sent an introduction without an incarnation");
    return;
  }
  if (p.incarnation != 0 && p.incarnation != m.incarnation)
    log_fn_("node " + std::to_string(p.id) + " restarted (incarnation " +
            std::to_string(m.incarnation) + ")");
  // A new incarnation has no view yet, whatever its predecessor had.
  p.epoch = p.incarnation == m.incarnation ? std::max(p.epoch, m.epoch) : m.epoch;
  p.hello = m;
  p.incarnation = m.incarnation;
  p.introduced = true;
  p.suspected = false;
  p.last_heard_us = p.last_beat_us = now_;
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
        // A newer connection replaces an older one (the peer restarted, or
        // both ends re-connected): it is introduced afresh.
        if (p->conn != ev->conn && p->conn != kNoConn && p->connected) ep_.disconnect(p->conn);
        p->conn = ev->conn;
        p->connected = true;
        p->connecting = false;
        p->introduced = false;
        p->connect_patience_us = connect_patience_min();
        if (conn_to_slot_.size() <= ev->conn) conn_to_slot_.resize(ev->conn + 1, SIZE_MAX);
        conn_to_slot_[ev->conn] = p->slot;
        send_hello(*p);
        break;
      case EventType::Disconnected:
        if (p && p->conn == ev->conn) {
          // An attempt of ours can end this way too (it broke before we saw
          // it connect): retry soon rather than after the abandon timeout.
          bool was = p->connected || p->connecting;
          p->connected = p->connecting = false;
          suspect(*p, "connection lost: " + ev->detail);
          if (was) p->reconnect_at_us = now_ + std::max<uint64_t>(cfg_.heartbeat_interval_us, 1000);
        }
        break;
      case EventType::Rejected:
      case EventType::Unreachable:
        if (p && p->conn == ev->conn) {
          // The peer may not be up (yet): try again later.
          p->connected = p->connecting = false;
          p->reconnect_at_us = now_ + std::max<uint64_t>(cfg_.heartbeat_interval_us, 1000);
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
      Peer* p = peer_by_conn(c.conn);
      if (c.op == Op::Read && c.wr_id == kFillTag) {
        on_fill_done(c.status == Status::Ok);
        continue;
      }
      if (c.status != Status::Ok) {
        // Flushed: the connection broke (its Disconnected event follows).
        if (c.status != Status::Flushed) {
          ++counters_.protocol_errors;
          log_fn_(std::string("operation failed: ") + to_string(c.op) + ": " + to_string(c.status));
          if (p) suspect(*p, std::string("an RDMA operation failed: ") + to_string(c.status));
        }
        continue;
      }
      if (!p) continue;
      if (c.op == Op::Recv || c.op == Op::RecvImm) heard(*p);
      if (c.op == Op::Recv) {
        on_control(*p, c.data, c.len);
      } else if (c.op == Op::RecvImm) {
        switch (imm_type(c.imm)) {
          case ImmType::Log: {
            // Decoded against a base a log size back: announcements that
            // are older than what we hold (in flight across a view change)
            // are recognised as such and ignored.
            uint64_t base = received_ > cfg_.log_bytes ? received_ - cfg_.log_bytes : 0;
            uint64_t pos = imm_pos(c.imm, base);
            // Wedged: what we hold is frozen for the view change. Filling,
            // or not installed yet: the sequencer announces again once our
            // Resume reaches it.
            if (p->id != sequencer_ || p->lost || !have_view_ || wedged_ || filling_ ||
                resume_pending_)
              break;
            // Beyond a log size ahead: an announcement of an older history
            // (we started afresh at a lower position); no sequencer writes
            // that far.
            if (pos > received_ + cfg_.log_bytes) break;
            received_ = std::max(received_, pos);
            break;
          }
          case ImmType::Inbound: {
            // After its Resume for a view we have not installed yet, its
            // writes belong to that view: they are this immediate's only
            // announcement, so keep them for the install.
            bool early = p->early_resume_epoch != 0;
            if (!early && (!is_sequencer() || !p->in_view || p->lost || !p->resumed)) break;
            uint64_t& end = early ? p->early_inbound_end : p->inbound_end;
            uint64_t pos = imm_pos(c.imm, end);
            if (pos > (early ? p->early_resume_pos : p->inbound_read) + cfg_.inbound_bytes) {
              ++counters_.protocol_errors;
              log_fn_("node " + std::to_string(p->id) + " overran its inbound ring");
              break;
            }
            end = std::max(end, pos);
            break;
          }
          case ImmType::Credit:
            break;  // reserved: credit comes back through the log
          case ImmType::Stable:
            if (p->id == sequencer_ && have_view_) {
              // The watermark is published only while a SAFE entry waits, so
              // it may have moved by more than an immediate's 2 GiB range
              // since the last one: decode it against what we have received
              // instead (it is at most a log size behind that).
              uint64_t base = received_ > cfg_.log_bytes ? received_ - cfg_.log_bytes : 0;
              stable_ =
                  std::max(stable_, std::min(received_, imm_pos(c.imm, std::max(stable_, base))));
            }
            break;
          case ImmType::Ack: {
            if (!is_sequencer() || !p->in_view || p->lost) break;
            AckSlot a;
            std::memcpy(&a, ctrl_->data + p->slot * sizeof(AckSlot), sizeof(a));
            if (a.delivered <= a.received && a.received <= log_writer_.tail) {
              p->acked.received = std::max(p->acked.received, a.received);
              p->acked.delivered = std::max(p->acked.delivered, a.delivered);
            }
            break;
          }
          case ImmType::Heartbeat:
            break;
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
                    counters_.inbound_batches + counters_.log_batches + counters_.views_installed;
  uint64_t before_us = now_;
  now_ = clock_now();
  // Time we did not run (descheduled, a stalled VM) is not silence of the
  // peers: what they sent meanwhile may not even be processed yet.
  uint64_t stall = now_ - before_us;
  if (stall > 2 * uint64_t{cfg_.heartbeat_interval_us})
    for (Peer& p : peers_) p.last_heard_us = std::min(now_, p.last_heard_us + stall);
  handle_events();
  handle_completions();
  if (failed_) return false;
  tick();
  drive_membership();
  bool did = false;
  if (is_sequencer() && have_view_ && !wedged_ && !filling_) {
    did |= sequence_inbound();
    did |= replicate();
    did |= publish_stability();
  }
  did |= continue_large_send();
  did |= flush_staging();
  did |= deliver();
  did |= send_ack();
  uint64_t after = counters_.delivered_msgs + counters_.sequenced_entries +
                   counters_.inbound_batches + counters_.log_batches + counters_.views_installed;
  return did || after != before;
}

}  // namespace rcpg::ordering
