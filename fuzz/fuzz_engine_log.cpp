// ordering/: what a hostile (or broken) sequencer can make a member do.
//
// A 2-node cluster on the simulated fabric and a virtual clock: node 1, the
// sequencer, is a bare endpoint driven by the input (fuzz/sim_peer.h, with
// the membership duties of fuzz/member_agent.h: heartbeats, answers); node
// 2 runs the engine. Node 1 introduces itself (honestly or with a tampered
// HelloMsg), commits view 1 with itself as sequencer (as the coordinator of
// the first round would), then writes log entries into node 2's mirror:
// well-formed ones with the next gseq, ones with any header field changed,
// raw bytes at any offset, and Log / Stable / Credit / other immediates
// with any position. It can also act as a real sequencer for node 2's own
// sends (copying them from its inbound ring into the log), so node 2's
// credit accounting meets forged copies of its own records, and start
// view changes (Prepare), whose State answer describes node 2's log up to
// what it received, delivered or not.
//
// Oracles (every delivery at node 2): payloads lie inside the log mirror or
// the reassembly buffer; positions never pass what was received; non-early
// gseqs increase; and, in strict mode (default; RCPG_FUZZ_LENIENT=1 turns
// it off), a delivered entry is one a member can act on: a real kind and
// guarantee, a configured sender, a length a sender could have sent. An
// engine may stop (that is how it reports a corrupt log); it must not
// crash, hang or exhaust memory.
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
constexpr NodeId kSeq = 1, kMember = 2;
constexpr uint64_t kTickUs = 2000;  // virtual time per round

bool strict() {
  static const bool s = std::getenv("RCPG_FUZZ_LENIENT") == nullptr;
  return s;
}

bool trace() {
  static const bool t = std::getenv("RCPG_FUZZ_TRACE") != nullptr;
  return t;
}

class Cluster {
 public:
  explicit Cluster(Input& in) : in_(in), world_(in.u8()) {
    uint8_t mode = in.u8();
    deliver_fragments_ = mode & 1;
    hold_ = mode & 2;
    fuzz_first_hello_ = mode & 4;
    shape_.nodes = {kSeq, kMember};
    shape_.log_bytes = kLog;
    shape_.inbound_bytes = kInbound;
    peer_ = std::make_unique<SimPeer>(world_, kSeq, shape_);
    agent_ = std::make_unique<MemberAgent>(*peer_, shape_);
    agent_->on_imm_hook = [this](NodeId from, uint32_t imm) {
      if (from == kMember && imm_type(imm) == ImmType::Inbound)
        inbound_end_ = imm_pos(imm, inbound_end_);
    };
    peer_->on_connected([this](NodeId, ConnId c) {
      if (fuzz_first_hello_) return send_fuzzed_hello(c);
      peer_->send_honest_hello(c);
    });
    EndpointConfig ec;
    ec.node_id = kMember;
    ec.listen_address = "n2";
    ec.log = [](std::string_view) {};
    ep_ = world_.create_endpoint(ec);
    EngineConfig cfg;
    cfg.self = kMember;
    for (NodeId n : shape_.nodes) cfg.nodes.push_back({n, "n" + std::to_string(n)});
    cfg.log_bytes = kLog;
    cfg.inbound_bytes = kInbound;
    cfg.deliver_fragments = deliver_fragments_;
    cfg.hold_deliveries = hold_;
    cfg.clock = [this] { return now_us_; };
    cfg.heartbeat_interval_us = 10'000;
    cfg.suspect_timeout_us = 60'000;
    engine_ = std::make_unique<Engine>(
        *ep_, cfg, [this](const Delivery& d) { on_delivery(d); },
        [](const std::string& line) {
          if (trace()) std::fprintf(stderr, "engine: %s\n", line.c_str());
        });
    std::string why;
    FUZZ_CHECK(engine_->start(why));
    checker_ = DeliveryChecker{engine_.get(), &shape_, deliver_fragments_};
    max_fragment_ = engine_->max_fragment();
  }

  void run() {
    for (int i = 0; i < 50 && !peer_->hello_of(kMember); ++i) round();
    commit_first_view();
    for (int i = 0; i < 50 && engine_->view().state != Membership::Normal; ++i) round();
    for (int steps = 0; steps < 64 && !in_.empty(); ++steps) {
      uint8_t op = in_.u8() % 10;
      if (trace()) std::fprintf(stderr, "step %d: op %u\n", steps, op);
      switch (op) {
        case 0:
          append_entry();
          break;
        case 1:
          replicate();
          break;
        case 2:
          raw_write();
          break;
        case 3:
          immediate();
          break;
        case 4:
          if (ConnId c = peer_->conn_to(kMember); c != kNoConn) send_fuzzed_hello(c);
          break;
        case 5:
          member_send();
          break;
        case 6:
          sequence_member();
          replicate();
          break;
        case 7:
          prepare();
          break;
        default:
          for (int r = 1 + in_.u8() % 4; r > 0; --r) round();
          break;
      }
    }
    for (int i = 0; i < 8; ++i) round();
  }

 private:
  void round() {
    world_.run(256);
    now_us_ += kTickUs;
    engine_->progress();
    if (hold_) engine_->release(engine_->delivered_position());
    agent_->tick();
  }

  // View 1 = {1, 2}, sequencer 1, log from position 0 and gseq 1: what the
  // first round's coordinator commits (the engine takes a Commit from any
  // member).
  void commit_first_view() {
    const HelloMsg* m = peer_->hello_of(kMember);
    if (!m) return;
    rcpg::ordering::CommitMsg c;
    c.epoch = 1;
    c.value.epoch = 1;
    c.value.sequencer = c.value.holder = kSeq;
    c.value.count = 2;
    c.value.cut = 0;
    c.value.cut_gseq = 1;
    c.value.members[0].id = kSeq;
    c.value.members[0].incarnation = peer_->incarnation;
    c.value.members[1].id = kMember;
    c.value.members[1].incarnation = m->incarnation;
    agent_->send(kMember, c);
  }

  void on_delivery(const Delivery& d) {
    checker_.check(d);
    if (d.fresh) last_gseq_ = 0;  // a new history: gseq restarts at its cut
    if (!d.early) {
      FUZZ_CHECK(d.gseq > last_gseq_);
      last_gseq_ = d.gseq;
    }
    if (!strict()) return;
    FUZZ_CHECK(d.kind == EntryKind::Data || d.kind == EntryKind::Join ||
               d.kind == EntryKind::Leave || d.kind == EntryKind::View);
    FUZZ_CHECK(static_cast<uint8_t>(d.guarantee) <= 3);
    FUZZ_CHECK(d.sender == kSeq || d.sender == kMember);
    const Region& log = engine_->log_region();
    bool from_log = d.data >= log.data && d.data < log.data + log.size;
    if (from_log && d.kind != EntryKind::View) FUZZ_CHECK(d.len <= max_fragment_);
  }

  void send_fuzzed_hello(ConnId c) {
    HelloMsg m = peer_->own_hello();
    std::vector<uint8_t> b(sizeof(m));
    std::memcpy(b.data(), &m, sizeof(m));
    uint8_t mode = in_.u8();
    for (int n = mode % 4; n > 0; --n) b[in_.u8() % b.size()] ^= in_.u8();
    if (mode & 4) b.resize(in_.below(sizeof(m) + 16));
    peer_->ep().post_send(c, std::as_bytes(std::span(b)), 0);
  }

  // Appends one entry to node 1's log (its master copy, sent by replicate()).
  void append_entry() {
    uint8_t mode = in_.u8();
    size_t len = (mode & 1) ? in_.below(kLog) : in_.below(max_fragment_ + 1);
    RingWriter w{peer_->log().data, kLog, log_tail_};
    EntryHeader* out = w.reserve(len, UINT64_MAX);
    if (!out) return;
    EntryHeader h;
    h.gseq = (mode & 2) ? in_.u64() : next_gseq_++;
    h.sseq = in_.flag() ? in_.u64() : ++sseq_;
    h.length = static_cast<uint32_t>(len);
    h.sender = (mode & 4) ? in_.u32() : 1 + in_.u8() % 2;
    h.pid = in_.u32();
    h.group = in_.u8();
    h.kind =
        (mode & 8) ? static_cast<EntryKind>(in_.u8()) : static_cast<EntryKind>(1 + in_.u8() % 4);
    h.guarantee =
        (mode & 16) ? static_cast<Guarantee>(in_.u8()) : static_cast<Guarantee>(in_.u8() % 4);
    uint8_t f = in_.u8();
    h.flags = (mode & 32) ? in_.u16() : (f & 1) ? (kFragment | (f & (kFragFirst | kFragLast))) : 0;
    h.aux = (mode & 64) ? in_.u32() : in_.below(4 * max_fragment_);
    if (mode & 128) h.length = in_.u32();
    std::memcpy(out, &h, sizeof(h));
    auto payload = in_.bytes(len);
    std::memset(out + 1, 0, len);
    std::memcpy(out + 1, payload.data(), payload.size());
    log_tail_ = w.tail;
  }

  void replicate() {
    const HelloMsg* m = peer_->hello_of(kMember);
    ConnId c = peer_->conn_to(kMember);
    if (!m || c == kNoConn || log_posted_ == log_tail_) return;
    uint64_t from = std::max(log_posted_, log_tail_ - std::min<uint64_t>(log_tail_, kLog));
    uint64_t to = log_tail_;
    uint32_t imm = make_imm(ImmType::Log, to);
    if (in_.u8() == 0xff) imm = in_.u32();
    size_t off = from % kLog, len = to - from;
    Region& log = peer_->log();
    if (off + len > kLog) {
      size_t first = kLog - off;
      peer_->ep().post_write(c, log, off, m->log, off, first, 0, false);
      peer_->ep().post_write_imm(c, log, 0, m->log, 0, len - first, imm, 0, false);
    } else {
      peer_->ep().post_write_imm(c, log, off, m->log, off, len, imm, 0, false);
    }
    log_posted_ = to;
  }

  void raw_write() {
    const HelloMsg* m = peer_->hello_of(kMember);
    if (!m) return;
    uint64_t off = in_.below(kLog);
    auto bytes = in_.bytes(in_.below(512));
    size_t len = std::min<size_t>(bytes.size(), kLog - off);
    std::optional<uint32_t> imm;
    uint8_t mode = in_.u8();
    if (mode & 1)
      imm = (mode & 2) ? in_.u32() : make_imm(ImmType::Log, log_posted_ + in_.below(2 * kLog));
    peer_->write(kMember, m->log, off, bytes.first(len), imm);
  }

  void immediate() {
    const HelloMsg* m = peer_->hello_of(kMember);
    if (!m) return;
    uint32_t imm = in_.flag() ? in_.u32() : make_imm(static_cast<ImmType>(in_.u8() % 8), in_.u64());
    peer_->write(kMember, m->log, 0, {}, imm);
  }

  void member_send() {
    Guarantee g = static_cast<Guarantee>(in_.u8() % 4);
    size_t len = in_.below(3 * max_fragment_ + 1);
    std::string msg(len, static_cast<char>('a' + sent_.size() % 26));
    sent_.push_back(std::move(msg));
    if (engine_->send(EntryKind::Data, g, 3, 9, std::as_bytes(std::span(sent_.back()))) !=
        SendResult::Ok)
      sent_.pop_back();
  }

  // A round of node 1's: node 2 answers with a State, which describes its
  // log up to what it received (delivered or not).
  void prepare() {
    rcpg::ordering::PrepareMsg m;
    m.epoch = engine_->view().epoch + 1 + in_.u8() % 2;
    m.ballot = rcpg::ordering::Ballot{++ballot_n_ + in_.u8(), kSeq, 0};
    ballot_n_ = m.ballot.n;
    agent_->send(kMember, m);
  }

  // Node 1 as an honest sequencer of what node 2 wrote into its inbound ring.
  void sequence_member() {
    const std::byte* base = peer_->inbound().data + shape_.slot_of(kMember) * kInbound;
    RingReader reader{base, kInbound};
    for (int n = 0; n < 64; ++n) {
      const EntryHeader* h = reader.next(inbound_read_, inbound_end_);
      if (!h) break;
      size_t bytes = record_bytes(h->length);
      if (bytes > kInbound - inbound_read_ % kInbound || inbound_read_ + bytes > inbound_end_)
        break;
      RingWriter w{peer_->log().data, kLog, log_tail_};
      EntryHeader* out = w.reserve(h->length, UINT64_MAX);
      if (!out) break;
      std::memcpy(out, h, bytes);
      out->gseq = next_gseq_++;
      log_tail_ = w.tail;
      inbound_read_ += bytes;
    }
  }

  Input& in_;
  SimWorld world_;
  ClusterShape shape_;
  bool deliver_fragments_ = false, hold_ = false, fuzz_first_hello_ = false;
  size_t max_fragment_ = 0;
  uint64_t now_us_ = 1'000'000;
  uint64_t ballot_n_ = 0;
  std::unique_ptr<SimPeer> peer_;
  std::unique_ptr<MemberAgent> agent_;
  std::unique_ptr<Endpoint> ep_;
  std::unique_ptr<Engine> engine_;
  DeliveryChecker checker_;
  uint64_t last_gseq_ = 0;
  std::deque<std::string> sent_;
  uint64_t log_tail_ = 0, log_posted_ = 0, next_gseq_ = 1, sseq_ = 0;
  uint64_t inbound_end_ = 0, inbound_read_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  Cluster c(in);
  c.run();
  return 0;
}
