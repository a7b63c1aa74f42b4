#include "tests/ordering/sim_cluster.h"

#include <algorithm>
#include <cstring>
#include <iostream>
#include <limits>
#include <optional>
#include <set>
#include <sstream>

namespace rcpg::ordering::sim {

using namespace rcpg::transport;

uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

const char* kind_name(EntryKind k) {
  switch (k) {
    case EntryKind::Data:
      return "Data";
    case EntryKind::Join:
      return "Join";
    case EntryKind::Leave:
      return "Leave";
    case EntryKind::View:
      return "View";
    case EntryKind::Pad:
      return "Pad";
  }
  return "?";
}

const char* guarantee_name(Guarantee g) {
  switch (g) {
    case Guarantee::Unordered:
      return "UNORDERED";
    case Guarantee::Fifo:
      return "FIFO";
    case Guarantee::Agreed:
      return "AGREED";
    case Guarantee::Safe:
      return "SAFE";
  }
  return "?";
}

const char* result_name(SendResult r) {
  switch (r) {
    case SendResult::Ok:
      return "Ok";
    case SendResult::TryAgain:
      return "TryAgain";
    case SendResult::NotReady:
      return "NotReady";
    case SendResult::TooLarge:
      return "TooLarge";
  }
  return "?";
}

namespace {

constexpr uint32_t kReplyPid = 999;  // marks sends made from a delivery callback

uint64_t payload_key(NodeId sender, uint64_t counter) {
  return mix64((uint64_t{sender} << 48) ^ counter ^ 0x70a710adull);
}

std::string group_name(NodeId sender, uint64_t counter) {
  // A CPG group name (at most 128 bytes): a pure function of (sender, counter).
  uint64_t k = payload_key(sender, counter);
  std::string name = "group-" + std::to_string(k % 13);
  name.append(static_cast<size_t>((k >> 8) % 24), char('a' + (k >> 16) % 26));
  return name;
}

}  // namespace

void ClusterStats::add(const ClusterStats& o) {
  actions += o.actions;
  world_steps += o.world_steps;
  progress_calls += o.progress_calls;
  send_ok += o.send_ok;
  send_try_again += o.send_try_again;
  send_not_ready += o.send_not_ready;
  deliveries += o.deliveries;
  safe_deliveries += o.safe_deliveries;
  early_deliveries += o.early_deliveries;
  large_msgs += o.large_msgs;
  replies += o.replies;
  credit_stalls += o.credit_stalls;
  log_stalls += o.log_stalls;
  reassembled += o.reassembled;
  log_wraps += o.log_wraps;
}

namespace {

// Word i (8 bytes) of a Data payload: cheap, and differs per byte position,
// sender and counter.
inline uint64_t payload_word(uint64_t key, size_t i) {
  uint64_t x = key ^ (i * 0x9e3779b97f4a7c15ull);
  x ^= x >> 29;
  x *= 0xbf58476d1ce4e5b9ull;
  return x ^ (x >> 32);
}

}  // namespace

std::vector<std::byte> SimCluster::make_payload(const MsgSpec& spec, NodeId sender,
                                                uint64_t counter) {
  std::vector<std::byte> out;
  fill_payload(spec, sender, counter, out);
  return out;
}

void SimCluster::fill_payload(const MsgSpec& spec, NodeId sender, uint64_t counter,
                              std::vector<std::byte>& out) {
  if (spec.kind == EntryKind::Join || spec.kind == EntryKind::Leave) {
    std::string name = group_name(sender, counter);
    auto bytes = std::as_bytes(std::span(name));
    out.assign(bytes.begin(), bytes.end());
    return;
  }
  out.resize(spec.len);  // keeps the capacity of a reused buffer
  uint64_t key = payload_key(sender, counter);
  size_t words = out.size() / 8;
  for (size_t i = 0; i < words; ++i) {
    uint64_t w = payload_word(key, i);
    std::memcpy(out.data() + i * 8, &w, 8);
  }
  if (size_t rest = out.size() % 8) {
    uint64_t w = payload_word(key, words);
    std::memcpy(out.data() + words * 8, &w, rest);
  }
}

bool SimCluster::payload_matches(const MsgSpec& spec, NodeId sender, uint64_t counter,
                                 const std::byte* data, size_t len, size_t stride) {
  if (spec.kind == EntryKind::Join || spec.kind == EntryKind::Leave) {
    std::string name = group_name(sender, counter);
    return len == name.size() && (len == 0 || std::memcmp(data, name.data(), len) == 0);
  }
  if (len != spec.len) return false;
  if (len > 0 && data == nullptr) return false;
  uint64_t key = payload_key(sender, counter);
  size_t words = len / 8;
  uint64_t diff = 0;
  for (size_t i = 0; i < words; i += stride) {
    uint64_t got;
    std::memcpy(&got, data + i * 8, 8);
    diff |= got ^ payload_word(key, i);
  }
  if (words > 0) {  // the last whole word always
    uint64_t got;
    std::memcpy(&got, data + (words - 1) * 8, 8);
    diff |= got ^ payload_word(key, words - 1);
  }
  if (size_t rest = len % 8) {
    uint64_t w = payload_word(key, words), got = 0;
    std::memcpy(&got, data + words * 8, rest);
    uint64_t mask = (uint64_t{1} << (8 * rest)) - 1;  // little-endian: low bytes first
    diff |= (got ^ w) & mask;
  }
  return diff == 0;
}

SimCluster::SimCluster(const ClusterOptions& opt)
    : opt_(opt), cfg_(opt.engine), world_(opt.seed), reply_rng_(mix64(opt.seed ^ 0x2e91u)) {
  if (cfg_.max_fragment == 0) cfg_.max_fragment = cfg_.inbound_bytes / 4;
  // Virtual time, advanced per action: heartbeats flow as in a real run, but
  // no real-time slowness (sanitizers, a loaded machine) can make a node
  // look dead, and a run replays exactly. Nothing fails here, so a node that
  // progresses rarely must never be suspected either.
  cfg_.clock = [this] { return now_us_; };
  cfg_.suspect_timeout_us = std::numeric_limits<uint32_t>::max() / 4;
  size_t n = static_cast<size_t>(opt.nodes);
  ids_ = opt.ids;
  if (ids_.empty())
    for (size_t i = 1; i <= n; ++i) ids_.push_back(NodeId(i));
  if (ids_.size() != n || !std::is_sorted(ids_.begin(), ids_.end()) ||
      std::adjacent_find(ids_.begin(), ids_.end()) != ids_.end()) {
    fail("ClusterOptions::ids must hold `nodes` distinct ids in ascending order");
    return;
  }
  cfg_.nodes.clear();
  for (NodeId id : ids_) cfg_.nodes.push_back({id, "node" + std::to_string(id)});
  nodes_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    NodeId id = ids_[i];
    EndpointConfig ec;
    ec.node_id = id;
    ec.listen_address = "node" + std::to_string(id);
    ec.send_queue_depth = opt.send_queue_depth;
    ec.log = [this, id](std::string_view line) {
      fail("node " + std::to_string(id) + " endpoint logged: " + std::string(line));
    };
    nodes_[i].ep = world_.create_endpoint(ec);
    EngineConfig c = cfg_;
    c.self = id;
    if (opt.shuffle_config) std::shuffle(c.nodes.begin(), c.nodes.end(), reply_rng_);
    nodes_[i].engine = std::make_unique<Engine>(
        *nodes_[i].ep, c, [this, i](const Delivery& d) { on_delivery(i, d); },
        [this, id](const std::string& line) {
          // The one membership event of a run without faults: the first view.
          if (line.rfind("installed view 1 ", 0) == 0) return;
          fail("node " + std::to_string(id) + " engine logged: " + line);
        });
    nodes_[i].from.assign(n, 0);
    nodes_[i].got.assign(n, {});
    nodes_[i].fifo_next.assign(n, 0);
  }
  for (size_t i = 0; i < n; ++i) {
    std::string why;
    if (!nodes_[i].engine->start(why)) fail("node " + std::to_string(ids_[i]) + " start: " + why);
  }
}

SimCluster::~SimCluster() = default;

size_t SimCluster::index_of(NodeId id) const {
  for (size_t i = 0; i < ids_.size(); ++i)
    if (ids_[i] == id) return i;
  return ids_.size();
}

void SimCluster::fail(const std::string& what) {
  if (!violation_.empty()) return;
  violation_ = "action " + std::to_string(actions_) + " (world now " +
               std::to_string(world_.now()) + "): " + what;
  if (opt_.trace) std::cerr << "VIOLATION " << violation_ << "\n";
}

void SimCluster::trace(const std::string& line) const {
  if (opt_.trace) std::cerr << "[" << actions_ << "] " << line << "\n";
}

bool SimCluster::step_world() {
  uint64_t executed = world_.actions_executed();
  bool r = world_.step();
  ++world_steps_;
  if (opt_.trace)
    trace("world step -> " +
          std::string(!r                                      ? "idle"
                      : world_.actions_executed() != executed ? "ran"
                                                              : "clock jump") +
          " (executed " + std::to_string(world_.actions_executed()) + ", now " +
          std::to_string(world_.now()) + ")");
  after_action();
  return r;
}

bool SimCluster::progress(size_t i) {
  if (opt_.trace) trace("progress node " + std::to_string(ids_[i]));
  in_progress_ = true;
  bool r = nodes_[i].engine->progress();
  in_progress_ = false;
  ++progress_calls_;
  after_action();
  return r;
}

SendResult SimCluster::send(size_t i, const MsgSpec& spec) {
  SendResult r = send_now(i, spec);
  after_action();
  return r;
}

SendResult SimCluster::send_now(size_t i, const MsgSpec& spec) {
  Node& n = nodes_[i];
  NodeId id = ids_[i];
  uint64_t counter = n.sent.size();
  std::vector<std::byte>& payload = n.scratch;
  fill_payload(spec, id, counter, payload);
  MsgSpec s = spec;
  s.len = static_cast<uint32_t>(payload.size());
  SendResult r = n.engine->send(s.kind, s.guarantee, s.group, s.pid, payload);
  if (r == SendResult::Ok) {
    uint64_t frags = s.len > max_fragment() ? (s.len + max_fragment() - 1) / max_fragment() : 1;
    n.sent.push_back({s, counter, n.next_sseq + frags - 1});
    n.next_sseq += frags;
    ++send_ok_;
    if (s.len > max_fragment()) {
      // The engine streams it from our buffer in later progress() calls
      // (whatever large_hold still held, the engine is done with).
      std::swap(n.large_hold, payload);
      ++large_msgs_;
    }
  } else if (r == SendResult::TryAgain) {
    ++send_try_again_;
  } else if (r == SendResult::NotReady) {
    ++send_not_ready_;
  }
  if (opt_.trace) {
    std::ostringstream os;
    os << "send node " << id << " " << kind_name(s.kind) << " " << guarantee_name(s.guarantee)
       << " len " << s.len << " -> " << result_name(r);
    if (r == SendResult::Ok) os << " (msg #" << counter << ", sseq " << n.sent.back().sseq << ")";
    trace(os.str());
  }
  // A small payload must have been copied: scribble over it before it goes.
  if (!payload.empty()) std::memset(payload.data(), 0xA5, payload.size());
  return r;
}

void SimCluster::maybe_reply(size_t i) {
  // Called from inside node i's delivery callback: the engine must accept a
  // send() there. No invariant check here (the engine is mid-progress()).
  if (opt_.reply_chance <= 0.0 || !in_progress_) return;
  if (std::uniform_real_distribution<double>(0, 1)(reply_rng_) >= opt_.reply_chance) return;
  MsgSpec spec;
  uint64_t r = reply_rng_();
  spec.guarantee = static_cast<Guarantee>(r % 4);
  size_t max_len = opt_.reply_max_len ? opt_.reply_max_len : r & 0x100 ? 3 * max_fragment() : 64;
  spec.len = static_cast<uint32_t>((r >> 9) % (max_len + 1));
  spec.group = 7;
  spec.pid = kReplyPid;
  if (send_now(i, spec) == SendResult::Ok) ++replies_;
}

void SimCluster::after_action() {
  ++actions_;
  now_us_ += opt_.clock_step_us;
  for (Node& n : nodes_)
    if (!n.large_hold.empty() && !n.engine->large_send_pending()) {
      // The engine said it is done with the buffer: clobber it (a late read
      // would deliver wrong bytes) and keep it for the next large send.
      std::memset(n.large_hold.data(), 0x5A, n.large_hold.size());
      n.large_hold.clear();
    }
  check_step();
}

void SimCluster::check_step() {
  if (!violation_.empty()) return;
  const Engine& seq = *nodes_[0].engine;
  uint64_t tail = seq.log_tail();
  uint64_t min_received = UINT64_MAX;
  for (const Node& n : nodes_) min_received = std::min(min_received, n.engine->received_position());
  for (size_t j = 0; j < nodes_.size(); ++j) {
    const Engine& e = *nodes_[j].engine;
    auto who = [this, j] { return "node " + std::to_string(ids_[j]); };
    uint64_t d = e.delivered_position(), r = e.received_position();
    if (e.failed()) return fail(who() + " engine failed");
    if (e.counters().suspicions != 0 || e.counters().views_installed > 1)
      return fail(who() + " suspected a peer or changed views in a run without faults");
    if (d > r)
      return fail(who() + " delivered position " + std::to_string(d) + " > received " +
                  std::to_string(r));
    if (r > tail)
      return fail(who() + " received position " + std::to_string(r) + " > sequencer's log tail " +
                  std::to_string(tail));
    if (tail - d > cfg_.log_bytes)
      return fail("log overrun: sequencer's tail " + std::to_string(tail) + " - " + who() +
                  "'s delivered " + std::to_string(d) + " > log size " +
                  std::to_string(cfg_.log_bytes));
    if (e.stable_position() > min_received)
      return fail(who() + " stability watermark " + std::to_string(e.stable_position()) +
                  " ahead of a node's received position " + std::to_string(min_received));
    uint64_t staged = e.staging_tail(), consumed = seq.inbound_consumed(ids_[j]);
    if (staged < consumed || staged - consumed > cfg_.inbound_bytes)
      return fail("inbound overrun: " + who() + " staged " + std::to_string(staged) +
                  ", sequencer consumed " + std::to_string(consumed) + ", ring " +
                  std::to_string(cfg_.inbound_bytes));
  }
}

void SimCluster::on_delivery(size_t i, const Delivery& d) {
  Node& n = nodes_[i];
  NodeId me = ids_[i];
  // UNORDERED and FIFO data may be delivered ahead of a SAFE entry that
  // waits for stability, at different points at different nodes: they are
  // outside the total order (FIFO per sender and exactly-once still hold).
  bool ordered = d.kind != EntryKind::Data || d.guarantee == Guarantee::Agreed ||
                 d.guarantee == Guarantee::Safe;
  size_t idx = ordered ? n.next_index++ : 0;
  ++n.delivered_total;
  ++deliveries_;
  const std::string who = "node " + std::to_string(me);  // short: no allocation
  if (opt_.trace) {
    std::ostringstream os;
    os << "  deliver at node " << me << " #" << idx << ": " << kind_name(d.kind) << " "
       << guarantee_name(d.guarantee) << " from " << d.sender << " sseq " << d.sseq << " gseq "
       << d.gseq << " pos " << d.position << " len " << d.len;
    trace(os.str());
  }
  Delivered rec{d.kind, d.guarantee, d.sender, d.sseq, d.gseq, d.position, d.len, 0};

  // Total order: a prefix of the longest delivered sequence.
  RefEntry e{d.kind, d.sender, d.sseq, d.gseq, d.position};
  if (!ordered) {
    if (d.early && n.last_position >= d.position)
      return fail(who + " delivered an entry early that in-order delivery had passed");
  } else if (idx == ref_.size()) {
    ref_.push_back(e);
  } else if (!(ref_[idx] == e)) {
    const RefEntry& o = ref_[idx];
    std::ostringstream os;
    os << "total order: " << who << "'s delivery #" << idx << " is " << kind_name(d.kind)
       << " from " << d.sender << " sseq " << d.sseq << " gseq " << d.gseq << " pos " << d.position
       << ", another node delivered " << kind_name(o.kind) << " from " << o.sender << " sseq "
       << o.sseq << " gseq " << o.gseq << " pos " << o.position;
    return fail(os.str());
  }
  if (ordered && (idx == 0) != (d.kind == EntryKind::View))
    return fail(who + "'s delivery #" + std::to_string(idx) + " is a " + kind_name(d.kind) +
                " (the View must come first, and only once)");

  if (d.kind == EntryKind::View) {
    // The first view (epoch 1): every configured node, ascending, each with
    // the incarnation its engine reports; it starts this node's history.
    bool good = d.sender == ids_[0] && d.aux == 1 && d.fresh &&
                d.len == nodes_.size() * sizeof(ViewMember) && d.data;
    for (size_t k = 0; good && k < nodes_.size(); ++k) {
      ViewMember m;
      std::memcpy(&m, d.data + k * sizeof(m), sizeof(m));
      good = m.id == ids_[k] && m.incarnation != 0;
      for (const ViewMember& o : n.engine->view().members)
        if (o.id == m.id) good &= o.incarnation == m.incarnation;
    }
    if (!good) return fail(who + " delivered a wrong View");
  } else if (d.fresh) {
    return fail(who + " delivered a " + std::string(kind_name(d.kind)) + " marked fresh");
  } else if (d.kind == EntryKind::Data || d.kind == EntryKind::Join || d.kind == EntryKind::Leave) {
    size_t s = index_of(d.sender);
    if (s == nodes_.size())
      return fail(who + " delivered a message from unknown node " + std::to_string(d.sender));
    const std::vector<SentMsg>& sent = nodes_[s].sent;
    auto it = std::lower_bound(sent.begin(), sent.end(), d.sseq,
                               [](const SentMsg& m, uint64_t sseq) { return m.sseq < sseq; });
    if (it == sent.end() || it->sseq != d.sseq)
      return fail(who + " delivered sseq " + std::to_string(d.sseq) + " from node " +
                  std::to_string(d.sender) + ", which that node never had accepted (invented)");
    size_t k = static_cast<size_t>(it - sent.begin());
    const SentMsg& m = *it;
    if (n.got[s].size() < sent.size()) n.got[s].resize(sent.size(), 0);
    if (n.got[s][k])
      return fail("duplicate: " + who + " delivered message #" + std::to_string(k) + " from node " +
                  std::to_string(d.sender) + " twice");
    // FIFO: every message but UNORDERED data comes in the sender's order.
    auto unordered = [](const SentMsg& x) {
      return x.spec.kind == EntryKind::Data && x.spec.guarantee == Guarantee::Unordered;
    };
    size_t& next = n.fifo_next[s];
    while (next < sent.size() && unordered(sent[next])) ++next;
    if (!unordered(m)) {
      if (k != next)
        return fail("FIFO: " + who + " delivered message #" + std::to_string(k) + " (sseq " +
                    std::to_string(d.sseq) + ") from node " + std::to_string(d.sender) +
                    " where its message #" + std::to_string(next) + " was due");
      ++next;
    }
    n.got[s][k] = 1;
    ++n.from[s];
    rec.counter = m.counter;
    if (d.kind != m.spec.kind || d.guarantee != m.spec.guarantee || d.group != m.spec.group ||
        d.pid != m.spec.pid || d.len != m.spec.len)
      return fail(who + " delivered message #" + std::to_string(k) + " from node " +
                  std::to_string(d.sender) + " with a wrong header: " + kind_name(d.kind) + "/" +
                  guarantee_name(d.guarantee) + " len " + std::to_string(d.len) + ", sent " +
                  kind_name(m.spec.kind) + "/" + guarantee_name(m.spec.guarantee) + " len " +
                  std::to_string(m.spec.len));
    size_t stride = opt_.sampled_payload_check && d.len > (64 << 10) ? 61 : 1;
    if (!payload_matches(m.spec, d.sender, m.counter, d.data, d.len, stride))
      return fail(who + " delivered message #" + std::to_string(k) + " from node " +
                  std::to_string(d.sender) + " with corrupt payload bytes");
  } else {
    return fail(who + " delivered an entry of kind " + kind_name(d.kind));
  }
  if (ordered && (d.gseq <= n.last_gseq || d.position <= n.last_position))
    return fail(who + " gseq/position went backwards: gseq " + std::to_string(d.gseq) + " after " +
                std::to_string(n.last_gseq) + ", position " + std::to_string(d.position) +
                " after " + std::to_string(n.last_position));
  if (ordered) {
    n.last_gseq = d.gseq;
    n.last_position = d.position;
  }
  if (d.position > n.engine->received_position())
    return fail(who + " delivered up to " + std::to_string(d.position) +
                " beyond its received position " + std::to_string(n.engine->received_position()));
  if (d.kind != EntryKind::View && d.guarantee == Guarantee::Safe) {
    ++safe_deliveries_;
    for (size_t j = 0; j < nodes_.size(); ++j)
      if (nodes_[j].engine->received_position() < d.position)
        return fail("SAFE: " + who + " delivered a SAFE message ending at " +
                    std::to_string(d.position) + " while node " + std::to_string(ids_[j]) +
                    " has received only up to " +
                    std::to_string(nodes_[j].engine->received_position()));
  }
  if (opt_.record) n.record.push_back(rec);
  if (d.kind == EntryKind::Data && d.pid != kReplyPid) maybe_reply(i);  // no reply chains
}

void SimCluster::run_world(size_t max_steps, uint64_t now_limit) {
  for (size_t s = 0; s < max_steps && ok() && !world_.idle() && world_.now() <= now_limit; ++s)
    step_world();
}

void SimCluster::progress_all() {
  for (size_t i = 0; i < nodes_.size() && ok(); ++i) progress(i);
}

bool SimCluster::connect_all(size_t max_rounds) {
  for (size_t r = 0; r < max_rounds && ok(); ++r) {
    bool all = std::all_of(nodes_.begin(), nodes_.end(),
                           [](const Node& n) { return n.engine->all_connected(); });
    if (all) return quiesce();  // and every node has delivered the View
    run_world(SIZE_MAX);
    progress_all();
  }
  fail("engines did not connect in " + std::to_string(max_rounds) + " rounds");
  return false;
}

bool SimCluster::quiesce(size_t max_rounds) {
  for (size_t r = 0; r < max_rounds && ok(); ++r) {
    run_world(SIZE_MAX);
    bool moved = false;
    for (size_t i = 0; i < nodes_.size() && ok(); ++i) moved |= progress(i);
    bool pending = std::any_of(nodes_.begin(), nodes_.end(),
                               [](const Node& n) { return n.engine->large_send_pending(); });
    if (!moved && !pending && world_.idle()) return ok();
  }
  if (ok()) fail("no quiescence after " + std::to_string(max_rounds) + " rounds (livelock?)");
  return false;
}

void SimCluster::check_no_loss() {
  if (!ok()) return;
  const Engine& seq = *nodes_[0].engine;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const Node& n = nodes_[i];
    std::string who = "node " + std::to_string(ids_[i]);
    if (n.engine->large_send_pending()) return fail(who + " still streams a large message");
    for (size_t s = 0; s < nodes_.size(); ++s)
      if (n.from[s] != nodes_[s].sent.size())
        return fail("loss: " + who + " delivered " + std::to_string(n.from[s]) + " of the " +
                    std::to_string(nodes_[s].sent.size()) + " messages node " +
                    std::to_string(ids_[s]) + " sent");
    if (n.next_index != ref_.size())
      return fail("loss: " + who + " delivered " + std::to_string(n.next_index) + " entries, " +
                  "another node " + std::to_string(ref_.size()));
    if (n.engine->delivered_position() != seq.log_tail())
      return fail(who + " consumed the log up to " +
                  std::to_string(n.engine->delivered_position()) + " of " +
                  std::to_string(seq.log_tail()));
  }
}

ClusterStats SimCluster::stats() const {
  ClusterStats s;
  s.actions = actions_;
  s.world_steps = world_steps_;
  s.progress_calls = progress_calls_;
  s.send_ok = send_ok_;
  s.send_try_again = send_try_again_;
  s.send_not_ready = send_not_ready_;
  s.deliveries = deliveries_;
  s.safe_deliveries = safe_deliveries_;
  s.large_msgs = large_msgs_;
  s.replies = replies_;
  for (const Node& n : nodes_) {
    s.credit_stalls += n.engine->counters().credit_stalls;
    s.log_stalls += n.engine->counters().log_stalls;
    s.early_deliveries += n.engine->counters().early_deliveries;
    s.reassembled += n.engine->counters().reassembled;
  }
  s.log_wraps = nodes_[0].engine->log_tail() / cfg_.log_bytes;
  return s;
}

// --- the random workload ----------------------------------------------------

SeedResult run_random_seed(uint64_t seed, bool trace, double scale) {
  Rng rng(mix64(seed ^ 0x51a1u));
  ClusterOptions o;
  o.seed = seed;
  o.trace = trace;
  o.nodes = static_cast<int>(rng.between(2, 7));
  // Small rings (wrap-around, stalls and back-pressure all the time); half
  // of the seeds use sizes that are not powers of two.
  static constexpr size_t kInbound[] = {4096, 8192, 16384};
  static constexpr size_t kLog[] = {16384, 32768, 65536};
  bool odd_sizes = rng.chance(0.5);
  o.engine.inbound_bytes = odd_sizes ? 8 * rng.between(512, 2048) : kInbound[rng.between(0, 2)];
  o.engine.log_bytes = odd_sizes ? 8 * rng.between(2048, 8192) : kLog[rng.between(0, 2)];
  size_t ring_min = std::min(o.engine.inbound_bytes, o.engine.log_bytes);
  size_t mf_max = (ring_min / 2 & ~(kAlign - 1)) - sizeof(EntryHeader);  // start() accepts it
  switch (rng.between(0, 3)) {
    case 0:
      o.engine.max_fragment = std::min(o.engine.inbound_bytes / 4, mf_max);
      break;
    case 1:
      o.engine.max_fragment = rng.between(80, 512);
      break;
    case 2:
      o.engine.max_fragment = rng.between(80, mf_max);
      break;
    default:
      o.engine.max_fragment = mf_max;
      break;
  }
  static constexpr uint32_t kDepth[] = {2, 3, 4, 8, 16, 64, 512, 512};
  o.send_queue_depth = kDepth[rng.between(0, 7)];
  const size_t n = static_cast<size_t>(o.nodes);
  const size_t mf = o.engine.max_fragment;
  if (rng.chance(0.4)) {  // arbitrary node ids (the sequencer is the lowest)
    std::set<NodeId> ids;
    while (ids.size() < n) ids.insert(static_cast<NodeId>(rng.between(1, 1000)));
    o.ids.assign(ids.begin(), ids.end());
  }
  o.shuffle_config = rng.chance(0.5);
  o.reply_chance = rng.chance(0.3) ? 0.15 * rng.unit() : 0.0;
  const double p_delay = rng.chance(0.3) ? 0.002 : 0.0;  // links that slow down

  // Per-node speeds (progress weight) and send rates; some nodes are slow,
  // some never send.
  std::vector<uint32_t> speed(n), send_rate(n);
  for (size_t i = 0; i < n; ++i) {
    speed[i] = rng.chance(0.25) ? 1 : static_cast<uint32_t>(rng.between(5, 30));
    send_rate[i] = rng.chance(0.15) ? 0 : static_cast<uint32_t>(rng.between(1, 10));
  }
  if (std::all_of(send_rate.begin(), send_rate.end(), [](uint32_t x) { return x == 0; }))
    send_rate[rng.between(0, n - 1)] = 5;
  double p_world = 0.3 + 0.4 * rng.unit();
  double p_send = 0.05 + 0.3 * rng.unit();
  double p_large = rng.chance(0.3) ? 0.0 : 0.2 * rng.unit();
  double p_member = 0.06 * rng.unit();  // Join/Leave
  double p_retry = rng.unit();          // resend the same message after TryAgain
  std::vector<uint32_t> g_weight(4);
  for (auto& w : g_weight) w = static_cast<uint32_t>(rng.between(0, 4));
  if (std::all_of(g_weight.begin(), g_weight.end(), [](uint32_t x) { return x == 0; }))
    g_weight[2] = 1;
  size_t ticks = static_cast<size_t>(static_cast<double>(rng.between(1000, 3000)) * scale);

  auto gen_spec = [&]() {
    MsgSpec s;
    double k = rng.unit();
    s.kind = k < p_member / 2 ? EntryKind::Join : k < p_member ? EntryKind::Leave : EntryKind::Data;
    s.guarantee = static_cast<Guarantee>(rng.weighted(g_weight));
    s.group = static_cast<uint32_t>(rng.between(0, 3));
    s.pid = static_cast<uint32_t>(rng.between(100, 103));
    double x = rng.unit();
    if (x < p_large)
      s.len = static_cast<uint32_t>(rng.chance(0.05) ? rng.between(4 * mf, 16 * mf)
                                                     : rng.between(mf + 1, 4 * mf));
    else if (x < p_large + 0.05)
      s.len = 0;
    else if (x < p_large + 0.10)
      s.len = static_cast<uint32_t>(mf - rng.between(0, 1) + (rng.chance(0.3) ? 2 : 0));
    else if (x < 0.6)
      s.len = static_cast<uint32_t>(rng.between(1, 64));
    else
      s.len = static_cast<uint32_t>(rng.between(65, mf));
    return s;
  };

  SeedResult res;
  res.nodes = o.nodes;
  SimCluster c(o);
  std::vector<std::optional<MsgSpec>> pending(n);
  for (size_t t = 0; t < ticks && c.ok(); ++t) {
    if (p_delay > 0 && n > 1 && rng.chance(p_delay)) {
      // Slow one link down (or speed it up again); per-connection order holds.
      size_t a = rng.between(0, n - 1), b = (a + rng.between(1, n - 1)) % n;
      c.world().set_delay(c.id(a), c.id(b), rng.chance(0.3) ? 0 : rng.between(1, 60));
    }
    double r = rng.unit();
    if (r < p_world) {
      if (rng.chance(0.02)) {
        size_t burst = rng.between(10, 100);
        for (size_t b = 0; b < burst && c.ok(); ++b) c.step_world();
      } else {
        c.step_world();
      }
    } else if (r < p_world + p_send) {
      size_t i = rng.weighted(send_rate);
      MsgSpec spec = pending[i] ? *pending[i] : gen_spec();
      pending[i].reset();
      if (c.send(i, spec) == SendResult::TryAgain && rng.chance(p_retry)) pending[i] = spec;
    } else if (rng.chance(0.03)) {
      c.progress_all();
    } else if (rng.chance(0.0015)) {
      // Now and then everything drains completely: nothing accepted so far
      // may be missing anywhere; then the load starts again.
      if (c.quiesce()) c.check_no_loss();
    } else {
      c.progress(rng.weighted(speed));
    }
  }
  c.quiesce();
  c.check_no_loss();
  res.ok = c.ok();
  res.violation = c.violation();
  res.stats = c.stats();
  return res;
}

}  // namespace rcpg::ordering::sim
