#include "tests/ordering/sim_faults.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

namespace rcpg::ordering::sim {

using namespace rcpg::transport;

void FaultStats::add(const FaultStats& o) {
  actions += o.actions;
  world_steps += o.world_steps;
  progress_calls += o.progress_calls;
  send_ok += o.send_ok;
  send_try_again += o.send_try_again;
  send_not_ready += o.send_not_ready;
  deliveries += o.deliveries;
  large_msgs += o.large_msgs;
  crashes += o.crashes;
  crashes_in_view_change += o.crashes_in_view_change;
  sequencer_crashes += o.sequencer_crashes;
  restarts += o.restarts;
  partitions += o.partitions;
  flaps += o.flaps;
  stalls += o.stalls;
  views += o.views;
  failovers += o.failovers;
  fresh_rejoins += o.fresh_rejoins;
  views_installed += o.views_installed;
  suspicions += o.suspicions;
  resent_records += o.resent_records;
  duplicates_dropped += o.duplicates_dropped;
  gap_fill_bytes += o.gap_fill_bytes;
  early_deliveries += o.early_deliveries;
  virtual_us += o.virtual_us;
}

namespace {

checker::Order order_of(const Delivery& d) {
  if (d.kind != EntryKind::Data) return checker::Order::Total;
  switch (d.guarantee) {
    case Guarantee::Unordered:
      return checker::Order::None;
    case Guarantee::Fifo:
      return checker::Order::Fifo;
    default:
      return checker::Order::Total;
  }
}

void add_counters(EngineCounters& to, const EngineCounters& c) {
  to.views_installed += c.views_installed;
  to.suspicions += c.suspicions;
  to.resent_records += c.resent_records;
  to.duplicates_dropped += c.duplicates_dropped;
  to.gap_fill_bytes += c.gap_fill_bytes;
  to.early_deliveries += c.early_deliveries;
}

}  // namespace

std::string FaultCluster::member_name(NodeId id, uint32_t inc) {
  return "n" + std::to_string(id) + ":" + std::to_string(inc);
}

FaultCluster::FaultCluster(const FaultOptions& opt)
    : opt_(opt), cfg_(opt.engine), world_(opt.seed) {
  if (cfg_.max_fragment == 0) cfg_.max_fragment = cfg_.inbound_bytes / 4;
  // Virtual time: timeouts and heartbeats replay exactly, whatever the
  // machine's speed.
  cfg_.clock = [this] { return now_us_; };
  cfg_.nodes.clear();
  nodes_.resize(static_cast<size_t>(opt.nodes));
  for (size_t i = 0; i < nodes_.size(); ++i) {
    nodes_[i].id = static_cast<NodeId>(i + 1);
    cfg_.nodes.push_back({nodes_[i].id, "node" + std::to_string(i + 1)});
  }
  for (size_t i = 0; i < nodes_.size() && ok(); ++i) start_node(i);
}

FaultCluster::~FaultCluster() {
  for (Node& n : nodes_) {
    n.engine.reset();  // before its endpoint
    n.ep.reset();
  }
}

size_t FaultCluster::quorum() const {
  if (cfg_.two_node && nodes_.size() == 2) return 1;
  return nodes_.size() / 2 + 1;
}

size_t FaultCluster::alive_count() const {
  size_t k = 0;
  for (size_t i = 0; i < nodes_.size(); ++i) k += alive(i);
  return k;
}

bool FaultCluster::current(size_t i) const {
  if (!alive(i)) return false;
  const ViewState& v = nodes_[i].engine->view();
  return v.epoch != 0 && v.epoch >= latest_epoch() && v.state != Membership::Forming;
}

size_t FaultCluster::non_current_alive() const {
  size_t k = 0;
  for (size_t i = 0; i < nodes_.size(); ++i) k += alive(i) && !current(i);
  return k;
}

void FaultCluster::start_node(size_t i) {
  Node& n = nodes_[i];
  ++n.incarnation;
  NodeId id = n.id;
  EndpointConfig ec;
  ec.node_id = id;
  ec.listen_address = "node" + std::to_string(id);
  ec.send_queue_depth = opt_.send_queue_depth;
  ec.log = [this, id](std::string_view line) {
    trace("node " + std::to_string(id) + " endpoint: " + std::string(line));
  };
  n.ep = world_.create_endpoint(ec);
  EngineConfig c = cfg_;
  c.self = id;
  c.incarnation = n.incarnation;
  c.epoch_floor = n.epoch_on_disk;
  std::string name = member_name(id, n.incarnation);
  n.history = histories_.size();
  histories_.emplace_back(name, name + ".hist");
  n.sender = senders_.size();
  SenderLog log;
  log.id = id;
  log.incarnation = n.incarnation;
  log.name = name;
  log.payload_key = static_cast<NodeId>(mix64(uint64_t{id} << 32 | n.incarnation));
  senders_.push_back(std::move(log));
  sender_index_[{id, n.incarnation}] = n.sender;
  n.view.clear();
  n.view_epoch = 0;
  n.had_view = false;
  n.early_send_epoch = 0;
  n.next_sseq = 1;
  n.large_hold.clear();
  n.stopped.clear();
  n.engine = std::make_unique<Engine>(
      *n.ep, c, [this, i](const Delivery& d) { on_delivery(i, d); },
      [this, i, id](const std::string& line) {
        if (line.rfind("engine stopped", 0) == 0) nodes_[i].stopped = line;
        trace("node " + std::to_string(id) + " engine: " + line);
      });
  std::string why;
  if (!n.engine->start(why)) fail("node " + std::to_string(id) + " start: " + why);
}

void FaultCluster::retire_engine(Node& n) {
  add_counters(retired_, n.engine->counters());
  n.epoch_on_disk = std::max(n.epoch_on_disk, n.engine->decided_epoch());
  n.engine.reset();
  n.ep.reset();
  // The engine no longer reads a large message's buffer.
  n.large_hold.clear();
}

void FaultCluster::fail(const std::string& what) {
  if (!violation_.empty()) return;
  violation_ = "action " + std::to_string(actions_) + " (virtual " +
               std::to_string(now_us_ / 1000) + " ms): " + what;
  if (opt_.trace) std::cerr << "VIOLATION " << violation_ << "\n";
}

void FaultCluster::trace(const std::string& line) const {
  if (opt_.trace) std::cerr << "[" << actions_ << " @" << now_us_ << "] " << line << "\n";
}

// --- actions -------------------------------------------------------------

bool FaultCluster::step_world() {
  bool r = world_.step();
  ++world_steps_;
  after_action();
  return r;
}

bool FaultCluster::progress(size_t i) {
  if (!alive(i)) return false;
  if (opt_.trace) trace("progress node " + std::to_string(nodes_[i].id));
  in_progress_ = true;
  bool r = nodes_[i].engine->progress();
  in_progress_ = false;
  ++progress_calls_;
  // A view change can make the engine stream a large message again from
  // its start (new sequence numbers); nothing is sent behind it meanwhile,
  // so it is this sender's newest message.
  Node& n = nodes_[i];
  if (n.engine && n.engine->next_sseq() != n.next_sseq) {
    SenderLog& log = senders_[n.sender];
    if (!log.sent.empty()) log.sent.back().sseq = n.engine->next_sseq() - 1;
    n.next_sseq = n.engine->next_sseq();
  }
  after_action();
  return r;
}

SendResult FaultCluster::send(size_t i, const MsgSpec& spec) {
  if (!alive(i)) return SendResult::NotReady;
  Node& n = nodes_[i];
  SenderLog& log = senders_[n.sender];
  uint64_t counter = log.sent.size() + 1;  // the history's seq: 1, 2, ...
  std::vector<std::byte>& payload = n.scratch;
  SimCluster::fill_payload(spec, log.payload_key, counter, payload);
  MsgSpec s = spec;
  s.len = static_cast<uint32_t>(payload.size());
  SendResult r = n.engine->send(s.kind, s.guarantee, s.group, s.pid, payload);
  const size_t mf = cfg_.max_fragment;
  if (r == SendResult::Ok) {
    uint64_t frags = s.len > mf ? (s.len + mf - 1) / mf : 1;
    log.sent.push_back({s, counter, n.next_sseq + frags - 1});
    n.next_sseq += frags;
    ++send_ok_;
    histories_[n.history].send(log.name, counter);
    if (!n.had_view && n.early_send_epoch == 0) n.early_send_epoch = n.engine->view().epoch;
    if (s.len > mf) {
      std::swap(n.large_hold, payload);  // streamed from this buffer by progress()
      ++large_msgs_;
    }
  } else if (r == SendResult::TryAgain) {
    ++send_try_again_;
  } else if (r == SendResult::NotReady) {
    ++send_not_ready_;
  }
  if (opt_.trace) {
    std::ostringstream os;
    os << "send node " << n.id << " " << kind_name(s.kind) << " " << guarantee_name(s.guarantee)
       << " len " << s.len << " -> " << result_name(r);
    if (r == SendResult::Ok)
      os << " (" << log.name << "#" << counter << ", sseq " << log.sent.back().sseq << ")";
    trace(os.str());
  }
  if (!payload.empty()) std::memset(payload.data(), 0xA5, payload.size());  // must be copied
  after_action();
  return r;
}

void FaultCluster::after_action() {
  ++actions_;
  if (!clock_frozen_) now_us_ += opt_.clock_step_us;
  for (Node& n : nodes_)
    if (!n.large_hold.empty() && n.engine && !n.engine->large_send_pending()) {
      // The engine is done with the buffer: a late read would deliver these bytes.
      std::memset(n.large_hold.data(), 0x5A, n.large_hold.size());
      n.large_hold.clear();
    }
  check_step();
}

void FaultCluster::check_step() {
  if (!violation_.empty()) return;
  for (const Node& n : nodes_) {
    if (!n.engine) continue;
    const Engine& e = *n.engine;
    auto who = [&] { return "node " + std::to_string(n.id); };
    if (e.failed()) return fail(who() + " " + (n.stopped.empty() ? "engine failed" : n.stopped));
    if (e.counters().protocol_errors != 0)
      return fail(who() + " counted a protocol error (nothing malformed is ever sent here)");
    if (e.delivered_position() > e.received_position())
      return fail(who() + " delivered position " + std::to_string(e.delivered_position()) +
                  " > received " + std::to_string(e.received_position()));
  }
}

// --- faults ----------------------------------------------------------------

void FaultCluster::crash(size_t i) {
  if (!alive(i)) return;
  Node& n = nodes_[i];
  bool changing = false;
  for (const Node& m : nodes_)
    if (m.engine && m.engine->view().state == Membership::Changing) changing = true;
  const ViewState& v = n.engine->view();
  bool sequencer = v.epoch != 0 && v.sequencer == n.id;
  trace("CRASH node " + std::to_string(n.id) + " (" + histories_[n.history].name + ")" +
        (sequencer ? ", the sequencer" : "") + (changing ? ", during a view change" : ""));
  ++crashes_;
  crashes_in_change_ += changing;
  sequencer_crashes_ += sequencer;
  world_.kill(n.id);
  retire_engine(n);
  histories_[n.history].kill();
}

void FaultCluster::restart(size_t i) {
  if (alive(i)) return;
  ++restarts_;
  start_node(i);
  trace("RESTART node " + std::to_string(nodes_[i].id) + " as " +
        histories_[nodes_[i].history].name);
}

void FaultCluster::partition(const std::vector<size_t>& side) {
  std::set<size_t> in(side.begin(), side.end());
  std::string names;
  for (size_t a : side) names += " " + std::to_string(nodes_[a].id);
  trace("PARTITION {" + names + " } from the rest");
  ++partitions_;
  for (size_t a = 0; a < nodes_.size(); ++a)
    for (size_t b = 0; b < nodes_.size(); ++b)
      if (in.count(a) && !in.count(b)) world_.cut(nodes_[a].id, nodes_[b].id);
}

void FaultCluster::cut(size_t i, size_t j) {
  trace("CUT " + std::to_string(nodes_[i].id) + " - " + std::to_string(nodes_[j].id));
  ++flaps_;
  world_.cut(nodes_[i].id, nodes_[j].id);
}

void FaultCluster::heal(size_t i, size_t j) {
  trace("HEAL " + std::to_string(nodes_[i].id) + " - " + std::to_string(nodes_[j].id));
  world_.heal(nodes_[i].id, nodes_[j].id);
}

void FaultCluster::heal_all() {
  trace("HEAL everything");
  for (size_t a = 0; a < nodes_.size(); ++a)
    for (size_t b = a + 1; b < nodes_.size(); ++b) world_.heal(nodes_[a].id, nodes_[b].id);
}

void FaultCluster::set_delay(size_t i, size_t j, uint32_t steps) {
  trace("DELAY " + std::to_string(nodes_[i].id) + " - " + std::to_string(nodes_[j].id) + ": " +
        std::to_string(steps));
  world_.set_delay(nodes_[i].id, nodes_[j].id, steps);
}

void FaultCluster::clear_delays() {
  for (size_t a = 0; a < nodes_.size(); ++a)
    for (size_t b = a + 1; b < nodes_.size(); ++b) world_.set_delay(nodes_[a].id, nodes_[b].id, 0);
}

// --- deliveries ------------------------------------------------------------

void FaultCluster::on_view(size_t i, const Delivery& d) {
  Node& n = nodes_[i];
  std::string who = histories_[n.history].name;
  size_t count = d.len / sizeof(ViewMember);
  if (d.len == 0 || d.len % sizeof(ViewMember) != 0 || !d.data)
    return fail(who + " delivered a View of " + std::to_string(d.len) + " bytes");
  std::vector<ViewMember> ms(count);
  std::memcpy(static_cast<void*>(ms.data()), d.data, d.len);
  bool self = false, seq = false;
  std::vector<std::string> names;
  for (size_t k = 0; k < count; ++k) {
    if (k > 0 && ms[k].id <= ms[k - 1].id)
      return fail(who + " delivered View " + std::to_string(d.aux) + " with unsorted members");
    self |= ms[k].id == n.id && ms[k].incarnation == n.incarnation;
    seq |= ms[k].id == d.sender;
    names.push_back(member_name(ms[k].id, ms[k].incarnation));
  }
  if (!self) return fail(who + " delivered View " + std::to_string(d.aux) + " without itself");
  if (!seq)
    return fail(who + " delivered View " + std::to_string(d.aux) + " from node " +
                std::to_string(d.sender) + ", not a member");
  if (!n.had_view && !d.fresh)
    return fail(who + "'s first View (" + std::to_string(d.aux) + ") is not marked fresh");
  auto [it, first] = sequencer_of_epoch_.emplace(d.aux, d.sender);
  if (!first && it->second != d.sender)
    return fail(who + " delivered View " + std::to_string(d.aux) + " from node " +
                std::to_string(d.sender) + ", another node's came from node " +
                std::to_string(it->second));
  checker::History& h = histories_[n.history];
  // Sends accepted in a view whose View this node never delivered (it was
  // cut off first) belong to the history the fresh view voids, as much as
  // those of a view it did deliver.
  bool sent_before = n.early_send_epoch != 0 && n.early_send_epoch != d.aux;
  if (d.fresh && (n.had_view || sent_before)) {
    h.fresh();
    ++fresh_rejoins_;
  }
  h.view(d.aux, std::move(names));
  if (opt_.trace) {
    std::string list;
    for (auto& m : h.events.back().members) list += " " + m;
    trace("  " + who + " installs view " + std::to_string(d.aux) + (d.fresh ? " (fresh)" : "") +
          ", sequencer " + std::to_string(d.sender) + ":" + list);
  }
  n.view = std::move(ms);
  n.view_epoch = d.aux;
  n.had_view = true;
}

void FaultCluster::on_delivery(size_t i, const Delivery& d) {
  ++deliveries_;
  if (!violation_.empty()) return;
  if (d.kind == EntryKind::View) return on_view(i, d);
  Node& n = nodes_[i];
  std::string who = histories_[n.history].name;
  if (d.fresh)
    return fail(who + " delivered a " + std::string(kind_name(d.kind)) + " marked fresh");
  if (!n.had_view) return fail(who + " delivered a message before any View");
  auto mem = std::find_if(n.view.begin(), n.view.end(),
                          [&](const ViewMember& m) { return m.id == d.sender; });
  if (mem == n.view.end())
    return fail(who + " delivered sseq " + std::to_string(d.sseq) + " from node " +
                std::to_string(d.sender) + ", which is not in its view " +
                std::to_string(n.view_epoch));
  auto si = sender_index_.find({d.sender, mem->incarnation});
  if (si == sender_index_.end())
    return fail(who + " delivered a message from " + member_name(d.sender, mem->incarnation) +
                ", which never ran");
  const SenderLog& s = senders_[si->second];
  auto it = std::lower_bound(s.sent.begin(), s.sent.end(), d.sseq,
                             [](const SentMsg& m, uint64_t sseq) { return m.sseq < sseq; });
  if (it == s.sent.end() || it->sseq != d.sseq)
    return fail(who + " delivered sseq " + std::to_string(d.sseq) + " from " + s.name +
                ", which that sender never had accepted (invented)");
  const SentMsg& m = *it;
  if (d.kind != m.spec.kind || d.guarantee != m.spec.guarantee || d.group != m.spec.group ||
      d.pid != m.spec.pid || d.len != m.spec.len)
    return fail(who + " delivered " + s.name + "#" + std::to_string(m.counter) +
                " with a wrong header: " + kind_name(d.kind) + "/" + guarantee_name(d.guarantee) +
                " len " + std::to_string(d.len) + ", sent " + kind_name(m.spec.kind) + "/" +
                guarantee_name(m.spec.guarantee) + " len " + std::to_string(m.spec.len));
  size_t stride = d.len > (64 << 10) ? 61 : 1;
  if (!SimCluster::payload_matches(m.spec, s.payload_key, m.counter, d.data, d.len, stride))
    return fail(who + " delivered " + s.name + "#" + std::to_string(m.counter) +
                " with corrupt payload bytes");
  histories_[n.history].deliver(s.name, m.counter, order_of(d));
  if (opt_.trace) {
    std::ostringstream os;
    os << "  " << who << " delivers " << s.name << "#" << m.counter << " " << kind_name(d.kind)
       << " " << guarantee_name(d.guarantee) << " sseq " << d.sseq << " gseq " << d.gseq << " pos "
       << d.position << (d.early ? " early" : "");
    trace(os.str());
  }
}

// --- the end of a run ------------------------------------------------------

bool FaultCluster::converged(std::string& why) const {
  std::vector<ViewMember> live;
  for (const Node& n : nodes_)
    if (n.engine) live.push_back({n.id, n.incarnation});
  const Node* first = nullptr;
  for (const Node& n : nodes_) {
    if (!n.engine) continue;
    const ViewState& v = n.engine->view();
    std::string who = "node " + std::to_string(n.id);
    if (v.state != Membership::Normal) {
      why = who + " is " + to_string(v.state) + ": " + v.why;
      return false;
    }
    if (v.members != live) {
      why = who + "'s view " + std::to_string(v.epoch) + " does not hold exactly the live nodes";
      return false;
    }
    if (n.view_epoch != v.epoch) {
      why = who + " has not delivered the View of epoch " + std::to_string(v.epoch);
      return false;
    }
    if (first && first->engine->view().epoch != v.epoch) {
      why = "nodes " + std::to_string(first->id) + " and " + std::to_string(n.id) +
            " are in different views";
      return false;
    }
    if (n.engine->large_send_pending()) {
      why = who + " still streams a large message";
      return false;
    }
    first = &n;
  }
  return true;
}

bool FaultCluster::quiesce_frozen(size_t max_rounds) {
  clock_frozen_ = true;
  bool done = false;
  for (size_t r = 0; r < max_rounds && ok() && !done; ++r) {
    for (size_t s = 0; s < 1'000'000 && ok() && !world_.idle(); ++s) step_world();
    bool moved = false;
    for (size_t i = 0; i < nodes_.size() && ok(); ++i) moved |= progress(i);
    done = !moved && world_.idle();
  }
  clock_frozen_ = false;
  if (!done && ok()) fail("no quiescence with the clock stopped (livelock?)\n" + describe());
  return done && ok();
}

bool FaultCluster::converge(uint64_t max_virtual_us) {
  uint64_t deadline = now_us_ + max_virtual_us;
  std::string why;
  while (ok() && now_us_ < deadline) {
    size_t steps = 0;
    for (; steps < 20'000 && ok() && !world_.idle(); ++steps) step_world();
    bool moved = false;
    for (size_t i = 0; i < nodes_.size() && ok(); ++i) moved |= progress(i);
    if (converged(why)) {
      if (!quiesce_frozen(100'000)) return false;
      if (converged(why)) return true;
    }
    // Nothing to do until a timer fires: let virtual time pass.
    if (!moved && steps == 0) advance_clock(std::max<uint64_t>(cfg_.heartbeat_interval_us / 4, 1));
  }
  if (ok())
    fail("no convergence in " + std::to_string(max_virtual_us / 1000) +
         " virtual ms after the faults stopped: " + why + "\n" + describe());
  return false;
}

void FaultCluster::check_histories() {
  if (!ok()) return;
  checker::CheckOptions o;
  o.whole_views = true;
  o.quiesced_end = true;
  o.max_violations = 5;
  checker::CheckResult r = checker::check_histories(histories_, o);
  if (r.ok()) return;
  std::string all = r.input_error;
  for (const std::string& v : r.violations) all += (all.empty() ? "" : "\n  ") + v;
  fail("history check failed:\n  " + all);
}

std::string FaultCluster::describe() const {
  std::ostringstream os;
  for (const Node& n : nodes_) {
    os << "  node " << n.id << " (" << member_name(n.id, n.incarnation) << "): ";
    if (!n.engine) {
      os << "crashed\n";
      continue;
    }
    const ViewState& v = n.engine->view();
    os << to_string(v.state) << ", view " << v.epoch << " seq " << v.sequencer << " [";
    for (size_t k = 0; k < v.members.size(); ++k)
      os << (k ? " " : "") << member_name(v.members[k].id, v.members[k].incarnation);
    os << "]";
    if (!v.why.empty()) os << ", " << v.why;
    os << "; delivered View " << n.view_epoch << ", received " << n.engine->received_position()
       << ", delivered " << n.engine->delivered_position() << "\n";
  }
  return os.str();
}

bool FaultCluster::write_histories(const std::string& dir, std::string& error) const {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  for (const checker::History& h : histories_) {
    std::string path = dir + "/" + h.name + ".hist";
    std::ofstream f(path);
    h.write(f);
    if (!f) {
      error = "cannot write " + path;
      return false;
    }
  }
  return true;
}

FaultStats FaultCluster::stats() const {
  FaultStats s;
  s.actions = actions_;
  s.world_steps = world_steps_;
  s.progress_calls = progress_calls_;
  s.send_ok = send_ok_;
  s.send_try_again = send_try_again_;
  s.send_not_ready = send_not_ready_;
  s.deliveries = deliveries_;
  s.large_msgs = large_msgs_;
  s.crashes = crashes_;
  s.crashes_in_view_change = crashes_in_change_;
  s.sequencer_crashes = sequencer_crashes_;
  s.restarts = restarts_;
  s.partitions = partitions_;
  s.flaps = flaps_;
  s.stalls = stalls_;
  s.fresh_rejoins = fresh_rejoins_;
  s.views = sequencer_of_epoch_.size();
  NodeId prev = 0;
  for (auto& [epoch, seq] : sequencer_of_epoch_) {
    if (prev != 0 && seq != prev) ++s.failovers;
    prev = seq;
  }
  EngineCounters c = retired_;
  for (const Node& n : nodes_)
    if (n.engine) add_counters(c, n.engine->counters());
  s.views_installed = c.views_installed;
  s.suspicions = c.suspicions;
  s.resent_records = c.resent_records;
  s.duplicates_dropped = c.duplicates_dropped;
  s.gap_fill_bytes = c.gap_fill_bytes;
  s.early_deliveries = c.early_deliveries;
  s.virtual_us = now_us_ - 1'000'000;
  return s;
}

}  // namespace rcpg::ordering::sim
