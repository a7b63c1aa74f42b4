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
  uint64_t zcb_try_again = 0;       // ZcbRecords refused for lack of engine credit
  uint64_t dropped_not_joined = 0;  // Corosync accepts and drops these too
  uint64_t engine_busy = 0;         // rounds a record waited for engine credit
  uint64_t deliver_msgs = 0, deliver_bytes = 0;
  uint64_t log_refs = 0;  // deliveries handed as log references
  uint64_t confchgs = 0;
  uint64_t wakes = 0;  // Wake packets sent
};

// A large message arriving in McastChunk records is forwarded one engine
// fragment at a time.
struct ChunkStream {
  bool active = false;
  uint64_t total = 0, sent = 0;
  uint32_t guarantee = 0;
};

// The ZcbRecord being sent, copied out of the ring once its first part was
// accepted (the client cannot change it afterwards). Its outcome is reported
// only when every part is in the engine and every engine ticket of it came
// back: until then the NIC may still read the pool bytes.
struct ZcbFlight {
  bool active = false;
  uint64_t ticket = 0;  // the client's
  uint64_t offset = 0;  // payload, from the segment start
  uint64_t total = 0, sent = 0;
  uint32_t guarantee = 0;
  uint32_t parts = 0;      // accepted by the engine
  uint32_t parts_out = 0;  // engine tickets not yet reported
  bool all_sent = false;   // the last part is in the engine
  bool failed = false;
  bool streaming() const { return active && !all_sent; }
};

struct Client {
  uint32_t slot = 0;
  uint64_t serial = 0;  // unique for the daemon's life (slots are reused)
  int fd = -1;
  pid_t pid = 0;  // from SO_PEERCRED
  uid_t uid = 0;
  bool hello = false;          // segment set up
  bool hello_pending = false;  // segment created, its registration under way (no reply yet)
  uint32_t model_flags = 0;    // HelloRequest::model_flags
  bool closing = false;        // socket gone: draining its ring, then PROCDOWN
  bool broken = false;         // violated the protocol: its ring is not read again
  bool dirty = false;          // event ring written this round (maybe wake it)

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
  ZcbFlight zcb;
  // The segment's registration for zero-copy sends (Server::zc_sources_),
  // -1 when zcb payloads are copied into the engine.
  int32_t zc_source = -1;

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
