// Deterministic simulation harness for the ordering engine: K engines over
// one SimWorld, a checker that verifies the engine's invariants after every
// single action (a world step, one engine's progress() call, one send()), and
// a seeded random workload. One seed fixes everything: the cluster shape, the
// ring sizes, the workload and the fabric's scheduling, so a failing seed
// replays exactly.
//
// Invariants checked (see SimCluster::check_step and on_delivery):
//  * total order: every node's delivered sequence of entries (kind, sender,
//    sseq, gseq, log position) - View, Join, Leave and Data alike - is a prefix
//    of the longest one; gseq and position strictly increase at every node;
//  * the first entry is the View (sequencer = lowest id, all configured nodes,
//    epoch 1, fresh); no engine ever suspects a peer or installs another view
//    (the engines run on a virtual clock advanced per action);
//  * FIFO, no duplicate, no gap: the k-th non-UNORDERED message a node
//    delivers from sender S is S's k-th accepted non-UNORDERED one (UNORDERED
//    data: exactly once), identified by the sseq of its last fragment, its kind, guarantee, group,
//    pid, length and payload bytes (payloads are a pure function of (sender, message counter));
//  * SAFE: when a SAFE message ending at log position P is delivered anywhere,
//    every node's received_position() is >= P; no node's stability watermark
//    is ahead of any node's received position;
//  * no overrun: sequencer log tail - any node's delivered position <= log
//    size; a sender's staged bytes - the bytes the sequencer consumed from its
//    inbound ring <= inbound size; delivered <= received <= log tail;
//  * the engines never fail or log anything but the first view's install (no
//    faults are injected here);
//  * no loss (at quiesce, at the end and now and then mid-run): every accepted
//    message is delivered exactly once at every node, and every node has
//    consumed the whole log;
//  * a large send's buffer is not read after large_send_pending() turns
//    false, a small one's not after send() returns (both are clobbered).
// UNORDERED and FIFO data may be delivered ahead of a SAFE entry waiting for
// stability, so the total-order and monotonic-position checks cover only
// AGREED/SAFE data and Join/Leave/View entries; FIFO (per sender, for all but
// UNORDERED data), exactly-once and no-loss cover everything. An early
// delivery must never be behind the in-order frontier.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ordering/engine.h"
#include "transport/sim/sim_world.h"

namespace rcpg::ordering::sim {

using transport::NodeId;

struct MsgSpec {
  EntryKind kind = EntryKind::Data;
  Guarantee guarantee = Guarantee::Agreed;
  uint32_t len = 0;  // Data only: Join/Leave carry a generated group name
  uint32_t group = 0;
  uint32_t pid = 0;
};

// One message as send() accepted it.
struct SentMsg {
  MsgSpec spec;
  uint64_t counter = 0;  // index among the sender's accepted messages
  uint64_t sseq = 0;     // expected sseq (of its last fragment)
};

// One delivery as one node saw it (recorded when ClusterOptions::record).
struct Delivered {
  EntryKind kind = EntryKind::Data;
  Guarantee guarantee = Guarantee::Agreed;
  NodeId sender = 0;
  uint64_t sseq = 0;
  uint64_t gseq = 0;
  uint64_t position = 0;
  size_t len = 0;
  uint64_t counter = 0;  // sender's message counter (Data/Join/Leave)
};

struct ClusterOptions {
  int nodes = 3;
  std::vector<NodeId> ids;      // node ids, ascending; empty = 1..nodes
  bool shuffle_config = false;  // every node lists the cluster in its own order
  uint64_t seed = 1;            // the SimWorld's scheduling seed (and replies')
  EngineConfig engine;          // ring sizes; nodes/self are filled in
  uint32_t send_queue_depth = 512;
  // Chance that a node answers a Data delivery with a send() of its own from
  // inside the delivery callback (as CPG applications do).
  double reply_chance = 0.0;
  uint32_t reply_max_len = 0;  // 0: up to 3 * max_fragment (fragmented replies too)
  // Check payloads over 64 KiB on a sample of words only (long tests).
  bool sampled_payload_check = false;
  // Virtual microseconds the engines' clock advances per action.
  uint64_t clock_step_us = 10;
  bool trace = false;   // print every action and delivery to stderr
  bool record = false;  // keep every delivery (Delivered) per node
};

struct ClusterStats {
  uint64_t actions = 0, world_steps = 0, progress_calls = 0;
  uint64_t send_ok = 0, send_try_again = 0, send_not_ready = 0;
  uint64_t deliveries = 0, safe_deliveries = 0, large_msgs = 0, replies = 0;
  uint64_t early_deliveries = 0;
  uint64_t credit_stalls = 0, log_stalls = 0, reassembled = 0, log_wraps = 0;
  void add(const ClusterStats& o);
};

class SimCluster {
 public:
  explicit SimCluster(const ClusterOptions& opt);
  ~SimCluster();
  SimCluster(const SimCluster&) = delete;
  SimCluster& operator=(const SimCluster&) = delete;

  size_t size() const { return nodes_.size(); }
  Engine& engine(size_t i) { return *nodes_[i].engine; }  // node index: ids ascending
  NodeId id(size_t i) const { return ids_[i]; }
  transport::SimWorld& world() { return world_; }
  const EngineConfig& config() const { return cfg_; }

  // --- single actions, each followed by the invariant check ---------------
  bool step_world();
  bool progress(size_t i);
  // Generates the payload from (node, its next message counter) and sends it;
  // an Ok is remembered for the loss/FIFO/content checks.
  SendResult send(size_t i, const MsgSpec& spec);

  // --- compound helpers ----------------------------------------------------
  // Steps (each checked) until idle, max_steps, or the world's clock passed
  // now_limit (the world jumps its clock when only delayed actions are left:
  // stopping there keeps them held back).
  void run_world(size_t max_steps, uint64_t now_limit = UINT64_MAX);
  void progress_all();
  // Until every engine is connected and has delivered the View.
  bool connect_all(size_t max_rounds = 1000);
  // Runs world + every engine until nothing moves and no large send is
  // pending; a violation if that takes more than max_rounds.
  bool quiesce(size_t max_rounds = 100000);
  // The final invariant: nothing accepted was lost anywhere.
  void check_no_loss();

  bool ok() const { return violation_.empty(); }
  const std::string& violation() const { return violation_; }
  ClusterStats stats() const;
  const std::vector<Delivered>& delivered(size_t i) const { return nodes_[i].record; }
  const std::vector<SentMsg>& sent(size_t i) const { return nodes_[i].sent; }
  // Entries node i delivered (all kinds and guarantees).
  size_t delivered_count(size_t i) const { return nodes_[i].delivered_total; }

  // Test-only: feed the checker a delivery as if node i's engine made it (to
  // prove the checker catches bad deliveries).
  void inject_delivery(size_t i, const Delivery& d) { on_delivery(i, d); }

  // Payload bytes of (sender, counter): what receivers verify against.
  static std::vector<std::byte> make_payload(const MsgSpec& spec, NodeId sender, uint64_t counter);
  static void fill_payload(const MsgSpec& spec, NodeId sender, uint64_t counter,
                           std::vector<std::byte>& out);
  // stride > 1 checks only every stride-th 8-byte word (and the tail).
  static bool payload_matches(const MsgSpec& spec, NodeId sender, uint64_t counter,
                              const std::byte* data, size_t len, size_t stride = 1);

 private:
  struct RefEntry {
    EntryKind kind;
    NodeId sender;
    uint64_t sseq, gseq, position;
    bool operator==(const RefEntry&) const = default;
  };
  struct Node {
    std::unique_ptr<transport::Endpoint> ep;
    std::unique_ptr<Engine> engine;
    std::vector<SentMsg> sent;          // accepted messages, in order
    uint64_t next_sseq = 1;             // predicted sseq of the next record
    std::vector<std::byte> scratch;     // payload of the send being made (reused)
    std::vector<std::byte> large_hold;  // payload of a large send in progress
    // receiver state
    size_t next_index = 0;  // next index in the total order (ordered entries only)
    size_t delivered_total = 0;
    uint64_t last_gseq = 0, last_position = 0;
    std::vector<uint64_t> from;             // messages delivered from each sender (slot)
    std::vector<std::vector<uint8_t>> got;  // per sender: message index delivered?
    std::vector<size_t> fifo_next;  // per sender: first non-UNORDERED message not yet delivered
    std::vector<Delivered> record;
  };

  void on_delivery(size_t i, const Delivery& d);
  SendResult send_now(size_t i, const MsgSpec& spec);  // no invariant check
  void maybe_reply(size_t i);
  size_t index_of(NodeId id) const;  // nodes_.size() if unknown
  void after_action();
  void check_step();
  void fail(const std::string& what);
  void trace(const std::string& line) const;
  size_t max_fragment() const { return cfg_.max_fragment; }

  ClusterOptions opt_;
  EngineConfig cfg_;
  std::vector<NodeId> ids_;
  transport::SimWorld world_;
  std::mt19937_64 reply_rng_;
  std::vector<Node> nodes_;
  std::vector<RefEntry> ref_;  // the longest delivered sequence so far
  std::string violation_;
  uint64_t actions_ = 0, world_steps_ = 0, progress_calls_ = 0;
  uint64_t send_ok_ = 0, send_try_again_ = 0, send_not_ready_ = 0;
  uint64_t deliveries_ = 0, safe_deliveries_ = 0, large_msgs_ = 0, replies_ = 0;
  bool in_progress_ = false;
  uint64_t now_us_ = 1'000'000;  // the engines' virtual clock
};

// --- the seeded random workload -------------------------------------------

struct SeedResult {
  bool ok = true;
  std::string violation;
  int nodes = 0;
  ClusterStats stats;
};

// Runs one seed: derives the cluster shape, ring sizes and workload from it,
// drives a random interleaving of world steps, progress calls (per-node
// speeds: some nodes are slow) and sends, then quiesces and checks for loss.
// `scale` stretches the run (more actions for the same seed).
SeedResult run_random_seed(uint64_t seed, bool trace = false, double scale = 1.0);

// splitmix64: seeds the derived generators.
uint64_t mix64(uint64_t x);

// The seeded choices of a random run.
class Rng {
 public:
  explicit Rng(uint64_t seed) : g_(seed) {}
  uint64_t between(uint64_t lo, uint64_t hi) {  // inclusive
    return std::uniform_int_distribution<uint64_t>(lo, hi)(g_);
  }
  double unit() { return std::uniform_real_distribution<double>(0.0, 1.0)(g_); }
  bool chance(double p) { return unit() < p; }
  // An index drawn with the given weights (not all zero).
  size_t weighted(const std::vector<uint32_t>& w) {
    uint64_t total = 0;
    for (uint32_t x : w) total += x;
    uint64_t r = between(0, total - 1);
    for (size_t i = 0; i < w.size(); ++i) {
      if (r < w[i]) return i;
      r -= w[i];
    }
    return w.size() - 1;
  }

 private:
  std::mt19937_64 g_;
};

// Names for traces and messages.
const char* kind_name(EntryKind k);
const char* guarantee_name(Guarantee g);
const char* result_name(SendResult r);

}  // namespace rcpg::ordering::sim
