// The Fabric interface: one-sided RDMA semantics (RC queue pairs) that the
// ordering engine is written against. Three implementations share it:
//   verbs  - real RDMA through rdma_cm + libibverbs (RNIC or soft-RoCE)
//   shm    - processes on one host through shared memory, at native speed
//   sim    - in-process, deterministic, with fault injection
//
// Semantics every implementation must honour (checked by
// tests/transport/conformance_*.cpp):
//  * Operations posted on one connection execute in post order. In particular,
//    when the target sees a WRITE_WITH_IMM (Op::RecvImm) or a SEND (Op::Recv),
//    every WRITE posted before it on the same connection is visible in memory.
//    Nothing is promised across different connections.
//  * A READ returns memory as of after all earlier operations on the same
//    connection were applied at the target.
//  * Access outside a remote region (bad key, offset or length) completes
//    with Status::RemoteAccess and, as on RC, breaks the connection: every
//    outstanding operation on it completes with Status::Flushed, a
//    Disconnected event is raised, and later post_*() calls return false.
//  * A peer that dies or disconnects raises Event::Disconnected; outstanding
//    operations complete with Status::Flushed (never silently vanish).
//  * Zero-length operations move no data; whether they validate the remote
//    key is fabric-specific (RDMA hardware does not), so callers must not
//    rely on either behaviour.
//  * ConnIds are small, dense and never reused within an endpoint, so callers
//    may index tables by them.
//  * Connections are authenticated: the initiator proves knowledge of the
//    cluster key (see auth.h); the listener rejects and logs anyone who can't,
//    and anyone not in EndpointConfig::allowed_peers (when that is non-empty).
//
// Threading: an Endpoint is single-threaded (owned by one progress loop);
// no call takes a lock. Data-path calls never allocate.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace rcpg::transport {

using NodeId = uint32_t;
using ConnId = uint32_t;
inline constexpr ConnId kNoConn = ~ConnId{0};

// What a peer needs to address a registered region remotely. Plain data so it
// can be shipped inside control messages (24 bytes, fixed layout).
struct RemoteRegion {
  uint64_t addr = 0;    // fabric-specific base (virtual address on verbs)
  uint64_t length = 0;  // bytes
  uint32_t rkey = 0;    // fabric-specific key
  uint32_t reserved = 0;
};
static_assert(sizeof(RemoteRegion) == 24);

// Local registered memory, allocated and owned by the Endpoint. `data` stays
// valid and registered until Endpoint::deregister() or endpoint destruction.
struct Region {
  std::byte* data = nullptr;
  size_t size = 0;
  uint32_t id = 0;  // endpoint-local identifier
  RemoteRegion remote{};
  // A memfd holding the region's bytes from offset 0, owned by the endpoint,
  // so that other local processes can map it (the daemon hands its log
  // mirror to clients this way: zero-copy receive). -1 if the fabric's
  // memory is not file-backed (sim).
  int fd = -1;
};

enum class Op : uint8_t {
  Write,     // local completion of post_write
  WriteImm,  // local completion of post_write_imm
  Read,      // local completion of post_read (data is in the local region)
  Send,      // local completion of post_send
  Recv,      // a SEND arrived: data/len describe it
  RecvImm,   // a WRITE_WITH_IMM landed: imm and len (bytes written) are set
};

enum class Status : uint8_t {
  Ok,
  RemoteAccess,  // remote key/offset/length invalid
  LocalAccess,   // local region/offset/length invalid
  Flushed,       // connection broke before the operation completed
  TooLarge,      // send larger than max_send_bytes
};

const char* to_string(Op op);
const char* to_string(Status status);

struct Completion {
  uint64_t wr_id = 0;  // caller's tag (0 for Recv/RecvImm)
  ConnId conn = kNoConn;
  Op op = Op::Write;
  Status status = Status::Ok;
  uint32_t imm = 0;
  uint32_t len = 0;
  // Op::Recv only: the message bytes, valid until the next poll() call.
  const std::byte* data = nullptr;
};

enum class EventType : uint8_t {
  Connected,     // a connect() or an accepted incoming connection is usable
  Rejected,      // our connect() was refused (bad key, unknown node, ...)
  Unreachable,   // our connect() could not reach the address
  Disconnected,  // an established connection ended (peer died, error, close)
  PeerRejected,  // we refused an incoming connection (logged; informational)
};

const char* to_string(EventType type);

struct Event {
  EventType type = EventType::Connected;
  ConnId conn = kNoConn;
  NodeId peer = 0;
  bool inbound = false;  // true when the peer initiated the connection
  std::string detail;    // human-readable reason
};

using LogFn = std::function<void(std::string_view)>;

struct EndpointConfig {
  NodeId node_id = 0;
  // Where to accept connections; empty = do not listen.
  //   verbs: "IP:PORT" (IPv4), shm: a socket path, sim: any unique name.
  std::string listen_address;
  // verbs: source IP for outgoing connections (defaults to the listen IP).
  // Needed on multi-host soft-RoCE, where every address is local and an
  // unbound connect would loop back on the destination's device.
  std::string source_address;
  std::array<uint8_t, 32> cluster_key{};
  std::vector<NodeId> allowed_peers;  // empty = any peer proving the key
  uint32_t send_queue_depth = 512;    // outstanding posts per connection
  uint32_t recv_queue_depth = 128;    // receive slots for Send / WriteImm
  uint32_t max_send_bytes = 4096;     // largest two-sided message
  // verbs: RC ACK timeout exponent (4.096 us * 2^n) and retry count. Soft-RoCE
  // under emulation fires retransmits spuriously, so the default is generous.
  uint8_t qp_timeout = 19;
  uint8_t qp_retry_count = 7;
  std::string device_hint;  // verbs: optional device name to expect
  LogFn log;                // where control-path messages go (default stderr)
};

// Someone else's memory made ready for the NIC off the endpoint's thread
// (Endpoint::prepare_external), waiting to become a Region (adopt_external).
// Destroyed unadopted, it releases what it holds.
class PreparedRegion {
 public:
  virtual ~PreparedRegion() = default;
};

class Endpoint {
 public:
  virtual ~Endpoint() = default;

  virtual NodeId node_id() const = 0;

  // --- memory ---------------------------------------------------------
  // Allocates and registers `bytes` of memory for local and remote access.
  // Returns nullptr (and logs why) when the fabric cannot provide it.
  virtual Region* register_region(size_t bytes) = 0;
  // Registers memory that another local process shares with us: a memfd of
  // at least `bytes`, sealed against shrinking and growing (so it cannot be
  // truncated under the NIC or our memcpy). The endpoint maps it itself and
  // does not take `fd`. Usable as the local side of operations only (the
  // daemon posts clients' zero-copy buffers from it); it is not announced to
  // peers. Returns nullptr (and logs why) on failure.
  virtual Region* register_external(int fd, size_t bytes) = 0;
  // register_external in two steps, for callers that keep its slow part
  // (mapping the memory and pinning it for the NIC: 100-500 ms for tens of
  // MiB under emulation) off their event loop. prepare_external may run on
  // any thread, concurrently with any call but the endpoint's destruction;
  // it takes its own duplicate of `fd` where it needs one, and returns
  // nullptr with `why` on failure. adopt_external runs on the endpoint's
  // thread and turns it into a Region (nullptr, logged, on failure). The
  // default prepares nothing and does all the work in adopt_external.
  virtual std::unique_ptr<PreparedRegion> prepare_external(int fd, size_t bytes, std::string& why);
  virtual Region* adopt_external(std::unique_ptr<PreparedRegion> prepared);
  virtual void deregister(Region* region) = 0;

  // --- connections ----------------------------------------------------
  // Starts connecting to the endpoint listening at `address`, claiming to talk
  // to node `peer`. The outcome arrives as an Event (Connected / Rejected /
  // Unreachable). Returns the connection id used in those events.
  virtual ConnId connect(std::string_view address, NodeId peer) = 0;
  virtual void disconnect(ConnId conn) = 0;
  // Next control event, if any (connections, disconnects, rejections).
  virtual std::optional<Event> next_event() = 0;

  // --- data path ------------------------------------------------------
  // Return false only when the send queue of `conn` is full or the
  // connection is not usable; errors of the operation itself arrive as a
  // Completion. Unsignaled operations produce a Completion only on error.
  virtual bool post_write(ConnId conn, const Region& local, size_t local_off,
                          const RemoteRegion& remote, uint64_t remote_off, size_t len,
                          uint64_t wr_id, bool signaled = true) = 0;
  virtual bool post_write_imm(ConnId conn, const Region& local, size_t local_off,
                              const RemoteRegion& remote, uint64_t remote_off, size_t len,
                              uint32_t imm, uint64_t wr_id, bool signaled = true) = 0;
  virtual bool post_read(ConnId conn, const Region& local, size_t local_off,
                         const RemoteRegion& remote, uint64_t remote_off, size_t len,
                         uint64_t wr_id) = 0;
  // Two-sided message for the control plane (at most max_send_bytes).
  virtual bool post_send(ConnId conn, std::span<const std::byte> bytes, uint64_t wr_id) = 0;

  // Drains up to out.size() completions; never blocks.
  virtual size_t poll(std::span<Completion> out) = 0;

  // Blocks until a completion or event may be ready, or `timeout` passes.
  // Spurious wake-ups are allowed. Callers spin on poll() first and call
  // wait() only when idle (see spin_wait.h).
  virtual void wait(std::chrono::microseconds timeout) = 0;
  // A file descriptor that becomes readable when wait() would return early,
  // for integration into an application's poll loop; -1 if none.
  virtual int wait_fd() const = 0;
};

}  // namespace rcpg::transport
