// One CPG handle: the daemon connection, the mapped segment and log, and the
// per-handle state of sending and dispatching.
//
// Locks (each per handle, never nested in another order than listed):
//   dispatch_mu  consumer side of the event ring, reassembly
//   zcb_mu       one zero-copy send in flight (its status word is shared)
//   send_mu      producer side of the request ring (uncontended: one atomic,
//                no syscall, so the mcast path makes no syscall per message)
//   control_mu   the socket: one request/reply at a time, Wake draining
#pragma once

#include <sched.h>
#include <time.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <span>
#include <vector>

#include <corosync/cpg.h>

#include "api/ipc/protocol.h"
#include "api/libcpg/reassembly.h"
#include "api/libcpg/spsc_ring.h"
#include "api/libcpg/zcb_pool.h"

namespace rcpg::cpg {

struct Callbacks {
  cpg_deliver_fn_t deliver = nullptr;
  cpg_confchg_fn_t confchg = nullptr;
  cpg_totem_confchg_fn_t totem = nullptr;
  uint32_t model_flags = 0;
};

class Connection {
 public:
  Connection() = default;
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Connects to the daemon, says Hello, maps what it sends. CS_ERR_LIBRARY
  // when there is no daemon or it answers something impossible.
  cs_error_t open(const Callbacks& cb, void* context);

  // One control request; the reply body lands in `reply` (checked to be at
  // least `min_reply` bytes). Any failure of the socket marks the
  // connection dead and returns CS_ERR_LIBRARY.
  cs_error_t request(ipc::MsgType type, const void* body, size_t len, std::vector<uint8_t>& reply,
                     size_t min_reply);

  bool dead() const { return dead_.load(std::memory_order_acquire); }
  void mark_dead() { dead_.store(true, std::memory_order_release); }
  // Polls the socket without blocking: false (and dead) once the daemon is gone.
  bool check_alive();

  // Makes cpg_fd_get's descriptor readable (see protocol.h) / clears that.
  void kick_local();
  void drain_local();
  // Reads queued Wake packets without blocking (takes control_mu).
  void drain_wakes();
  // Blocks until the socket or the local eventfd is readable.
  void wait_readable();
  // Wakes the daemon after publishing into a ring it sleeps on.
  void ring_doorbell();
  // The node has no quorum or its view is changing: sends get TRY_AGAIN
  // (SegmentHeader::membership; one load of a line the daemon rarely writes).
  bool membership_blocked() const {
    return hdr->membership.value.load(std::memory_order_acquire) !=
           static_cast<uint64_t>(ipc::MembershipBlock::Open);
  }

  cpg_handle_t handle = 0;
  Callbacks cb;
  std::atomic<void*> context{nullptr};
  std::atomic<bool> joined{false};
  std::atomic<bool> finalized{false};

  int sock = -1;
  int epfd = -1;
  int localfd = -1;
  int doorbell = -1;
  uint32_t nodeid = 0;
  uint32_t max_atomic = 0;
  uint64_t max_msg = 0;
  uint64_t ring_seq = 0;
  uint32_t ring_nodeid = 0;

  uint8_t* seg = nullptr;
  uint64_t seg_bytes = 0;
  const uint8_t* log = nullptr;
  uint64_t log_bytes = 0;
  // RCPG_WRITABLE_DELIVERY=1: hand the deliver callback a private copy
  // instead of the read-only log, for programs that convert messages in
  // place (zero-copy receive is given up; the buffer only grows).
  bool copy_deliveries = false;
  std::vector<uint8_t> delivery_copy;
  ipc::SegmentHeader* hdr = nullptr;
  uint64_t pool_offset = 0;
  uint64_t pool_bytes = 0;

  std::mutex dispatch_mu, zcb_mu, send_mu, control_mu;

  // under send_mu
  RingProducer requests;
  uint64_t last_alive_check_ns = 0;  // CLOCK_MONOTONIC_COARSE of the last socket poll
  // under zcb_mu
  uint64_t zcb_ticket = 0;
  ZcbPool pool;
  // under dispatch_mu
  RingConsumer events;
  Reassembly reassembly;
  // Events taken off the ring while a send of this handle was blocked (its
  // own streamed message could not otherwise make progress when the
  // application dispatches from the same thread): delivered by the next
  // cpg_dispatch before anything still in the ring. `record` is a whole
  // event in ring form with any payload inline; `message` (malloc'd) is a
  // reassembled message instead.
  struct Stashed {
    std::vector<uint8_t> record;
    ipc::RecordType type = ipc::RecordType::Pad;
    void* message = nullptr;
    uint64_t message_bytes = 0;
    uint32_t nodeid = 0, pid = 0;
  };
  std::deque<Stashed> stashed;
  bool raced = false;  // events appeared while arming `sleeping` (see dispatch)

  // The group joined last: Deliver records do not repeat it. Written under
  // control_mu by join; dispatch copies it when group_gen moves.
  std::mutex group_mu;
  cpg_name group{};
  std::atomic<uint64_t> group_gen{0};

 private:
  cs_error_t hello();
  cs_error_t map_segment(int segfd, int logfd, const ipc::HelloReply& rep);
  cs_error_t read_reply(ipc::MsgType type, std::vector<uint8_t>& reply);
  std::atomic<bool> dead_{false};
};

// Waiting on the daemon through shared memory (ring space, zcb completion):
// spin briefly, then yield, then sleep in short steps, checking now and then
// that the daemon is still there so that its death ends the wait.
// Moves pending events into Connection::stashed (see there); false when the
// connection turned out dead. Defined in cpg_dispatch.cpp.
bool absorb_events(Connection& c);

template <class Pred>
bool wait_while_alive(Connection& c, Pred done) {
  for (uint64_t i = 0;; ++i) {
    if (done()) return true;
    if (i < 2000) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
      continue;
    }
    if ((i & 63) == 0 && !c.check_alive()) return false;
    if (i < 20000) {
      sched_yield();
    } else {
      timespec ts{0, 50'000};
      nanosleep(&ts, nullptr);
    }
  }
}

}  // namespace rcpg::cpg
