// ordering/: what a hostile sender can make the sequencer do.
//
// A 3-node cluster on the simulated fabric and a virtual clock: engines on
// nodes 1 (the sequencer) and 3, and on node 2 a bare endpoint driven by
// the input (fuzz/sim_peer.h) that takes part in the membership protocol
// correctly (fuzz/member_agent.h: heartbeats, answers, acks, Resume), so
// the first view holds all three. Node 2 introduces itself (honestly, or
// with a tampered HelloMsg, which reaches Engine::on_hello), then writes records of its
// choosing into its inbound ring at the sequencer: well-formed ones, ones
// with any header field changed, raw bytes anywhere in its ring, immediates
// of every type with any position, acks with any positions, more
// introductions. The honest engines keep sending in between.
//
// Oracles (every delivery at nodes 1 and 3):
//  - memory: payloads lie inside the log mirror (or the reassembly buffer);
//  - validation: kinds, guarantees and senders are real, node 2's records
//    are at most max_fragment long and never views;
//  - integrity: messages of the honest nodes arrive whole, unchanged, in
//    order, and (when node 2 introduced itself correctly and nothing failed)
//    all of them arrive;
//  - failure: an engine may stop only because a node introduced itself
//    with another configuration, never because of a record node 2 wrote
//    (strict mode, the default; RCPG_FUZZ_LENIENT=1 turns the last two
//    checks off to explore further).
#include <deque>
#include <optional>

#include "fuzz/member_agent.h"

using namespace rcpg::ordering;
using namespace rcpg::transport;
using rcpg::fuzz::ClusterShape;
using rcpg::fuzz::DeliveryChecker;
using rcpg::fuzz::Input;
using rcpg::fuzz::MemberAgent;
using rcpg::fuzz::SimPeer;

namespace {

constexpr size_t kLog = 16384, kInbound = 8192;
constexpr NodeId kHostile = 2;
constexpr uint64_t kTickUs = 2000;  // virtual time per round

bool trace() {
  static const bool t = std::getenv("RCPG_FUZZ_TRACE") != nullptr;
  return t;
}

bool strict() {
  static const bool s = std::getenv("RCPG_FUZZ_LENIENT") == nullptr;
  return s;
}

struct Honest {
  NodeId id = 0;
  std::unique_ptr<Endpoint> ep;
  std::unique_ptr<Engine> engine;
  DeliveryChecker checker;
  std::string stopped;  // why the engine stopped (its log line)
  uint64_t last_gseq = 0;
  std::map<NodeId, size_t> next;          // per honest sender: index of the next expected message
  std::map<NodeId, std::string> partial;  // deliver_fragments: parts so far
  // After a fresh View (this node was excluded and is back) it starts in the
  // middle of each sender's messages: the first one it gets of a sender
  // realigns `next`; until then, what was sent before the View is not owed.
  std::map<NodeId, size_t> sent_at_fresh;
};

class Cluster {
 public:
  Cluster(Input& in) : in_(in), world_(in.u8()) {
    uint8_t mode = in.u8();
    deliver_fragments_ = mode & 1;
    hold_ = mode & 2;
    fuzz_first_hello_ = mode & 4;
    shape_.nodes = {1, 2, 3};
    shape_.log_bytes = kLog;
    shape_.inbound_bytes = kInbound;
    peer_ = std::make_unique<SimPeer>(world_, kHostile, shape_);
    agent_ = std::make_unique<MemberAgent>(*peer_, shape_);
    agent_->sent_own_records = true;  // Resume from staging_posted_
    peer_->on_connected([this](NodeId id, ConnId c) {
      if (id == 1 && fuzz_first_hello_) return send_fuzzed_hello(c);
      peer_->send_honest_hello(c);
    });
    for (NodeId id : {NodeId{1}, NodeId{3}}) {
      auto h = std::make_unique<Honest>();
      h->id = id;
      EndpointConfig ec;
      ec.node_id = id;
      ec.listen_address = "n" + std::to_string(id);
      ec.log = [](std::string_view) {};
      h->ep = world_.create_endpoint(ec);
      EngineConfig cfg;
      cfg.self = id;
      for (NodeId n : shape_.nodes) cfg.nodes.push_back({n, "n" + std::to_string(n)});
      cfg.log_bytes = kLog;
      cfg.inbound_bytes = kInbound;
      cfg.deliver_fragments = deliver_fragments_;
      cfg.hold_deliveries = hold_;
      cfg.clock = [this] { return now_us_; };
      cfg.heartbeat_interval_us = 10'000;
      cfg.suspect_timeout_us = 60'000;
      cfg.form_timeout_us = 200'000;
      Honest* raw = h.get();
      h->engine = std::make_unique<Engine>(
          *h->ep, cfg, [this, raw](const Delivery& d) { on_delivery(*raw, d); },
          [raw](const std::string& line) {
            if (trace()) std::fprintf(stderr, "  node %u: %s\n", raw->id, line.c_str());
            if (line.rfind("engine stopped", 0) == 0) raw->stopped = line;
          });
      honest_.push_back(std::move(h));
    }
    for (auto& h : honest_) {
      std::string why;
      FUZZ_CHECK(h->engine->start(why));
      h->checker = DeliveryChecker{h->engine.get(), &shape_, deliver_fragments_};
    }
    max_fragment_ = honest_[0]->engine->max_fragment();
  }

  void run() {
    for (int i = 0; i < 400 && !formed(); ++i) round();
    for (int steps = 0; steps < 64 && !in_.empty(); ++steps) {
      uint8_t op = in_.u8() % 9;
      if (trace()) std::fprintf(stderr, "step %d: op %u\n", steps, op);
      switch (op) {
        case 0:
          append_record();
          break;
        case 1:
          post_staging();
          break;
        case 2:
          raw_write();
          break;
        case 3:
          immediate();
          break;
        case 4:
          ack();
          break;
        case 5:
          if (ConnId c = peer_->conn_to(1); c != kNoConn) send_fuzzed_hello(c);
          break;
        case 6:
          honest_send();
          break;
        default:
          for (int r = 1 + in_.u8() % 4; r > 0; --r) round();
          break;
      }
    }
    settle();
  }

 private:
  bool formed() const {
    return std::all_of(honest_.begin(), honest_.end(),
                       [](auto& h) { return h->engine->view().state == Membership::Normal; });
  }

  void round() {
    world_.run(256);
    now_us_ += kTickUs;
    for (auto& h : honest_) {
      h->engine->progress();
      if (hold_) h->engine->release(h->engine->delivered_position());
      check_failure(*h);
    }
    // Node 2 acknowledges what it received (as a member must for the log to
    // be reused and SAFE to make progress), heartbeats and answers.
    agent_->resume_position = staging_posted_;
    agent_->tick();
  }

  void check_failure(const Honest& h) {
    if (!h.engine->failed() || !strict()) return;
    bool allowed = h.stopped.find("different ring sizes") != std::string::npos;
    if (!allowed) std::fprintf(stderr, "node %u: %s\n", h.id, h.stopped.c_str());
    FUZZ_CHECK(allowed);
  }

  void settle() {
    // From here on node 2 behaves: liveness needs every member's acks (SAFE
    // waits for all of them), so a last hostile ack must not stay the last.
    agent_->ack_again();
    bool any_failed = false;
    for (auto& h : honest_) any_failed |= h->engine->failed();
    for (int r = 0; r < 400 && !any_failed && !all_delivered(); ++r) {
      round();
      for (auto& h : honest_) any_failed |= h->engine->failed();
    }
    if (trace()) {
      for (auto& h : honest_) {
        const EngineCounters& k = h->engine->counters();
        std::fprintf(stderr,
                     "node %u: failed %d delivered %lu sequenced %lu protocol_errors %lu "
                     "received %lu delivered_pos %lu stable %lu large_pending %d\n",
                     h->id, h->engine->failed(), (unsigned long)k.delivered_msgs,
                     (unsigned long)k.sequenced_entries, (unsigned long)k.protocol_errors,
                     (unsigned long)h->engine->received_position(),
                     (unsigned long)h->engine->delivered_position(),
                     (unsigned long)h->engine->stable_position(), h->engine->large_send_pending());
        for (auto& [sender, msgs] : sent_)
          std::fprintf(stderr, "  from %u: sent %zu delivered %zu\n", sender, msgs.size(),
                       h->next[sender]);
      }
    }
    if (strict() && !any_failed && honest_[0]->engine->all_connected()) FUZZ_CHECK(all_delivered());
  }

  bool all_delivered() const {
    for (auto& h : honest_) {
      if (h->engine->large_send_pending()) return false;
      for (auto& [sender, msgs] : sent_) {
        auto it = h->next.find(sender);
        auto fr = h->sent_at_fresh.find(sender);
        if (fr != h->sent_at_fresh.end() && fr->second == msgs.size()) continue;
        if ((it == h->next.end() ? 0 : it->second) != msgs.size()) return false;
      }
    }
    return true;
  }

  void on_delivery(Honest& h, const Delivery& d) {
    h.checker.check(d);
    FUZZ_CHECK(d.kind == EntryKind::Data || d.kind == EntryKind::Join ||
               d.kind == EntryKind::Leave || d.kind == EntryKind::View);
    FUZZ_CHECK(static_cast<uint8_t>(d.guarantee) <= 3);
    FUZZ_CHECK(d.sender >= 1 && d.sender <= 3);
    // Views come from the sequencer (node 1, or node 3 once node 1 stopped).
    if (d.kind == EntryKind::View) FUZZ_CHECK(d.sender == h.engine->view().sequencer);
    if (d.kind == EntryKind::View && d.fresh && h.last_gseq != 0) {
      for (auto& [sender, msgs] : sent_) h.sent_at_fresh[sender] = msgs.size();
      h.partial.clear();
    }
    if (!d.early) {
      FUZZ_CHECK(d.gseq > h.last_gseq);
      h.last_gseq = d.gseq;
    }
    if (d.sender == kHostile) {
      const Region& log = h.engine->log_region();
      bool from_log = d.data >= log.data && d.data < log.data + log.size;
      FUZZ_CHECK(d.kind != EntryKind::View);
      if (from_log) FUZZ_CHECK(d.len <= max_fragment_);
      return;
    }
    if (d.kind != EntryKind::Data) return;
    std::string got(reinterpret_cast<const char*>(d.data), d.len);
    if (d.flags & kFragment) {
      std::string& p = h.partial[d.sender];
      if (d.flags & kFragFirst) FUZZ_CHECK(p.empty());
      p += got;
      if (!(d.flags & kFragLast)) return;
      got.swap(p);
      p.clear();
    }
    auto& msgs = sent_[d.sender];
    size_t& i = h.next[d.sender];
    if (h.sent_at_fresh.erase(d.sender)) {
      // Back with a fresh history: continue from this message on (only
      // forward, so a message it already had is still a duplicate).
      auto at = std::find(msgs.begin() + static_cast<std::ptrdiff_t>(std::min(i, msgs.size())),
                          msgs.end(), got);
      if (at != msgs.end()) i = static_cast<size_t>(at - msgs.begin());
    }
    FUZZ_CHECK(i < msgs.size());
    FUZZ_CHECK(got == msgs[i]);
    ++i;
  }

  void honest_send() {
    Honest& h = *honest_[in_.u8() % honest_.size()];
    Guarantee g = static_cast<Guarantee>(1 + in_.u8() % 3);  // FIFO, AGREED, SAFE
    size_t len = in_.below(3 * max_fragment_ + 1);
    auto& msgs = sent_[h.id];
    std::string m = std::to_string(h.id) + ":" + std::to_string(msgs.size()) + ":";
    while (m.size() < len) m += static_cast<char>('a' + m.size() % 26);
    m.resize(len);
    msgs.push_back(std::move(m));  // a deque: stays put while a large send streams
    SendResult r = h.engine->send(EntryKind::Data, g, 7, 0, std::as_bytes(std::span(msgs.back())));
    if (r != SendResult::Ok) msgs.pop_back();
  }

  // ---- node 2 ------------------------------------------------------------

  void send_fuzzed_hello(ConnId c) {
    HelloMsg m = peer_->own_hello();
    std::vector<uint8_t> b(sizeof(m));
    std::memcpy(b.data(), &m, sizeof(m));
    uint8_t mode = in_.u8();
    for (int n = mode % 4; n > 0; --n) b[in_.u8() % b.size()] ^= in_.u8();
    if (mode & 4) b.resize(in_.below(sizeof(m) + 16));
    peer_->ep().post_send(c, std::as_bytes(std::span(b)), 0);
  }

  const HelloMsg* seq() const { return peer_->hello_of(1); }
  uint64_t slot_base() const { return shape_.slot_of(kHostile) * kInbound; }

  void append_record() {
    uint8_t mode = in_.u8();
    size_t len = (mode & 1) ? in_.below(kInbound) : in_.below(max_fragment_ + 1);
    RingWriter w{peer_->staging().data, kInbound, staging_tail_};
    EntryHeader* out = w.reserve(len, UINT64_MAX);
    if (!out) return;
    EntryHeader h;
    h.gseq = (mode & 2) ? in_.u64() : 0;
    h.sseq = ++sseq_;
    h.length = static_cast<uint32_t>(len);
    h.sender = (mode & 4) ? in_.u32() : kHostile;
    h.pid = in_.u32();
    h.group = in_.u8();
    h.kind =
        (mode & 8) ? static_cast<EntryKind>(in_.u8()) : static_cast<EntryKind>(1 + in_.u8() % 3);
    h.guarantee =
        (mode & 16) ? static_cast<Guarantee>(in_.u8()) : static_cast<Guarantee>(in_.u8() % 4);
    h.flags = (mode & 32) ? in_.u16() : 0;
    h.aux = (mode & 64) ? in_.u32() : 0;
    if (mode & 128) h.length = in_.u32();
    std::memcpy(out, &h, sizeof(h));
    auto payload = in_.bytes(len);
    std::memset(out + 1, 0, len);
    std::memcpy(out + 1, payload.data(), payload.size());
    staging_tail_ = w.tail;
  }

  void post_staging() {
    const HelloMsg* s = seq();
    ConnId c = peer_->conn_to(1);
    if (!s || c == kNoConn || staging_posted_ == staging_tail_) return;
    uint64_t from =
        std::max(staging_posted_, staging_tail_ - std::min<uint64_t>(staging_tail_, kInbound));
    uint64_t to = staging_tail_;
    uint32_t imm = make_imm(ImmType::Inbound, to);
    if (in_.u8() == 0xff) imm = in_.u32();
    size_t off = from % kInbound, len = to - from;
    Region& st = peer_->staging();
    if (off + len > kInbound) {
      size_t first = kInbound - off;
      peer_->ep().post_write(c, st, off, s->inbound, slot_base() + off, first, 0, false);
      peer_->ep().post_write_imm(c, st, 0, s->inbound, slot_base(), len - first, imm, 0, false);
    } else {
      peer_->ep().post_write_imm(c, st, off, s->inbound, slot_base() + off, len, imm, 0, false);
    }
    staging_posted_ = to;
  }

  void raw_write() {
    const HelloMsg* s = seq();
    if (!s) return;
    uint64_t off = in_.below(kInbound);
    auto bytes = in_.bytes(in_.below(512));
    size_t len = std::min<size_t>(bytes.size(), kInbound - off);
    std::optional<uint32_t> imm;
    uint8_t mode = in_.u8();
    if (mode & 1)
      imm = (mode & 2) ? in_.u32()
                       : make_imm(ImmType::Inbound, staging_posted_ + in_.below(kInbound));
    peer_->write(1, s->inbound, slot_base() + off, bytes.first(len), imm);
  }

  void immediate() {
    const HelloMsg* s = seq();
    if (!s) return;
    uint32_t imm = in_.flag() ? in_.u32() : make_imm(static_cast<ImmType>(in_.u8() % 8), in_.u64());
    peer_->write(1, s->inbound, slot_base(), {}, imm);
  }

  void ack() {
    AckSlot a;
    if (in_.flag()) {
      a.received = in_.u64();
      a.delivered = in_.u64();
    } else {
      a.received = agent_->received() + in_.below(kLog);
      a.delivered = a.received - std::min<uint64_t>(a.received, in_.below(kLog));
    }
    ack_to(a);
  }

  void ack_to(const AckSlot& a) {
    const HelloMsg* s = seq();
    if (trace())
      std::fprintf(stderr, "node 2 acks received %lu delivered %lu%s\n", (unsigned long)a.received,
                   (unsigned long)a.delivered, s ? "" : " (not introduced)");
    if (!s) return;
    peer_->write(1, s->ctrl, shape_.slot_of(kHostile) * sizeof(AckSlot),
                 {reinterpret_cast<const uint8_t*>(&a), sizeof(a)}, make_imm(ImmType::Ack, 0));
  }

  Input& in_;
  SimWorld world_;
  ClusterShape shape_;
  bool deliver_fragments_ = false, hold_ = false, fuzz_first_hello_ = false;
  size_t max_fragment_ = 0;
  uint64_t now_us_ = 1'000'000;
  std::unique_ptr<SimPeer> peer_;
  std::unique_ptr<MemberAgent> agent_;
  std::vector<std::unique_ptr<Honest>> honest_;
  std::map<NodeId, std::deque<std::string>> sent_;
  uint64_t staging_tail_ = 0, staging_posted_ = 0, sseq_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  Cluster c(in);
  c.run();
  return 0;
}
