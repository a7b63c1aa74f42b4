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
    if (!p.self && p.in_view) oldest = std::min(oldest, p.acked.delivered);
  return oldest + cfg_.log_bytes;
}

bool Engine::append_view(const ViewValue& v) {
  std::vector<ViewMember> members;
  for (uint32_t i = 0; i < v.count; ++i)
    members.push_back(ViewMember{v.members[i].id, v.members[i].incarnation});
  size_t bytes = members.size() * sizeof(ViewMember);
  EntryHeader* h = log_writer_.reserve(bytes, log_limit());
  if (!h) return false;
  EntryHeader hdr;
  hdr.gseq = next_gseq_++;
  hdr.sender = v.sequencer;
  hdr.kind = EntryKind::View;
  hdr.length = static_cast<uint32_t>(bytes);
  hdr.aux = v.epoch;
  std::memcpy(h, &hdr, sizeof(hdr));
  std::memcpy(reinterpret_cast<std::byte*>(h + 1), members.data(), bytes);
  ++counters_.sequenced_entries;
  return true;
}

bool Engine::sequence_inbound() {
  bool did = false;
  bool log_full = false;
  if (!view_appended_) {
    // Every view's part of the log starts with the view itself.
    if (missing_view_) {
      if (!append_view(prev_installed_)) return false;
      missing_view_ = false;
    }
    if (!append_view(installed_)) return false;
    view_appended_ = true;
    did = true;
  }
  uint64_t limit = log_limit();
  for (Peer& p : peers_) {
    if (!p.in_view || p.lost || !(p.self || p.resumed)) continue;
    const std::byte* base = p.self ? staging_->data : inbound_->data + p.slot * cfg_.inbound_bytes;
    uint64_t end = p.self ? staging_writer_.tail : p.inbound_end;
    RingReader reader{base, cfg_.inbound_bytes};
    uint64_t pos = p.inbound_read;
    size_t taken = 0;
    while (taken < kMaxRecordsPerSenderRound) {
      const EntryHeader* h = reader.next(pos, end);
      if (!h) break;
      // The sender may still write into its ring (a bug or an attack):
      // validate a private copy and log exactly that copy.
      EntryHeader hv;
      std::memcpy(&hv, h, sizeof(hv));
      size_t off = pos % cfg_.inbound_bytes;
      size_t bytes = record_bytes(hv.length);
      bool well_formed = hv.length <= cfg_.max_fragment && bytes <= cfg_.inbound_bytes - off &&
                         pos + bytes <= end && hv.sender == p.id &&
                         (hv.kind == EntryKind::Data || hv.kind == EntryKind::Join ||
                          hv.kind == EntryKind::Leave) &&
                         static_cast<uint8_t>(hv.guarantee) <= 3;
      bool duplicate = well_formed && hv.sseq <= p.sequenced_sseq;
      if (!well_formed || (!duplicate && !fragment_ok(p, hv))) {
        // A misbehaving sender loses the rest of its batch, nobody else
        // loses anything.
        ++counters_.protocol_errors;
        log_fn_("dropped a malformed batch from node " + std::to_string(p.id));
        pos = end;
        break;
      }
      if (duplicate) {
        // Re-sent after a view change, but the log has it already.
        ++counters_.duplicates_dropped;
        pos += bytes;
        continue;
      }
      EntryHeader* out = log_writer_.reserve(hv.length, limit);
      if (!out) {
        ++counters_.log_stalls;
        log_full = true;
        break;
      }
      hv.gseq = next_gseq_++;
      p.sequenced_sseq = hv.sseq;
      std::memcpy(out, &hv, sizeof(hv));
      std::memcpy(out + 1, h + 1, hv.length);
      if (hv.flags & kFragment) commit_fragment(p, hv);
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

// Fragments must form whole messages of at most kMaxMessageBytes. In
// reassembly mode a sender streams one message at a time, so the sequencer
// checks the stream (a bad one would stop every member's reassembly); with
// deliver_fragments parts of several streams interleave and the client
// library checks them.
bool Engine::fragment_ok(const Peer& p, const EntryHeader& h) const {
  if (!valid_fragment_flags(h.flags)) return false;
  if (!(h.flags & kFragment)) return cfg_.deliver_fragments || p.frag_left < 0;
  if (h.kind != EntryKind::Data || h.aux > kMaxMessageBytes || h.length > h.aux) return false;
  if (cfg_.deliver_fragments) return true;
  int64_t left = (h.flags & kFragFirst) ? int64_t{h.aux} : p.frag_left;
  if ((h.flags & kFragFirst) ? p.frag_left >= 0 : p.frag_left < 0) return false;
  if (int64_t{h.length} > left) return false;
  return (h.flags & kFragLast) ? left == int64_t{h.length} : left > int64_t{h.length};
}

void Engine::commit_fragment(Peer& p, const EntryHeader& h) {
  if (cfg_.deliver_fragments) return;
  int64_t left = (h.flags & kFragFirst) ? int64_t{h.aux} : p.frag_left;
  p.frag_left = (h.flags & kFragLast) ? -1 : left - int64_t{h.length};
}

bool Engine::replicate() {
  bool did = false;
  for (Peer& p : peers_) {
    // Not before its Resume: until it has installed the view it may still
    // deliver from its old log, which ours overwrites (a member that starts
    // afresh had its log at positions unrelated to ours), and it ignores
    // our announcements until then anyway.
    if (p.self || !p.in_view || p.lost || !p.resumed || !p.introduced ||
        p.repl_posted == log_writer_.tail)
      continue;
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
    if (!p.self && p.in_view) stable = std::min(stable, p.acked.received);
  stable_ = std::max(stable_, stable);
  bool did = false;
  for (Peer& p : peers_) {
    // Only members that may be waiting on a SAFE entry need the watermark.
    if (p.self || !p.in_view || p.lost || !p.introduced || p.stable_sent >= stable_ ||
        p.stable_sent >= last_safe_end_)
      continue;
    if (ep_.post_write_imm(p.conn, *ack_src_, 0, p.hello.ctrl, 0, 0,
                           make_imm(ImmType::Stable, stable_), 0, false)) {
      p.stable_sent = stable_;
      did = true;
    }
  }
  return did;
}

}  // namespace rcpg::ordering
