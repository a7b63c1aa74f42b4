// Sender role: records go into the staging ring (a local mirror of this
// node's inbound ring at the sequencer); whatever accumulated since the last
// round leaves as one RDMA write batch.
#include <cstring>

#include "ordering/engine.h"
#include "ordering/engine_peer.h"

namespace rcpg::ordering {

using namespace rcpg::transport;

bool Engine::append_record(EntryKind kind, Guarantee g, uint32_t group, uint32_t pid, uint32_t aux,
                           uint16_t flags, std::span<const std::byte> payload) {
  EntryHeader* h = staging_writer_.reserve(payload.size(), staging_credit_ + cfg_.inbound_bytes);
  if (!h) return false;
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
  if (!payload.empty()) std::memcpy(h + 1, payload.data(), payload.size());
  staging_marks_[hdr.sseq % staging_marks_.size()] = staging_writer_.tail;
  ++counters_.sent_msgs;
  counters_.sent_bytes += payload.size();
  return true;
}

SendResult Engine::send(EntryKind kind, Guarantee g, uint32_t group, uint32_t pid,
                        std::span<const std::byte> payload, uint32_t aux) {
  if (!can_send()) return SendResult::NotReady;
  if (kind != EntryKind::Data && kind != EntryKind::Join && kind != EntryKind::Leave)
    return SendResult::TooLarge;  // senders may not forge views or padding
  if (static_cast<uint8_t>(g) > static_cast<uint8_t>(Guarantee::Safe)) return SendResult::TooLarge;
  if (large_.active) {
    ++counters_.credit_stalls;
    return SendResult::TryAgain;
  }
  if (payload.size() > cfg_.max_fragment) {
    if (kind != EntryKind::Data || payload.size() > UINT32_MAX) return SendResult::TooLarge;
    large_ = LargeSend{true, payload.data(), payload.size(), 0, kind, g, group, pid, aux};
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
  if (!can_send()) return SendResult::NotReady;
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
    if (large_.off == large_.len) large_.active = false;
    did = true;
  }
  return did;
}

bool Engine::post_range(ConnId conn, const Region& local, size_t ring, uint64_t from, uint64_t to,
                        const RemoteRegion& remote, uint64_t remote_base, ImmType imm) {
  size_t off = from % ring;
  size_t len = static_cast<size_t>(to - from);
  if (off + len > ring) {
    // The range wraps: the tail of the ring first, then the rest, signalled.
    size_t first = ring - off;
    if (!ep_.post_write(conn, local, off, remote, remote_base + off, first, 0, false)) return false;
    return ep_.post_write_imm(conn, local, 0, remote, remote_base, len - first, make_imm(imm, to),
                              0, false);
  }
  return ep_.post_write_imm(conn, local, off, remote, remote_base + off, len, make_imm(imm, to), 0,
                            false);
}

bool Engine::flush_staging() {
  if (is_sequencer() || staging_posted_ == staging_writer_.tail) return false;
  Peer* seq = peer_by_id(sequencer_);
  if (!seq || !seq->introduced) return false;
  if (!post_range(seq->conn, *staging_, cfg_.inbound_bytes, staging_posted_, staging_writer_.tail,
                  seq->hello.inbound, self_slot_ * cfg_.inbound_bytes, ImmType::Inbound))
    return false;
  staging_posted_ = staging_writer_.tail;
  ++counters_.inbound_batches;
  return true;
}

}  // namespace rcpg::ordering
