// The view-change protocol (membership.h has the messages and the outline,
// docs/FAILURES.md the argument). One Paxos instance per epoch decides the
// next view; the lowest-id node that is up to date and reachable
// coordinates, others take over when it does not.
#include <algorithm>
#include <bit>
#include <cstring>

#include "ordering/engine.h"
#include "ordering/engine_peer.h"

namespace rcpg::ordering {

using namespace rcpg::transport;

namespace {

uint64_t bit(size_t slot) {
  return uint64_t{1} << slot;
}

template <typename Msg>
bool read_msg(const std::byte* data, size_t len, Msg& out) {
  if (len != sizeof(Msg)) return false;
  std::memcpy(&out, data, sizeof(Msg));
  return true;
}

}  // namespace

template <typename Msg>
bool Engine::send_ctrl(Peer& p, const Msg& m) {
  if (p.self || !p.introduced) return false;
  return ep_.post_send(p.conn, std::as_bytes(std::span(&m, 1)), 0);
}
template bool Engine::send_ctrl<ResumeMsg>(Peer&, const ResumeMsg&);

void Engine::on_control(Peer& p, const std::byte* data, size_t len) {
  uint32_t type = 0;
  if (len >= sizeof(type)) std::memcpy(&type, data, sizeof(type));
  bool ok = true;
  switch (static_cast<CtrlType>(type)) {
    case CtrlType::Hello:
      on_hello(p, data, len);
      return;
    case CtrlType::Prepare: {
      PrepareMsg m;
      if ((ok = read_msg(data, len, m))) on_prepare(p, m);
      break;
    }
    case CtrlType::State: {
      StateMsg m;
      if ((ok = read_msg(data, len, m))) on_state(p, m);
      break;
    }
    case CtrlType::Propose: {
      ProposeMsg m;
      if ((ok = read_msg(data, len, m))) on_propose(p, m);
      break;
    }
    case CtrlType::Accepted: {
      AcceptedMsg m;
      if ((ok = read_msg(data, len, m))) on_accepted(p, m);
      break;
    }
    case CtrlType::Commit: {
      CommitMsg m;
      if ((ok = read_msg(data, len, m))) on_commit(p, m);
      break;
    }
    case CtrlType::Resume: {
      ResumeMsg m;
      if ((ok = read_msg(data, len, m))) on_resume(p, m);
      break;
    }
    default:
      ok = false;
  }
  if (!ok) {
    ++counters_.protocol_errors;
    log_fn_("node " + std::to_string(p.id) + " sent a malformed control message (type " +
            std::to_string(type) + ", " + std::to_string(len) + " bytes)");
  }
}

// --- acceptor side ----------------------------------------------------------

StateMsg Engine::make_state(uint32_t epoch, const Ballot& b) const {
  StateMsg s;
  s.epoch = epoch;
  s.ballot = b;
  s.view_epoch = have_view_ ? installed_.epoch : 0;
  s.incarnation = incarnation_;
  s.received = received_;
  s.consumed = consumed();
  s.next_gseq = gseq_after(received_);
  s.reach = reach_mask();
  // A new incarnation may have promised or accepted something in an earlier
  // one: it counts towards a quorum only once it has installed a view, or
  // when nobody around has one (a cold start), or after waiting long enough
  // to be added that the old history is evidently gone.
  bool others_have_views = std::any_of(peers_.begin(), peers_.end(),
                                       [](const Peer& p) { return !p.self && p.epoch > 0; });
  s.reliable = ever_installed_ || !others_have_views ||
               now_ - start_us_ >= 2 * uint64_t{cfg_.form_timeout_us};
  s.decided_epoch = decided_epoch_;
  LogScan sc = scan_log(received_);
  for (size_t i = 0; i < peers_.size(); ++i) {
    s.sseq_hwm[i] = sc.seen[i];
    s.hwm_incarnation[i] = sc.inc[i];
  }
  if (have_view_ && installed_.epoch == epoch) {
    s.has_view = 1;
    s.value = installed_;
  } else if (has_accepted_ && accepted_epoch_ == epoch) {
    s.has_accepted = 1;
    s.accepted_ballot = accepted_ballot_;
    s.value = accepted_;
  }
  return s;
}

void Engine::on_prepare(Peer& p, const PrepareMsg& m) {
  if (m.ballot.coord != p.id) {
    ++counters_.protocol_errors;
    return;
  }
  max_ballot_n_ = std::max(max_ballot_n_, m.ballot.n);
  uint32_t mine = have_view_ ? installed_.epoch : 0;
  // Fetching the log for an install: an outstanding READ must not land in
  // a later view's log. The coordinator asks again.
  if (filling_) return;
  if (std::max(mine, decided_epoch_) >= m.epoch) {
    send_ctrl(p, make_state(m.epoch, m.ballot));  // it is behind: tell it
    return;
  }
  if (m.epoch < promised_epoch_) return;
  bool refuse = m.epoch == promised_epoch_ && m.ballot < promised_;
  if (m.epoch == promised_epoch_ && m.ballot > promised_ && m.ballot.coord > promised_.coord) {
    // Stay with a lower coordinator's round while it makes progress, so two
    // coordinators do not keep pre-empting each other.
    Peer* c = peer_by_id(promised_.coord);
    refuse = c && (c->self ? round_.active : (c->introduced && !c->suspected)) &&
             now_ - promised_at_us_ < round_timeout();
  }
  if (refuse) {
    // Say whom we follow: a lower coordinator retries above it at once, a
    // higher one gives way.
    StateMsg s = make_state(m.epoch, m.ballot);
    s.refused = 1;
    s.has_accepted = s.has_view = 0;
    s.accepted_ballot = promised_;
    send_ctrl(p, s);
    return;
  }
  if (m.ballot == promised_) {
    send_ctrl(p, make_state(m.epoch, m.ballot));  // a repeated Prepare
    return;
  }
  if (round_.active && m.ballot > round_.ballot) round_.active = false;  // pre-empted
  promised_epoch_ = m.epoch;
  promised_ = m.ballot;
  promised_at_us_ = now_;
  wedge("view change to epoch " + std::to_string(m.epoch) + " run by node " + std::to_string(p.id));
  send_ctrl(p, make_state(m.epoch, m.ballot));
}

bool Engine::value_ok(const ViewValue& v) const {
  if (v.count == 0 || v.count > peers_.size() || v.epoch == 0) return false;
  bool seq = false, holder = false;
  for (uint32_t i = 0; i < v.count; ++i) {
    const ValueMember& m = v.members[i];
    if (i > 0 && m.id <= v.members[i - 1].id) return false;
    if (std::none_of(peers_.begin(), peers_.end(), [&](const Peer& p) { return p.id == m.id; }))
      return false;
    if (m.consumed > m.received || m.received > v.cut || m.received % kAlign != 0 ||
        m.consumed % kAlign != 0 || (m.continuing && m.from_epoch >= v.epoch))
      return false;
    seq |= m.id == v.sequencer;
    holder |= m.id == v.holder;
  }
  return seq && holder && v.cut_gseq > 0 && v.cut % kAlign == 0;
}

bool Engine::accept_value(uint32_t epoch, const Ballot& b, const ViewValue& v) {
  uint32_t mine = have_view_ ? installed_.epoch : 0;
  if (epoch <= std::max(mine, decided_epoch_) || filling_) return false;
  if (epoch < promised_epoch_ || (epoch == promised_epoch_ && b < promised_)) return false;
  promised_epoch_ = epoch;
  promised_ = b;
  promised_at_us_ = now_;
  has_accepted_ = true;
  accepted_epoch_ = epoch;
  accepted_ballot_ = b;
  accepted_ = v;
  wedge("view change to epoch " + std::to_string(epoch) + ": value proposed");
  return true;
}

void Engine::on_propose(Peer& p, const ProposeMsg& m) {
  if (m.ballot.coord != p.id || m.value.epoch != m.epoch || !value_ok(m.value)) {
    ++counters_.protocol_errors;
    log_fn_("node " + std::to_string(p.id) + " proposed an invalid view");
    return;
  }
  if (!accept_value(m.epoch, m.ballot, m.value)) return;
  AcceptedMsg a;
  a.epoch = m.epoch;
  a.ballot = m.ballot;
  send_ctrl(p, a);
}

void Engine::on_commit(Peer& p, const CommitMsg& m) {
  if (m.value.epoch != m.epoch || !value_ok(m.value)) {
    ++counters_.protocol_errors;
    log_fn_("node " + std::to_string(p.id) + " committed an invalid view");
    return;
  }
  if (m.epoch <= decided_epoch_) return;  // installed, or left out of it
  if (filling_) {
    if (!pending_commit_ || pending_commit_->epoch < m.epoch) pending_commit_ = m.value;
    return;
  }
  install(m.value);
}

// --- coordinator side -----------------------------------------------------------

void Engine::on_state(Peer& p, const StateMsg& m) {
  p.epoch = std::max(p.epoch, m.view_epoch);
  // Without a view we continue nothing: a round of ours must start above
  // anything decided, even a view whose members are all gone.
  if (!have_view_) decided_epoch_ = std::max(decided_epoch_, m.decided_epoch);
  if (!round_.active || m.epoch != round_.epoch || m.ballot != round_.ballot) return;
  if (!m.reliable && m.decided_epoch >= round_.epoch && !round_.accepting) {
    // A restarted node whose earlier run knew this epoch was used (kept on
    // disk): it cannot take part in it, and nobody may number a second
    // view like that one. Skip past it.
    used_epoch_ = std::max(used_epoch_, m.decided_epoch);
    round_.active = false;
    start_round("node " + std::to_string(p.id) + " knows epoch " + std::to_string(m.decided_epoch) +
                " was used: retrying above it");
    return;
  }
  if (m.refused) {
    max_ballot_n_ = std::max(max_ballot_n_, m.accepted_ballot.n);
    std::string why = "node " + std::to_string(p.id) + " follows coordinator " +
                      std::to_string(m.accepted_ballot.coord);
    if (m.accepted_ballot.coord > cfg_.self && !round_.accepting) {
      round_.active = false;
      start_round(why + ": retrying with a higher ballot");
    } else if (m.accepted_ballot.coord < cfg_.self) {
      fail_round(why, false);
    }
    return;
  }
  round_.states[p.slot] = m;
  round_.answered |= bit(p.slot);
}

void Engine::on_accepted(Peer& p, const AcceptedMsg& m) {
  if (!round_.active || !round_.accepting || m.epoch != round_.epoch || m.ballot != round_.ballot)
    return;
  round_.accepted |= bit(p.slot);
}

// Something the installed view (or its absence) cannot go on with.
bool Engine::wants_change(std::string& why) {
  uint32_t mine = have_view_ ? installed_.epoch : 0;
  // We accepted a view that others have installed, but its Commit never
  // reached us (and nobody sends it again): a round of ours learns the
  // decided value from them, whether it has us or not.
  bool stale_accept = wedged_ && has_accepted_ && accepted_epoch_ > mine &&
                      now_ - promised_at_us_ >= round_timeout();
  for (const Peer& p : peers_)
    if (!p.self && p.introduced && !p.suspected && p.epoch > mine &&
        !(stale_accept && p.epoch == accepted_epoch_)) {
      why = "node " + std::to_string(p.id) + " has a newer view: waiting to be added";
      return false;
    }
  if (!have_view_) {
    size_t reach = static_cast<size_t>(std::popcount(reach_mask()));
    if (reach == peers_.size()) {
      why = "every configured node is connected";
      return true;
    }
    if (reach >= quorum() && now_ - start_us_ >= cfg_.form_timeout_us) {
      why = "form timeout passed with a quorum connected";
      return true;
    }
    return false;
  }
  if (wedged_) {
    Peer* c = peer_by_id(promised_.coord);
    bool live = promised_epoch_ > mine && c &&
                (c->self ? round_.active : (c->introduced && !c->suspected)) &&
                now_ - promised_at_us_ < round_timeout();
    why = "the view is wedged";
    return !live;
  }
  for (uint32_t i = 0; i < installed_.count; ++i) {
    const ValueMember& m = installed_.members[i];
    size_t slot = slot_of(m.id);
    if (slot == SIZE_MAX) continue;
    const Peer* p = &peers_[slot];
    if (p->self) continue;
    if (!p->introduced || p->suspected || p->lost || p->incarnation != m.incarnation) {
      why = "lost member " + std::to_string(m.id);
      return true;
    }
  }
  if (now_ < join_retry_at_us_) return false;  // the last attempt could not add them
  for (const Peer& p : peers_)
    if (!p.self && !p.in_view && p.introduced && !p.suspected) {
      why = "node " + std::to_string(p.id) + " can join";
      return true;
    }
  return false;
}

// Lower ids that are reachable and not behind us coordinate first.
bool Engine::lowest_candidate() const {
  uint32_t mine = have_view_ ? installed_.epoch : 0;
  for (const Peer& p : peers_)
    if (!p.self && p.id < cfg_.self && p.introduced && !p.suspected && p.epoch >= mine)
      return false;
  return true;
}

void Engine::drive_membership() {
  if (round_.active) {
    advance_round();
    return;
  }
  if (filling_) return;
  std::string why;
  if (!wants_change(why)) {
    want_since_us_ = 0;
    return;
  }
  if (want_since_us_ == 0) want_since_us_ = now_;
  if (now_ < retry_at_us_) return;
  if (lowest_candidate() || now_ - want_since_us_ >= round_timeout()) start_round(why);
}

void Engine::start_round(const std::string& why) {
  uint32_t epoch = std::max({have_view_ ? installed_.epoch : 0, decided_epoch_, used_epoch_}) + 1;
  if (promised_epoch_ > epoch) epoch = promised_epoch_;
  Ballot b{max_ballot_n_ + 1, cfg_.self, 0};
  max_ballot_n_ = b.n;
  round_.active = true;
  round_.accepting = false;
  round_.epoch = epoch;
  round_.ballot = b;
  round_.started_us = now_;
  round_.asked = bit(self_slot_);
  round_.answered = bit(self_slot_);
  round_.accepted = 0;
  round_.states.assign(peers_.size(), StateMsg{});
  promised_epoch_ = epoch;
  promised_ = b;
  promised_at_us_ = now_;
  wedge("coordinating the view change to epoch " + std::to_string(epoch) + " (" + why + ")");
  if (have_view_) log_fn_("view change to epoch " + std::to_string(epoch) + ": " + why);
  round_.states[self_slot_] = make_state(epoch, b);
  PrepareMsg m;
  m.epoch = epoch;
  m.ballot = b;
  for (Peer& p : peers_)
    if (!p.self && p.introduced && !p.suspected && send_ctrl(p, m)) round_.asked |= bit(p.slot);
}

void Engine::fail_round(const std::string& why, bool no_quorum) {
  round_.active = false;
  uint64_t backoff = gather_timeout() * (1 + rng_() % 3);
  retry_at_us_ = now_ + backoff;
  if (no_quorum) view_.state = Membership::NoQuorum;
  view_.why = why;
}

void Engine::advance_round() {
  size_t q = quorum();
  if (round_.accepting) {
    if (static_cast<size_t>(std::popcount(round_.accepted & round_.reliable)) >= q) {
      ViewValue v = round_.value;
      round_.active = false;
      commit_value(v);
    } else if (now_ - round_.started_us >= 2 * gather_timeout()) {
      fail_round("too few nodes accepted the view for epoch " + std::to_string(round_.epoch),
                 false);
    }
    return;
  }
  bool all = (round_.answered & round_.asked) == round_.asked;
  if (!all && now_ - round_.started_us < gather_timeout()) return;
  const StateMsg* best = nullptr;
  for (size_t s = 0; s < peers_.size(); ++s) {
    if (!(round_.answered & bit(s))) continue;
    const StateMsg& st = round_.states[s];
    if (st.has_view && value_ok(st.value) && st.value.epoch == round_.epoch) {
      ViewValue v = st.value;  // already chosen and installed there
      round_.active = false;
      commit_value(v);
      return;
    }
    if (st.view_epoch >= round_.epoch || st.decided_epoch >= round_.epoch) {
      fail_round("node " + std::to_string(peers_[s].id) + " knows a newer view", false);
      return;
    }
    if (st.view_epoch > (have_view_ ? installed_.epoch : 0) && st.view_epoch <= used_epoch_) {
      // We skipped the epoch a restarted node had used, but it is this
      // node's view, which we never went through (it left us out, or we
      // never learnt of it): its lineage goes on, not our older one
      // (composing from ours would drop what its members delivered there
      // without them seeing us leave). What we accepted up to its epoch is
      // decided: no more rounds of ours to learn it; its side adds us.
      if (has_accepted_ && accepted_epoch_ <= st.view_epoch) has_accepted_ = false;
      fail_round("node " + std::to_string(peers_[s].id) + " has a newer view: waiting to be added",
                 false);
      return;
    }
    if (st.has_accepted && value_ok(st.value) &&
        (!best || st.accepted_ballot > best->accepted_ballot))
      best = &st;
  }
  round_.reliable = 0;
  for (size_t s = 0; s < peers_.size(); ++s)
    if ((round_.answered & bit(s)) && round_.states[s].reliable) round_.reliable |= bit(s);
  size_t n = static_cast<size_t>(std::popcount(round_.reliable));
  if (n < q) {
    fail_round("no quorum: " + std::to_string(n) + " of " + std::to_string(peers_.size()) +
                   " configured nodes answered (not counting restarted nodes not yet added), " +
                   std::to_string(q) + " needed",
               true);
    return;
  }
  ViewValue v;
  std::string why;
  if (best) {
    v = best->value;  // Paxos: a value that may have been chosen is kept
  } else if (!compose_value(v, why)) {
    fail_round(why, true);
    return;
  } else if (!have_view_ && v.count < peers_.size() && now_ - start_us_ < cfg_.form_timeout_us) {
    // The first view waits for every configured node (until form_timeout).
    fail_round("waiting for every node to reach every other", false);
    return;
  } else {
    // A node we see but not everybody does: do not retry adding it at once.
    for (const Peer& p : peers_) {
      bool member = false;
      for (uint32_t i = 0; i < v.count; ++i) member |= v.members[i].id == p.id;
      if (!member && p.introduced && !p.suspected) join_retry_at_us_ = now_ + round_timeout();
    }
  }
  if (!accept_value(round_.epoch, round_.ballot, v)) {
    fail_round("pre-empted by another coordinator", false);
    return;
  }
  round_.value = v;
  round_.accepting = true;
  round_.started_us = now_;
  round_.accepted = bit(self_slot_);
  ProposeMsg m;
  m.epoch = round_.epoch;
  m.ballot = round_.ballot;
  m.value = v;
  for (Peer& p : peers_)
    if (!p.self && (round_.answered & bit(p.slot))) send_ctrl(p, m);
}

// The new view: the answering nodes that are all connected to each other
// (greedy: us, then members of the current view, then joiners, by id).
// The cut is the longest log any continuing member holds; the sequencer is
// the lowest continuing member, which therefore has the whole log.
// The holder must hold [received, cut) of every continuing member. Members
// that continued into the installed view hold the log from below any
// continuing member's received; those that joined it afresh hold nothing
// before its cut: they continue only if nobody's fetch up to that cut
// failed (else one of them might be the holder of what it never had).
bool Engine::compose_value(ViewValue& v, std::string& why) const {
  auto same_view = [&](size_t s, bool& was_continuing) {
    const StateMsg& st = round_.states[s];
    if (!have_view_ || st.view_epoch != installed_.epoch) return false;
    for (uint32_t i = 0; i < installed_.count; ++i)
      if (installed_.members[i].id == peers_[s].id) {
        was_continuing = installed_.members[i].continuing != 0;
        return installed_.members[i].incarnation == st.incarnation;
      }
    return false;
  };
  bool short_log = false;
  for (size_t s = 0; s < peers_.size(); ++s) {
    bool was = false;
    if ((round_.answered & bit(s)) && same_view(s, was) &&
        round_.states[s].received < installed_.cut)
      short_log = true;
  }
  auto continuing = [&](size_t s) {
    bool was = false;
    return same_view(s, was) && (was || !short_log);
  };
  std::vector<size_t> order;
  for (size_t s = 0; s < peers_.size(); ++s)
    if ((round_.answered & bit(s)) && continuing(s)) order.push_back(s);
  for (size_t s = 0; s < peers_.size(); ++s)
    if ((round_.answered & bit(s)) && !continuing(s)) order.push_back(s);
  std::stable_partition(order.begin(), order.end(), [&](size_t s) { return s == self_slot_; });
  uint64_t chosen = 0;
  for (size_t s : order) {
    const StateMsg& st = round_.states[s];
    bool fits = (st.reach & chosen) == chosen;
    for (size_t k = 0; k < peers_.size() && fits; ++k)
      if ((chosen & bit(k)) && !(round_.states[k].reach & bit(s))) fits = false;
    if (fits) chosen |= bit(s);
  }
  size_t n = static_cast<size_t>(std::popcount(chosen));
  if (n < quorum()) {
    why = "no quorum: only " + std::to_string(n) + " nodes are connected to each other, " +
          std::to_string(quorum()) + " needed";
    return false;
  }
  v = ViewValue{};
  v.epoch = round_.epoch;
  const StateMsg* holder = nullptr;
  size_t holder_slot = 0;
  for (size_t s = 0; s < peers_.size(); ++s)
    if ((chosen & bit(s)) && continuing(s) &&
        (!holder || round_.states[s].received > holder->received)) {
      holder = &round_.states[s];
      holder_slot = s;
    }
  if (holder) {
    v.cut = holder->received;
    v.cut_gseq = holder->next_gseq;
    v.holder = peers_[holder_slot].id;
    for (size_t s = 0; s < peers_.size(); ++s) {
      v.lineage_hwm[s] = holder->sseq_hwm[s];
      v.lineage_inc[s] = holder->hwm_incarnation[s];
    }
    // Every continuing member's log is a prefix of the holder's, but the
    // holder may have come in after some sender's records and know less of
    // them than another continuing member does.
    for (size_t k = 0; k < peers_.size(); ++k) {
      if (!(chosen & bit(k)) || !continuing(k)) continue;
      const StateMsg& st = round_.states[k];
      for (size_t s = 0; s < peers_.size(); ++s) {
        if (v.lineage_inc[s] == 0) {
          v.lineage_inc[s] = st.hwm_incarnation[s];
          v.lineage_hwm[s] = st.sseq_hwm[s];
        } else if (st.hwm_incarnation[s] == v.lineage_inc[s]) {
          v.lineage_hwm[s] = std::max(v.lineage_hwm[s], st.sseq_hwm[s]);
        }
      }
    }
  } else {
    // Nobody carries a log on: a new history, at positions and sequence
    // numbers no member has used (they only grow at every node).
    for (size_t s = 0; s < peers_.size(); ++s)
      if (chosen & bit(s)) {
        v.cut = std::max(v.cut, round_.states[s].received);
        v.cut_gseq = std::max(v.cut_gseq, round_.states[s].next_gseq);
      }
  }
  bool have_seq = false;
  for (size_t s = 0; s < peers_.size(); ++s) {
    if (!(chosen & bit(s))) continue;
    const StateMsg& st = round_.states[s];
    ValueMember& m = v.members[v.count++];
    m.id = peers_[s].id;
    m.incarnation = st.incarnation;
    m.continuing = continuing(s) ? 1 : 0;
    m.from_epoch = m.continuing ? installed_.epoch : 0;
    m.received = m.continuing ? st.received : v.cut;
    m.consumed = m.continuing ? st.consumed : v.cut;
    if ((holder ? m.continuing : 1) && (!have_seq || m.id < v.sequencer)) {
      v.sequencer = m.id;
      have_seq = true;
    }
  }
  if (!holder) v.holder = v.sequencer;
  return true;
}

void Engine::commit_value(const ViewValue& v) {
  CommitMsg m;
  m.epoch = v.epoch;
  m.value = v;
  for (Peer& p : peers_)
    if (!p.self && p.introduced && !p.suspected) send_ctrl(p, m);
  install(v);
}

}  // namespace rcpg::ordering
