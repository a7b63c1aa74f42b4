// Sending: cpg_mcast_joined (copy into the request ring, streamed in parts
// when larger than one record) and the zero-copy buffer calls.
#include <sys/uio.h>
#include <time.h>

#include <cstring>

#include "api/libcpg/api_common.h"

namespace ipc = rcpg::ipc;
using namespace rcpg::cpg;

namespace {

// Largest payload of one Mcast/McastChunk record: what the daemon sends
// without fragmenting (max_atomic_msg), and at most a quarter of the request
// ring so that the daemon drains one part while the next is copied.
uint64_t max_record_payload(const Connection& c) {
  uint64_t ring = c.requests.size() / 4 - sizeof(ipc::RecordHeader) - sizeof(ipc::McastRecord);
  return c.max_atomic != 0 && c.max_atomic < ring ? c.max_atomic : ring;
}

// Copies the next `n` bytes of an iovec list, advancing the cursor.
struct IovCursor {
  const iovec* iov;
  unsigned count;
  unsigned i = 0;
  size_t off = 0;
  void copy(uint8_t* dst, uint64_t n) {
    while (n != 0) {
      size_t avail = iov[i].iov_len - off;
      if (avail == 0) {
        ++i;
        off = 0;
        continue;
      }
      size_t take = avail < n ? avail : n;
      std::memcpy(dst, static_cast<const uint8_t*>(iov[i].iov_base) + off, take);
      dst += take;
      off += take;
      n -= take;
    }
  }
};

void publish(Connection& c) {
  if (c.requests.publish()) c.ring_doorbell();
}

// Amortised liveness check: the send path must not make a syscall per
// message, yet a dead daemon must be noticed quickly (Corosync answers
// CS_ERR_LIBRARY to the first send after its daemon died). The socket is
// polled at most once per tick of the coarse clock (a vDSO read, no
// syscall), so a sender learns of its daemon's death within milliseconds.
bool alive_recently(Connection& c) {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  uint64_t now = static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
  if (now == c.last_alive_check_ns) return !c.dead();
  c.last_alive_check_ns = now;
  return c.check_alive();
}

cs_error_t send_parts(Connection& c, cpg_guarantee_t guarantee, IovCursor& cur, uint64_t total) {
  const uint64_t part = max_record_payload(c);
  uint64_t sent = 0;
  while (sent < total) {
    uint64_t n = total - sent < part ? total - sent : part;
    uint32_t flags = (sent == 0 ? ipc::kChunkFirst : 0) | (sent + n == total ? ipc::kChunkLast : 0);
    uint64_t body = sizeof(ipc::McastRecord) + n;
    uint8_t* p = c.requests.reserve(ipc::RecordType::McastChunk, body);
    if (p == nullptr) {
      // Nothing queued yet: back-pressure is the caller's to handle.
      if (sent == 0) return alive_recently(c) ? CS_ERR_TRY_AGAIN : CS_ERR_LIBRARY;
      // Our own parts (and everything else) keep arriving while we stream:
      // take them off the event ring, or a single-threaded program that
      // sends a message larger than the rings would wait for itself.
      bool ok = wait_while_alive(c, [&] {
        if (!absorb_events(c)) return false;
        p = c.requests.reserve(ipc::RecordType::McastChunk, body);
        return p != nullptr;
      });
      if (!ok) return CS_ERR_LIBRARY;
    }
    ipc::McastRecord rec{static_cast<uint32_t>(guarantee), flags, total};
    std::memcpy(p, &rec, sizeof(rec));
    cur.copy(p + sizeof(rec), n);
    publish(c);
    sent += n;
  }
  return CS_OK;
}

// Copies the message into the request ring (one record, or parts).
cs_error_t send_copied(Connection& c, cpg_guarantee_t guarantee, IovCursor cur, uint64_t total) {
  std::lock_guard lock(c.send_mu);
  if (total > max_record_payload(c)) return send_parts(c, guarantee, cur, total);
  uint8_t* p = c.requests.reserve(ipc::RecordType::Mcast, sizeof(ipc::McastRecord) + total);
  if (p == nullptr) return alive_recently(c) ? CS_ERR_TRY_AGAIN : CS_ERR_LIBRARY;
  if (!alive_recently(c)) {
    c.requests.abandon();
    return CS_ERR_LIBRARY;
  }
  ipc::McastRecord rec{static_cast<uint32_t>(guarantee), 0, total};
  std::memcpy(p, &rec, sizeof(rec));
  cur.copy(p + sizeof(rec), total);
  publish(c);
  return CS_OK;
}

bool pool_offset_of(const Connection& c, const void* p, uint64_t& off) {
  auto a = reinterpret_cast<uintptr_t>(p);
  auto lo = reinterpret_cast<uintptr_t>(c.seg) + c.pool_offset;
  if (a < lo || a - lo >= c.pool_bytes) return false;
  off = c.pool_offset + (a - lo);
  return true;
}

}  // namespace

RCPG_EXPORT cs_error_t cpg_mcast_joined(cpg_handle_t handle, cpg_guarantee_t guarantee,
                                        const struct iovec* iovec, unsigned int iov_len) {
  auto c = connections().acquire(handle);
  if (!c) return CS_ERR_BAD_HANDLE;
  if (!valid_guarantee(guarantee) || (iovec == nullptr && iov_len != 0))
    return CS_ERR_INVALID_PARAM;
  uint64_t total = 0;
  for (unsigned i = 0; i < iov_len; ++i) {
    if (iovec[i].iov_base == nullptr && iovec[i].iov_len != 0) return CS_ERR_INVALID_PARAM;
    if (iovec[i].iov_len > c->max_msg - total) return CS_ERR_TOO_BIG;
    total += iovec[i].iov_len;
  }
  if (c->dead()) return CS_ERR_LIBRARY;
  if (!c->joined.load(std::memory_order_acquire)) return CS_ERR_NOT_EXIST;
  // No quorum: the caller retries in a loop, which must end with
  // CS_ERR_LIBRARY if the daemon dies meanwhile (a poll per call is cheap
  // next to waiting for a quorum).
  if (c->membership_blocked()) return c->check_alive() ? CS_ERR_TRY_AGAIN : CS_ERR_LIBRARY;
  return send_copied(*c, guarantee, IovCursor{iovec, iov_len}, total);
}

RCPG_EXPORT cs_error_t cpg_zcb_alloc(cpg_handle_t handle, size_t size, void** buffer) {
  auto c = connections().acquire(handle);
  if (!c) return CS_ERR_BAD_HANDLE;
  if (buffer == nullptr) return CS_ERR_INVALID_PARAM;
  if (c->dead()) return CS_ERR_LIBRARY;
  auto off = c->pool.alloc(size, ipc::kZcbHeadroom);
  if (!off) return CS_ERR_NO_MEMORY;
  *buffer = c->seg + *off;
  return CS_OK;
}

RCPG_EXPORT cs_error_t cpg_zcb_free(cpg_handle_t handle, void* buffer) {
  auto c = connections().acquire(handle);
  if (!c) return CS_ERR_BAD_HANDLE;
  uint64_t off;
  if (buffer == nullptr || !pool_offset_of(*c, buffer, off) || !c->pool.free(off))
    return CS_ERR_INVALID_PARAM;
  return CS_OK;
}

RCPG_EXPORT cs_error_t cpg_zcb_mcast_joined(cpg_handle_t handle, cpg_guarantee_t guarantee,
                                            void* msg, size_t msg_len) {
  auto c = connections().acquire(handle);
  if (!c) return CS_ERR_BAD_HANDLE;
  uint64_t off;
  if (!valid_guarantee(guarantee) || msg == nullptr || !pool_offset_of(*c, msg, off))
    return CS_ERR_INVALID_PARAM;
  auto size = c->pool.size_of(off);
  if (!size || msg_len > *size) return CS_ERR_INVALID_PARAM;
  if (msg_len > c->max_msg) return CS_ERR_TOO_BIG;
  if (c->dead()) return CS_ERR_LIBRARY;
  if (!c->joined.load(std::memory_order_acquire)) return CS_ERR_NOT_EXIST;
  if (c->membership_blocked()) return c->check_alive() ? CS_ERR_TRY_AGAIN : CS_ERR_LIBRARY;
  // Copying a small message into the request ring costs less than waiting
  // for the daemon (and the NIC) to finish with the buffer, and returns at
  // once; larger ones leave from the pool without a CPU copy.
  if (msg_len <= ipc::kZcbCopyBelow) {
    iovec iov{msg, msg_len};
    return send_copied(*c, guarantee, IovCursor{&iov, 1}, msg_len);
  }

  std::lock_guard zlock(c->zcb_mu);
  uint64_t ticket;
  {
    std::lock_guard lock(c->send_mu);
    uint8_t* p = c->requests.reserve(ipc::RecordType::ZcbMcast, sizeof(ipc::ZcbRecord));
    if (p == nullptr) return alive_recently(*c) ? CS_ERR_TRY_AGAIN : CS_ERR_LIBRARY;
    ticket = ++c->zcb_ticket;
    ipc::ZcbRecord rec{static_cast<uint32_t>(guarantee), 0, off, msg_len, ticket};
    std::memcpy(p, &rec, sizeof(rec));
    publish(*c);
  }
  auto& done = c->hdr->zcb_done.value;
  if (!wait_while_alive(*c, [&] { return done.load(std::memory_order_acquire) >= ticket; }))
    return CS_ERR_LIBRARY;
  return static_cast<cs_error_t>(c->hdr->zcb_status.value.load(std::memory_order_acquire));
}
