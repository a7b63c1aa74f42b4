// Sender role: records go into the staging ring (a local mirror of this
// node's inbound ring at the sequencer); whatever accumulated since the last
// round leaves as one RDMA write batch.
#include <cstring>

#include "ordering/engine.h"
#include "ordering/engine_peer.h"

namespace rcpg::ordering {

using namespace rcpg::transport;

uint64_t Engine::append_record(EntryKind kind, Guarantee g, uint32_t group, uint32_t pid,
                               uint32_t aux, uint16_t flags, std::span<const std::byte> payload,
                               bool copy) {
  EntryHeader* h = staging_writer_.reserve(payload.size(), staging_credit_ + cfg_.inbound_bytes);
  if (!h) return 0;
  EntryHeader hdr;
  hdr.sseq = next_sseq_++;
  hdr.length = static_cast<uint32_t>(payload.size());
  hdr.sender = cfg_.self;
  hdr.pid = pid;
  hdr.group = group;
  hdr.kind = kind;
  hdr.guarantee = g;
  hdr.flags = flags;
  hdr.aux = aux;
  std::memcpy(h, &hdr, sizeof(hdr));
  if (copy && !payload.empty()) std::memcpy(h + 1, payload.data(), payload.size());
  staging_marks_[hdr.sseq % staging_marks_.size()] = staging_writer_.tail;
  ++counters_.sent_msgs;
  counters_.sent_bytes += payload.size();
  return staging_writer_.tail - record_bytes(payload.size()) + sizeof(EntryHeader);
}

SendResult Engine::send(EntryKind kind, Guarantee g, uint32_t group, uint32_t pid,
                        std::span<const std::byte> payload, uint32_t aux) {
  if (SendResult r = send_gate(); r != SendResult::Ok) return r;
  if (kind != EntryKind::Data && kind != EntryKind::Join && kind != EntryKind::Leave)
    return SendResult::TooLarge;  // senders may not forge views or padding
  if (static_cast<uint8_t>(g) > static_cast<uint8_t>(Guarantee::Safe)) return SendResult::TooLarge;
  // Nothing may overtake a large message that could still be restarted.
  if (large_send_pending()) {
    ++counters_.credit_stalls;
    return SendResult::TryAgain;
  }
  if (payload.size() > cfg_.max_fragment) {
    if (kind != EntryKind::Data || payload.size() > UINT32_MAX) return SendResult::TooLarge;
    large_ = LargeSend{true, payload.data(), payload.size(), 0, kind, g, group, pid, aux};
    large_.unlogged = !cfg_.deliver_fragments;
    continue_large_send();
    return SendResult::Ok;
  }
  if (!append_record(kind, g, group, pid, aux, 0, payload)) {
    ++counters_.credit_stalls;
    return SendResult::TryAgain;
  }
  return SendResult::Ok;
}

SendResult Engine::send_part(Guarantee g, uint32_t group, uint32_t pid, uint16_t flags,
                             uint32_t total, std::span<const std::byte> chunk) {
  if (SendResult r = send_gate(); r != SendResult::Ok) return r;
  if (static_cast<uint8_t>(g) > static_cast<uint8_t>(Guarantee::Safe) ||
      chunk.size() > cfg_.max_fragment || chunk.size() > total ||
      flags != (kFragment | (flags & (kFragFirst | kFragLast))))
    return SendResult::TooLarge;
  if (large_.active) {
    ++counters_.credit_stalls;
    return SendResult::TryAgain;
  }
  if (!append_record(EntryKind::Data, g, group, pid, total, flags, chunk)) {
    ++counters_.credit_stalls;
    return SendResult::TryAgain;
  }
  if (!(flags & kFragLast)) --counters_.sent_msgs;  // a message counts once, at its end
  return SendResult::Ok;
}

SendResult Engine::send_zero_copy(Guarantee g, uint32_t group, uint32_t pid, uint16_t flags,
                                  uint32_t total, const Region& src, size_t off, size_t len,
                                  uint64_t ticket) {
  if (SendResult r = send_gate(); r != SendResult::Ok) return r;
  bool part = flags != 0;
  if (static_cast<uint8_t>(g) > static_cast<uint8_t>(Guarantee::Safe) || len > cfg_.max_fragment ||
      off > src.size || len > src.size - off || (ticket & kZeroCopyTag) ||
      (part && (len > total || flags != (kFragment | (flags & (kFragFirst | kFragLast))))))
    return SendResult::TooLarge;
  if (large_.active || external_tail_ - external_head_ == kMaxExternal ||
      copied_done_count_ == kMaxExternal) {
    ++counters_.credit_stalls;
    return SendResult::TryAgain;
  }
  std::span<const std::byte> payload{src.data + off, len};
  // At the sequencer the staging ring is read directly: the bytes must be there.
  bool wire = !is_sequencer() && len > 0;
  uint64_t pos =
      append_record(EntryKind::Data, g, group, pid, part ? total : 0, flags, payload, !wire);
  if (pos == 0) {
    ++counters_.credit_stalls;
    return SendResult::TryAgain;
  }
  if (part && !(flags & kFragLast)) --counters_.sent_msgs;
  if (wire) {
    external_[external_tail_++ % kMaxExternal] = External{pos, len, &src, off, ticket};
    ++counters_.zero_copy_sends;
  } else {
    copied_done_[copied_done_count_++] = ticket;
    if (len > 0) ++counters_.copied_sends;
  }
  return SendResult::Ok;
}

void Engine::finish_send(uint64_t ticket, bool ok) {
  if (send_done_fn_) send_done_fn_(ticket, ok);
}

// A zero-copy payload is done with once its record is back through the log:
// until then a new sequencer may need it re-sent after a failure.
void Engine::complete_large() {
  if (large_.unlogged && !large_.active && staging_credit_ >= large_.last_end)
    large_.unlogged = false;
}

void Engine::complete_externals() {
  while (external_head_ != external_post_) {
    const External& x = external_[external_head_ % kMaxExternal];
    if (x.pos + x.len > staging_credit_) break;
    ++external_head_;
    finish_send(x.ticket, true);
  }
}

bool Engine::continue_large_send() {
  bool did = false;
  while (large_.active) {
    size_t chunk = std::min(cfg_.max_fragment, large_.len - large_.off);
    uint16_t flags = kFragment | (large_.off == 0 ? kFragFirst : 0) |
                     (large_.off + chunk == large_.len ? kFragLast : 0);
    if (!append_record(large_.kind, large_.guarantee, large_.group, large_.pid,
                       static_cast<uint32_t>(large_.len), flags, {large_.data + large_.off, chunk}))
      break;
    // Fragments count as one message for the counters.
    if (large_.off != 0) --counters_.sent_msgs;
    large_.off += chunk;
    if (large_.off == large_.len) {
      large_.active = false;
      large_.last_end = staging_writer_.tail;
    }
    did = true;
  }
  return did;
}

bool Engine::post_range(ConnId conn, const Region& local, size_t ring, uint64_t from, uint64_t to,
                        const RemoteRegion& remote, uint64_t remote_base,
                        std::optional<ImmType> imm) {
  size_t off = from % ring;
  size_t len = static_cast<size_t>(to - from);
  auto last = [&](size_t loff, uint64_t roff, size_t n) {
    if (!imm) return ep_.post_write(conn, local, loff, remote, roff, n, 0, false);
    return ep_.post_write_imm(conn, local, loff, remote, roff, n, make_imm(*imm, to), 0, false);
  };
  if (off + len > ring) {
    // The range wraps: the tail of the ring first, then the rest.
    size_t first = ring - off;
    if (!ep_.post_write(conn, local, off, remote, remote_base + off, first, 0, false)) return false;
    return last(0, remote_base, len - first);
  }
  return last(off, remote_base + off, len);
}

// Posts staging positions [from, to): plain ranges from the staging ring,
// zero-copy payloads from their own regions, all on one connection so the
// final immediate (when signal_end) covers every byte. staging_posted_
// advances piece by piece, so a full send queue resumes where it stopped.
bool Engine::post_staging(ConnId conn, uint64_t from, uint64_t to, bool signal_end) {
  Peer* seq = peer_by_id(sequencer_);
  const RemoteRegion& remote = seq->hello.inbound;
  uint64_t base = self_slot_ * cfg_.inbound_bytes;
  while (external_post_ != external_tail_) {
    const External& x = external_[external_post_ % kMaxExternal];
    if (x.pos >= to) break;
    if (from < x.pos) {
      if (!post_range(conn, *staging_, cfg_.inbound_bytes, from, x.pos, remote, base, std::nullopt))
        return false;
      staging_posted_ = from = x.pos;
    }
    uint64_t end = x.pos + x.len;
    uint64_t roff = base + x.pos % cfg_.inbound_bytes;
    uint64_t wr = kZeroCopyTag | x.ticket;
    bool ok = signal_end && end == to
                  ? ep_.post_write_imm(conn, *x.src, x.off, remote, roff, x.len,
                                       make_imm(ImmType::Inbound, to), wr, true)
                  : ep_.post_write(conn, *x.src, x.off, remote, roff, x.len, wr, true);
    if (!ok) return false;
    staging_posted_ = from = end;
    ++external_post_;
  }
  if (from < to) {
    if (!post_range(conn, *staging_, cfg_.inbound_bytes, from, to, remote, base,
                    signal_end ? std::optional(ImmType::Inbound) : std::nullopt))
      return false;
    staging_posted_ = to;
  }
  return true;
}

bool Engine::flush_staging() {
  bool did = false;
  if (copied_done_count_ > 0) {
    // Tickets of sends that needed no wire complete one round later, so the
    // callback never runs inside send_zero_copy().
    size_t n = copied_done_count_;
    copied_done_count_ = 0;
    for (size_t i = 0; i < n; ++i) finish_send(copied_done_[i], true);
    did = true;
  }
  complete_externals();
  complete_large();
  // The sequencer learns where our records start before any of them.
  if (resume_pending_ && !send_resume()) return did;
  if (wedged_ || is_sequencer() || staging_posted_ == staging_writer_.tail) return did;
  Peer* seq = peer_by_id(sequencer_);
  if (!seq || !seq->introduced || !seq->in_view || seq->lost) return did;
  if (!post_staging(seq->conn, staging_posted_, staging_writer_.tail, true)) return true;
  ++counters_.inbound_batches;
  return true;
}

}  // namespace rcpg::ordering
