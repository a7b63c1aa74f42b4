// The membership duties of the hostile node in the engine fuzz targets: on
// top of a SimPeer (fuzz/sim_peer.h) it takes part in the view-change
// protocol of ordering/membership.h the way a correct node would, so that
// the honest engines form views with it and the fuzz input can then choose
// what to do besides (or instead):
//  - Paxos acceptor: answers Prepare with a truthful State (refusing, with
//    the ballot it follows, a lower one), accepts Propose under the same
//    promise rules as the engine, installs Commit (fetching the log up to
//    the cut from the holder by RDMA READ when it continues from the view
//    named in the value), is never a coordinator (the fuzz target sends its
//    own Prepares);
//  - member: tracks the log its sequencer replicates into its mirror
//    (walking the records so that the gseq and per-sender sseq high-water
//    marks it reports are right, as a holder's must be), acknowledges
//    everything it received as delivered, sends Resume to each new sequencer;
//  - failure detection: a heartbeat immediate to every introduced engine
//    each tick; re-connects to lower ids after a disconnect;
//  - `silent`: a paused process (it polls nothing, so it sends no
//    heartbeats, answers or acks; what arrives waits in its queues);
//    restart(): a new process (new incarnation, state forgotten, new
//    connections).
// It never sends records of its own (Resume position 0 unless told).
#pragma once

#include <algorithm>
#include <cstring>
#include <optional>

#include "fuzz/sim_peer.h"
#include "ordering/membership.h"

namespace rcpg::fuzz {

using ordering::AcceptedMsg;
using ordering::Ballot;
using ordering::CommitMsg;
using ordering::CtrlType;
using ordering::PrepareMsg;
using ordering::ProposeMsg;
using ordering::ResumeMsg;
using ordering::StateMsg;
using ordering::ValueMember;
using ordering::ViewValue;

class MemberAgent {
 public:
  MemberAgent(SimPeer& peer, const ClusterShape& shape) : peer_(peer), shape_(shape) {
    peer_.on_connected([this](NodeId id, ConnId c) {
      if (silent)
        peer_.hello_declined(id);
      else
        peer_.send_honest_hello(c);
    });
    peer_.on_recv([this](NodeId from, const uint8_t* d, size_t n) { on_control(from, d, n); });
    peer_.on_read([this](uint64_t wr_id, bool ok) { on_read(wr_id, ok); });
  }

  bool silent = false;  // paused: no heartbeats, answers or acks
  // Every immediate received (after the agent's own handling of Log).
  std::function<void(NodeId, uint32_t)> on_imm_hook;
  bool hold_acks = false;         // stops acknowledging (an overloaded member)
  uint64_t resume_position = 0;   // what Resume tells a new sequencer
  bool sent_own_records = false;  // the target wrote records: Resume from resume_position

  // Called once per round: introductions and immediates are handled by
  // peer.pump (called here), then heartbeats, log walk and acks.
  void tick() {
    // Silent = a paused process: what arrives waits in its queues.
    if (silent) return;
    peer_.pump([this](NodeId from, uint32_t imm) { on_imm(from, imm); });
    peer_.introduce_pending();
    peer_.connect_lower();
    for (NodeId id : peer_.introduced()) {
      const HelloMsg* h = peer_.hello_of(id);
      peer_.write(id, h->ctrl, 0, {}, ordering::make_imm(ordering::ImmType::Heartbeat, 0));
    }
    walk();
    ack();
    recover();
  }

  // A new process on the same node id: everything forgotten, connections
  // re-made (engines with higher ids re-connect to us).
  void restart(uint32_t incarnation) {
    for (NodeId id : shape_.nodes)
      if (id != peer_.id()) peer_.disconnect(id);
    st_ = State{};
    peer_.incarnation = incarnation;
    peer_.epoch = 0;
  }

  // Acknowledge again at the next tick (after the target wrote its own ack).
  void ack_again() { st_.acked = UINT64_MAX; }

  // --- state, for the fuzz target -----------------------------------------
  uint32_t incarnation() const { return peer_.incarnation; }
  bool has_view() const { return st_.have_view; }
  const ViewValue& installed() const { return st_.installed; }
  uint32_t epoch() const { return st_.have_view ? st_.installed.epoch : 0; }
  uint64_t received() const { return st_.received; }
  bool wedged() const { return st_.wedged || st_.filling; }
  uint64_t max_ballot_n() const { return st_.max_ballot_n; }
  uint32_t promised_epoch() const { return st_.promised_epoch; }
  const Ballot& promised() const { return st_.promised; }
  // The last Prepare each engine sent us (its round), for well-aimed messages.
  struct SeenPrepare {
    uint32_t epoch = 0;
    Ballot ballot;
  };
  const std::map<NodeId, SeenPrepare>& prepares() const { return st_.prepares; }
  // Slots we are connected to and have an introduction from, ourselves included.
  uint64_t reach() const {
    uint64_t m = uint64_t{1} << shape_.slot_of(peer_.id());
    for (NodeId id : peer_.introduced()) m |= uint64_t{1} << shape_.slot_of(id);
    return m;
  }
  StateMsg make_state(uint32_t epoch, const Ballot& b) const {
    StateMsg s;
    s.epoch = epoch;
    s.ballot = b;
    s.view_epoch = this->epoch();
    s.incarnation = peer_.incarnation;
    // What we hold for sure (walked: whole records); we acknowledge all of
    // it as delivered.
    s.received = st_.walk_pos;
    s.consumed = st_.walk_pos;
    s.next_gseq = st_.walk_gseq;
    s.reach = reach();
    // Like the engine: a new incarnation counts towards a quorum once it has
    // installed a view, or when nobody around has one.
    bool others_have_views = false;
    for (NodeId id : peer_.introduced()) others_have_views |= peer_.hello_of(id)->epoch > 0;
    s.reliable = st_.ever_installed || !others_have_views;
    for (size_t i = 0; i < shape_.nodes.size(); ++i) {
      s.sseq_hwm[i] = st_.hwm[i];
      s.hwm_incarnation[i] = st_.hwm_inc[i];
    }
    if (st_.have_view && st_.installed.epoch == epoch) {
      s.has_view = 1;
      s.value = st_.installed;
    } else if (st_.has_accepted && st_.accepted_epoch == epoch) {
      s.has_accepted = 1;
      s.accepted_ballot = st_.accepted_ballot;
      s.value = st_.accepted;
    }
    return s;
  }

  template <typename Msg>
  bool send(NodeId to, const Msg& m) {
    ConnId c = peer_.conn_to(to);
    return c != transport::kNoConn && peer_.ep().post_send(c, std::as_bytes(std::span(&m, 1)), 0);
  }
  bool send_bytes(NodeId to, std::span<const uint8_t> b) {
    ConnId c = peer_.conn_to(to);
    return c != transport::kNoConn && peer_.ep().post_send(c, std::as_bytes(b), 0);
  }

 private:
  static constexpr uint64_t kFillTag = 0xF111;

  void on_control(NodeId from, const uint8_t* d, size_t n) {
    if (n < sizeof(uint32_t)) return;
    uint32_t type;
    std::memcpy(&type, d, sizeof(type));
    switch (static_cast<CtrlType>(type)) {
      case CtrlType::Prepare:
        if (PrepareMsg m; read(d, n, m)) on_prepare(from, m);
        break;
      case CtrlType::Propose:
        if (ProposeMsg m; read(d, n, m)) on_propose(from, m);
        break;
      case CtrlType::Commit:
        if (CommitMsg m; read(d, n, m)) on_commit(m.epoch, m.value);
        break;
      case CtrlType::State:
        // The answer to recover()'s query: a view someone installed.
        if (StateMsg m; read(d, n, m)) {
          if (m.has_view && m.value.epoch == m.epoch) on_commit(m.epoch, m.value);
          st_.newest_seen = std::max(st_.newest_seen, m.view_epoch);
        }
        break;
      default:
        break;  // Hello is kept by SimPeer; Accepted/Resume are not for us
    }
  }

  template <typename Msg>
  static bool read(const uint8_t* d, size_t n, Msg& out) {
    if (n != sizeof(Msg)) return false;
    std::memcpy(&out, d, sizeof(Msg));
    return true;
  }

  // The engine's acceptor rules (Engine::on_prepare / accept_value).
  void on_prepare(NodeId from, const PrepareMsg& m) {
    if (m.ballot.coord != from) return;
    st_.prepares[from] = SeenPrepare{m.epoch, m.ballot};
    st_.max_ballot_n = std::max(st_.max_ballot_n, m.ballot.n);
    if (st_.filling) return;
    walk();
    if (epoch() >= m.epoch) {
      send(from, make_state(m.epoch, m.ballot));
      return;
    }
    if (m.epoch < st_.promised_epoch) return;
    if (m.epoch == st_.promised_epoch && m.ballot < st_.promised) {
      StateMsg r = make_state(m.epoch, m.ballot);  // refused: say whom we follow
      r.refused = 1;
      r.has_accepted = r.has_view = 0;
      r.accepted_ballot = st_.promised;
      send(from, r);
      return;
    }
    st_.promised_epoch = m.epoch;
    st_.promised = m.ballot;
    st_.wedged = true;
    send(from, make_state(m.epoch, m.ballot));
  }

  void on_propose(NodeId from, const ProposeMsg& m) {
    if (m.ballot.coord != from || m.value.epoch != m.epoch) return;
    if (m.epoch <= epoch() || st_.filling) return;
    if (m.epoch < st_.promised_epoch || (m.epoch == st_.promised_epoch && m.ballot < st_.promised))
      return;
    st_.promised_epoch = m.epoch;
    st_.promised = m.ballot;
    st_.has_accepted = true;
    st_.accepted_epoch = m.epoch;
    st_.accepted_ballot = m.ballot;
    st_.accepted = m.value;
    st_.wedged = true;
    AcceptedMsg a;
    a.epoch = m.epoch;
    a.ballot = m.ballot;
    send(from, a);
  }

  static const ValueMember* find(const ViewValue& v, NodeId id) {
    for (uint32_t i = 0; i < v.count && i < ordering::kMaxNodes; ++i)
      if (v.members[i].id == id) return &v.members[i];
    return nullptr;
  }

  void on_commit(uint32_t epoch, const ViewValue& v) {
    if (v.epoch != epoch || v.count == 0 || v.count > shape_.nodes.size()) return;
    if (st_.have_view && epoch <= st_.installed.epoch) return;
    if (st_.filling) {
      if (!st_.pending || st_.pending->epoch < epoch) st_.pending = v;
      return;
    }
    install(v);
  }

  void install(const ViewValue& v) {
    st_.has_accepted = false;
    st_.pending.reset();
    const ValueMember* me = find(v, peer_.id());
    if (!me || me->incarnation != peer_.incarnation) {
      st_.have_view = false;  // excluded: wait to be added again
      st_.wedged = true;
      peer_.epoch = 0;
      return;
    }
    bool continuing = me->continuing && st_.have_view && st_.installed.epoch == me->from_epoch;
    st_.have_view = st_.ever_installed = true;
    st_.installed = v;
    peer_.epoch = v.epoch;
    st_.announced = 0;
    if (!continuing) {
      st_.received = st_.walk_pos = v.cut;
      st_.walk_gseq = v.cut_gseq;
      for (size_t slot = 0; slot < shape_.nodes.size(); ++slot) {
        st_.hwm[slot] = v.lineage_hwm[slot];
        st_.hwm_inc[slot] = v.lineage_inc[slot];
      }
      for (uint32_t i = 0; i < v.count; ++i) {
        size_t slot = shape_.slot_of(v.members[i].id);
        st_.hwm[slot] = v.sseq_hwm(slot, v.members[i]);
        st_.hwm_inc[slot] = v.members[i].incarnation;
      }
      finish_install();
      return;
    }
    walk_to(st_.received);
    if (st_.walk_pos >= v.cut) {
      finish_install();
      return;
    }
    // Fetch [walked, cut) from the holder, as the engine does.
    const HelloMsg* h = peer_.hello_of(v.holder);
    uint64_t len = v.cut - st_.walk_pos;
    size_t log_bytes = shape_.log_bytes;
    size_t off = st_.walk_pos % log_bytes;
    if (!h || len > log_bytes) return;  // cannot: stay wedged, the next view change follows
    size_t first = std::min<size_t>(len, log_bytes - off);
    st_.filling = true;
    st_.fill_outstanding = 0;
    st_.fill_ok = true;
    ConnId c = peer_.conn_to(v.holder);
    if (peer_.ep().post_read(c, peer_.log(), off, h->log, off, first, kFillTag))
      ++st_.fill_outstanding;
    if (first < len && peer_.ep().post_read(c, peer_.log(), 0, h->log, 0, len - first, kFillTag))
      ++st_.fill_outstanding;
    if (st_.fill_outstanding == 0) st_.filling = false;
  }

  void on_read(uint64_t wr_id, bool ok) {
    if (wr_id != kFillTag || !st_.filling) return;
    st_.fill_ok &= ok;
    if (--st_.fill_outstanding > 0) return;
    st_.filling = false;
    if (st_.fill_ok) {
      walk_to(st_.installed.cut);
      finish_install();
    }
    if (st_.pending) {
      ViewValue next = *st_.pending;
      st_.pending.reset();
      if (next.epoch > st_.installed.epoch) install(next);
    }
  }

  void finish_install() {
    st_.received = std::max({st_.received, st_.installed.cut, st_.announced});
    walk_to(st_.installed.cut);
    st_.wedged = false;
    st_.acked = UINT64_MAX;
    if (st_.installed.sequencer != peer_.id()) {
      ResumeMsg r;
      r.epoch = st_.installed.epoch;
      r.position = sent_own_records ? resume_position : 0;
      send(st_.installed.sequencer, r);
    }
  }

  void on_imm(NodeId from, uint32_t imm) {
    if (on_imm_hook) on_imm_hook(from, imm);
    if (ordering::imm_type(imm) != ordering::ImmType::Log) return;
    if (!st_.have_view || from != st_.installed.sequencer) return;
    uint64_t pos = ordering::imm_pos(imm, st_.received);
    if (pos > st_.received + shape_.log_bytes) return;
    if (st_.filling)
      st_.announced = std::max(st_.announced, pos);
    else if (!st_.wedged)
      st_.received = std::max(st_.received, pos);
  }

  // Walks the records in [walk_pos, end) of our mirror: the gseq after
  // them and each sender's highest sseq (of the incarnation the last View
  // entry names) are what a holder reports.
  void walk_to(uint64_t end) {
    ordering::RingReader r{peer_.log().data, shape_.log_bytes};
    while (st_.walk_pos < end) {
      uint64_t at = st_.walk_pos;
      const ordering::EntryHeader* h = r.next(at, end);
      if (!h) {
        st_.walk_pos = end;
        break;
      }
      size_t bytes = ordering::record_bytes(h->length);
      uint64_t next = at + bytes;
      // Not all of it here yet, or not a record (the target may write our
      // log in "anything" mode): stop.
      if (next > end || bytes > shape_.log_bytes - at % shape_.log_bytes) break;
      if (h->kind == ordering::EntryKind::View) {
        size_t n = std::min<size_t>(h->length / sizeof(ordering::ViewMember), ordering::kMaxNodes);
        for (size_t i = 0; i < n; ++i) {
          ordering::ViewMember m;
          std::memcpy(&m, reinterpret_cast<const std::byte*>(h + 1) + i * sizeof(m), sizeof(m));
          size_t slot = shape_.slot_of(m.id);
          if (shape_.nodes[slot] == m.id && st_.hwm_inc[slot] != m.incarnation) {
            st_.hwm_inc[slot] = m.incarnation;
            st_.hwm[slot] = 0;
          }
        }
      } else {
        size_t slot = shape_.slot_of(h->sender);
        if (shape_.nodes[slot] == h->sender) st_.hwm[slot] = std::max(st_.hwm[slot], h->sseq);
      }
      st_.walk_pos = next;
      ++st_.walk_gseq;
    }
  }
  void walk() {
    if (st_.have_view && !st_.filling) walk_to(st_.received);
  }

  // Wedged for long (we missed the Commit, or were left out): ask every
  // engine for its installed view with a Prepare of the lowest ballot,
  // which an engine in that view answers with the view and nobody else
  // prefers over a real round. (The engine runs a round of its own; we
  // never coordinate.)
  static constexpr uint64_t kRecoverTicks = 200;
  void recover() {
    ++st_.ticks;
    if (!st_.wedged || st_.filling) {
      st_.wedged_ticks = 0;
      return;
    }
    if (++st_.wedged_ticks < kRecoverTicks) return;
    st_.wedged_ticks = 0;
    PrepareMsg q;
    q.epoch = std::max({st_.promised_epoch, epoch() + 1, st_.newest_seen});
    q.ballot = Ballot{0, peer_.id(), 0};
    for (NodeId id : peer_.introduced()) send(id, q);
  }

  void ack() {
    if (hold_acks || !st_.have_view || st_.wedged || st_.filling ||
        st_.installed.sequencer == peer_.id())
      return;
    if (st_.walk_pos == st_.acked) return;
    const HelloMsg* s = peer_.hello_of(st_.installed.sequencer);
    if (!s) return;
    ordering::AckSlot a{st_.walk_pos, st_.walk_pos};
    if (peer_.write(st_.installed.sequencer, s->ctrl,
                    shape_.slot_of(peer_.id()) * sizeof(ordering::AckSlot),
                    {reinterpret_cast<const uint8_t*>(&a), sizeof(a)},
                    ordering::make_imm(ordering::ImmType::Ack, 0)))
      st_.acked = st_.walk_pos;
  }

  SimPeer& peer_;
  ClusterShape shape_;
  // Everything a restart forgets.
  struct State {
    bool have_view = false;
    ViewValue installed{};
    bool wedged = false;
    uint32_t promised_epoch = 0;
    Ballot promised{};
    bool has_accepted = false;
    uint32_t accepted_epoch = 0;
    Ballot accepted_ballot{};
    ViewValue accepted{};
    uint64_t max_ballot_n = 0;
    std::map<NodeId, SeenPrepare> prepares;
    uint64_t received = 0;
    uint64_t walk_pos = 0, walk_gseq = 1;
    uint64_t acked = UINT64_MAX;
    bool filling = false, fill_ok = true;
    int fill_outstanding = 0;
    uint64_t announced = 0;
    std::optional<ViewValue> pending;
    uint64_t ticks = 0, wedged_ticks = 0;
    bool ever_installed = false;
    std::array<uint64_t, ordering::kMaxNodes> hwm{};  // by slot: highest sseq walked
    std::array<uint32_t, ordering::kMaxNodes> hwm_inc{};
    uint32_t newest_seen = 0;  // newest view epoch an engine told us about
  } st_;
};

}  // namespace rcpg::fuzz
