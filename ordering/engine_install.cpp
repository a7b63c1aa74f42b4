// Installing a decided view: a continuing member fetches what it lacks of
// the log up to the cut (RDMA READ from the holder), a new member starts at
// the cut, every member re-sends its records that missed the cut to the
// (possibly new) sequencer, which appends the View entry at the cut.
#include <algorithm>
#include <cstring>

#include "ordering/engine.h"
#include "ordering/engine_peer.h"

namespace rcpg::ordering {

using namespace rcpg::transport;

namespace {

const ValueMember* find_member(const ViewValue& v, NodeId id) {
  for (uint32_t i = 0; i < v.count; ++i)
    if (v.members[i].id == id) return &v.members[i];
  return nullptr;
}

std::string member_list(const ViewValue& v) {
  std::string s;
  for (uint32_t i = 0; i < v.count; ++i) s += (i ? "," : "") + std::to_string(v.members[i].id);
  return s;
}

}  // namespace

uint64_t Engine::gseq_after(uint64_t pos) const {
  RingReader reader{log_->data, cfg_.log_bytes};
  uint64_t g = expected_gseq_;
  uint64_t at = delivered_;
  while (const EntryHeader* h = reader.next(at, pos)) {
    size_t bytes = record_bytes(h->length);
    if (bytes > cfg_.log_bytes - at % cfg_.log_bytes || at + bytes > pos) break;
    at += bytes;
    ++g;
  }
  return g;
}

// What the log up to `to` holds of every sender, beyond what in-order
// delivery has passed: highest sseq per sender (and its incarnation), open
// fragment streams (reassembly mode), and the end of our own last record in
// it within the staging ring.
Engine::LogScan Engine::scan_log(uint64_t to) const {
  size_t n = peers_.size();
  LogScan sc;
  sc.seen.resize(n);
  sc.inc.resize(n);
  sc.frag.assign(n, -1);
  for (size_t s = 0; s < n; ++s) {
    sc.seen[s] = peers_[s].delivered_sseq;
    sc.inc[s] = peers_[s].sseq_incarnation;
    const Reassembly& r = reassembly_[s];
    if (r.active) sc.frag[s] = static_cast<int64_t>(r.buf.size() - r.filled);
  }
  RingReader reader{log_->data, cfg_.log_bytes};
  for (uint64_t at = delivered_; const EntryHeader* h = reader.next(at, to);) {
    // Not delivered yet, so not validated yet: stop where deliver() would.
    size_t bytes = record_bytes(h->length);
    if (bytes > cfg_.log_bytes - at % cfg_.log_bytes || at + bytes > to || !entry_ok(*h)) break;
    at += bytes;
    if (h->kind == EntryKind::View) {
      sc.last_view = std::max(sc.last_view, h->aux);
      std::vector<ViewMember> ms(h->length / sizeof(ViewMember));
      std::memcpy(static_cast<void*>(ms.data()), h + 1, ms.size() * sizeof(ViewMember));
      for (size_t s = 0; s < n; ++s) {
        auto it = std::find_if(ms.begin(), ms.end(), [&](auto& m) { return m.id == peers_[s].id; });
        sc.frag[s] = -1;  // open messages end at a View entry
        if (it != ms.end() && it->incarnation != sc.inc[s]) {
          sc.inc[s] = it->incarnation;
          sc.seen[s] = 0;
        }
      }
      continue;
    }
    size_t slot = slot_of(h->sender);
    if (slot == SIZE_MAX) continue;
    sc.seen[slot] = std::max(sc.seen[slot], h->sseq);
    // A staging mark is valid only while its slot has not been reused.
    if (h->sender == cfg_.self && h->sseq + staging_marks_.size() > next_sseq_)
      sc.own_end = std::max(sc.own_end, staging_marks_[h->sseq % staging_marks_.size()]);
    if (h->flags & kFragment) {
      int64_t left = (h->flags & kFragFirst) ? int64_t{h->aux} : sc.frag[slot];
      sc.frag[slot] = (h->flags & kFragLast) ? -1 : left - int64_t{h->length};
    }
  }
  return sc;
}

void Engine::install(const ViewValue& v) {
  // A value decided before we restarted may name our previous incarnation:
  // that member is not us.
  const ValueMember* me = find_member(v, cfg_.self);
  if (me && me->incarnation != incarnation_) me = nullptr;
  decided_epoch_ = std::max(decided_epoch_, v.epoch);
  for (Peer& p : peers_) {
    if (p.self) continue;
    const ValueMember* m = find_member(v, p.id);
    bool member = m && m->incarnation == p.incarnation;
    // A member of the old view that is not in the new one must not write
    // into our memory any more.
    if (p.in_view && !member && p.introduced) suspect(p, "not in view " + std::to_string(v.epoch));
    p.in_view = member && me;
    p.lost = false;
    if (member) p.epoch = std::max(p.epoch, v.epoch);
    p.resumed = false;
    if (p.early_resume_epoch == v.epoch && p.in_view && v.sequencer == cfg_.self) {
      p.inbound_read = p.early_resume_pos;
      p.inbound_end = std::max(p.early_resume_pos, p.early_inbound_end);
      p.resumed = true;
      p.reannounce = true;  // once our log starts at the cut (finish_install)
    }
    if (p.early_resume_epoch <= v.epoch) p.early_resume_epoch = 0;
  }
  round_.active = false;
  has_accepted_ = false;
  pending_commit_.reset();
  if (!me) {
    have_view_ = false;
    wedged_ = true;
    view_.state = Membership::Forming;
    view_.why = "excluded from view " + std::to_string(v.epoch) + " (" + member_list(v) +
                "): waiting to be added again";
    log_fn_(view_.why);
    return;
  }
  bool continuing = me->continuing && have_view_ && installed_.epoch == me->from_epoch;
  if (continuing && (v.cut < received_ || v.cut - consumed() > cfg_.log_bytes)) {
    // Fetching up to there would overwrite what we have not consumed yet.
    ++counters_.protocol_errors;
    log_fn_("view " + std::to_string(v.epoch) + " has a cut our log cannot continue to");
    continuing = false;
  }
  if (me->continuing && !continuing)
    log_fn_("view " + std::to_string(v.epoch) +
            " expected us to continue from an older view: starting afresh");
  prev_installed_.epoch = 0;
  if (continuing) prev_installed_ = installed_;
  // Our view's prefix is beyond the new cut (our fetch up to it failed),
  // so is every continuing member's: none of us went through that view,
  // and nobody can tell us who it left out and what they sent that is now
  // lost. Our history starts over with the new view, as a rejoiner's does.
  if (continuing && v.cut < installed_.cut) fresh_at_epoch_ = v.epoch;
  have_view_ = true;
  installed_ = v;
  sequencer_ = v.sequencer;
  peers_[self_slot_].in_view = true;
  peers_[self_slot_].epoch = v.epoch;
  view_.epoch = v.epoch;
  view_.sequencer = v.sequencer;
  view_.members.clear();
  for (uint32_t i = 0; i < v.count; ++i)
    view_.members.push_back(ViewMember{v.members[i].id, v.members[i].incarnation});
  view_.state = Membership::Changing;
  view_.why = "installing view " + std::to_string(v.epoch);
  ever_installed_ = true;
  if (!continuing) {
    received_ = delivered_ = released_ = stable_ = v.cut;
    expected_gseq_ = v.cut_gseq;
    early_.clear();
    for (Reassembly& r : reassembly_) {
      r.active = false;
      std::vector<std::byte>().swap(r.buf);
    }
    // The lineage's knowledge of every node's records (what we knew from an
    // earlier history is void), and: messages that began before our start
    // are not ours to reassemble.
    for (Peer& p : peers_) {
      p.delivered_sseq = v.lineage_hwm[p.slot];
      p.sseq_incarnation = v.lineage_inc[p.slot];
    }
    for (uint32_t i = 0; i < v.count; ++i)
      if (Peer* p = peer_by_id(v.members[i].id)) {
        p->delivered_sseq = v.sseq_hwm(p->slot, v.members[i]);
        p->sseq_incarnation = v.members[i].incarnation;
      }
    partial_skip_.assign(peers_.size(), 1);
    log_view_epoch_ = 0;
    fresh_view_ = true;
    fresh_epoch_ = v.epoch;
    finish_install();
    return;
  }
  if (received_ >= v.cut) {
    finish_install();
    return;
  }
  Peer* h = peer_by_id(v.holder);
  size_t off = received_ % cfg_.log_bytes;
  size_t len = static_cast<size_t>(v.cut - received_);
  size_t first = std::min(len, cfg_.log_bytes - off);
  filling_ = true;
  fill_failed_ = false;
  fill_outstanding_ = 0;
  if (h && !h->self && h->introduced) {
    if (ep_.post_read(h->conn, *log_, off, h->hello.log, off, first, kFillTag))
      ++fill_outstanding_;
    else
      fill_failed_ = true;
    if (!fill_failed_ && first < len) {
      if (ep_.post_read(h->conn, *log_, 0, h->hello.log, 0, len - first, kFillTag))
        ++fill_outstanding_;
      else
        fill_failed_ = true;
    }
  } else {
    fill_failed_ = true;
  }
  if (!fill_failed_) counters_.gap_fill_bytes += len;
  if (fill_outstanding_ == 0) {
    ++fill_outstanding_;
    on_fill_done(false);
  }
}

void Engine::on_fill_done(bool ok) {
  if (!ok) fill_failed_ = true;
  if (--fill_outstanding_ > 0) return;
  filling_ = false;
  if (fill_failed_) {
    fill_failed_ = false;
    view_.why =
        "could not fetch the log up to the cut from node " + std::to_string(installed_.holder);
    log_fn_(view_.why);
    if (Peer* h = peer_by_id(installed_.holder)) suspect(*h, "the log fetch failed");
  } else {
    finish_install();
  }
  if (pending_commit_) {
    ViewValue next = *pending_commit_;
    pending_commit_.reset();
    if (next.epoch > installed_.epoch) install(next);
  }
}

void Engine::finish_install() {
  const ViewValue& v = installed_;
  received_ = std::max(received_, v.cut);
  LogScan scan = scan_log(v.cut);
  uint64_t resume = std::max(staging_credit_, scan.own_end);
  // Our records the lineage holds up to the cut, also those we never saw
  // come back (we start afresh): re-sending them would be harmless for
  // whole records (the sequencer drops them), but a large message we would
  // stream again, as a new message.
  if (const ValueMember* me = find_member(v, cfg_.self)) {
    uint64_t hwm = v.sseq_hwm(self_slot_, *me);
    if (hwm != 0 && hwm < next_sseq_ && hwm + staging_marks_.size() > next_sseq_)
      resume = std::max(resume, staging_marks_[hwm % staging_marks_.size()]);
  }
  resume = std::min(resume, staging_writer_.tail);
  skip_partial_message(resume);
  staging_credit_ = resume;
  staging_posted_ = resume;
  external_post_ = external_head_;
  while (external_post_ != external_tail_ && external_[external_post_ % kMaxExternal].pos < resume)
    ++external_post_;
  uint64_t resent = 0;
  RingReader staged{staging_->data, cfg_.inbound_bytes};
  for (uint64_t at = resume; const EntryHeader* h = staged.next(at, staging_writer_.tail);) {
    at += record_bytes(h->length);
    ++resent;
  }
  counters_.resent_records += resent;

  if (is_sequencer()) {
    // We read our staging ring directly from now on: zero-copy payloads
    // not yet in the log must be in it.
    for (uint64_t i = external_post_; i != external_tail_; ++i) {
      const External& x = external_[i % kMaxExternal];
      std::memcpy(staging_->data + x.pos % cfg_.inbound_bytes, x.src->data + x.off, x.len);
    }
    external_post_ = external_tail_;
    log_writer_.tail = v.cut;
    next_gseq_ = v.cut_gseq;
    view_appended_ = false;
    // Only where that view's whole prefix is ours: a member that installed
    // it but could not fetch up to its cut (its holder died) never went
    // through it, and its members that did delivered more before it.
    missing_view_ = prev_installed_.epoch != 0 && v.cut >= prev_installed_.cut &&
                    std::max(log_view_epoch_, scan.last_view) < prev_installed_.epoch;
    last_safe_end_ = v.cut;
    for (Peer& p : peers_) {
      const ValueMember* m = find_member(v, p.id);
      if (!m || !p.in_view) continue;
      bool same = scan.inc[p.slot] == m->incarnation;
      p.sequenced_sseq = std::max(same ? scan.seen[p.slot] : 0, v.sseq_hwm(p.slot, *m));
      p.frag_left = -1;  // the View entry we append ends every open message
      if (p.self) {
        p.inbound_read = resume;
        p.resumed = true;
        continue;
      }
      p.repl_posted = v.cut;
      p.stable_sent = 0;
      p.acked = AckSlot{m->received, m->consumed};
      if (p.reannounce) reannounce(p);
    }
  } else {
    resume_pending_ = true;
    resume_pos_ = resume;
    send_resume();  // else again from progress(): the send queue may be full
  }
  wedged_ = false;
  view_.state = Membership::Normal;
  view_.why.clear();
  want_since_us_ = 0;
  ++counters_.views_installed;
  if (first_suspect_us_ != 0) counters_.last_failover_us = now_ - first_suspect_us_;
  first_suspect_us_ = 0;
  acked_received_ = acked_delivered_ = UINT64_MAX;
  log_fn_("installed view " + std::to_string(v.epoch) + " [" + member_list(v) + "], sequencer " +
          std::to_string(v.sequencer) + ", cut " + std::to_string(v.cut) +
          (resent ? ", re-sending " + std::to_string(resent) + " records" : ""));
}

// A member ignores log announcements until it has installed the view and
// told us so (Resume): repeat what it has been sent so far.
void Engine::reannounce(Peer& p) {
  p.reannounce = false;
  if (!ep_.post_write_imm(p.conn, *log_, 0, p.hello.log, 0, 0,
                          make_imm(ImmType::Log, p.repl_posted), 0, false))
    p.repl_posted = std::min(p.repl_posted, installed_.cut);  // replicate() announces again
}

bool Engine::send_resume() {
  if (!resume_pending_) return false;
  Peer* s = peer_by_id(sequencer_);
  ResumeMsg r;
  r.epoch = installed_.epoch;
  r.position = resume_pos_;
  if (!s || !send_ctrl(*s, r)) return false;
  resume_pending_ = false;
  return true;
}

// A message whose first fragments are in the log before the cut cannot be
// completed after it: every member drops open reassemblies at the View
// entry. So the rest of it is not re-sent, and the engine streams it again
// from the start if it still has it (reassembly mode keeps the caller's
// buffer until the whole message is in the log).
void Engine::skip_partial_message(uint64_t& resume) {
  RingReader staged{staging_->data, cfg_.inbound_bytes};
  uint64_t at = resume;
  bool skipped = false;
  while (const EntryHeader* h = staged.next(at, staging_writer_.tail)) {
    if (!(h->flags & kFragment) || (h->flags & kFragFirst)) break;
    at += record_bytes(h->length);
    resume = at;
    skipped = true;
  }
  bool cut_inside = skipped || (large_.active && large_.off > 0 && resume == staging_writer_.tail);
  if (!cut_inside) return;
  if (large_.data && (large_.active || large_.unlogged)) {
    large_.off = 0;
    large_.active = true;
    ++counters_.restarted_msgs;
  } else {
    ++counters_.abandoned_msgs;
  }
}

void Engine::on_resume(Peer& p, const ResumeMsg& m) {
  if (m.position % kAlign != 0) {
    ++counters_.protocol_errors;
    return;
  }
  if (have_view_ && m.epoch == installed_.epoch) {
    if (!is_sequencer() || !p.in_view) return;
    p.inbound_read = p.inbound_end = m.position;
    p.resumed = true;
    reannounce(p);
  } else if (!have_view_ || m.epoch > installed_.epoch) {
    // It installed the view before we did (its Commit came first).
    p.early_resume_epoch = m.epoch;
    p.early_resume_pos = p.early_inbound_end = m.position;
  }
}

}  // namespace rcpg::ordering
