// The agreed-order engine: one per node. Pure protocol logic over a
// transport::Endpoint, so it runs unchanged on sim, shm and verbs.
//
// Data path (see docs/ARCHITECTURE.md for the full story):
//  1. send() appends a record to the node's staging ring, a local mirror of
//     its inbound ring at the sequencer; batches are RDMA-written there with
//     one WRITE_WITH_IMM per contiguous range.
//  2. The sequencer copies inbound records into its log, stamping global
//     sequence numbers. A sender learns that its inbound ring space is free
//     when its own records come back through the log (no credit messages).
//  3. The sequencer RDMA-writes contiguous log ranges into every member's
//     mirror at the same offsets; WRITE_WITH_IMM carries the new end.
//  4. Members deliver in order straight from their mirror (zero-copy) and
//     acknowledge received/delivered positions; the sequencer never
//     overwrites what a member has not delivered, and publishes a stability
//     watermark for SAFE.
//
// Threading: single-threaded; progress() must be called by the owner's loop.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "ordering/log_format.h"
#include "ordering/membership.h"
#include "ordering/ring.h"
#include "transport/fabric.h"

namespace rcpg::ordering {

using transport::NodeId;

struct NodeAddress {
  NodeId id = 0;
  std::string address;
};

struct EngineConfig {
  NodeId self = 0;
  std::vector<NodeAddress> nodes;          // every configured node, self included
  size_t log_bytes = size_t{8} << 20;      // replicated log ring (same on all nodes)
  size_t inbound_bytes = size_t{1} << 20;  // per-sender inbound ring (same on all nodes)
  size_t max_fragment = 0;                 // 0 = inbound_bytes / 4
  // Daemon mode (every node of a cluster must agree on both):
  // deliver each fragment of a large message as it comes (Delivery::flags,
  // ::total) instead of reassembling it, so the daemon never holds a whole
  // message and clients reassemble per (sender, pid, group)...
  bool deliver_fragments = false;
  // ...and reuse the log space of delivered entries only once release()
  // covers them, so clients can read payloads straight from the log mirror.
  bool hold_deliveries = false;

  // Failure detection and membership (docs/FAILURES.md). Times in
  // microseconds of `clock`.
  uint32_t heartbeat_interval_us = 10'000;  // a heartbeat to every peer this often
  uint32_t suspect_timeout_us = 100'000;    // silence after which a peer is suspected...
  // ...unless silences that long were seen from it lately: the timeout
  // adapts (3x the longest recent silence) up to this, so a loaded or
  // emulated host's scheduling stalls are not taken for failures. A peer
  // whose process dies is detected at once regardless (its connection
  // breaks).
  uint32_t suspect_timeout_max_us = 1'000'000;
  // The first view waits this long for every configured node, then forms
  // with a quorum; late nodes join through a view change.
  uint32_t form_timeout_us = 3'000'000;
  // A view needs a majority of the configured nodes; with two_node a
  // two-node cluster stays up on one node (like Corosync's two_node: without
  // fencing both halves of a split may go on).
  bool two_node = false;
  // Monotonic microseconds; empty = steady_clock. The simulation supplies
  // virtual time.
  std::function<uint64_t()> clock;
  // Distinguishes restarts of the same node id; 0 = derive one at start().
  uint32_t incarnation = 0;
  // The highest view epoch an earlier run of this node knew of (decided_epoch(),
  // kept on disk by rcpgd, as Corosync keeps its ring id). Without it, nodes
  // that restart while the one survivor of their old view is cut off could
  // number a view of theirs like one that survivor already has.
  uint32_t epoch_floor = 0;
};

// The payload of a View entry: one per member, ascending id.
struct ViewMember {
  uint32_t id = 0;
  uint32_t incarnation = 0;
  bool operator==(const ViewMember&) const = default;
};

enum class Membership : uint8_t {
  Forming,   // no view yet (start-up, or excluded and waiting to be added)
  Normal,    // in an installed view with a quorum
  Changing,  // wedged: a view change is under way
  NoQuorum,  // cannot reach a quorum: nothing is delivered, sends get TryAgain
};
const char* to_string(Membership m);

struct ViewState {
  uint32_t epoch = 0;  // 0 = none yet
  NodeId sequencer = 0;
  std::vector<ViewMember> members;
  Membership state = Membership::Forming;
  std::string why;  // for Changing / NoQuorum: what is missing, for logs and rcpg-tool
};

// What a member is handed, in delivery order. `data` points into registered
// memory (the log mirror, or the reassembly buffer of a fragmented message)
// and is valid only during the callback.
struct Delivery {
  EntryKind kind = EntryKind::Data;
  Guarantee guarantee = Guarantee::Agreed;
  NodeId sender = 0;
  uint32_t pid = 0;
  uint32_t group = 0;
  uint64_t gseq = 0;  // of the (last fragment of the) entry
  uint64_t sseq = 0;
  uint32_t aux = 0;
  const std::byte* data = nullptr;
  size_t len = 0;
  // With EngineConfig::deliver_fragments: kFragment|kFragFirst|kFragLast
  // for a part of a large message (data/len are this part; `total` is the
  // whole message's length). 0 for a whole message.
  uint16_t flags = 0;
  uint64_t total = 0;
  // Delivered ahead of a SAFE entry that is still waiting for stability
  // (UNORDERED / FIFO only; see docs/GUARANTEES.md).
  bool early = false;
  // hold_deliveries: once this delivery is handled, release(release_to) may
  // be called. Equal to `position` except for early deliveries, whose space
  // is freed only when in-order delivery passes them.
  uint64_t release_to = 0;
  // View entries: `aux` is the epoch, data/len an array of ViewMember.
  // `fresh` is set when this node starts a new history with this view (its
  // first view, or it rejoined after being excluded): what it knew about
  // other nodes before is void.
  bool fresh = false;
  // Log position just past the entry (past its last fragment): the same at
  // every member. A SAFE delivery happens only once every member's
  // received_position() has reached it (checked by the simulation tests).
  uint64_t position = 0;
};

enum class SendResult { Ok, TryAgain, NotReady, TooLarge };

struct EngineCounters {
  uint64_t sent_msgs = 0, sent_bytes = 0;
  uint64_t delivered_msgs = 0, delivered_bytes = 0;
  uint64_t sequenced_entries = 0;
  uint64_t inbound_batches = 0;       // RDMA writes of send batches
  uint64_t log_batches = 0;           // RDMA writes of log ranges (all members)
  uint64_t credit_stalls = 0;         // send() refused for lack of ring space
  uint64_t log_stalls = 0;            // sequencer waited for log space
  uint64_t zero_copy_deliveries = 0;  // delivered straight from the mirror
  uint64_t early_deliveries = 0;      // UNORDERED/FIFO delivered ahead of a waiting SAFE entry
  uint64_t zero_copy_sends = 0;       // payload left from the caller's buffer, no CPU copy
  uint64_t copied_sends = 0;          // send_zero_copy() that had to copy (at the sequencer)
  uint64_t reassembled = 0;           // fragmented messages delivered whole
  uint64_t protocol_errors = 0;
  // Membership
  uint64_t views_installed = 0;
  uint64_t suspicions = 0;          // peers suspected (silence or a broken connection)
  uint64_t resent_records = 0;      // our records re-sent to a new sequencer
  uint64_t duplicates_dropped = 0;  // re-sent records the sequencer had already logged
  uint64_t gap_fill_bytes = 0;      // log bytes fetched by RDMA READ from another survivor
  uint64_t last_failover_us = 0;    // first suspicion to the new view installed here
  uint64_t abandoned_msgs = 0;      // half-sent parts of ours dropped by a view change
  uint64_t restarted_msgs = 0;      // large messages streamed again after a view change
};

class Engine {
 public:
  using DeliverFn = std::function<void(const Delivery&)>;
  using LogFn = std::function<void(const std::string&)>;

  Engine(transport::Endpoint& ep, EngineConfig cfg, DeliverFn deliver, LogFn log = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Registers memory and starts connecting to the configured peers.
  bool start(std::string& why);
  // True once this node can send (it knows the sequencer's rings).
  bool can_send() const;
  // True once every configured peer is connected and introduced.
  bool all_connected() const;
  NodeId sequencer() const { return sequencer_; }
  NodeId self() const { return cfg_.self; }

  // Membership: the installed view and what the engine is doing about it.
  const ViewState& view() const { return view_; }
  bool quorate() const;
  // Nodes a view needs (majority of the configured, or 1 with two_node),
  // and how many we reach now (ourselves included).
  size_t quorum_size() const { return quorum(); }
  size_t reachable() const;
  // The highest epoch known to be decided (installed, or one that left us
  // out): worth keeping across restarts as EngineConfig::epoch_floor.
  uint32_t decided_epoch() const { return decided_epoch_; }

  // Multicasts `payload`. Messages up to max_fragment bytes are copied into
  // the staging ring at once. Larger ones are streamed in fragments by later
  // progress() calls: the caller keeps `payload` alive and unchanged until
  // large_send_pending() is false. TryAgain = back-pressure (ring full, or a
  // large message still streaming, or no quorum).
  SendResult send(EntryKind kind, Guarantee g, uint32_t group, uint32_t pid,
                  std::span<const std::byte> payload, uint32_t aux = 0);
  // A large message stays pending until all of it is in the log: a view
  // change may make the engine stream it again from the start.
  bool large_send_pending() const { return large_.active || large_.unlogged; }
  // Sequence number our next record gets (tests follow restarted messages).
  uint64_t next_sseq() const { return next_sseq_; }
  // Sends one part of a large message that the caller streams itself
  // (flags = kFragment plus kFragFirst / kFragLast; `total` = whole length,
  // chunk <= max_fragment). Receivers must run with deliver_fragments: the
  // parts of different (pid, group) streams of one node may interleave.
  SendResult send_part(Guarantee g, uint32_t group, uint32_t pid, uint16_t flags, uint32_t total,
                       std::span<const std::byte> chunk);
  size_t max_fragment() const { return cfg_.max_fragment; }

  // Zero-copy send: only the header goes through the staging ring; the
  // payload is RDMA-written into the sequencer's inbound ring straight from
  // `src` (registered with this endpoint, e.g. a client's buffer pool via
  // register_external). `src` bytes must stay unchanged until the send-done
  // callback reports `ticket`. flags = 0 for a whole message, else a part as
  // in send_part(). At the sequencer itself there is no wire: the payload is
  // copied (into the staging ring, from which it is sequenced) and the
  // ticket completes on the next progress().
  SendResult send_zero_copy(Guarantee g, uint32_t group, uint32_t pid, uint16_t flags,
                            uint32_t total, const transport::Region& src, size_t off, size_t len,
                            uint64_t ticket);
  using SendDoneFn = std::function<void(uint64_t ticket, bool ok)>;
  void on_send_done(SendDoneFn fn) { send_done_fn_ = std::move(fn); }
  // Fraction of the staging ring in use, 0..1 (drives CPG flow control).
  double send_backlog() const;

  // One round of work; returns true if anything happened. Deliveries are
  // made from inside this call.
  bool progress();
  // Blocks until the fabric may have work (spin-then-block belongs to the
  // caller: see transport::SpinWait).
  void wait(std::chrono::microseconds timeout) { ep_.wait(timeout); }

  // hold_deliveries: everything before `position` has been consumed by
  // whoever was handed pointers into the log; its space may be reused.
  void release(uint64_t position);
  // While paused, progress() delivers nothing (the daemon's clients are
  // full); everything else (sequencing, acks, replication) goes on.
  void pause_delivery(bool paused) { delivery_paused_ = paused; }
  bool delivery_paused() const { return delivery_paused_; }
  // The log mirror, for sharing with local processes (Region::fd).
  const transport::Region& log_region() const { return *log_; }

  const EngineCounters& counters() const { return counters_; }
  // Positions, for tests and tools.
  uint64_t received_position() const { return received_; }
  uint64_t delivered_position() const { return delivered_; }
  uint64_t stable_position() const { return stable_; }
  // Read-only views for the simulation tests' invariant checks.
  uint64_t log_tail() const { return log_writer_.tail; }          // sequencer: end of its log
  uint64_t staging_tail() const { return staging_writer_.tail; }  // end of what we sent
  // Sequencer: bytes of `sender`'s inbound ring already sequenced (0 elsewhere).
  uint64_t inbound_consumed(NodeId sender) const;
  bool failed() const { return failed_; }

 private:
  struct Peer;
  struct LargeSend {
    bool active = false;
    const std::byte* data = nullptr;
    size_t len = 0, off = 0;
    EntryKind kind = EntryKind::Data;
    Guarantee guarantee = Guarantee::Agreed;
    uint32_t group = 0, pid = 0, aux = 0;
    bool unlogged = false;  // appended, not all of it seen in the log yet
    uint64_t last_end = 0;  // staging position after its last fragment
  };
  // A zero-copy payload waiting to be posted: it fills staging positions
  // [pos, pos + len) but its bytes live in `src`.
  struct External {
    uint64_t pos = 0;
    size_t len = 0;
    const transport::Region* src = nullptr;
    size_t off = 0;
    uint64_t ticket = 0;
  };
  static constexpr size_t kMaxExternal = 256;
  static constexpr uint64_t kZeroCopyTag = uint64_t{1} << 63;
  struct Reassembly {
    std::vector<std::byte> buf;
    size_t filled = 0;
    bool active = false;
  };

  // engine.cpp: connections and introductions
  void handle_events();
  void handle_completions();
  void on_hello(Peer& p, const std::byte* data, size_t len);
  void send_hello(Peer& p);
  Peer* peer_by_conn(transport::ConnId c);
  Peer* peer_by_id(NodeId id);
  size_t slot_of(NodeId id) const;
  void fail(const std::string& why);
  // engine_detect.cpp: clock, heartbeats, suspicion, reconnection, quorum
  uint64_t clock_now() const;
  void tick();
  void suspect(Peer& p, const std::string& why);
  void heard(Peer& p);
  uint64_t suspect_after(const Peer& p) const;
  void connect_peer(Peer& p);
  uint64_t connect_patience_min() const;
  size_t quorum() const;
  uint64_t reach_mask() const;
  uint64_t round_timeout() const { return uint64_t{cfg_.suspect_timeout_us} * 4; }
  uint64_t gather_timeout() const { return cfg_.suspect_timeout_us; }
  void wedge(const std::string& why);
  // engine_view.cpp: the view-change protocol (membership.h)
  void on_control(Peer& p, const std::byte* data, size_t len);
  void on_prepare(Peer& p, const PrepareMsg& m);
  void on_state(Peer& p, const StateMsg& m);
  void on_propose(Peer& p, const ProposeMsg& m);
  void on_accepted(Peer& p, const AcceptedMsg& m);
  void on_commit(Peer& p, const CommitMsg& m);
  void on_resume(Peer& p, const ResumeMsg& m);
  template <typename Msg>
  bool send_ctrl(Peer& p, const Msg& m);
  StateMsg make_state(uint32_t epoch, const Ballot& b) const;
  bool value_ok(const ViewValue& v) const;
  bool accept_value(uint32_t epoch, const Ballot& b, const ViewValue& v);
  void drive_membership();
  bool wants_change(std::string& why);
  bool lowest_candidate() const;
  void start_round(const std::string& why);
  void advance_round();
  bool compose_value(ViewValue& v, std::string& why) const;
  void fail_round(const std::string& why, bool no_quorum);
  void commit_value(const ViewValue& v);
  // engine_install.cpp: installing a decided view
  void install(const ViewValue& v);
  void finish_install();
  void on_fill_done(bool ok);
  uint64_t gseq_after(uint64_t pos) const;
  struct LogScan {
    std::vector<uint64_t> seen;  // by slot
    std::vector<uint32_t> inc;
    std::vector<int64_t> frag;
    uint64_t own_end = 0;
    uint32_t last_view = 0;  // epoch of the last View entry
  };
  LogScan scan_log(uint64_t to) const;
  void skip_partial_message(uint64_t& resume);
  bool send_resume();
  void reannounce(Peer& p);
  void complete_externals();
  void complete_large();
  // engine_sender.cpp
  SendResult send_gate() const;
  // Copies `payload` after the header unless `copy` is false (zero-copy:
  // the bytes are posted from elsewhere). Returns the payload's staging
  // position, or 0 when the ring is full.
  uint64_t append_record(EntryKind kind, Guarantee g, uint32_t group, uint32_t pid, uint32_t aux,
                         uint16_t flags, std::span<const std::byte> payload, bool copy = true);
  bool post_staging(transport::ConnId conn, uint64_t from, uint64_t to, bool signal_end);
  void finish_send(uint64_t ticket, bool ok);
  bool continue_large_send();
  bool flush_staging();
  // engine_sequencer.cpp
  bool is_sequencer() const { return sequencer_ == cfg_.self; }
  bool sequence_inbound();
  bool append_view(const ViewValue& v);
  bool fragment_ok(const Peer& p, const EntryHeader& h) const;
  void commit_fragment(Peer& p, const EntryHeader& h);
  bool replicate();
  bool publish_stability();
  uint64_t log_limit() const;
  // engine_member.cpp
  bool deliver();
  bool deliver_entry(const EntryHeader& h, const std::byte* payload, uint64_t end,
                     bool early = false);
  void deliver_ahead(uint64_t from);
  bool entry_ok(const EntryHeader& h) const;
  bool configured(NodeId id) const;
  void on_view_entry(const std::byte* payload, size_t len);
  bool send_ack();
  // Log space this node no longer needs: delivered (and released, in
  // hold_deliveries mode).
  uint64_t consumed() const {
    return cfg_.hold_deliveries ? std::min(delivered_, released_) : delivered_;
  }
  // Posts ring positions [from, to) (wrapping) to the same offsets at the
  // remote ring; the last write carries imm(to) unless `imm` is nullopt.
  bool post_range(transport::ConnId conn, const transport::Region& local, size_t ring_size,
                  uint64_t from, uint64_t to, const transport::RemoteRegion& remote,
                  uint64_t remote_base, std::optional<ImmType> imm);

  transport::Endpoint& ep_;
  EngineConfig cfg_;
  DeliverFn deliver_fn_;
  LogFn log_fn_;
  NodeId sequencer_ = 0;
  size_t self_slot_ = 0;
  std::vector<Peer> peers_;  // one per configured node, self included (slot order)
  std::vector<size_t> conn_to_slot_;
  std::vector<uint8_t> slot_of_id_;  // by node id; 0xFF = not configured

  transport::Region* log_ = nullptr;      // log mirror (the master log at the sequencer)
  transport::Region* inbound_ = nullptr;  // one inbound ring per node, slot order
  transport::Region* staging_ = nullptr;  // local mirror of our inbound ring at the sequencer
  transport::Region* ctrl_ = nullptr;     // ack slots (16 B per node) written by members
  transport::Region* ack_src_ = nullptr;  // what we write into the sequencer's ack slot

  // sender
  RingWriter staging_writer_;
  uint64_t staging_posted_ = 0;  // bytes handed to the fabric
  uint64_t staging_credit_ = 0;  // bytes the sequencer has consumed
  // Staging end position of each record by sseq (sseq % size): seeing our
  // own record in the log proves the sequencer consumed the ring up to it.
  std::vector<uint64_t> staging_marks_;
  uint64_t next_sseq_ = 1;
  LargeSend large_;
  std::array<External, kMaxExternal> external_{};
  // queue of External in staging order: [head, post) posted, [post, tail) not yet
  uint64_t external_head_ = 0, external_tail_ = 0;
  std::array<uint64_t, kMaxExternal> copied_done_{};  // tickets completed without a wire
  size_t copied_done_count_ = 0;
  SendDoneFn send_done_fn_;

  // sequencer
  RingWriter log_writer_;
  uint64_t next_gseq_ = 1;
  uint64_t last_safe_end_ = 0;  // end of the newest SAFE entry in the log
  uint64_t published_stable_ = 0;
  bool view_appended_ = false;
  // The view we continued from when its View entry is not in the log (it
  // was decided and installed, but wedged again before anything was
  // appended): appended first, so that its members still see who left.
  bool missing_view_ = false;
  ViewValue prev_installed_{};
  uint32_t log_view_epoch_ = 0;  // epoch of the last View entry we delivered
  uint32_t fresh_epoch_ = 0;     // the view we last started afresh with

  // member
  uint64_t received_ = 0;
  uint64_t delivered_ = 0;
  uint64_t stable_ = 0;
  uint64_t released_ = 0;
  bool delivery_paused_ = false;
  uint64_t acked_received_ = 0, acked_delivered_ = 0;
  uint64_t expected_gseq_ = 1;
  std::vector<Reassembly> reassembly_;  // per sender slot
  // Positions of entries delivered early (ascending), skipped when in-order
  // delivery reaches them; bounded by kMaxEarly.
  static constexpr size_t kMaxEarly = 1024;
  std::vector<uint64_t> early_;
  std::vector<uint8_t> ahead_blocked_;  // per sender slot, scratch for deliver_ahead

  EngineCounters counters_;
  bool failed_ = false;

  // membership
  ViewState view_;
  uint64_t now_ = 0;  // clock at the start of this progress() round
  uint32_t incarnation_ = 0;
  uint64_t start_us_ = 0;
  std::mt19937_64 rng_;
  bool have_view_ = false;  // installed_ holds our view
  ViewValue installed_{};
  // Newest epoch whose value we learned, a view we were left out of too: a
  // later round must not run that epoch's Paxos instance again (its members
  // may all be gone, so nobody might report the value).
  uint32_t decided_epoch_ = 0;
  // Used by an earlier run of a node that answered our round (its epoch
  // floor): our rounds start above it. Unlike decided_epoch_ this does not
  // make us ignore that epoch's Commit (it may be a view of ours).
  uint32_t used_epoch_ = 0;
  bool wedged_ = false;  // from a promise (or quorum loss) until the next install
  uint32_t promised_epoch_ = 0;
  Ballot promised_{};
  uint64_t promised_at_us_ = 0;
  bool has_accepted_ = false;
  uint32_t accepted_epoch_ = 0;
  Ballot accepted_ballot_{};
  ViewValue accepted_{};
  uint64_t max_ballot_n_ = 0;
  struct Round {
    bool active = false;
    bool accepting = false;  // phase 2
    uint32_t epoch = 0;
    Ballot ballot{};
    uint64_t started_us = 0;
    uint64_t asked = 0, answered = 0, accepted = 0;  // slot masks
    uint64_t reliable = 0;                           // answered and counting towards a quorum
    std::vector<StateMsg> states;                    // by slot
    ViewValue value{};
  };
  Round round_;
  uint64_t want_since_us_ = 0;
  uint64_t retry_at_us_ = 0;
  uint64_t join_retry_at_us_ = 0;
  uint64_t first_suspect_us_ = 0;
  std::string last_state_line_;
  // installing
  bool filling_ = false;
  int fill_outstanding_ = 0;
  bool fill_failed_ = false;
  bool fresh_view_ = false;  // the next View delivered starts a new history
  // A view we continue into, but not through the one before it (see install).
  uint32_t fresh_at_epoch_ = 0;
  bool ever_installed_ = false;
  bool resume_pending_ = false;
  uint64_t resume_pos_ = 0;
  // Per slot, after a fresh start: skip the tail of a message begun before it.
  std::vector<uint8_t> partial_skip_;
  std::optional<ViewValue> pending_commit_;
  static constexpr uint64_t kFillTag = uint64_t{1} << 62;
  // zero-copy sends in flight are completed once the log shows them
  uint64_t external_post_ = 0;
};

}  // namespace rcpg::ordering
