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
    at += record_bytes(h->length);
    if (at > pos) break;
    ++g;
  }
  return g;
}

void Engine::install(const ViewValue& v) {
  const ValueMember* me = find_member(v, cfg_.self);
  for (Peer& p : peers_) {
    if (p.self) continue;
    const ValueMember* m = find_member(v, p.id);
    bool member = m && m->incarnation == p.incarnation;
    // A member of the old view that is not in the new one must not write
    // into our memory any more.
    if (p.in_view && !member && p.introduced) suspect(p, "not in view " + std::to_string(v.epoch));
    p.in_view = member && me;
    if (m) p.epoch = std::max(p.epoch, v.epoch);
    p.resumed = false;
    if (p.early_resume_epoch == v.epoch && p.in_view && v.sequencer == cfg_.self) {
      p.inbound_read = p.inbound_end = p.early_resume_pos;
      p.resumed = true;
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
  bool continuing = me->continuing && have_view_ && installed_.epoch + 1 == v.epoch;
  if (me->continuing && !continuing)
    log_fn_("view " + std::to_string(v.epoch) +
            " expected us to continue from an older view: starting afresh");
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
  if (!continuing) {
    received_ = delivered_ = released_ = stable_ = v.cut;
    expected_gseq_ = v.cut_gseq;
    early_.clear();
    for (Reassembly& r : reassembly_) {
      r.active = false;
      std::vector<std::byte>().swap(r.buf);
    }
    fresh_view_ = true;
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
  // The new sequencer may have written past the cut already.
  if (Peer* s = peer_by_id(sequencer_); s && !s->self && s->announced <= v.cut + cfg_.log_bytes)
    received_ = std::max(received_, s->announced);
  received_ = std::max(received_, v.cut);
  for (Peer& p : peers_) p.announced = 0;
  // What the log up to the cut holds of every sender, beyond what delivery
  // has passed: the sequencer's de-duplication and fragment state, and how
  // much of our own staging ring is in the log.
  size_t n = peers_.size();
  std::vector<uint64_t> seen(n);
  std::vector<uint32_t> inc(n);
  std::vector<int64_t> frag(n, -1);
  for (size_t s = 0; s < n; ++s) {
    seen[s] = peers_[s].delivered_sseq;
    inc[s] = peers_[s].sseq_incarnation;
    const Reassembly& r = reassembly_[s];
    if (r.active) frag[s] = static_cast<int64_t>(r.buf.size() - r.filled);
  }
  uint64_t resume = staging_credit_;
  RingReader reader{log_->data, cfg_.log_bytes};
  for (uint64_t at = delivered_; const EntryHeader* h = reader.next(at, v.cut);) {
    at += record_bytes(h->length);
    if (at > v.cut) break;
    if (h->kind == EntryKind::View) {
      std::vector<ViewMember> ms(h->length / sizeof(ViewMember));
      std::memcpy(static_cast<void*>(ms.data()), h + 1, ms.size() * sizeof(ViewMember));
      for (size_t s = 0; s < n; ++s) {
        auto it = std::find_if(ms.begin(), ms.end(), [&](auto& m) { return m.id == peers_[s].id; });
        if (it == ms.end() || it->incarnation != inc[s]) frag[s] = -1;
        if (it != ms.end() && it->incarnation != inc[s]) {
          inc[s] = it->incarnation;
          seen[s] = 0;
        }
      }
      continue;
    }
    Peer* p = peer_by_id(h->sender);
    if (!p) continue;
    seen[p->slot] = std::max(seen[p->slot], h->sseq);
    if (h->sender == cfg_.self)
      resume = std::max(resume, staging_marks_[h->sseq % staging_marks_.size()]);
    if (h->flags & kFragment) {
      int64_t left = (h->flags & kFragFirst) ? int64_t{h->aux} : frag[p->slot];
      frag[p->slot] = (h->flags & kFragLast) ? -1 : left - int64_t{h->length};
    }
  }
  resume = std::min(resume, staging_writer_.tail);
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
    last_safe_end_ = v.cut;
    for (Peer& p : peers_) {
      const ValueMember* m = find_member(v, p.id);
      if (!m || !p.in_view) continue;
      p.sequenced_sseq = inc[p.slot] == m->incarnation ? seen[p.slot] : 0;
      p.frag_left = inc[p.slot] == m->incarnation ? frag[p.slot] : -1;
      if (p.self) {
        p.inbound_read = resume;
        p.resumed = true;
        continue;
      }
      p.repl_posted = v.cut;
      p.stable_sent = 0;
      p.acked = AckSlot{m->received, m->consumed};
    }
  } else {
    ResumeMsg r;
    r.epoch = v.epoch;
    r.position = resume;
    Peer* s = peer_by_id(sequencer_);
    if (!s || !send_ctrl(*s, r)) {
      if (s) suspect(*s, "cannot reach the new sequencer");
      view_.why = "cannot reach the new sequencer " + std::to_string(sequencer_);
      return;  // stays wedged: the next view change follows
    }
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

void Engine::on_resume(Peer& p, const ResumeMsg& m) {
  if (have_view_ && m.epoch == installed_.epoch) {
    if (!is_sequencer() || !p.in_view) return;
    p.inbound_read = p.inbound_end = m.position;
    p.resumed = true;
  } else if (!have_view_ || m.epoch > installed_.epoch) {
    // It installed the view before we did (its Commit came first).
    p.early_resume_epoch = m.epoch;
    p.early_resume_pos = m.position;
  }
}

}  // namespace rcpg::ordering
