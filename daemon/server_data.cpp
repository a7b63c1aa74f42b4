// The data path: client request rings -> engine, engine deliveries -> client
// event rings. Nothing here allocates, locks or makes a system call per
// message (a Wake packet is sent only to a client that said it sleeps).
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "daemon/server.h"

namespace rcpg::daemon {

using ordering::Delivery;
using ordering::EntryKind;
using ordering::Guarantee;
using ordering::SendResult;

// ---------------------------------------------------------------- requests

bool Server::process_requests(Client& c, size_t budget) {
  if (!c.hello || c.broken) return false;
  bool did = false;
  if (c.zcb.streaming()) {
    // The rest of a zero-copy message whose first part is in the engine
    // goes before anything published after it.
    uint32_t parts = c.zcb.parts;
    Outcome o = stream_zcb(c);
    did = c.zcb.parts != parts;
    if (o == Outcome::Busy) {
      ++c.stats.engine_busy;
      update_flow(c);
      return did;
    }
  }
  for (size_t n = 0; n < budget; ++n) {
    ipc::RecordHeader h;
    const std::byte* body = nullptr;
    const char* why = nullptr;
    auto r = c.requests.peek(h, body, why);
    if (r == RequestRingReader::Result::Empty) break;
    if (r == RequestRingReader::Result::Bad) {
      violation(c, why);
      return true;
    }
    Outcome o;
    switch (h.type) {
      case ipc::RecordType::Mcast:
        o = forward_mcast(c, h, body);
        break;
      case ipc::RecordType::McastChunk:
        o = forward_chunk(c, h, body);
        break;
      case ipc::RecordType::ZcbMcast:
        o = forward_zcb(c, h, body);
        break;
      default:
        violation(c, "record type " + std::to_string(static_cast<uint32_t>(h.type)) +
                         " in the request ring");
        return true;
    }
    if (o == Outcome::Bad) return true;
    if (o == Outcome::Busy) {
      ++c.stats.engine_busy;
      break;
    }
    c.requests.consume();
    did = true;
  }
  update_flow(c);
  return did;
}

Server::Outcome Server::forward_mcast(Client& c, const ipc::RecordHeader& h,
                                      const std::byte* body) {
  ipc::McastRecord m;
  if (h.length < sizeof(m)) {
    violation(c, "Mcast record shorter than its header");
    return Outcome::Bad;
  }
  std::memcpy(&m, body, sizeof(m));
  size_t len = h.length - sizeof(m);
  if (m.flags != 0 || m.total_bytes != len || len > max_fragment_) {
    violation(c, "Mcast record of " + std::to_string(len) + " bytes (total " +
                     std::to_string(m.total_bytes) + ", flags " + std::to_string(m.flags) +
                     ", max_atomic_msg " + std::to_string(max_fragment_) + ")");
    return Outcome::Bad;
  }
  if (c.chunk.active) {
    violation(c, "Mcast record inside a chunked message");
    return Outcome::Bad;
  }
  if (!sends(c)) {
    ++c.stats.dropped_not_joined;
    return Outcome::Done;
  }
  SendResult r = engine_->send(EntryKind::Data, guarantee_of(m.guarantee), c.handle.index,
                               c.handle.pid, {body + sizeof(m), len});
  if (r == SendResult::TryAgain || r == SendResult::NotReady) return Outcome::Busy;
  if (r != SendResult::Ok) {
    violation(c, "the engine refused an Mcast record");
    return Outcome::Bad;
  }
  ++c.stats.mcast_msgs;
  c.stats.mcast_bytes += len;
  return Outcome::Done;
}

Server::Outcome Server::forward_chunk(Client& c, const ipc::RecordHeader& h,
                                      const std::byte* body) {
  ipc::McastRecord m;
  if (h.length < sizeof(m)) {
    violation(c, "McastChunk record shorter than its header");
    return Outcome::Bad;
  }
  std::memcpy(&m, body, sizeof(m));
  size_t len = h.length - sizeof(m);
  bool first = m.flags & ipc::kChunkFirst, last = m.flags & ipc::kChunkLast;
  ChunkStream next = c.chunk;
  const char* bad = nullptr;
  if (m.flags & ~(ipc::kChunkFirst | ipc::kChunkLast | ipc::kChunkMiddle)) {
    bad = "unknown chunk flags";
  } else if (first) {
    if (c.chunk.active) bad = "a new chunked message before the previous one ended";
    if (m.total_bytes > kMaxMessageBytes) bad = "chunked message larger than 1 GiB";
    next = ChunkStream{true, m.total_bytes, 0, m.guarantee};
  } else if (!c.chunk.active) {
    bad = "a chunk without a first chunk";
  } else if (m.total_bytes != c.chunk.total) {
    bad = "chunk total differs from the first chunk's";
  }
  if (!bad && (len > max_fragment_ || next.sent + len > next.total ||
               (last && next.sent + len != next.total) || (!last && len == 0)))
    bad = "chunk length does not add up to the message";
  if (bad) {
    violation(c, std::string("McastChunk: ") + bad);
    return Outcome::Bad;
  }
  if (sends(c)) {
    uint16_t flags =
        ordering::kFragment | (first ? ordering::kFragFirst : 0) | (last ? ordering::kFragLast : 0);
    SendResult r =
        engine_->send_part(guarantee_of(next.guarantee), c.handle.index, c.handle.pid, flags,
                           static_cast<uint32_t>(next.total), {body + sizeof(m), len});
    if (r == SendResult::TryAgain || r == SendResult::NotReady) return Outcome::Busy;
    if (r != SendResult::Ok) {
      violation(c, "the engine refused a chunk");
      return Outcome::Bad;
    }
    c.stats.mcast_bytes += len;
    if (last) ++c.stats.mcast_msgs;
  } else if (last) {
    ++c.stats.dropped_not_joined;
  }
  next.sent += len;
  next.active = !last;
  c.chunk = next;
  return Outcome::Done;
}

void Server::update_flow(Client& c) {
  bool on = engine_->send_backlog() > 0.5 || c.requests.used() > c.requests.size() / 2;
  if (on == c.flow_control) return;
  c.flow_control = on;
  c.header->flow_control.value.store(on ? 1 : 0, std::memory_order_relaxed);
}

// ---------------------------------------------------------------- deliveries

void Server::on_delivery(const Delivery& d) {
  if (d.kind == EntryKind::View && d.fresh && d.position < max_position_)
    ref_floor_ = max_position_;
  max_position_ = std::max(max_position_, d.position);
  switch (d.kind) {
    case EntryKind::Data:
      if (barrier_.learning() || barrier_.holds(d.sender)) {
        ++counters_.data_before_merge;
      } else if (Group* g = groups_.route(d.sender, d.group)) {
        // Only from members: a node that has just come into the view may
        // deliver a message of a process whose sync announcement (or whose
        // NODEUP) it has not applied yet; its clients never saw it join.
        if (g->has(d.sender, d.pid)) {
          deliver_data(d, *g);
        } else {
          ++counters_.data_from_non_members;
        }
      } else {
        ++counters_.unknown_group_entries;
      }
      return;
    case EntryKind::Join:
    case EntryKind::Leave:
      return on_membership(d);
    case EntryKind::View:
      return on_view(d);
    default:
      return;
  }
}

bool Server::make_room(Client& c, size_t body) {
  if (c.events.fits(body)) return true;
  if (!c.events.refresh()) {
    violation(c, "event ring tail moved impossibly");
    return false;
  }
  if (c.events.fits(body)) return true;
  // Delivery pauses long before a ring fills (update_pause); getting here
  // means one engine round delivered more than the reserve.
  ++counters_.ring_overflows;
  violation(c, "event ring overflow (" + std::to_string(c.events.size()) +
                   " bytes; the client does not consume its events)");
  return false;
}

void Server::after_write(Client& c) {
  if (c.dirty) return;
  c.dirty = true;
  dirty_.push_back(&c);
}

void Server::deliver_data(const Delivery& d, Group& g) {
  bool whole = !(d.flags & ordering::kFragment) || (d.flags & ordering::kFragLast);
  if (whole) ++g.delivered_msgs;
  bool by_ref = log_ro_fd_ >= 0 && d.data >= log_base_ && d.data + d.len <= log_base_ + log_size_ &&
                d.release_to > ref_floor_;
  ipc::DeliverRecord r;
  r.nodeid = d.sender;
  r.pid = d.pid;
  r.bytes = d.len;
  if (d.flags & ordering::kFragment) {
    r.flags = ((d.flags & ordering::kFragFirst) ? ipc::kChunkFirst : 0) |
              ((d.flags & ordering::kFragLast) ? ipc::kChunkLast : 0);
    if (r.flags == 0) r.flags = ipc::kChunkMiddle;
    r.total_bytes = d.total;
  } else {
    r.total_bytes = d.len;
  }
  if (by_ref) {
    r.source = ipc::DeliverSource::Log;
    r.log_offset = static_cast<uint64_t>(d.data - log_base_);
    // Not d.position: an early (UNORDERED/FIFO) delivery lies past a SAFE
    // entry not yet delivered, whose space must stay held.
    r.position = d.release_to;
  }
  size_t body = sizeof(r) + (by_ref ? 0 : d.len);
  for (uint32_t slot : g.local) {
    Client& c = *clients_[slot];
    if (c.closing || !make_room(c, body)) continue;
    std::byte* p = c.events.reserve(ipc::RecordType::Deliver, body);
    std::memcpy(p, &r, sizeof(r));
    if (by_ref) {
      c.last_log_position = std::max(c.last_log_position, d.release_to);
      ++c.stats.log_refs;
      ++counters_.deliveries_log;
      counters_.bytes_log += d.len;
    } else {
      if (d.len) std::memcpy(p + sizeof(r), d.data, d.len);
      ++counters_.deliveries_inline;
      counters_.bytes_inline += d.len;
    }
    c.events.commit();
    if (whole) ++c.stats.deliver_msgs;
    c.stats.deliver_bytes += d.len;
    after_write(c);
  }
}

void Server::send_confchg(Client& c, const Confchg& ev) {
  const Group& g = *ev.group;
  size_t n = g.members.size(), nl = ev.left.size(), nj = ev.joined.size();
  size_t body = sizeof(ipc::ConfchgRecord) + (n + nl + nj) * sizeof(ipc::MemberEntry);
  if (c.closing || !make_room(c, body)) return;
  std::byte* p = c.events.reserve(ipc::RecordType::Confchg, body);
  ipc::ConfchgRecord r;
  r.group.length = static_cast<uint32_t>(g.name.size());
  std::memcpy(r.group.value, g.name.data(), g.name.size());
  r.member_count = static_cast<uint32_t>(n);
  r.left_count = static_cast<uint32_t>(nl);
  r.joined_count = static_cast<uint32_t>(nj);
  std::memcpy(p, &r, sizeof(r));
  p += sizeof(r);
  if (n) std::memcpy(p, g.members.data(), n * sizeof(ipc::MemberEntry));
  p += n * sizeof(ipc::MemberEntry);
  if (nl) std::memcpy(p, ev.left.data(), nl * sizeof(ipc::MemberEntry));
  p += nl * sizeof(ipc::MemberEntry);
  if (nj) std::memcpy(p, ev.joined.data(), nj * sizeof(ipc::MemberEntry));
  c.events.commit();
  ++c.stats.confchgs;
  ++counters_.confchgs;
  after_write(c);
}

void Server::send_confchg_to_group(const Confchg& ev) {
  for (uint32_t slot : ev.group->local) send_confchg(*clients_[slot], ev);
}

void Server::send_totem(Client& c) {
  size_t n = view_.size();
  size_t body = sizeof(ipc::TotemRecord) + n * sizeof(uint32_t);
  if (c.closing || !make_room(c, body)) return;
  std::byte* p = c.events.reserve(ipc::RecordType::TotemConfchg, body);
  ipc::TotemRecord r;
  r.ring_seq = view_epoch_;
  r.ring_nodeid = view_sequencer_;
  r.count = static_cast<uint32_t>(n);
  std::memcpy(p, &r, sizeof(r));
  p += sizeof(r);
  for (const ordering::ViewMember& m : view_) {
    std::memcpy(p, &m.id, sizeof(m.id));
    p += sizeof(m.id);
  }
  c.events.commit();
  ++counters_.totem_confchgs;
  after_write(c);
}

Client* Server::match_own(const Delivery& d) {
  // Our own Join/Leave entries come back in the order we submitted them.
  // One that never comes back (lost when this node was cut off and started
  // a new history) is skipped.
  auto it = std::find_if(pending_ops_.begin(), pending_ops_.end(), [&](const PendingOp& op) {
    return op.kind == d.kind && op.pid == d.pid && op.group == d.group;
  });
  if (it == pending_ops_.end()) {
    log("internal: our own membership entry does not match what was submitted");
    return nullptr;
  }
  if (it != pending_ops_.begin())
    log("internal: " + std::to_string(it - pending_ops_.begin()) +
        " of our membership entries were not delivered");
  uint64_t serial = it->serial;
  pending_ops_.erase(pending_ops_.begin(), it + 1);
  for (Client* c : active_)
    if (c->serial == serial) return c;
  return nullptr;
}

void Server::on_membership(const Delivery& d) {
  if (d.kind == EntryKind::Join && d.aux != kJoinRegular) return on_sync(d);
  if (d.sender != cfg_.nodeid && barrier_.holds(d.sender)) return barrier_.hold(d);
  std::string_view name(reinterpret_cast<const char*>(d.data), d.len);
  Client* own = d.sender == cfg_.nodeid ? match_own(d) : nullptr;
  Confchg ev;
  std::string why;
  bool ok = d.kind == EntryKind::Join
                ? groups_.apply_join(d.sender, d.group, d.pid, name, ev, why)
                : groups_.apply_leave(d.sender, d.group, d.pid, d.aux, name, ev, why);
  if (!ok) {
    if (d.kind == EntryKind::Leave && applying_held_) {
      // Left before its node's sync announcement reached us: we never knew it.
      ++counters_.leaves_before_sync;
      return;
    }
    ++counters_.bad_membership_entries;
    log("ignoring a membership entry from node " + std::to_string(d.sender) + ": " + why);
    return;
  }
  Group& g = *ev.group;
  if (own && own->closing) own = nullptr;
  if (d.kind == EntryKind::Join) {
    if (own) {
      g.local.push_back(own->slot);
      if (own->handle.phase == Phase::Joining) own->handle.phase = Phase::Member;
    }
    send_confchg_to_group(ev);
    // CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF: the joiner learns the view.
    if (own && (own->model_flags & ipc::kDeliverInitialTotemConf)) send_totem(*own);
    return;
  }
  if (own) {
    g.local.erase(std::remove(g.local.begin(), g.local.end(), own->slot), g.local.end());
    own->handle.phase = Phase::Done;
  }
  send_confchg_to_group(ev);
  // A voluntary leaver sees its own leave (Corosync does the same).
  if (own && d.aux == kReasonLeave) send_confchg(*own, ev);
}

// ---------------------------------------------------------------- housekeeping

void Server::update_release() {
  uint64_t point = engine_->delivered_position();
  for (Client* c : active_)
    if (c->hello && c->holds_log()) point = std::min(point, c->refresh_released());
  engine_->release(point);
}

void Server::update_pause() {
  // Pause before any ring gets near full, so one engine round (many
  // deliveries) always fits; resume once every client has room again.
  bool short_of_room = false;
  for (Client* c : active_) {
    if (!c->hello || c->closing || c->events.free_bytes() >= pause_reserve_) continue;
    if (!c->events.refresh()) {
      violation(*c, "event ring tail moved impossibly");
      continue;
    }
    if (c->events.free_bytes() < pause_reserve_) short_of_room = true;
  }
  if (short_of_room != engine_->delivery_paused()) {
    if (short_of_room) ++counters_.delivery_pauses;
    engine_->pause_delivery(short_of_room);
  }
}

void Server::wake_dirty() {
  for (Client* c : dirty_) {
    c->dirty = false;
    if (c->fd < 0 || !c->events.take_sleeper()) continue;
    ipc::MsgHeader w{ipc::MsgType::Wake, 0};
    // A full socket buffer already holds a wake-up: nothing is lost.
    if (send(c->fd, &w, sizeof(w), MSG_NOSIGNAL | MSG_DONTWAIT) == sizeof(w)) {
      ++c->stats.wakes;
      ++counters_.wakes;
    }
  }
  dirty_.clear();
}

}  // namespace rcpg::daemon
