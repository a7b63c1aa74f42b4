// cpg_dispatch: reads the event ring and runs the callbacks.
//
// Keeping cpg_fd_get's descriptor honest: it must be readable whenever
// events wait in the ring. The daemon sends a Wake packet when it publishes
// while `event.sleeping` is set (and clears the flag). We drain Wake packets
// only when we found the ring empty, and then set `sleeping` and look again.
// Events found on that second look were published before the daemon could
// see the flag, so no Wake announces them ("raced"): if CS_DISPATCH_ONE
// returns with such events left, it makes the local eventfd readable.
#include <pthread.h>

#include <cstring>

#include "api/libcpg/api_common.h"

namespace ipc = rcpg::ipc;
using namespace rcpg::cpg;

namespace {

static_assert(sizeof(ipc::MemberEntry) == sizeof(cpg_address));
static_assert(sizeof(ipc::GroupName) == sizeof(cpg_name));

enum class Outcome { Handled, Callback, NoMemory, Corrupt };

// Reads and checks a Deliver record: where its payload lies and whether it
// is a whole message (or one part of a streamed one). False = corrupt.
bool parse_deliver(const Connection& c, const RingRecord& r, ipc::DeliverRecord& d,
                   const uint8_t*& data, bool& whole) {
  if (r.length < sizeof(d)) return false;
  std::memcpy(&d, r.body, sizeof(d));
  if (d.source == ipc::DeliverSource::Inline) {
    if (d.bytes > r.length - sizeof(d)) return false;
    data = r.body + sizeof(d);
  } else if (d.source == ipc::DeliverSource::Log) {
    if (c.log == nullptr || d.log_offset > c.log_bytes || d.bytes > c.log_bytes - d.log_offset)
      return false;
    data = c.log + d.log_offset;
  } else {
    return false;
  }
  constexpr uint32_t kFirstLast = ipc::kChunkFirst | ipc::kChunkLast;
  if ((d.flags & ~(kFirstLast | ipc::kChunkMiddle)) != 0) return false;
  // Never allocate what no sender could have sent (a hostile or broken daemon).
  if (d.total_bytes > c.max_msg || d.bytes > d.total_bytes) return false;
  whole = d.flags == 0 || (d.flags == kFirstLast && d.bytes == d.total_bytes);
  return true;
}

struct DispatchState {
  Connection& c;
  cpg_name group{};
  uint64_t group_gen = ~uint64_t{0};
  bool from_ring = true;  // false: handling a stashed event

  void consume() {
    if (from_ring) c.events.consume();
  }

  const cpg_name& current_group() {
    uint64_t g = c.group_gen.load(std::memory_order_acquire);
    if (g != group_gen) {
      std::lock_guard lock(c.group_mu);
      group = c.group;
      group_gen = g;
    }
    return group;
  }

  void release(uint64_t position) {
    if (position != 0) c.hdr->released.value.store(position, std::memory_order_release);
  }

  Outcome deliver(const RingRecord& r) {
    ipc::DeliverRecord d;
    const uint8_t* data;
    bool whole;
    if (!parse_deliver(c, r, d, data, whole)) return Outcome::Corrupt;
    if (d.source == ipc::DeliverSource::Log && c.copy_deliveries) {
      if (c.delivery_copy.size() < d.bytes) c.delivery_copy.resize(d.bytes);
      if (d.bytes != 0) std::memcpy(c.delivery_copy.data(), data, d.bytes);
      data = c.delivery_copy.data();
    }
    if (whole) {
      if (c.cb.deliver != nullptr)
        // The deliver callback's msg is not const (Corosync lets receivers
        // convert in place); Log data is read-only memory, documented in cpg.h.
        c.cb.deliver(c.handle, &current_group(), d.nodeid, d.pid, const_cast<uint8_t*>(data),
                     d.bytes);
      consume();
      release(d.position);
      return Outcome::Callback;
    }
    switch (c.reassembly.add(d.nodeid, d.pid, d.flags, d.total_bytes, data, d.bytes)) {
      case PartResult::NoMemory:
        return Outcome::NoMemory;
      case PartResult::Malformed:
        return Outcome::Corrupt;
      case PartResult::Pending:
        consume();
        release(d.position);
        return Outcome::Handled;
      case PartResult::Complete:
        break;
    }
    consume();
    release(d.position);
    if (c.cb.deliver != nullptr)
      c.cb.deliver(c.handle, &current_group(), d.nodeid, d.pid, c.reassembly.message(),
                   c.reassembly.message_bytes());
    c.reassembly.release_complete();
    return Outcome::Callback;
  }

  Outcome confchg(const RingRecord& r) {
    ipc::ConfchgRecord h;
    if (r.length < sizeof(h)) return Outcome::Corrupt;
    std::memcpy(&h, r.body, sizeof(h));
    uint64_t n = uint64_t{h.member_count} + h.left_count + h.joined_count;
    if (h.group.length > CPG_MAX_NAME_LENGTH || n > (r.length - sizeof(h)) / sizeof(cpg_address))
      return Outcome::Corrupt;
    cpg_name g;
    std::memcpy(&g, &h.group, sizeof(g));
    // Records are 8-byte aligned and ConfchgRecord is a multiple of 4 bytes,
    // so the entries are suitably aligned for cpg_address.
    const auto* members = reinterpret_cast<const cpg_address*>(r.body + sizeof(h));
    for (uint32_t i = 0; i < h.left_count; ++i)
      c.reassembly.forget(members[h.member_count + i].nodeid, members[h.member_count + i].pid);
    if (c.cb.confchg != nullptr)
      c.cb.confchg(c.handle, &g, members, h.member_count, members + h.member_count, h.left_count,
                   members + h.member_count + h.left_count, h.joined_count);
    consume();
    return Outcome::Callback;
  }

  Outcome totem(const RingRecord& r) {
    ipc::TotemRecord t;
    if (r.length < sizeof(t)) return Outcome::Corrupt;
    std::memcpy(&t, r.body, sizeof(t));
    if (t.count > (r.length - sizeof(t)) / sizeof(uint32_t)) return Outcome::Corrupt;
    const auto* nodes = reinterpret_cast<const uint32_t*>(r.body + sizeof(t));
    // Senders on nodes outside the new view never finish their messages.
    // (Their NODEDOWN confchgs came first and normally did this already.) A
    // stashed record was applied when absorb_events took it off the ring.
    if (from_ring) c.reassembly.forget_nodes_except(nodes, t.count);
    if (c.cb.totem != nullptr) {
      cpg_ring_id id{};
      id.nodeid = t.ring_nodeid;
      id.seq = t.ring_seq;
      c.cb.totem(c.handle, id, t.count, nodes);
    }
    consume();
    return Outcome::Callback;
  }

  Outcome handle(const RingRecord& r) {
    switch (r.type) {
      case ipc::RecordType::Deliver:
        return deliver(r);
      case ipc::RecordType::Confchg:
        return confchg(r);
      case ipc::RecordType::TotemConfchg:
        return totem(r);
      default:
        return Outcome::Corrupt;
    }
  }
};

// The thread inside cpg_dispatch for each connection, to refuse recursion
// from a callback (it would re-read the record being handled).
thread_local const Connection* tl_dispatching = nullptr;

struct DispatchScope {
  const Connection* prev;
  explicit DispatchScope(const Connection* c) : prev(tl_dispatching) { tl_dispatching = c; }
  ~DispatchScope() { tl_dispatching = prev; }
};

// Runs the callback of one stashed event.
Outcome dispatch_stashed(DispatchState& s, Connection::Stashed& e) {
  if (e.message != nullptr) {
    if (s.c.cb.deliver != nullptr)
      s.c.cb.deliver(s.c.handle, &s.current_group(), e.nodeid, e.pid, e.message, e.message_bytes);
    return Outcome::Callback;
  }
  RingRecord r{e.type, e.record.data(), static_cast<uint32_t>(e.record.size())};
  s.from_ring = false;
  Outcome o = s.handle(r);
  s.from_ring = true;
  return o;
}

}  // namespace

namespace rcpg::cpg {

// Takes events off the ring into the stash so that a blocked send can
// progress: parts of streamed messages go into reassembly, whole events are
// copied out of the log (releasing it). Only when no thread is dispatching.
bool absorb_events(Connection& c) {
  std::unique_lock lock(c.dispatch_mu, std::try_to_lock);
  if (!lock.owns_lock()) return true;
  bool took = false;
  for (int n = 0; n < 256; ++n) {
    RingRecord r;
    ReadResult res = c.events.peek(r);
    if (res == ReadResult::Empty) break;
    if (res == ReadResult::Corrupt) {
      c.mark_dead();
      return false;
    }
    Connection::Stashed e;
    e.type = r.type;
    uint64_t release = 0;
    if (r.type == ipc::RecordType::Deliver) {
      ipc::DeliverRecord d;
      const uint8_t* data;
      bool whole;
      if (!parse_deliver(c, r, d, data, whole)) return c.mark_dead(), false;
      release = d.position;
      if (!whole) {
        PartResult pr = c.reassembly.add(d.nodeid, d.pid, d.flags, d.total_bytes, data, d.bytes);
        if (pr == PartResult::Malformed) return c.mark_dead(), false;
        if (pr == PartResult::NoMemory) break;  // leave it for cpg_dispatch to report
        if (pr == PartResult::Complete) {
          e.message_bytes = c.reassembly.message_bytes();
          e.message = c.reassembly.take_complete();
          e.nodeid = d.nodeid;
          e.pid = d.pid;
          c.stashed.push_back(std::move(e));
        }
      } else {
        d.source = ipc::DeliverSource::Inline;
        d.flags = 0;
        d.position = 0;
        e.record.resize(sizeof(d) + d.bytes);
        std::memcpy(e.record.data(), &d, sizeof(d));
        if (d.bytes != 0) std::memcpy(e.record.data() + sizeof(d), data, d.bytes);
        c.stashed.push_back(std::move(e));
      }
    } else {
      if (r.type == ipc::RecordType::Confchg) {
        ipc::ConfchgRecord h;
        if (r.length < sizeof(h)) return c.mark_dead(), false;
        std::memcpy(&h, r.body, sizeof(h));
        uint64_t all = uint64_t{h.member_count} + h.left_count + h.joined_count;
        if (all > (r.length - sizeof(h)) / sizeof(cpg_address)) return c.mark_dead(), false;
        for (uint32_t i = 0; i < h.left_count; ++i) {
          ipc::MemberEntry m;
          std::memcpy(&m, r.body + sizeof(h) + (h.member_count + i) * sizeof(m), sizeof(m));
          c.reassembly.forget(m.nodeid, m.pid);
        }
      } else if (r.type == ipc::RecordType::TotemConfchg) {
        ipc::TotemRecord t;
        if (r.length < sizeof(t)) return c.mark_dead(), false;
        std::memcpy(&t, r.body, sizeof(t));
        if (t.count > (r.length - sizeof(t)) / sizeof(uint32_t)) return c.mark_dead(), false;
        std::vector<uint32_t> nodes(t.count);
        if (t.count != 0) std::memcpy(nodes.data(), r.body + sizeof(t), t.count * sizeof(uint32_t));
        c.reassembly.forget_nodes_except(nodes.data(), nodes.size());
      }
      e.record.assign(r.body, r.body + r.length);
      c.stashed.push_back(std::move(e));
    }
    c.events.consume();
    if (release != 0) c.hdr->released.value.store(release, std::memory_order_release);
    took = true;
  }
  if (took && !c.stashed.empty()) c.kick_local();  // cpg_fd_get's fd must show them
  return !c.dead();
}

}  // namespace rcpg::cpg

RCPG_EXPORT cs_error_t cpg_dispatch(cpg_handle_t handle, cs_dispatch_flags_t dispatch_types) {
  auto c = connections().acquire(handle);
  if (!c) return CS_ERR_BAD_HANDLE;
  if (dispatch_types < CS_DISPATCH_ONE || dispatch_types > CS_DISPATCH_ONE_NONBLOCKING)
    return CS_ERR_INVALID_PARAM;
  if (tl_dispatching == &*c) return CS_ERR_BUSY;
  std::lock_guard lock(c->dispatch_mu);
  DispatchScope scope(&*c);
  const bool one =
      dispatch_types == CS_DISPATCH_ONE || dispatch_types == CS_DISPATCH_ONE_NONBLOCKING;
  DispatchState s{*c};
  while (!c->stashed.empty()) {
    if (c->finalized.load(std::memory_order_acquire)) return CS_OK;
    Connection::Stashed e = std::move(c->stashed.front());
    c->stashed.pop_front();
    Outcome o = dispatch_stashed(s, e);
    std::free(e.message);
    if (o == Outcome::Corrupt) {
      c->mark_dead();
      return CS_ERR_LIBRARY;
    }
    if (o == Outcome::Callback && one) {
      if (!c->stashed.empty() || !c->events.empty()) c->kick_local();
      return CS_OK;
    }
  }
  for (;;) {
    if (c->finalized.load(std::memory_order_acquire)) return CS_OK;
    RingRecord r;
    ReadResult res = c->events.peek(r);
    if (res == ReadResult::Corrupt) {
      c->mark_dead();
      return CS_ERR_LIBRARY;
    }
    if (res == ReadResult::Record) {
      switch (s.handle(r)) {
        case Outcome::Corrupt:
          c->mark_dead();
          return CS_ERR_LIBRARY;
        case Outcome::NoMemory:
          return CS_ERR_NO_MEMORY;
        case Outcome::Handled:
          continue;
        case Outcome::Callback:
          if (!one) continue;
          if (c->raced && !c->events.empty()) c->kick_local();
          return CS_OK;
      }
    }
    // The ring is empty.
    c->drain_wakes();
    c->drain_local();
    if (c->dead()) return CS_ERR_LIBRARY;
    c->raced = !c->events.sleep_and_recheck();
    if (c->raced) continue;
    switch (dispatch_types) {
      case CS_DISPATCH_ALL:
        return CS_OK;
      case CS_DISPATCH_ONE_NONBLOCKING:
        return CS_ERR_TRY_AGAIN;
      default:
        c->wait_readable();
    }
  }
}
