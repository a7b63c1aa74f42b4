// Internals of the shm fabric (see shm_endpoint.h for its behaviour). Split
// by concern:
//   shm_endpoint.cpp  construction, teardown, data path, poll, wait
//   shm_setup.cpp     connections: listen, connect, handshake, events, teardown
//   shm_region.cpp    local regions and the peers' regions we map
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "transport/auth.h"
#include "transport/fabric.h"
#include "transport/shm/shm_control.h"
#include "transport/shm/shm_doorbell.h"
#include "transport/shm/shm_mapping.h"
#include "transport/shm/shm_ring.h"

namespace rcpg::transport::shm {

using Clock = std::chrono::steady_clock;

// Connection ids are dense and never reused (callers index arrays by them, as
// with the other fabrics). Region ids (rkeys) are (generation << 16) | slot:
// a stale key never names a newer region that reuses the slot.
inline constexpr uint32_t kSlotBits = 16;
inline constexpr uint32_t kSlotMask = (uint32_t{1} << kSlotBits) - 1;
inline constexpr size_t kMaxConns = size_t{1} << 16;        // live at once
inline constexpr uint64_t kMaxOpBytes = uint64_t{1} << 31;  // as verbs' max_msg_sz
// How often next_event() looks at the sockets when no peer hinted at a
// control message (peer death, incoming connections).
inline constexpr auto kControlInterval = std::chrono::microseconds(50);
inline constexpr auto kHandshakeTimeout = std::chrono::seconds(10);
// Largest ring a peer may ask us to map (recv_queue_depth x max_send_bytes).
inline constexpr uint32_t kMaxRingSlots = uint32_t{1} << 20;
inline constexpr uint64_t kMaxRingBytes = uint64_t{1} << 30;
// epoll_event data of the non-connection fds (connections use their id).
inline constexpr uint64_t kTagEventFd = ~uint64_t{0};
inline constexpr uint64_t kTagListen = ~uint64_t{0} - 1;

// Allocates region ids (rkeys).
class RegionIds {
 public:
  // A fresh id, or nullopt when all 65535 slots are in use. Never 0.
  std::optional<uint32_t> allocate();
  void release(uint32_t id);
  static uint32_t slot(uint32_t id) { return id & kSlotMask; }

 private:
  std::vector<uint16_t> gen_;
  std::vector<uint32_t> free_;
};

enum class ConnState : uint8_t {
  Connecting,      // outbound: connect(2) said EAGAIN (backlog full), retried
  AwaitReply,      // outbound: HelloRequest sent
  AwaitHello,      // inbound: accepted, HelloRequest not yet received
  AwaitPeerReady,  // peer verified: taking its Setup, Region*, Ready
  Established,
  Broken,  // ended: only the inbound ring is left, forgotten once poll() drained it
};

// A region of a peer, mapped into this process.
struct PeerRegion {
  uint32_t rkey = 0;
  uint64_t base = 0;  // the owner's RemoteRegion::addr
  uint64_t size = 0;
  Mapping map;
};

struct Conn {
  ConnId id = kNoConn;
  ConnState state = ConnState::Connecting;
  bool inbound = false;
  bool sent_snapshot = false;  // our Setup/Region*/Ready are queued; later regions follow
  bool scanned = false;        // listed in ShmEndpoint::rx_conns_
  size_t live_index = 0;       // position in ShmEndpoint::live_
  NodeId peer = 0;
  int sock = -1;
  std::string address;  // outbound: where we connect
  Hello request{};      // outbound: to verify the reply against
  Clock::time_point deadline{};

  // Where we produce: the peer's ring for us, its doorbell and eventfd.
  Mapping tx_map;
  RingProducer tx;
  Mapping peer_db_map;
  Doorbell* peer_db = nullptr;
  int peer_efd = -1;

  // What we consume: our ring for this connection.
  Mapping rx_map;
  RingConsumer rx;

  std::vector<PeerRegion> regions;  // the peer's regions, by rkey slot
  std::deque<OutMsg> outq;          // control messages the socket has not taken yet
  uint32_t outstanding = 0;         // local completions queued and not yet polled

  bool handshaking() const { return state != ConnState::Established && state != ConnState::Broken; }
};

struct LocalRegion {
  Region pub;
  Mapping map;
  bool local_only = false;  // register_external: never announced to peers
};

class ShmEndpoint final : public Endpoint {
 public:
  static std::unique_ptr<Endpoint> create(const EndpointConfig& cfg, std::string& why);
  ~ShmEndpoint() override;

  NodeId node_id() const override { return cfg_.node_id; }

  Region* register_region(size_t bytes) override;
  Region* register_external(int fd, size_t bytes) override;
  void deregister(Region* region) override;

  ConnId connect(std::string_view address, NodeId peer) override;
  void disconnect(ConnId conn) override;
  std::optional<Event> next_event() override;

  bool post_write(ConnId conn, const Region& local, size_t local_off, const RemoteRegion& remote,
                  uint64_t remote_off, size_t len, uint64_t wr_id, bool signaled) override;
  bool post_write_imm(ConnId conn, const Region& local, size_t local_off,
                      const RemoteRegion& remote, uint64_t remote_off, size_t len, uint32_t imm,
                      uint64_t wr_id, bool signaled) override;
  bool post_read(ConnId conn, const Region& local, size_t local_off, const RemoteRegion& remote,
                 uint64_t remote_off, size_t len, uint64_t wr_id) override;
  bool post_send(ConnId conn, std::span<const std::byte> bytes, uint64_t wr_id) override;

  size_t poll(std::span<Completion> out) override;
  void wait(std::chrono::microseconds timeout) override;
  int wait_fd() const override;

 private:
  explicit ShmEndpoint(const EndpointConfig& cfg);

  // --- shm_endpoint.cpp -------------------------------------------------
  bool init(std::string& why);
  bool post_rdma(ConnId id, Op op, const Region& local, size_t local_off,
                 const RemoteRegion& remote, uint64_t remote_off, size_t len, uint32_t imm,
                 uint64_t wr_id, bool signaled);
  Conn* find_conn(ConnId id) const;
  // Room for one more completion on `c` (send queue and completion queue).
  bool can_complete(const Conn& c) const;
  void complete(Conn& c, uint64_t wr_id, Op op, Status status, uint32_t len);
  void ensure_cq_capacity();
  bool work_pending() const;  // a completion or event is ready (no syscalls)
  void arm_doorbell();        // announces sleep; next producer writes the eventfd
  void drain_eventfd();
  void signal_self();
  void log(const std::string& line) const;

  // --- shm_setup.cpp ----------------------------------------------------
  bool open_listener(std::string& why);
  void close_listener();
  Conn* new_conn(bool inbound);
  void try_connect(Conn& c);
  void progress_control(bool force);
  void accept_incoming();
  bool watch(Conn& c);  // adds the connected socket to the epoll set
  void on_readable(Conn& c);
  // Returns false when the message ended the connection.
  bool on_message(Conn& c, InMsg& m);
  bool on_hello_request(Conn& c, InMsg& m);
  bool on_hello_reply(Conn& c, InMsg& m);
  bool on_setup(Conn& c, InMsg& m);
  bool on_ready(Conn& c);
  // These return false when the connection ended (and was dealt with).
  bool send_snapshot(Conn& c);
  bool send_ctrl(Conn& c, OutMsg msg);
  bool flush_outq(Conn& c);
  void flush_all_outqs();
  void check_deadlines(Clock::time_point now);
  // A connection that never became established: raises `type` (if any),
  // logs if it was incoming, and forgets the connection.
  void fail_setup(Conn& c, std::optional<EventType> type, const std::string& why);
  // An established connection ended: Disconnected, resources released; the
  // inbound ring stays until poll() has drained it. RemoteAccess uses this.
  void break_conn(Conn& c, const std::string& why);
  void close_socket(Conn& c);
  void release_peer_resources(Conn& c);
  void set_scanned(Conn& c, bool on);
  void forget_conn(Conn& c);  // retires the id; memory goes once no poll() result uses it
  // Calls f(Conn&) for every live connection; f may forget that connection.
  template <class F>
  void for_each_conn(F&& f) {
    for (size_t i = 0; i < live_.size();) {
      Conn* c = live_[i].get();
      f(*c);
      if (i < live_.size() && live_[i].get() == c) ++i;
    }
  }
  void push_event(EventType type, const Conn& c, std::string detail);

  // --- shm_region.cpp ---------------------------------------------------
  LocalRegion* find_local(const Region& r) const;
  bool region_message(const LocalRegion& r, OutMsg& out, std::string& why) const;
  bool on_region(Conn& c, InMsg& m);
  void on_deregister(Conn& c, const InMsg& m);
  // The peer region `rkey` names on `c`, reading messages still queued on the
  // socket if the key is new (it may have been registered a moment ago).
  const PeerRegion* find_peer_region(Conn& c, uint32_t rkey);

  EndpointConfig cfg_;
  int epfd_ = -1;
  int efd_ = -1;  // our doorbell eventfd
  int listen_fd_ = -1;
  std::string listen_path_;  // filesystem socket we created (empty: none/abstract)
  dev_t listen_dev_ = 0;
  ino_t listen_ino_ = 0;
  Mapping db_map_;
  Doorbell* db_ = nullptr;

  std::vector<Conn*> by_id_;                 // every id ever handed out; null once forgotten
  std::vector<std::unique_ptr<Conn>> live_;  // owns the connections not forgotten
  uint64_t orphans_ = 0;                     // queued completions of forgotten connections
  RegionIds region_ids_;
  std::vector<std::unique_ptr<LocalRegion>> regions_;  // by rkey slot

  std::vector<Conn*> rx_conns_;  // connections whose inbound ring poll() scans
  size_t rr_ = 0;                // round-robin start in rx_conns_
  std::vector<Conn*> deferred_;  // rings whose slots hold Recv data of the last poll()
  std::vector<std::unique_ptr<Conn>> graveyard_;  // forgotten, freed at the next poll()

  std::vector<Completion> cq_;  // local completions, a ring
  size_t cq_head_ = 0;
  size_t cq_count_ = 0;
  std::deque<Event> events_;

  uint32_t outq_conns_ = 0;  // connections with queued control messages
  bool ctrl_ready_ = false;  // wait() saw a readable socket
  Clock::time_point next_ctrl_check_{};
  mutable bool fd_mode_ = false;  // wait_fd() was asked for
  bool armed_ = false;            // sleeping flag set by us, not yet taken
  bool efd_signaled_ = false;     // our eventfd may be readable
  uint32_t empty_polls_ = 0;      // wait_fd() mode: empty polls since arming
};

}  // namespace rcpg::transport::shm
