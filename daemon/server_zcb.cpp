// Zero-copy sends (cpg_zcb_mcast_joined). A ZcbRecord names a buffer in the
// client's pool. The client's segment is registered with the endpoint after
// Hello, off the event loop (daemon/segment_registrar.h); from then on every
// part of the message is RDMA-written to the sequencer straight from the
// pool (Engine::send_zero_copy): no CPU copy on this node.
// The outcome goes into SegmentHeader::zcb_status / zcb_done only once every
// part is in the engine and every part's engine ticket came back, because
// until then the NIC may still read the buffer. Until the registration is
// done, or where the fabric refuses it, the payload is copied into the
// engine instead.
#include <algorithm>
#include <cstring>
#include <span>

#include "daemon/server.h"

namespace rcpg::daemon {

using ordering::SendResult;

bool Server::register_segment(Client& c) {
  std::string why;
  if (registrar_->submit((c.serial << 32) | c.slot, c.seg_fd, c.seg_bytes, why)) return true;
  if (counters_.zcb_register_failures++ == 0)
    log("cannot register client segments (" + why +
        "): zero-copy sends are copied into the engine (logged once; see rcpg-tool counters "
        "zcb_register_failures)");
  return false;
}

void Server::adopt_segments() {
  registrar_->take(registered_);
  for (SegmentRegistrar::Done& d : registered_) {
    Client* c = client_by_tag(d.tag);
    // Gone (or closing) meanwhile: the unadopted registration is released.
    if (!c || c->closing || !c->hello_pending) continue;
    transport::Region* r = d.prepared ? ep_->adopt_external(std::move(d.prepared)) : nullptr;
    if (!r) {
      if (counters_.zcb_register_failures++ == 0)
        log("the fabric cannot register client segments" + (d.why.empty() ? "" : ": " + d.why) +
            "; zero-copy sends are copied into the engine (logged once; see rcpg-tool counters "
            "zcb_register_failures)");
      finish_hello(*c);
      continue;
    }
    ++counters_.zcb_registered;
    uint32_t idx;
    if (!free_zc_sources_.empty()) {
      idx = free_zc_sources_.back();
      free_zc_sources_.pop_back();
    } else {
      idx = static_cast<uint32_t>(zc_sources_.size());
      zc_sources_.emplace_back();
    }
    zc_sources_[idx] = ZcSource{r, c, 0};
    c->zc_source = static_cast<int32_t>(idx);
    finish_hello(*c);
  }
  registered_.clear();
}

void Server::detach_segment(Client& c) {
  if (c.zc_source < 0) return;
  ZcSource& s = zc_sources_[static_cast<size_t>(c.zc_source)];
  c.zc_source = -1;
  s.owner = nullptr;
  if (s.outstanding > 0) {
    // Parts of its last message are still being read from it: the
    // registration stays until their tickets are back (on_send_done).
    ++counters_.zcb_held_after_exit;
    return;
  }
  zc_idle_ = true;
  release_idle_sources();
}

void Server::release_idle_sources() {
  if (!zc_idle_) return;
  zc_idle_ = false;
  for (size_t i = 0; i < zc_sources_.size(); ++i) {
    ZcSource& s = zc_sources_[i];
    if (!s.region || s.owner || s.outstanding > 0) continue;
    ep_->deregister(s.region);
    s.region = nullptr;
    free_zc_sources_.push_back(static_cast<uint32_t>(i));
  }
}

void Server::finish_zcb(Client& c, uint64_t ticket, ipc::Status s) {
  c.header->zcb_status.value.store(static_cast<uint64_t>(static_cast<int64_t>(s)),
                                   std::memory_order_relaxed);
  c.header->zcb_done.value.store(ticket, std::memory_order_release);
  after_write(c);  // wake it if it sleeps waiting for the ticket
}

Server::Outcome Server::forward_zcb(Client& c, const ipc::RecordHeader& h, const std::byte* body) {
  // One message at a time: the previous one's parts may still be read.
  if (c.zcb.active) return Outcome::Busy;
  ipc::ZcbRecord z;
  if (h.length != sizeof(z)) {
    violation(c, "ZcbMcast record of " + std::to_string(h.length) + " bytes");
    return Outcome::Bad;
  }
  std::memcpy(&z, body, sizeof(z));
  if (z.pool_offset < c.pool_offset || z.bytes > c.pool_bytes ||
      z.pool_offset - c.pool_offset > c.pool_bytes - z.bytes) {
    violation(c, "zero-copy buffer outside the pool");
    return Outcome::Bad;
  }
  if (c.chunk.active) {
    violation(c, "ZcbMcast record inside a chunked message");
    return Outcome::Bad;
  }
  if (!sends(c)) {
    finish_zcb(c, z.ticket, ipc::Status::NotExist);
    return Outcome::Done;
  }
  if (z.bytes > kMaxMessageBytes) {
    finish_zcb(c, z.ticket, ipc::Status::TooBig);
    return Outcome::Done;
  }
  c.zcb = ZcbFlight{};
  c.zcb.active = true;
  c.zcb.ticket = z.ticket;
  c.zcb.offset = z.pool_offset;
  c.zcb.total = z.bytes;
  c.zcb.guarantee = z.guarantee;
  if (stream_zcb(c) == Outcome::Busy && c.zcb.parts == 0) {
    // Not even the first part fits: the application retries, as with
    // Corosync's CS_ERR_TRY_AGAIN when its queue is full.
    c.zcb.active = false;
    ++c.stats.zcb_try_again;
    ++counters_.zcb_try_again;
    finish_zcb(c, z.ticket, ipc::Status::TryAgain);
  }
  // Either way the record is done with; the flight carries the rest.
  return Outcome::Done;
}

Server::Outcome Server::stream_zcb(Client& c) {
  ZcbFlight& f = c.zcb;
  bool parts = f.total > max_fragment_;
  while (f.streaming()) {
    size_t len = static_cast<size_t>(std::min<uint64_t>(max_fragment_, f.total - f.sent));
    bool last = f.sent + len == f.total;
    uint16_t flags = parts ? ordering::kFragment | (f.sent == 0 ? ordering::kFragFirst : 0) |
                                 (last ? ordering::kFragLast : 0)
                           : 0;
    SendResult r = send_zcb_part(c, flags, len);
    if (r == SendResult::TryAgain || r == SendResult::NotReady) return Outcome::Busy;
    if (r != SendResult::Ok) {
      // The record was checked above, so this is a bug; never leave the
      // client waiting for its ticket.
      log("internal: the engine refused part " + std::to_string(f.parts) + " of a " +
          std::to_string(f.total) + "-byte zero-copy message from pid " + std::to_string(c.pid));
      f.failed = true;
      f.all_sent = true;
      break;
    }
    ++f.parts;
    f.sent += len;
    f.all_sent = last;
  }
  if (f.parts_out == 0) complete_zcb(c);
  return Outcome::Done;
}

SendResult Server::send_zcb_part(Client& c, uint16_t flags, size_t len) {
  ZcbFlight& f = c.zcb;
  ordering::Guarantee g = guarantee_of(f.guarantee);
  auto total = static_cast<uint32_t>(f.total);
  if (c.zc_source >= 0) {
    ZcSource& s = zc_sources_[static_cast<size_t>(c.zc_source)];
    uint64_t wire = engine_->counters().zero_copy_sends;
    SendResult r =
        engine_->send_zero_copy(g, c.handle.index, c.handle.pid, flags, total, *s.region,
                                f.offset + f.sent, len, static_cast<uint64_t>(c.zc_source) + 1);
    if (r != SendResult::Ok) return r;
    ++s.outstanding;
    ++f.parts_out;
    // At the sequencer there is no wire and the engine copies.
    if (engine_->counters().zero_copy_sends != wire) {
      ++counters_.zcb_parts_zero_copy;
      counters_.zcb_bytes_not_copied += len;
    } else if (len > 0) {
      ++counters_.zcb_parts_copied;
      counters_.zcb_bytes_copied += len;
    }
    return r;
  }
  std::span<const std::byte> data{c.seg + f.offset + f.sent, len};
  SendResult r =
      flags ? engine_->send_part(g, c.handle.index, c.handle.pid, flags, total, data)
            : engine_->send(ordering::EntryKind::Data, g, c.handle.index, c.handle.pid, data);
  if (r == SendResult::Ok && len > 0) {
    ++counters_.zcb_parts_copied;
    counters_.zcb_bytes_copied += len;
  }
  return r;
}

void Server::on_send_done(uint64_t ticket, bool ok) {
  size_t idx = static_cast<size_t>(ticket - 1);
  if (ticket == 0 || idx >= zc_sources_.size() || zc_sources_[idx].outstanding == 0) {
    log("internal: the engine reported an unknown zero-copy ticket " + std::to_string(ticket));
    return;
  }
  ZcSource& s = zc_sources_[idx];
  --s.outstanding;
  Client* c = s.owner;
  if (!c) {
    // Deregistered from the loop, not from inside the engine's round.
    if (s.outstanding == 0) zc_idle_ = true;
    return;
  }
  ZcbFlight& f = c->zcb;
  if (f.parts_out > 0) --f.parts_out;
  if (!ok) f.failed = true;
  if (f.active && !f.streaming() && f.parts_out == 0) complete_zcb(*c);
}

void Server::complete_zcb(Client& c) {
  ZcbFlight& f = c.zcb;
  f.active = false;
  if (f.failed) {
    ++counters_.zcb_failed;
    return finish_zcb(c, f.ticket, ipc::Status::Library);
  }
  ++counters_.zcb_msgs;
  ++c.stats.zcb_msgs;
  ++c.stats.mcast_msgs;
  c.stats.mcast_bytes += f.total;
  finish_zcb(c, f.ticket, ipc::Status::Ok);
}

}  // namespace rcpg::daemon
