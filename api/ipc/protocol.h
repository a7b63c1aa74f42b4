// The contract between libcpg.so.4 (client side) and rcpgd (daemon side).
//
// One CPG handle = one connection = one shared segment:
//  * Control: a Unix SOCK_SEQPACKET socket. The client sends one request and
//    waits for its reply (requests on a connection are strictly sequential).
//    The daemon may also send unsolicited one-byte-header `Wake` packets;
//    the client skips them while waiting for a reply and drains them in
//    cpg_dispatch. The socket is readable when events are pending (a Wake
//    packet is queued) or the daemon is gone (POLLHUP). cpg_fd_get returns an
//    epoll fd of the client's that watches this socket plus a client-local
//    eventfd, so the client can keep the fd readable while events it has
//    not dispatched yet remain in the ring (CS_DISPATCH_ONE).
//  * Data: a memfd segment created by the daemon and passed with the Hello
//    reply (SCM_RIGHTS), holding a request ring (client -> daemon: mcasts),
//    an event ring (daemon -> client: deliveries and confchgs in log order)
//    and a zero-copy buffer pool (cpg_zcb_alloc). The daemon registers the
//    segment with the fabric so zero-copy sends can leave from it directly.
//  * The daemon's log mirror is passed too (memfd, mapped read-only), so a
//    Deliver event can point into it: the deliver callback's msg is the very
//    memory the NIC wrote.
//
// Socket path: $RCPG_SOCKET if set, else kDefaultSocket. All structs are
// plain data, little-endian, fixed layout; both sides check sizes and
// bounds of everything they read from the other (a client is not trusted).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace rcpg::ipc {

inline constexpr const char* kDefaultSocket = "/run/rcpg/rcpgd.sock";
inline constexpr const char* kSocketEnv = "RCPG_SOCKET";
inline constexpr uint32_t kMagic = 0x47504352;  // "RCPG"
// 2: SegmentHeader::membership, HelloRequest::model_flags kWantsTotemConfchg.
inline constexpr uint32_t kVersion = 2;
inline constexpr size_t kMaxGroupName = 128;       // CPG_MAX_NAME_LENGTH
inline constexpr size_t kMaxControlBytes = 65536;  // largest control packet

// ---------------------------------------------------------------- control

enum class MsgType : uint32_t {
  // client -> daemon (each answered by a reply of the same type)
  Hello = 1,          // HelloRequest -> HelloReply (+ fds: segment, log, doorbell)
  Join = 2,           // GroupRequest -> StatusReply
  Leave = 3,          // GroupRequest -> StatusReply
  MembershipGet = 4,  // GroupRequest -> MembersReply
  Iterate = 5,        // IterateRequest -> IterateReply (snapshot)
  Status = 6,         // (empty) -> StatusText (rcpg-tool: human/JSON text)
  Finalize = 7,       // (empty) -> StatusReply; the daemon then closes
  // daemon -> client, unsolicited
  Wake = 100,  // events are pending in the event ring
};

struct MsgHeader {
  MsgType type;
  uint32_t length;  // bytes following this header
};
static_assert(sizeof(MsgHeader) == 8);

// CPG's cs_error_t values (corotypes.h), so they pass through unchanged.
enum class Status : int32_t {
  Ok = 1,
  Library = 2,
  TryAgain = 6,
  InvalidParam = 7,
  NoMemory = 8,
  BadHandle = 9,
  NotExist = 12,
  NameTooLong = 13,
  Exist = 14,
  NoResources = 18,
  TooBig = 26,
  NoSections = 27,
};

struct GroupName {
  uint32_t length = 0;
  char value[kMaxGroupName] = {};
};
static_assert(sizeof(GroupName) == 132);  // == struct cpg_name

struct HelloRequest {
  uint32_t magic = kMagic;
  uint32_t version = kVersion;
  uint32_t pid = 0;
  // cpg_model_v1_data_t::flags; CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF (1)
  // asks for a TotemConfchg event right after each successful Join. The
  // library adds kWantsTotemConfchg when the handle has a totem_confchg
  // callback: it then gets a TotemConfchg at every view change (Corosync
  // sends those to every model-v1 connection).
  uint32_t model_flags = 0;
};
inline constexpr uint32_t kDeliverInitialTotemConf = 1;
inline constexpr uint32_t kWantsTotemConfchg = 1u << 31;

struct HelloReply {
  Status status = Status::Ok;
  uint32_t nodeid = 0;
  uint64_t segment_bytes = 0;   // size of the segment memfd (fd 0)
  uint64_t log_bytes = 0;       // size of the log mirror memfd (fd 1), 0 = not shared
  uint32_t max_atomic_msg = 0;  // what cpg_max_atomic_msgsize_get reports
  uint32_t max_msg_bytes = 0;   // largest message the daemon accepts at all (0 = 1 GiB)
  uint64_t ring_id_seq = 0;     // current view (totem ring id)
  uint32_t ring_id_nodeid = 0;
  uint32_t reserved = 0;
};
// fds passed with HelloReply: [0] segment memfd, [1] log memfd (or none when
// log_bytes == 0), [2] daemon doorbell eventfd (write 1 to wake the daemon).

struct GroupRequest {
  GroupName group;
};

struct StatusReply {
  Status status = Status::Ok;
  uint32_t reserved = 0;
};

struct MemberEntry {  // == struct cpg_address
  uint32_t nodeid;
  uint32_t pid;
  uint32_t reason;
};
static_assert(sizeof(MemberEntry) == 12);

struct MembersReply {
  Status status = Status::Ok;
  uint32_t count = 0;
  // MemberEntry[count] follow
};

enum class IterationType : uint32_t { NameOnly = 1, OneGroup = 2, All = 3 };  // CPG's values

struct IterateRequest {
  IterationType type = IterationType::All;
  uint32_t reserved = 0;
  GroupName group;  // OneGroup only
};

struct IterationEntry {  // == struct cpg_iteration_description_t
  GroupName group;
  uint32_t nodeid;
  uint32_t pid;
};
static_assert(sizeof(IterationEntry) == 140);

struct IterateReply {
  Status status = Status::Ok;
  uint32_t count = 0;
  // IterationEntry[count] follow
};

// ---------------------------------------------------------------- segment

inline constexpr size_t kCacheLine = 64;

struct alignas(kCacheLine) Counter {
  std::atomic<uint64_t> value{0};
};
static_assert(sizeof(Counter) == kCacheLine);
static_assert(std::atomic<uint64_t>::is_always_lock_free);

// Single-producer single-consumer byte ring. head/tail are monotonically
// increasing byte positions (offset = pos % size); size is a power of two.
// Records (RecordHeader + body, padded to 8 bytes) never straddle the end:
// the producer writes a Pad record (or skips < 8 bytes, impossible with
// 8-byte alignment) and starts again at offset 0. The producer publishes with
// a release store of head; the consumer frees with a release store of tail.
struct RingControl {
  Counter head;  // producer
  Counter tail;  // consumer
  // Consumer sets 1 (seq_cst) before it sleeps, then re-checks head; the
  // producer reads it (seq_cst) after publishing and wakes the consumer if
  // set (Dekker pair; see transport/shm/shm_doorbell.h for the argument).
  Counter sleeping;
};

enum class RecordType : uint32_t {
  Pad = 0,
  // request ring
  Mcast = 1,       // McastRecord + payload
  McastChunk = 2,  // McastRecord + part of a message larger than one record
  ZcbMcast = 3,    // ZcbRecord (payload in the pool)
  // event ring
  Deliver = 10,       // DeliverRecord (+ payload when inline)
  Confchg = 11,       // ConfchgRecord + MemberEntry[member + left + joined]
  TotemConfchg = 12,  // TotemRecord + uint32_t nodeids[count]
};

struct RecordHeader {
  RecordType type;
  uint32_t length;  // body bytes following this header (before padding)
};
static_assert(sizeof(RecordHeader) == 8);

inline constexpr size_t ipc_align(size_t n) {
  return (n + 7) & ~size_t{7};
}

struct McastRecord {
  uint32_t guarantee = 0;    // CPG_TYPE_*
  uint32_t flags = 0;        // kChunkFirst | kChunkLast (McastChunk only)
  uint64_t total_bytes = 0;  // whole message (McastChunk); == payload (Mcast)
  // payload follows
};
inline constexpr uint32_t kChunkFirst = 1;
inline constexpr uint32_t kChunkLast = 2;
// DeliverRecord only: a part of a chunked message that is neither its first
// nor its last (so flags == 0 always means a whole message). McastChunk
// records need no such flag: their record type says they are parts.
inline constexpr uint32_t kChunkMiddle = 4;

// Every cpg_zcb_alloc buffer has this many bytes in front of its payload
// (pool_offset - kZcbHeadroom is still inside the pool) that belong to the
// daemon while it handles the ZcbRecord, e.g. to put an entry header there
// so that header and payload leave in one write. Payloads are 64-byte aligned.
inline constexpr size_t kZcbHeadroom = 64;

// cpg_zcb_mcast_joined copies messages up to this size into the request
// ring like cpg_mcast_joined (returning at once); larger ones go as
// ZcbRecords and leave from the pool without a CPU copy.
inline constexpr size_t kZcbCopyBelow = 4096;

struct ZcbRecord {
  uint32_t guarantee = 0;
  uint32_t reserved = 0;
  uint64_t pool_offset = 0;  // payload offset from the segment start
  uint64_t bytes = 0;
  uint64_t ticket = 0;  // completion is reported in SegmentHeader::zcb_done
};

enum class DeliverSource : uint32_t {
  Inline = 0,  // payload follows the record
  Log = 1,     // payload is at log_offset in the mapped log mirror
};

struct DeliverRecord {
  uint32_t nodeid = 0;
  uint32_t pid = 0;
  DeliverSource source = DeliverSource::Inline;
  uint32_t flags = 0;        // kChunkFirst | kChunkLast | kChunkMiddle for parts of a large message
  uint64_t bytes = 0;        // payload bytes of this record
  uint64_t total_bytes = 0;  // whole message (== bytes unless chunked)
  uint64_t log_offset = 0;   // Log source
  uint64_t position = 0;     // log position to release once handled (0 = none)
};

struct ConfchgRecord {
  GroupName group;
  uint32_t member_count = 0;
  uint32_t left_count = 0;
  uint32_t joined_count = 0;
  uint32_t reserved = 0;
};

struct TotemRecord {
  uint64_t ring_seq = 0;
  uint32_t ring_nodeid = 0;
  uint32_t count = 0;
};

// The segment starts with this header; the rings and the pool follow at the
// offsets it gives. The daemon fills the geometry; the client validates it.
struct SegmentHeader {
  uint32_t magic = kMagic;
  uint32_t version = kVersion;
  uint64_t segment_bytes = 0;
  uint64_t request_offset = 0, request_bytes = 0;
  uint64_t event_offset = 0, event_bytes = 0;
  uint64_t pool_offset = 0, pool_bytes = 0;
  RingControl request;  // client produces, daemon consumes
  RingControl event;    // daemon produces, client consumes
  // Client -> daemon: log position up to which the client has handled its
  // Deliver records (the daemon may then let the log be overwritten).
  Counter released;
  // Daemon -> client: last ZcbRecord ticket handled, and its outcome. The
  // daemon stores zcb_status first, then zcb_done (release); tickets start
  // at 1 and a client has at most one ZcbRecord outstanding.
  Counter zcb_done;
  Counter zcb_status;  // a Status value
  // Daemon -> client: CPG_FLOW_CONTROL_ENABLED (1) when the client should slow down.
  Counter flow_control;
  // Daemon -> client: a MembershipBlock value. While not Open the node has
  // no quorum (or its view is changing): cpg_mcast_joined and
  // cpg_zcb_mcast_joined return CS_ERR_TRY_AGAIN without queueing, as
  // Corosync's do while it cannot order messages.
  Counter membership;
};

enum class MembershipBlock : uint64_t {
  Open = 0,
  NoQuorum = 1,  // this node is not in a view with a quorum
  Changing = 2,  // a view change is under way
};

}  // namespace rcpg::ipc
