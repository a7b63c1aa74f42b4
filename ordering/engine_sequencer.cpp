// Sequencer role: drain every sender's inbound ring into the log (stamping
// global sequence numbers), replicate new log ranges to every member's
// mirror, and publish the SAFE watermark. Senders get their inbound credit
// back through the log itself (see Engine::deliver_entry).
#include <algorithm>
#include <cstring>

#include "ordering/engine.h"
#include "ordering/engine_peer.h"

namespace rcpg::ordering {

using namespace rcpg::transport;

namespace {
constexpr size_t kMaxRecordsPerSenderRound = 512;
}

uint64_t Engine::log_limit() const {
  uint64_t oldest = consumed();
  for (const Peer& p : peers_)
    if (!p.self) oldest = std::min(oldest, p.acked.delivered);
  return oldest + cfg_.log_bytes;
}

bool Engine::sequence_inbound() {
  bool did = false;
  bool log_full = false;
  if (!view_appended_) {
    // The first entry of every log is the view it was created in.
    std::vector<uint32_t> ids;
    for (const Peer& p : peers_) ids.push_back(p.id);
    EntryHeader* h = log_writer_.reserve(ids.size() * 4, log_limit());
    if (!h) return false;
    EntryHeader hdr;
    hdr.gseq = next_gseq_++;
    hdr.sender = cfg_.self;
    hdr.kind = EntryKind::View;
    hdr.length = static_cast<uint32_t>(ids.size() * 4);
    hdr.aux = 1;  // epoch
    std::memcpy(h, &hdr, sizeof(hdr));
    std::memcpy(reinterpret_cast<std::byte*>(h + 1), ids.data(), ids.size() * 4);
    view_appended_ = true;
    ++counters_.sequenced_entries;
    did = true;
  }
  uint64_t limit = log_limit();
  for (Peer& p : peers_) {
    const std::byte* base = p.self ? staging_->data : inbound_->data + p.slot * cfg_.inbound_bytes;
    uint64_t end = p.self ? staging_writer_.tail : p.inbound_end;
    RingReader reader{base, cfg_.inbound_bytes};
    uint64_t pos = p.inbound_read;
    size_t taken = 0;
    while (taken < kMaxRecordsPerSenderRound) {
      const EntryHeader* h = reader.next(pos, end);
      if (!h) break;
      size_t off = pos % cfg_.inbound_bytes;
      size_t bytes = record_bytes(h->length);
      bool well_formed = h->length <= cfg_.max_fragment && bytes <= cfg_.inbound_bytes - off &&
                         pos + bytes <= end && h->sender == p.id &&
                         (h->kind == EntryKind::Data || h->kind == EntryKind::Join ||
                          h->kind == EntryKind::Leave) &&
                         static_cast<uint8_t>(h->guarantee) <= 3;
      if (!well_formed) {
        // A misbehaving sender loses the rest of its batch, nobody else
        // loses anything.
        ++counters_.protocol_errors;
        log_fn_("dropped a malformed batch from node " + std::to_string(p.id));
        pos = end;
        break;
      }
      EntryHeader* out = log_writer_.reserve(h->length, limit);
      if (!out) {
        ++counters_.log_stalls;
        log_full = true;
        break;
      }
      std::memcpy(out, h, bytes);
      out->gseq = next_gseq_++;
      if (out->guarantee == Guarantee::Safe) last_safe_end_ = log_writer_.tail;
      ++counters_.sequenced_entries;
      pos += bytes;
      ++taken;
    }
    if (pos != p.inbound_read) did = true;
    p.inbound_read = pos;
    if (p.self) staging_credit_ = pos;
    if (log_full) break;
  }
  received_ = log_writer_.tail;
  return did;
}

bool Engine::replicate() {
  bool did = false;
  for (Peer& p : peers_) {
    if (p.self || !p.introduced || p.repl_posted == log_writer_.tail) continue;
    if (post_range(p.conn, *log_, cfg_.log_bytes, p.repl_posted, log_writer_.tail, p.hello.log, 0,
                   ImmType::Log)) {
      p.repl_posted = log_writer_.tail;
      ++counters_.log_batches;
      did = true;
    }
  }
  return did;
}

bool Engine::publish_stability() {
  uint64_t stable = log_writer_.tail;
  for (const Peer& p : peers_)
    if (!p.self) stable = std::min(stable, p.acked.received);
  stable_ = std::max(stable_, stable);
  bool did = false;
  for (Peer& p : peers_) {
    // Only members that may be waiting on a SAFE entry need the watermark.
    if (p.self || p.stable_sent >= stable_ || p.stable_sent >= last_safe_end_) continue;
    if (ep_.post_write_imm(p.conn, *ack_src_, 0, p.hello.ctrl, 0, 0,
                           make_imm(ImmType::Stable, stable_), 0, false)) {
      p.stable_sent = stable_;
      did = true;
    }
  }
  return did;
}

}  // namespace rcpg::ordering
