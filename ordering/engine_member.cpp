// Member role: deliver log entries in order straight from the mirror,
// reassemble fragmented messages, and acknowledge positions to the sequencer.
#include <algorithm>
#include <cstring>

#include "ordering/engine.h"
#include "ordering/engine_peer.h"

namespace rcpg::ordering {

using namespace rcpg::transport;

namespace {
constexpr size_t kMaxDeliveriesPerRound = 4096;
}

bool Engine::deliver() {
  if (delivery_paused_) return false;
  RingReader reader{log_->data, cfg_.log_bytes};
  uint64_t pos = delivered_;
  size_t n = 0;
  size_t skipped = 0;
  // A delivery callback may pause delivery (its consumer is full): stop at once.
  while (n < kMaxDeliveriesPerRound && !delivery_paused_) {
    const EntryHeader* h = reader.next(pos, received_);
    if (!h) {
      delivered_ = pos;  // padding skipped at the end counts as consumed
      break;
    }
    size_t off = pos % cfg_.log_bytes;
    size_t bytes = record_bytes(h->length);
    if (bytes > cfg_.log_bytes - off || pos + bytes > received_ || h->gseq != expected_gseq_ ||
        !entry_ok(*h)) {
      fail("log entry at position " + std::to_string(pos) + " is corrupt (gseq " +
           std::to_string(h->gseq) + ", expected " + std::to_string(expected_gseq_) + ", kind " +
           std::to_string(static_cast<int>(h->kind)) + ")");
      return n > 0;
    }
    if (h->kind == EntryKind::View && fresh_view_ && h->aux < fresh_epoch_) {
      // A view we were not in, recorded for the continuing members at the
      // cut where we start.
    } else if (skipped < early_.size() && early_[skipped] == pos) {
      ++skipped;  // delivered ahead already
    } else {
      bool completes = !(h->flags & kFragment) || (h->flags & kFragLast);
      if (h->guarantee == Guarantee::Safe && completes && pos + bytes > stable_) {
        early_.erase(early_.begin(), early_.begin() + static_cast<std::ptrdiff_t>(skipped));
        skipped = 0;
        deliver_ahead(pos);
        break;
      }
      if (!deliver_entry(*h, reinterpret_cast<const std::byte*>(h + 1), pos + bytes)) return n > 0;
    }
    if (h->kind != EntryKind::View)
      if (Peer* p = peer_by_id(h->sender)) p->delivered_sseq = std::max(p->delivered_sseq, h->sseq);
    pos += bytes;
    delivered_ = pos;
    ++expected_gseq_;
    ++n;
  }
  early_.erase(early_.begin(), early_.begin() + static_cast<std::ptrdiff_t>(skipped));
  return n > 0;
}

// What the sequencer writes is checked too: a member never hands out an
// entry it could not have sequenced itself.
bool Engine::configured(NodeId id) const {
  return slot_of(id) != SIZE_MAX;
}

bool Engine::entry_ok(const EntryHeader& h) const {
  bool kind = h.kind == EntryKind::Data || h.kind == EntryKind::Join ||
              h.kind == EntryKind::Leave || h.kind == EntryKind::View;
  if (!kind || static_cast<uint8_t>(h.guarantee) > 3 || !valid_fragment_flags(h.flags))
    return false;
  if (h.kind == EntryKind::View)
    return configured(h.sender) && h.flags == 0 && h.length > 0 &&
           h.length % sizeof(ViewMember) == 0 && h.length <= kMaxNodes * sizeof(ViewMember);
  if (!configured(h.sender) || h.length > cfg_.max_fragment) return false;
  return !(h.flags & kFragment) ||
         (h.kind == EntryKind::Data && h.aux <= kMaxMessageBytes && h.length <= h.aux);
}

// A SAFE entry at `from` waits for stability. UNORDERED and FIFO messages
// behind it need not wait: deliver them now, except (a) across a Join, Leave
// or View entry (membership changes stay ordered with every message, which
// virtual synchrony needs), (b) a FIFO message whose sender has an earlier
// entry still held (FIFO per sender), (c) fragments (reassembly is in
// order). They are remembered in early_ and skipped in order later.
void Engine::deliver_ahead(uint64_t from) {
  if (early_.size() >= kMaxEarly) return;
  RingReader reader{log_->data, cfg_.log_bytes};
  std::fill(ahead_blocked_.begin(), ahead_blocked_.end(), 0);
  uint64_t pos = from;
  size_t next_early = 0;  // early_ entries below pos
  size_t scanned = 0;
  while (scanned++ < kMaxEarly && early_.size() < kMaxEarly) {
    const EntryHeader* h = reader.next(pos, received_);
    if (!h || h->kind != EntryKind::Data) return;
    size_t off = pos % cfg_.log_bytes;
    size_t bytes = record_bytes(h->length);
    if (bytes > cfg_.log_bytes - off || pos + bytes > received_) return;  // deliver() reports it
    while (next_early < early_.size() && early_[next_early] < pos) ++next_early;
    bool done = next_early < early_.size() && early_[next_early] == pos;
    Peer* p = peer_by_id(h->sender);
    if (!done && p) {
      bool fifo_ok = h->guarantee == Guarantee::Unordered ||
                     (h->guarantee == Guarantee::Fifo && !ahead_blocked_[p->slot]);
      if (fifo_ok && !(h->flags & kFragment)) {
        if (!deliver_entry(*h, reinterpret_cast<const std::byte*>(h + 1), pos + bytes, true))
          return;
        early_.insert(early_.begin() + static_cast<std::ptrdiff_t>(next_early), pos);
        ++counters_.early_deliveries;
        if (failed_ || delivery_paused_) return;
      } else if (h->guarantee != Guarantee::Unordered || (h->flags & kFragment)) {
        // Held fragments of an UNORDERED message count as well: otherwise a
        // node that stops before reassembling it has delivered later FIFO
        // messages of that sender across a message it never delivers.
        ahead_blocked_[p->slot] = 1;
      }
    }
    pos += bytes;
  }
}

bool Engine::deliver_entry(const EntryHeader& h, const std::byte* payload, uint64_t end,
                           bool early) {
  // Our own record is back: the sequencer consumed our inbound ring up to it.
  // Not at the sequencer: it takes credit as it sequences (sequence_inbound),
  // so more of its records than staging_marks_ has slots can be waiting for
  // delivery, and a reused slot would credit space it has not consumed yet.
  // The same holds for a member delivering records from before a view
  // change late (its credit was set from the cut meanwhile, and newer
  // records may have reused the slot): only a mark still its own counts.
  if (h.sender == cfg_.self && h.kind != EntryKind::View && !is_sequencer() &&
      h.sseq + staging_marks_.size() > next_sseq_)
    staging_credit_ = std::max(staging_credit_, staging_marks_[h.sseq % staging_marks_.size()]);
  Delivery d;
  if (h.kind == EntryKind::View) {
    log_view_epoch_ = std::max(log_view_epoch_, h.aux);
    on_view_entry(payload, h.length);
    d.fresh = fresh_view_ || (fresh_at_epoch_ != 0 && h.aux == fresh_at_epoch_);
    fresh_view_ = false;
    if (h.aux >= fresh_at_epoch_) fresh_at_epoch_ = 0;
  }
  d.position = end;
  d.early = early;
  d.release_to = early ? delivered_ : end;
  d.kind = h.kind;
  d.guarantee = h.guarantee;
  d.sender = h.sender;
  d.pid = h.pid;
  d.group = h.group;
  d.gseq = h.gseq;
  d.sseq = h.sseq;
  d.aux = h.aux;
  if ((h.flags & kFragment) && cfg_.deliver_fragments) {
    d.flags = h.flags;
    d.total = h.aux;
    if (h.flags & kFragFirst) ++counters_.reassembled;  // by the client, counted once
    if (h.flags & kFragLast) ++counters_.delivered_msgs;
  } else if (h.flags & kFragment) {
    Peer* p = peer_by_id(h.sender);
    if (!p) {
      fail("fragment from unknown node " + std::to_string(h.sender));
      return false;
    }
    Reassembly& r = reassembly_[p->slot];
    if (!(h.flags & kFragFirst) && !r.active && p->slot < partial_skip_.size() &&
        partial_skip_[p->slot])
      return true;  // the rest of a message begun before we joined
    if (p->slot < partial_skip_.size()) partial_skip_[p->slot] = 0;
    if (h.flags & kFragFirst) {
      r.buf.assign(h.aux, std::byte{0});
      r.filled = 0;
      r.active = true;
    }
    if (!r.active || r.filled + h.length > r.buf.size()) {
      fail("fragment sequence from node " + std::to_string(h.sender) + " is inconsistent");
      return false;
    }
    if (h.length != 0) std::memcpy(r.buf.data() + r.filled, payload, h.length);
    r.filled += h.length;
    if (!(h.flags & kFragLast)) return true;
    d.data = r.buf.data();
    d.len = r.filled;
    ++counters_.reassembled;
    ++counters_.delivered_msgs;
    counters_.delivered_bytes += d.len;
    if (deliver_fn_) deliver_fn_(d);
    r.active = false;
    std::vector<std::byte>().swap(r.buf);  // bounded memory: give it back
    return true;
  }
  d.data = payload;
  d.len = h.length;
  ++counters_.zero_copy_deliveries;
  if (!(h.flags & kFragment)) ++counters_.delivered_msgs;
  counters_.delivered_bytes += d.len;
  if (deliver_fn_) deliver_fn_(d);
  return true;
}

// A sender that left, or came back as another incarnation, starts over:
// its half-reassembled message is void, its sequence numbers restart.
void Engine::on_view_entry(const std::byte* payload, size_t len) {
  std::vector<ViewMember> ms(len / sizeof(ViewMember));
  std::memcpy(static_cast<void*>(ms.data()), payload, ms.size() * sizeof(ViewMember));
  partial_skip_.assign(peers_.size(), 1);
  for (Peer& p : peers_) {
    auto it = std::find_if(ms.begin(), ms.end(), [&](auto& m) { return m.id == p.id; });
    bool same = it != ms.end() && it->incarnation == p.sseq_incarnation;
    // Every open message ends here: its sender streams it again (or, if
    // the sender left, it is gone), the same at every member.
    reassembly_[p.slot].active = false;
    std::vector<std::byte>().swap(reassembly_[p.slot].buf);
    if (it != ms.end() && !same) {
      p.sseq_incarnation = it->incarnation;
      p.delivered_sseq = 0;
    }
  }
}

void Engine::release(uint64_t position) {
  released_ = std::max(released_, std::min(position, delivered_));
}

bool Engine::send_ack() {
  uint64_t done = consumed();
  if (received_ == acked_received_ && done == acked_delivered_) return false;
  if (is_sequencer()) {
    acked_received_ = received_;
    acked_delivered_ = done;
    return false;
  }
  if (wedged_ || !have_view_) return false;
  Peer* seq = peer_by_id(sequencer_);
  if (!seq || !seq->introduced || !seq->in_view || seq->lost) return false;
  AckSlot a{received_, done};
  std::memcpy(ack_src_->data, &a, sizeof(a));
  if (!ep_.post_write_imm(seq->conn, *ack_src_, 0, seq->hello.ctrl, self_slot_ * sizeof(AckSlot),
                          sizeof(AckSlot), make_imm(ImmType::Ack, 0), 0, false))
    return false;
  acked_received_ = received_;
  acked_delivered_ = done;
  return true;
}

}  // namespace rcpg::ordering
