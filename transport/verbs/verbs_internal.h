// Internals of the verbs fabric, shared by the verbs_*.cpp files.
//
// Resources (set up in this order by VerbsEndpoint::init(), released in the
// exact reverse order by VerbsEndpoint::teardown(), which is also the unwind
// path of a failed init()):
//   1. rdma_cm event channel (O_NONBLOCK)
//   2. anchor cm id: the listening id, or an id bound to the source IP. It
//      fixes the endpoint's device (id->verbs) and keeps librdmacm's device
//      context referenced for the endpoint's lifetime. Without any address,
//      the device list from rdma_get_devices() is kept instead.
//   3. protection domain            4. completion channel (O_NONBLOCK)
//   5. one CQ shared by every QP     6. eventfd for wake-ups (see wait())
//   7. epoll fd = wait_fd()
// Then, dynamically: connections (cm id + RC QP + one registered buffer of
// receive slots and send staging slots) and user regions.
//
// Single device per endpoint: a Region carries one rkey, valid on one PD only,
// so all connections of an endpoint must live on the device of its PD.
//
// Completion bookkeeping: every send WR gets wr_id = (slot, generation,
// position); the user's wr_id lives in a per-connection ring indexed by
// position. Unsignaled user WRs are reclaimed by signaling every
// `signal_every`-th WR internally; a success CQE at position p retires every
// entry up to p, an error CQE reports the user's wr_id of its entry. Receive
// WRs carry (slot, generation, receive slot). Stale CQEs of a destroyed QP
// (rxe leaves them in the CQ) are recognised by the generation and dropped.
//
// CQ capacity: every posted receive and every outstanding send WR (signaled
// or not: a flush always produces a CQE) may produce a CQE. Receives are
// reserved per connection; sends share the rest, and a post that would
// exceed it returns false like a full send queue.
#pragma once

#include <infiniband/verbs.h>
#include <netinet/in.h>
#include <rdma/rdma_cma.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "transport/auth.h"
#include "transport/fabric.h"
#include "transport/placement.h"

namespace rcpg::transport::verbs {

using Clock = std::chrono::steady_clock;

// Control progress (a non-blocking look at the cm, async and completion
// channels) runs at most this often from poll() and next_event().
inline constexpr auto kControlInterval = std::chrono::microseconds(500);

// epoll tags of the fds behind wait_fd()
inline constexpr uint32_t kTagCm = 1;
inline constexpr uint32_t kTagComp = 2;
inline constexpr uint32_t kTagAsync = 3;
inline constexpr uint32_t kTagKick = 4;

// ---- wr_id layout ---------------------------------------------------------
//   bit 63: receive WR; bits 48..62: connection slot; bits 32..47: slot
//   generation; bits 0..31: send position or receive slot index.
inline constexpr uint64_t kRecvBit = uint64_t{1} << 63;
inline constexpr uint32_t kMaxSlots = 1u << 15;

inline uint64_t make_wr_id(bool recv, uint32_t slot, uint16_t gen, uint32_t index) {
  return (recv ? kRecvBit : 0) | (uint64_t{slot} << 48) | (uint64_t{gen} << 32) | index;
}
inline bool wr_is_recv(uint64_t w) {
  return (w & kRecvBit) != 0;
}
inline uint32_t wr_slot(uint64_t w) {
  return static_cast<uint32_t>(w >> 48) & (kMaxSlots - 1);
}
inline uint16_t wr_gen(uint64_t w) {
  return static_cast<uint16_t>(w >> 32);
}
inline uint32_t wr_index(uint64_t w) {
  return static_cast<uint32_t>(w);
}

// ConnId = generation << 16 | slot (slot < 2^15, so never kNoConn).
inline ConnId make_conn_id(uint32_t slot, uint16_t gen) {
  return (uint32_t{gen} << 16) | slot;
}
inline uint32_t conn_slot(ConnId id) {
  return id & 0xffff;
}

enum class ConnState : uint8_t {
  Resolving,    // initiator: resolving address and route (no QP yet)
  Connecting,   // initiator: QP created, rdma_connect() sent
  Accepting,    // listener: QP created, rdma_accept() sent
  Established,  // usable
  Closing,      // QP in error: waiting for the send queue to flush, then freed
};

// One posted send WR, by position.
struct SendEntry {
  uint64_t user_wr_id = 0;
  uint32_t len = 0;
  uint32_t stage_end = 0;  // staging ring head after this WR was posted
  Op op = Op::Write;
  bool user_signaled = false;
};

struct Conn {
  ConnId id = kNoConn;
  uint32_t slot = 0;
  uint16_t gen = 0;
  ConnState state = ConnState::Resolving;
  bool inbound = false;
  bool announced = false;  // Connected was raised, so Disconnected will be
  NodeId peer = 0;
  rdma_cm_id* cm_id = nullptr;
  ibv_qp* qp = nullptr;
  Hello request{};     // initiator: our Hello, to check the listener's reply
  std::string remote;  // peer address, for log lines

  // Send queue: positions head (next) and tail (oldest outstanding).
  std::vector<SendEntry> ring;
  uint32_t ring_mask = 0;
  uint32_t sq_depth = 0;
  uint32_t head = 0;
  uint32_t tail = 0;
  uint32_t unsignaled_run = 0;
  uint32_t signal_every = 1;

  // One allocation, one MR: rq_depth receive slots, then stage_slots send
  // staging slots (for post_send payloads too large to inline).
  std::byte* buf = nullptr;
  size_t buf_bytes = 0;
  bool buf_huge = false;
  ibv_mr* buf_mr = nullptr;
  uint32_t slot_bytes = 0;
  uint32_t rq_depth = 0;
  uint32_t stage_slots = 0;
  uint32_t stage_head = 0;
  uint32_t stage_tail = 0;
  std::vector<ibv_sge> recv_sges;
  std::vector<ibv_recv_wr> recv_wrs;
  std::vector<uint32_t> repost;  // receive slots consumed since the last poll()
  bool dirty = false;            // listed in VerbsEndpoint::dirty_
  // next_event() has returned this connection's Connected event. Until then
  // its receive completions are held back (VerbsEndpoint::deferred_), so that
  // a caller never sees data on a connection it does not know yet.
  bool user_knows = false;
  uint32_t deferred = 0;     // receive CQEs held back
  bool cq_reserved = false;  // rq_depth counted in VerbsEndpoint::cq_reserved_

  Clock::time_point flush_deadline{};
  uint64_t close_epoch = 0;  // VerbsEndpoint::cq_drains_ when closing began
};

struct RegionRec {
  Region region;
  ibv_mr* mr = nullptr;
  void* mem = nullptr;
  size_t alloc_bytes = 0;
  bool huge = false;
  int fd = -1;         // memfd behind mem
  SharedMap external;  // register_external: someone else's memfd, mapped here
};

class VerbsEndpoint final : public Endpoint {
 public:
  explicit VerbsEndpoint(const EndpointConfig& cfg);
  ~VerbsEndpoint() override;
  bool init(std::string& why);

  NodeId node_id() const override { return cfg_.node_id; }
  Region* register_region(size_t bytes) override;
  Region* register_external(int fd, size_t bytes) override;
  std::unique_ptr<PreparedRegion> prepare_external(int fd, size_t bytes, std::string& why) override;
  Region* adopt_external(std::unique_ptr<PreparedRegion> prepared) override;
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
  int wait_fd() const override {
    fd_mode_ = true;
    return epoll_fd_;
  }

 private:
  // --- setup / teardown (verbs_endpoint.cpp) ---
  bool init_device(std::string& why);
  bool init_cq(std::string& why);
  bool init_fds(std::string& why);
  void teardown();

  // --- control progress (verbs_progress.cpp) ---
  void progress_control();
  void handle_ready(uint32_t tag);
  void drain_comp_channel();
  void drain_async_events();
  void kick();
  void unkick_if_idle();

  // --- cm events (verbs_cm_events.cpp) ---
  void drain_cm_events();
  void on_cm_event(rdma_cm_event_type type, rdma_cm_id* id, int status,
                   std::span<const uint8_t> pdata, const rdma_conn_param& param);
  void on_connect_request(rdma_cm_id* child, std::span<const uint8_t> pdata,
                          const rdma_conn_param& param);
  void on_route_resolved(Conn* c);
  void on_established(Conn* c, std::span<const uint8_t> pdata);
  void on_rejected(Conn* c, int status, std::span<const uint8_t> pdata);
  void on_async_event(const ibv_async_event& ev);

  // --- connections (verbs_connection.cpp) ---
  Conn* alloc_conn(bool inbound, NodeId peer);
  Conn* find(ConnId id) const;
  bool setup_qp(Conn* c, std::string& why);
  bool create_qp(Conn* c, std::string& why);
  void set_ack_timeout(rdma_cm_id* id);
  rdma_conn_param conn_param() const;
  void announce_connected(Conn* c);
  void fail_conn(Conn* c, EventType type, const std::string& detail);
  void begin_close(Conn* c, const std::string& why);
  void destroy_conn(Conn* c);
  void reap_closing();
  void repost_receives();

  // --- data path (verbs_datapath.cpp) ---
  Conn* usable(ConnId id) const;
  bool has_room(const Conn* c) const;
  bool check_local(const Region& local, size_t off, size_t len, uint32_t& lkey) const;
  bool post_rdma(ConnId conn, ibv_wr_opcode opcode, Op op, const Region& local, size_t local_off,
                 const RemoteRegion& remote, uint64_t remote_off, size_t len, uint32_t imm,
                 uint64_t wr_id, bool signaled);
  bool submit(Conn* c, ibv_send_wr& wr, const SendEntry& entry);
  void retire_until(Conn* c, uint32_t end);
  void synth(uint64_t wr_id, ConnId conn, Op op, Status status, uint32_t len = 0);
  void handle_wc(const ibv_wc& wc, std::span<Completion> out, size_t& n);
  void handle_send_wc(Conn* c, const ibv_wc& wc, std::span<Completion> out, size_t& n);
  void handle_recv_wc(Conn* c, const ibv_wc& wc, std::span<Completion> out, size_t& n,
                      bool released = false);
  void release_deferred(std::span<Completion> out, size_t& n);

  // --- helpers (verbs_util.cpp) ---
  void log(const std::string& msg) const;
  void push_event(EventType type, Conn* c, std::string detail);

  EndpointConfig cfg_;

  // Fixed resources, in setup order (see the top of this file).
  rdma_event_channel* channel_ = nullptr;
  rdma_cm_id* anchor_ = nullptr;
  ibv_context** device_list_ = nullptr;
  ibv_context* verbs_ = nullptr;  // owned by librdmacm
  ibv_pd* pd_ = nullptr;
  ibv_comp_channel* comp_ch_ = nullptr;
  ibv_cq* cq_ = nullptr;
  int kick_fd_ = -1;
  int epoll_fd_ = -1;

  ibv_device_attr dev_attr_{};
  std::string dev_name_;
  sockaddr_in src_addr_{};
  bool has_src_ = false;
  bool listening_ = false;
  bool device_dead_ = false;
  int inline_request_ = -1;  // max_inline_data that QP creation accepts (-1: unknown)
  uint32_t max_inline_ = 0;  // what the first QP reported
  uint8_t max_rd_atomic_ = 1;

  // CQ capacity accounting (see the top of this file).
  uint32_t cq_size_ = 0;
  uint32_t cq_budget_ = 0;
  uint32_t cq_reserved_ = 0;
  uint32_t cq_send_outstanding_ = 0;
  unsigned cq_unacked_ = 0;
  bool cq_armed_ = false;
  // wait_fd() was asked for: the owner blocks on it in its own loop, so an
  // empty poll() must leave the CQ armed (as wait() would).
  mutable bool fd_mode_ = false;
  bool fd_mode_busy_ = false;   // the last poll() returned work
  uint32_t fd_mode_empty_ = 0;  // empty polls since the CQ was last re-armed
  void arm_for_fd_mode(std::span<Completion> out, size_t& n);
  bool kicked_ = false;

  std::vector<std::unique_ptr<Conn>> conns_;  // by slot
  std::vector<uint16_t> slot_gen_;            // next generation of each slot
  std::vector<uint32_t> free_slots_;
  uint32_t closing_ = 0;       // connections in ConnState::Closing
  std::vector<ConnId> dirty_;  // connections with receive slots to repost

  uint32_t take_region_id();
  std::vector<std::unique_ptr<RegionRec>> regions_;
  std::vector<uint32_t> free_region_ids_;

  std::deque<Event> events_;
  std::vector<Completion> pending_;  // synthesized completions, oldest first
  size_t pending_head_ = 0;
  std::array<ibv_wc, 16> stash_{};  // CQEs polled by wait() to close the arm race
  int stash_n_ = 0;
  int stash_pos_ = 0;
  std::array<ibv_wc, 32> wcs_{};
  std::vector<ibv_wc> deferred_;  // receive CQEs of connections the user does not know yet
  bool deferred_ready_ = false;   // some of them may be released now
  uint32_t poll_calls_ = 0;
  // Times poll() found the CQ empty. A closing connection is freed only after
  // one more empty CQ, so that receives which completed before the error are
  // still delivered.
  uint64_t cq_drains_ = 0;
  Clock::time_point last_control_{};
};

// "what: strerror(errno)"
std::string sys_error(const std::string& what);

// Status of a work completion as the fabric reports it.
Status map_status(ibv_wc_status status);

// "A.B.C.D:PORT" (port required) or "A.B.C.D" (port optional, 0).
bool parse_ipv4(std::string_view text, bool need_port, sockaddr_in& out, std::string& why);
std::string format_addr(const sockaddr* sa);

}  // namespace rcpg::transport::verbs
