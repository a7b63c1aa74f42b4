// Deterministic fault simulation of the ordering engine: K engines over one
// SimWorld on a virtual clock, with crashes (of any node, the sequencer
// included, also in the middle of a view change), restarts with a new
// incarnation, partitions, link flaps, slow links and stalled nodes, under a
// random workload of all four guarantees, Join/Leave entries and fragmented
// messages. One seed fixes everything, so a failing seed replays exactly.
//
// Every node incarnation writes a history (tests/checker/history_checker.h):
// its views, its deliveries (origin = "n<id>:<incarnation>", seq = the
// sender's count of accepted messages; UNORDERED -> u, FIFO -> f) and its
// accepted sends; a crash ends it with X, an engine-reported fresh view
// (rejoin after exclusion) puts an F before the V. At the end of a seed every
// fault stops, partitions heal, enough crashed nodes restart for a quorum,
// and the run goes on until every live node is in one Normal view holding
// exactly the live nodes and nothing moves any more; then the histories are
// checked with whole_views and quiesced_end (so: no loss for survivors).
//
// Checked at once, as actions happen: no engine fails; a node's delivered
// position never passes its received one; every delivered message was
// accepted by send() at its sender (the incarnation its current view names),
// with the same header and payload bytes; a View delivery lists ascending
// members, the receiver among them with its own incarnation; only View
// deliveries are marked fresh; a large send's buffer is not read after
// large_send_pending() turns false.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ordering/engine.h"
#include "tests/checker/history_checker.h"
#include "tests/ordering/sim_cluster.h"
#include "transport/sim/sim_world.h"

namespace rcpg::ordering::sim {

struct FaultOptions {
  int nodes = 3;
  uint64_t seed = 1;    // the SimWorld's scheduling seed
  EngineConfig engine;  // rings, timeouts; nodes/self/clock/incarnation are filled in
  uint32_t send_queue_depth = 512;
  uint64_t clock_step_us = 1;  // virtual microseconds per action
  bool trace = false;          // every action, delivery, fault and engine log line to stderr
};

struct FaultStats {
  uint64_t actions = 0, world_steps = 0, progress_calls = 0;
  uint64_t send_ok = 0, send_try_again = 0, send_not_ready = 0;
  uint64_t deliveries = 0, large_msgs = 0;
  uint64_t crashes = 0, crashes_in_view_change = 0, sequencer_crashes = 0, restarts = 0;
  uint64_t partitions = 0, flaps = 0, stalls = 0;
  uint64_t views = 0;          // distinct views (epochs) installed in the cluster
  uint64_t failovers = 0;      // views whose sequencer differs from the previous view's
  uint64_t fresh_rejoins = 0;  // View deliveries marked fresh after a node's first view
  // engine counters, summed over every engine that ran (crashed ones too)
  uint64_t views_installed = 0, suspicions = 0, resent_records = 0, duplicates_dropped = 0;
  uint64_t gap_fill_bytes = 0, early_deliveries = 0;
  uint64_t virtual_us = 0;  // virtual time the seed took
  void add(const FaultStats& o);
};

class FaultCluster {
 public:
  explicit FaultCluster(const FaultOptions& opt);
  ~FaultCluster();
  FaultCluster(const FaultCluster&) = delete;
  FaultCluster& operator=(const FaultCluster&) = delete;

  size_t size() const { return nodes_.size(); }
  NodeId id(size_t i) const { return nodes_[i].id; }
  bool alive(size_t i) const { return nodes_[i].engine != nullptr; }
  Engine& engine(size_t i) { return *nodes_[i].engine; }  // alive nodes only
  transport::SimWorld& world() { return world_; }
  uint64_t now_us() const { return now_us_; }
  size_t quorum() const;
  size_t alive_count() const;
  // The highest epoch any node has delivered a View of.
  uint32_t latest_epoch() const {
    return sequencer_of_epoch_.empty() ? 0 : sequencer_of_epoch_.rbegin()->first;
  }
  // Alive, in a view (not excluded or forming) no older than latest_epoch():
  // it carries the cluster's history on. The engine keeps nothing across a
  // restart, so if only nodes without it could form a quorum they would
  // start the epochs again from 1 (see run_fault_seed).
  bool current(size_t i) const;
  size_t non_current_alive() const;

  // --- single actions, each followed by the step checks --------------------
  bool step_world();
  bool progress(size_t i);  // no-op (false) for a dead node
  SendResult send(size_t i, const MsgSpec& spec);

  // --- faults ----------------------------------------------------------------
  // Kills the endpoint (peers see their connections break) and destroys the
  // engine; the node's history ends with X.
  void crash(size_t i);
  // A crashed node comes back: new endpoint, new engine, next incarnation,
  // a new history.
  void restart(size_t i);
  // Cuts every link between the two sides (node indices).
  void partition(const std::vector<size_t>& side);
  void cut(size_t i, size_t j);
  void heal(size_t i, size_t j);
  void heal_all();
  void set_delay(size_t i, size_t j, uint32_t steps);
  void clear_delays();
  void advance_clock(uint64_t us) { now_us_ += us; }
  void note_stall() { ++stalls_; }

  // --- the end of a run ------------------------------------------------------
  // Runs every live node (clock advancing) until all of them are in one
  // Normal view whose members are exactly the live nodes (with their
  // incarnations), then quiesces with the clock stopped. A violation if
  // that takes longer than `max_virtual_us`.
  bool converge(uint64_t max_virtual_us);
  // Runs the history checker over every history (whole_views, quiesced_end).
  void check_histories();

  bool ok() const { return violation_.empty(); }
  const std::string& violation() const { return violation_; }
  void fail(const std::string& what);
  FaultStats stats() const;
  const std::vector<checker::History>& histories() const { return histories_; }
  // Writes every history to dir/<name>.hist (for rcpg-check-history).
  bool write_histories(const std::string& dir, std::string& error) const;
  // One line per node: alive, view epoch/state/members, why.
  std::string describe() const;
  void trace(const std::string& line) const;

 private:
  // One incarnation's accepted messages (looked up by receivers by sseq).
  struct SenderLog {
    NodeId id = 0;
    uint32_t incarnation = 0;
    std::string name;  // "n<id>:<incarnation>"
    NodeId payload_key = 0;
    std::vector<SentMsg> sent;  // SentMsg::counter is the history seq
  };
  struct Node {
    NodeId id = 0;
    uint32_t incarnation = 0;  // the current (or last) one
    // What rcpgd keeps on disk: the highest epoch the node knew of
    // (Engine::decided_epoch), handed to its next incarnation.
    uint32_t epoch_on_disk = 0;
    std::unique_ptr<transport::Endpoint> ep;
    std::unique_ptr<Engine> engine;
    size_t history = 0;            // index into histories_
    size_t sender = 0;             // index into senders_
    std::vector<ViewMember> view;  // members of the last View delivered
    uint32_t view_epoch = 0;
    bool had_view = false;
    // Epoch the engine had installed when it first accepted a send before
    // any View was delivered here (0: none).
    uint32_t early_send_epoch = 0;
    uint64_t next_sseq = 1;
    std::vector<std::byte> scratch, large_hold;
    std::string stopped;  // the engine's "engine stopped: ..." line
  };

  void start_node(size_t i);
  void retire_engine(Node& n);  // adds its counters to the totals
  void on_delivery(size_t i, const Delivery& d);
  void on_view(size_t i, const Delivery& d);
  void after_action();
  void check_step();
  bool quiesce_frozen(size_t max_rounds);
  bool converged(std::string& why) const;
  static std::string member_name(NodeId id, uint32_t inc);

  FaultOptions opt_;
  EngineConfig cfg_;
  transport::SimWorld world_;
  std::vector<Node> nodes_;
  std::vector<checker::History> histories_;
  std::vector<SenderLog> senders_;
  std::map<std::pair<NodeId, uint32_t>, size_t> sender_index_;
  std::map<uint32_t, NodeId> sequencer_of_epoch_;
  std::string violation_;
  uint64_t now_us_ = 1'000'000;
  bool clock_frozen_ = false;
  bool in_progress_ = false;
  // stats
  uint64_t actions_ = 0, world_steps_ = 0, progress_calls_ = 0;
  uint64_t send_ok_ = 0, send_try_again_ = 0, send_not_ready_ = 0;
  uint64_t deliveries_ = 0, large_msgs_ = 0;
  uint64_t crashes_ = 0, crashes_in_change_ = 0, sequencer_crashes_ = 0, restarts_ = 0;
  uint64_t partitions_ = 0, flaps_ = 0, stalls_ = 0, fresh_rejoins_ = 0;
  EngineCounters retired_;  // counters of destroyed engines
};

// --- the seeded random run --------------------------------------------------

struct FaultSeedResult {
  bool ok = true;
  std::string violation;
  int nodes = 0;
  FaultStats stats;
  std::vector<checker::History> histories;  // kept when asked for (keep_histories)
};

// Runs one seed: derives the cluster, timeouts, workload and fault schedule
// from it, runs, converges, checks. `scale` stretches the run.
// `large_messages` = false leaves fragmented messages out of the workload
// (to explore past a known fragmentation problem).
FaultSeedResult run_fault_seed(uint64_t seed, bool trace = false, double scale = 1.0,
                               bool keep_histories = false, bool large_messages = true);

}  // namespace rcpg::ordering::sim
