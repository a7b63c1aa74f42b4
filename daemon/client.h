// One local CPG handle as the daemon sees it: its control socket, its shared
// segment (request ring, event ring, zero-copy pool), its group membership
// and its statistics.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "api/ipc/protocol.h"
#include "daemon/groups.h"
#include "daemon/ipc_ring.h"

namespace rcpg::daemon {

struct SegmentGeometry {
  size_t request_bytes = 0, event_bytes = 0, pool_bytes = 0;
};

struct ClientStats {
  uint64_t mcast_msgs = 0, mcast_bytes = 0;  // accepted into the engine
  uint64_t zcb_msgs = 0;
  uint64_t dropped_not_joined = 0;  // Corosync accepts and drops these too
  uint64_t engine_busy = 0;         // rounds a record waited for engine credit
  uint64_t deliver_msgs = 0, deliver_bytes = 0;
  uint64_t log_refs = 0;  // deliveries handed as log references
  uint64_t confchgs = 0;
  uint64_t wakes = 0;  // Wake packets sent
};

// A large message arriving in McastChunk records (or a big zero-copy buffer)
// is forwarded one engine fragment at a time.
struct ChunkStream {
  bool active = false;
  uint64_t total = 0, sent = 0;
  uint32_t guarantee = 0;
};

struct Client {
  uint32_t slot = 0;
  uint64_t serial = 0;  // unique for the daemon's life (slots are reused)
  int fd = -1;
  pid_t pid = 0;  // from SO_PEERCRED
  uid_t uid = 0;
  bool hello = false;    // segment set up
  bool closing = false;  // socket gone: draining its ring, then PROCDOWN
  bool broken = false;   // violated the protocol: its ring is not read again
  bool dirty = false;    // event ring written this round (maybe wake it)

  // Segment (owned): mapping and memfd.
  int seg_fd = -1;
  std::byte* seg = nullptr;
  size_t seg_bytes = 0;
  ipc::SegmentHeader* header = nullptr;
  uint64_t pool_offset = 0, pool_bytes = 0;  // private copies of the geometry
  RequestRingReader requests;
  EventRingWriter events;

  Handle handle;
  ChunkStream chunk;
  ChunkStream zcb;  // a zero-copy buffer larger than one fragment, in progress

  // Log references handed out and released (hold_deliveries mode).
  uint64_t last_log_position = 0;
  uint64_t released = 0;
  bool flow_control = false;

  // A control request that must wait until the request ring is drained
  // (Leave/Finalize: messages sent before them are delivered before).
  ipc::MsgType deferred = ipc::MsgType::Wake;  // Wake = none
  ipc::GroupName deferred_group;

  ClientStats stats;

  // Creates and maps the segment (sealed memfd) and initialises its header
  // and rings. False + why on failure.
  bool create_segment(const SegmentGeometry& geo, std::string& why);
  void release_segment();
  // Log position up to which this client holds no reference (clamped to what
  // it was handed; a client cannot release what it never got).
  uint64_t refresh_released();
  bool holds_log() const { return released < last_log_position; }
};

}  // namespace rcpg::daemon
