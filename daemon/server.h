// rcpgd's core: one node's engine serving the local CPG clients.
//
// A single thread runs everything: engine progress, the clients' request
// rings, deliveries into their event rings and the control sockets. While
// there is work it spins; when idle it sets the `sleeping` flags of the
// request rings (clients then ring the doorbell eventfd), re-checks, and
// blocks in epoll on the fabric's wait_fd, the listening socket, the client
// sockets, the doorbell and a signalfd.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "daemon/client.h"
#include "daemon/config.h"
#include "daemon/epoch_store.h"
#include "daemon/groups.h"
#include "daemon/membership.h"
#include "daemon/segment_registrar.h"
#include "daemon/status_request.h"
#include "daemon/sync_barrier.h"
#include "ordering/engine.h"
#include "transport/fabric.h"

namespace rcpg::daemon {

using LogFn = std::function<void(const std::string&)>;

// CPG accepts any guarantee value and treats unknown ones as AGREED.
inline ordering::Guarantee guarantee_of(uint32_t g) {
  return g <= static_cast<uint32_t>(ordering::Guarantee::Safe) ? static_cast<ordering::Guarantee>(g)
                                                               : ordering::Guarantee::Agreed;
}

// Whether a handle's messages go out (Corosync accepts and drops the rest).
inline bool sends(const Client& c) {
  return c.handle.phase == Phase::Joining || c.handle.phase == Phase::Member;
}

// Largest message a client may send (CPG's own limit is 1 GiB as well).
inline constexpr uint64_t kMaxMessageBytes = uint64_t{1} << 30;

struct ServerCounters {
  uint64_t clients_accepted = 0, clients_refused = 0, protocol_violations = 0;
  uint64_t joins = 0, leaves = 0, procdowns = 0;
  uint64_t deliveries_inline = 0, deliveries_log = 0;  // per client record
  uint64_t bytes_inline = 0, bytes_log = 0;            // copies made / avoided
  // ZcbRecords: parts that left from the client's pool without a CPU copy
  // and parts the engine (at the sequencer) or the fallback path copied.
  uint64_t zcb_msgs = 0, zcb_try_again = 0, zcb_failed = 0;
  uint64_t zcb_parts_zero_copy = 0, zcb_bytes_not_copied = 0;
  uint64_t zcb_parts_copied = 0, zcb_bytes_copied = 0;
  uint64_t zcb_registered = 0;  // segments registered (off the loop) for zero-copy sends
  uint64_t zcb_register_failures = 0;
  uint64_t zcb_held_after_exit = 0;  // segments kept registered for in-flight sends
  uint64_t confchgs = 0, totem_confchgs = 0;
  // Membership (server_membership.cpp)
  uint64_t views_applied = 0;
  uint64_t nodedown_members = 0;                      // processes removed because their node left
  uint64_t nodeup_members = 0;                        // processes learned from sync announcements
  uint64_t sync_announcements = 0, sync_markers = 0;  // entries we sent
  // Data not handed out because its sender and this node are on two sides
  // of a join-list sync that has not reached its merge point.
  uint64_t data_before_merge = 0;
  uint64_t quorum_losses = 0, exclusions = 0;
  uint64_t try_again_no_quorum = 0;    // joins/leaves refused while blocked
  uint64_t leaves_before_sync = 0;     // leaves of members a sync had not told us yet
  uint64_t data_from_non_members = 0;  // dropped: the sender is not (yet) a member here
  uint64_t unknown_group_entries = 0, bad_membership_entries = 0;
  uint64_t delivery_pauses = 0, ring_overflows = 0;
  uint64_t wakes = 0, sleeps = 0, rounds = 0;
};

class Server {
 public:
  Server(Config cfg, transport::ClusterKey key, std::string socket_path, LogFn log);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Creates the endpoint, starts the engine, listens on the socket.
  bool start(std::string& why);
  // Serves until SIGTERM/SIGINT (returns 0) or an engine failure (returns 1).
  int run();

  // The Status request's report (text, or JSON when `json`).
  std::string status_report(StatusWhat what, bool json) const;

 private:
  struct PendingOp {  // our own Join/Leave entries, in submission order
    uint64_t serial;
    ordering::EntryKind kind;
    uint32_t pid;
    uint32_t group;  // node-local index
  };
  struct DeferredLeave {  // PROCDOWN leave waiting for engine credit
    uint64_t serial;
    Handle handle;
  };
  // A client segment registered with the endpoint for zero-copy sends. It
  // outlives its client while engine tickets are outstanding (the NIC may
  // still read it); the slot is reused only once it is deregistered. The
  // engine ticket of every part sent from it is its index + 1.
  struct ZcSource {
    transport::Region* region = nullptr;
    Client* owner = nullptr;  // null once the client is gone
    uint32_t outstanding = 0;
  };

  // server.cpp: sockets, epoll, the loop
  bool open_listener(std::string& why);
  void accept_clients();
  void poll_control(int timeout_ms);
  void client_readable(Client& c);
  void hangup(Client& c);
  void destroy(Client& c);
  void idle_block();
  void log(const std::string& line) const;
  Client* client_by_tag(uint64_t tag);

  // server_control.cpp: control requests
  void handle_request(Client& c, const std::byte* msg, size_t len);
  void reply(Client& c, ipc::MsgType type, const void* body, size_t len, const int* fds = nullptr,
             size_t nfds = 0);
  void reply_status(Client& c, ipc::MsgType type, ipc::Status s);
  void on_hello(Client& c, const std::byte* body, size_t len);
  void finish_hello(Client& c);  // the reply, once the segment is registered
  void on_join(Client& c, const ipc::GroupName& g);
  void on_leave(Client& c, const ipc::GroupName& g);
  void on_finalize(Client& c);
  void on_membership_get(Client& c, const ipc::GroupName& g);
  void on_iterate(Client& c, const std::byte* body, size_t len);
  void run_deferred(Client& c);
  bool submit_leave(uint64_t serial, Handle& h, uint32_t reason);
  void procdown(Client& c);
  void violation(Client& c, const std::string& what);

  // server_data.cpp: request rings, deliveries, releases
  bool process_requests(Client& c, size_t budget);
  enum class Outcome { Done, Busy, Bad };
  Outcome forward_mcast(Client& c, const ipc::RecordHeader& h, const std::byte* body);
  Outcome forward_chunk(Client& c, const ipc::RecordHeader& h, const std::byte* body);
  Outcome forward_zcb(Client& c, const ipc::RecordHeader& h, const std::byte* body);
  Outcome stream_zcb(Client& c);
  ordering::SendResult send_zcb_part(Client& c, uint16_t flags, size_t len);
  void on_send_done(uint64_t ticket, bool ok);
  void complete_zcb(Client& c);
  void finish_zcb(Client& c, uint64_t ticket, ipc::Status s);
  // Queues the registration of c's segment; false: it cannot (copy path).
  bool register_segment(Client& c);
  void adopt_segments();
  void detach_segment(Client& c);
  void release_idle_sources();
  void on_delivery(const ordering::Delivery& d);
  void on_membership(const ordering::Delivery& d);
  Client* match_own(const ordering::Delivery& d);
  void deliver_data(const ordering::Delivery& d, Group& g);
  void send_confchg(Client& c, const Confchg& ev);
  void send_confchg_to_group(const Confchg& ev);
  void send_totem(Client& c);
  bool make_room(Client& c, size_t body);
  void after_write(Client& c);
  void wake_dirty();
  void update_release();
  void update_pause();
  void update_flow(Client& c);
  bool retry_deferred_leaves();

  // server_membership.cpp: views, quorum and the join-list sync
  void on_view(const ordering::Delivery& d);
  void on_sync(const ordering::Delivery& d);
  // Each round: follows the engine's membership state (logs changes, blocks
  // or unblocks sends, drops remote members when the quorum is lost).
  void watch_membership();
  // Sends pending sync announcements, then the marker; true if any went out.
  bool send_sync();
  bool send_marker();
  // Writes the engine's decided epoch to the state file when it grew.
  void keep_epoch();
  // The merge point of the sync: applies the other side's held entries.
  void merge_held();
  void drop_remote(const std::function<bool(uint32_t)>& gone);
  void set_block(ipc::MembershipBlock b);
  bool blocked() const { return block_ != ipc::MembershipBlock::Open; }

  Config cfg_;
  transport::ClusterKey key_;
  std::string socket_path_;
  LogFn log_;
  SegmentGeometry geo_;
  size_t max_fragment_ = 0;
  size_t pause_reserve_ = 0;  // free event-ring bytes every client keeps

  std::unique_ptr<transport::Endpoint> ep_;
  std::unique_ptr<ordering::Engine> engine_;
  std::unique_ptr<SegmentRegistrar> registrar_;  // before ep_ goes
  std::vector<SegmentRegistrar::Done> registered_;
  const std::byte* log_base_ = nullptr;
  size_t log_size_ = 0;
  int log_ro_fd_ = -1;  // read-only reopening of the log memfd, for clients

  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  int doorbell_fd_ = -1;
  int signal_fd_ = -1;
  bool stop_ = false;

  std::vector<std::unique_ptr<Client>> clients_;  // by slot
  std::vector<uint32_t> free_slots_;
  std::vector<Client*> active_;  // every connected or closing client, for the sweep
  std::vector<Client*> dirty_;
  uint64_t next_serial_ = 1;
  size_t live_clients_ = 0;

  GroupTable groups_;
  LocalRules rules_;
  std::deque<PendingOp> pending_ops_;
  std::vector<DeferredLeave> deferred_leaves_;

  std::vector<ZcSource> zc_sources_;
  std::vector<uint32_t> free_zc_sources_;
  bool zc_idle_ = false;  // a detached source may have no tickets left

  // The last View applied (its epoch is the CPG ring id's seq, its
  // sequencer the ring id's nodeid); empty before the first.
  std::vector<ordering::ViewMember> view_;
  uint32_t view_epoch_ = 0;
  uint32_t view_sequencer_ = 0;
  ordering::Membership last_state_ = ordering::Membership::Forming;
  ipc::MembershipBlock block_ = ipc::MembershipBlock::Open;
  // The remote members were removed locally (excluded from a view); the
  // view that takes this node back is fresh and re-learns them.
  bool remote_dropped_ = false;
  // Sync: announce every local group again, then send the marker for
  // marker_epoch_ (0: none due).
  bool announce_pending_ = false;
  std::vector<uint32_t> announce_groups_;  // local indexes still to announce
  uint32_t marker_epoch_ = 0;
  SyncBarrier barrier_;
  // The highest decided epoch on disk; a write that failed is tried again
  // only at the next epoch (never every round).
  EpochStore epochs_{"", 0};
  uint32_t epoch_tried_ = 0;
  // merge_held() is applying entries: a Leave of a process never announced
  // left before its node's announcement.
  bool applying_held_ = false;
  // Log positions restart at the cut when this node begins a new history
  // (fresh view) and may go down. Clients track what they hold by position,
  // so until delivery passes the highest position of the old history,
  // deliveries are copied instead of handed out as log references.
  uint64_t max_position_ = 0;
  uint64_t ref_floor_ = 0;
  std::chrono::steady_clock::time_point started_;
  ServerCounters counters_;
  std::vector<std::byte> rx_buf_;
  std::vector<std::byte> tx_buf_;
};

}  // namespace rcpg::daemon
