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

struct DispatchState {
  Connection& c;
  cpg_name group{};
  uint64_t group_gen = ~uint64_t{0};

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
    if (r.length < sizeof(d)) return Outcome::Corrupt;
    std::memcpy(&d, r.body, sizeof(d));
    const uint8_t* data;
    if (d.source == ipc::DeliverSource::Inline) {
      if (d.bytes > r.length - sizeof(d)) return Outcome::Corrupt;
      data = r.body + sizeof(d);
    } else if (d.source == ipc::DeliverSource::Log) {
      if (c.log == nullptr || d.log_offset > c.log_bytes || d.bytes > c.log_bytes - d.log_offset)
        return Outcome::Corrupt;
      data = c.log + d.log_offset;
      if (c.copy_deliveries) {
        if (c.delivery_copy.size() < d.bytes) c.delivery_copy.resize(d.bytes);
        if (d.bytes != 0) std::memcpy(c.delivery_copy.data(), data, d.bytes);
        data = c.delivery_copy.data();
      }
    } else {
      return Outcome::Corrupt;
    }
    constexpr uint32_t kFirstLast = ipc::kChunkFirst | ipc::kChunkLast;
    if ((d.flags & ~(kFirstLast | ipc::kChunkMiddle)) != 0) return Outcome::Corrupt;
    // Never allocate what no sender could have sent (a hostile or broken daemon).
    if (d.total_bytes > c.max_msg || d.bytes > d.total_bytes) return Outcome::Corrupt;
    const bool whole = d.flags == 0 || (d.flags == kFirstLast && d.bytes == d.total_bytes);
    if (whole) {
      if (c.cb.deliver != nullptr)
        // The deliver callback's msg is not const (Corosync lets receivers
        // convert in place); Log data is read-only memory, documented in cpg.h.
        c.cb.deliver(c.handle, &current_group(), d.nodeid, d.pid, const_cast<uint8_t*>(data),
                     d.bytes);
      c.events.consume();
      release(d.position);
      return Outcome::Callback;
    }
    switch (c.reassembly.add(d.nodeid, d.pid, d.flags, d.total_bytes, data, d.bytes)) {
      case PartResult::NoMemory:
        return Outcome::NoMemory;
      case PartResult::Malformed:
        return Outcome::Corrupt;
      case PartResult::Pending:
        c.events.consume();
        release(d.position);
        return Outcome::Handled;
      case PartResult::Complete:
        break;
    }
    c.events.consume();
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
    c.events.consume();
    return Outcome::Callback;
  }

  Outcome totem(const RingRecord& r) {
    ipc::TotemRecord t;
    if (r.length < sizeof(t)) return Outcome::Corrupt;
    std::memcpy(&t, r.body, sizeof(t));
    if (t.count > (r.length - sizeof(t)) / sizeof(uint32_t)) return Outcome::Corrupt;
    if (c.cb.totem != nullptr) {
      cpg_ring_id id{};
      id.nodeid = t.ring_nodeid;
      id.seq = t.ring_seq;
      c.cb.totem(c.handle, id, t.count, reinterpret_cast<const uint32_t*>(r.body + sizeof(t)));
    }
    c.events.consume();
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

}  // namespace

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
