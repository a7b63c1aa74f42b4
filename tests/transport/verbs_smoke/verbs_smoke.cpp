// Smoke test of the verbs fabric on two soft-RoCE "hosts":
//   scripts/softroce --hosts 2 -- tests/transport/verbs_smoke/run.sh
// A forked child listens on host 2 (an agent answering a few control
// messages); the parent connects from host 1 and checks connection setup and
// authentication, one-sided operations of 0 B .. 16 MiB with data
// verification, send/recv, error completions, 64 concurrent connections and
// a killed peer. Prints one line per check and "N passed, M failed".
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "transport/fabric.h"
#include "transport/verbs/verbs_endpoint.h"

using namespace rcpg::transport;
using Clock = std::chrono::steady_clock;

namespace {

constexpr size_t kMiB = size_t{1} << 20;
constexpr size_t kAgentRegion = 16 * kMiB + 64 * 1024;
constexpr auto kPatience = std::chrono::seconds(60);

enum MsgType : uint32_t { kRegion = 1, kEcho, kImmSeen, kStats, kStatsReply, kDisconnect };

struct Msg {
  uint32_t type = 0;
  uint32_t imm = 0;
  uint64_t a = 0;
  uint64_t b = 0;
  RemoteRegion region{};
};

uint64_t checksum(const std::byte* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<uint8_t>(p[i])) * 1099511628211ull;
  return h;
}

std::byte pattern(size_t i, uint32_t seed) {
  return static_cast<std::byte>((i * 131 + (i >> 9) + seed * 17) & 0xff);
}
void fill(std::byte* p, size_t n, uint32_t seed) {
  for (size_t i = 0; i < n; ++i) p[i] = pattern(i, seed);
}
bool check(const std::byte* p, size_t n, uint32_t seed) {
  for (size_t i = 0; i < n; ++i)
    if (p[i] != pattern(i, seed)) return false;
  return true;
}

template <typename T>
std::span<const std::byte> bytes_of(const T& v) {
  return std::as_bytes(std::span(&v, 1));
}

std::array<uint8_t, 32> key_of(uint8_t b) {
  std::array<uint8_t, 32> k{};
  k.fill(b);
  return k;
}

// ---- the agent (child process) ------------------------------------------------

[[noreturn]] void agent_main(const std::string& listen, int ready_fd) {
  EndpointConfig cfg;
  cfg.node_id = 2;
  cfg.listen_address = listen;
  cfg.cluster_key = key_of(0x5a);
  std::string why;
  auto ep = make_verbs_endpoint(cfg, why);
  Region* region = ep ? ep->register_region(kAgentRegion) : nullptr;
  char status = region ? 'R' : 'E';
  if (!region) std::fprintf(stderr, "agent: %s\n", ep ? "register_region failed" : why.c_str());
  if (region) fill(region->data, region->size, 1);
  if (write(ready_fd, &status, 1) != 1 || !region) _exit(2);
  close(ready_fd);

  uint64_t peer_rejected = 0, disconnected = 0;
  struct Out {
    ConnId conn;
    std::vector<std::byte> bytes;
    int attempts = 0;
  };
  std::deque<Out> outbox;
  auto send = [&](ConnId c, std::span<const std::byte> b) {
    outbox.push_back({c, std::vector<std::byte>(b.begin(), b.end())});
  };
  std::array<Completion, 32> wc;
  for (;;) {
    bool busy = false;
    while (auto ev = ep->next_event()) {
      busy = true;
      if (ev->type == EventType::Connected && ev->inbound) {
        Msg m;
        m.type = kRegion;
        m.region = region->remote;
        send(ev->conn, bytes_of(m));
      } else if (ev->type == EventType::PeerRejected) {
        ++peer_rejected;
      } else if (ev->type == EventType::Disconnected) {
        ++disconnected;
      }
    }
    size_t n = ep->poll(wc);
    for (size_t i = 0; i < n; ++i) {
      busy = true;
      const Completion& c = wc[i];
      if (c.status != Status::Ok) continue;
      if (c.op == Op::RecvImm) {
        Msg m;
        m.type = kImmSeen;
        m.imm = c.imm;
        m.a = c.len;
        m.b = checksum(region->data, std::min<size_t>(c.len, region->size));
        send(c.conn, bytes_of(m));
      } else if (c.op == Op::Recv && c.len >= 4) {
        uint32_t type;
        std::memcpy(&type, c.data, 4);
        if (type == kEcho) {
          send(c.conn, {c.data, c.len});
        } else if (type == kStats) {
          Msg m;
          m.type = kStatsReply;
          m.a = peer_rejected;
          m.b = disconnected;
          send(c.conn, bytes_of(m));
        } else if (type == kDisconnect) {
          ep->disconnect(c.conn);
        }
      }
    }
    // A full send queue: retry later; a dead connection: give up eventually.
    for (size_t k = outbox.size(); k-- > 0;) {
      Out o = std::move(outbox.front());
      outbox.pop_front();
      if (!ep->post_send(o.conn, o.bytes, 0) && ++o.attempts < 100000)
        outbox.push_back(std::move(o));
    }
    if (!busy) ep->wait(std::chrono::milliseconds(20));
  }
}

// ---- the tester (parent) ------------------------------------------------------

struct Got {
  Completion c;
  std::vector<std::byte> data;
};

class Tester {
 public:
  explicit Tester(Endpoint& ep) : ep_(ep) {}

  void pump() {
    std::array<Completion, 64> wc;
    size_t n = ep_.poll(wc);
    for (size_t i = 0; i < n; ++i) {
      Got g{wc[i], {}};
      if (wc[i].op == Op::Recv && wc[i].data) g.data.assign(wc[i].data, wc[i].data + wc[i].len);
      g.c.data = nullptr;
      comps_.push_back(std::move(g));
    }
    while (auto ev = ep_.next_event()) events_.push_back(std::move(*ev));
  }

  std::optional<Got> completion(const std::function<bool(const Completion&)>& pred) {
    auto deadline = Clock::now() + kPatience;
    for (;;) {
      for (auto it = comps_.begin(); it != comps_.end(); ++it)
        if (pred(it->c)) {
          Got g = std::move(*it);
          comps_.erase(it);
          return g;
        }
      if (Clock::now() > deadline) return std::nullopt;
      pump();
      if (comps_.empty()) ep_.wait(std::chrono::milliseconds(2));
    }
  }
  std::optional<Got> by_wr(uint64_t wr_id, ConnId conn) {
    return completion([&](const Completion& c) {
      return c.wr_id == wr_id && c.conn == conn && c.op != Op::Recv && c.op != Op::RecvImm;
    });
  }
  std::optional<Msg> message(ConnId conn, uint32_t type) {
    auto g = completion([&](const Completion& c) {
      if (c.conn != conn || c.op != Op::Recv || c.status != Status::Ok) return false;
      return true;
    });
    while (g) {
      Msg m;
      std::memcpy(&m, g->data.data(), std::min(sizeof(m), g->data.size()));
      if (m.type == type) return m;
      g = completion([&](const Completion& c) {
        return c.conn == conn && c.op == Op::Recv && c.status == Status::Ok;
      });
    }
    return std::nullopt;
  }

  std::optional<Event> event(const std::function<bool(const Event&)>& pred,
                             std::chrono::milliseconds patience = kPatience) {
    auto deadline = Clock::now() + patience;
    for (;;) {
      for (auto it = events_.begin(); it != events_.end(); ++it)
        if (pred(*it)) {
          Event e = std::move(*it);
          events_.erase(it);
          return e;
        }
      if (Clock::now() > deadline) return std::nullopt;
      pump();
      ep_.wait(std::chrono::milliseconds(2));
    }
  }
  std::optional<Event> event_on(ConnId conn, EventType type) {
    return event([&](const Event& e) { return e.conn == conn && e.type == type; });
  }

  // Posts until accepted (a full queue returns false).
  bool post(const std::function<bool()>& fn) {
    auto deadline = Clock::now() + kPatience;
    while (!fn()) {
      if (Clock::now() > deadline) return false;
      pump();
    }
    return true;
  }

  void drop_completions() { comps_.clear(); }

 private:
  Endpoint& ep_;
  std::deque<Got> comps_;
  std::deque<Event> events_;
};

int passed = 0, failed = 0;
bool quick = false;
void report(bool ok, const std::string& what, Clock::time_point t0) {
  double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  std::printf("%s  %-58s %9.1f ms\n", ok ? "PASS" : "FAIL", what.c_str(), ms);
  std::fflush(stdout);
  (ok ? passed : failed)++;
}

struct Session {
  ConnId conn = kNoConn;
  RemoteRegion remote{};
};

std::optional<Session> open(Tester& t, Endpoint& ep, const std::string& addr, NodeId peer = 2) {
  Session s;
  s.conn = ep.connect(addr, peer);
  auto ev = t.event([&](const Event& e) { return e.conn == s.conn; });
  if (!ev || ev->type != EventType::Connected) {
    std::printf("  connect: %s\n",
                ev ? (std::string(to_string(ev->type)) + ": " + ev->detail).c_str() : "no event");
    return std::nullopt;
  }
  auto m = t.message(s.conn, kRegion);
  if (!m) return std::nullopt;
  s.remote = m->region;
  return s;
}

int tester_main(const std::string& src, const std::string& agent_addr, const std::string& bad_addr,
                pid_t child) {
  EndpointConfig cfg;
  cfg.node_id = 1;
  cfg.source_address = src;
  cfg.cluster_key = key_of(0x5a);
  std::string why;
  auto t0 = Clock::now();
  auto ep = make_verbs_endpoint(cfg, why);
  report(ep != nullptr, "create endpoint" + (ep ? "" : ": " + why), t0);
  if (!ep) return 1;
  Tester t(*ep);

  // 1. connect + authenticate
  t0 = Clock::now();
  auto s = open(t, *ep, agent_addr);
  report(s.has_value() && s->remote.length == kAgentRegion, "connect + auth, region advertised",
         t0);
  if (!s) return 1;

  // 2. wrong key and wrong node id are rejected; the listener reports it
  t0 = Clock::now();
  {
    EndpointConfig bad = cfg;
    bad.cluster_key = key_of(0x33);
    auto ep2 = make_verbs_endpoint(bad, why);
    bool ok = ep2 != nullptr;
    if (ep2) {
      Tester t2(*ep2);
      ConnId c = ep2->connect(agent_addr, 2);
      auto ev = t2.event([&](const Event& e) { return e.conn == c; });
      ok = ev && ev->type == EventType::Rejected;
      if (ev) std::printf("  wrong key: %s: %s\n", to_string(ev->type), ev->detail.c_str());
    }
    report(ok, "wrong cluster key -> Rejected", t0);
    t0 = Clock::now();
    ConnId c = ep->connect(agent_addr, 7);
    auto ev = t.event([&](const Event& e) { return e.conn == c; });
    report(ev && ev->type == EventType::Rejected, "wrong node id -> Rejected", t0);
    t0 = Clock::now();
    Msg q;
    q.type = kStats;
    t.post([&] { return ep->post_send(s->conn, bytes_of(q), 0); });
    auto m = t.message(s->conn, kStatsReply);
    report(m && m->a == 2, "listener raised PeerRejected twice", t0);
  }

  // 3. nobody listening -> Unreachable
  t0 = Clock::now();
  {
    ConnId c = ep->connect(bad_addr, 2);
    auto ev = t.event([&](const Event& e) { return e.conn == c; });
    if (ev) std::printf("  no listener: %s: %s\n", to_string(ev->type), ev->detail.c_str());
    report(ev && ev->type == EventType::Unreachable, "no listener -> Unreachable", t0);
  }

  // 4. one-sided ops with data verification
  Region* a = ep->register_region(16 * kMiB);
  Region* b = ep->register_region(16 * kMiB);
  Region* z = ep->register_region(0);
  report(a && b && z, "register 2 x 16 MiB + 0 B regions", t0);
  if (!a || !b || !z) return 1;
  std::vector<size_t> sizes = {0, 8, 4096, kMiB};
  if (!quick) sizes.push_back(16 * kMiB);
  uint64_t wr = 100;
  for (size_t len : sizes) {
    t0 = Clock::now();
    std::memset(b->data, 0, len);
    bool ok = t.post([&] { return ep->post_read(s->conn, *b, 0, s->remote, 0, len, ++wr); });
    auto g = t.by_wr(wr, s->conn);
    ok = ok && g && g->c.status == Status::Ok && g->c.op == Op::Read && check(b->data, len, 1);
    report(ok, "read " + std::to_string(len) + " B, verified", t0);
  }
  for (size_t len : sizes) {
    uint32_t seed = static_cast<uint32_t>(len % 251) + 2;
    t0 = Clock::now();
    fill(a->data, len, seed);
    bool ok = t.post([&] { return ep->post_write(s->conn, *a, 0, s->remote, 0, len, ++wr); });
    auto g = t.by_wr(wr, s->conn);
    ok = ok && g && g->c.status == Status::Ok && g->c.op == Op::Write;
    std::memset(b->data, 0, len);
    ok = ok && t.post([&] { return ep->post_read(s->conn, *b, 0, s->remote, 0, len, ++wr); });
    g = t.by_wr(wr, s->conn);
    ok = ok && g && g->c.status == Status::Ok && check(b->data, len, seed);
    report(ok, "write " + std::to_string(len) + " B, read back, verified", t0);

    t0 = Clock::now();
    fill(a->data, len, seed + 1);
    uint32_t imm = 0xabc00000u + static_cast<uint32_t>(len % 4096);
    ok = t.post([&] { return ep->post_write_imm(s->conn, *a, 0, s->remote, 0, len, imm, ++wr); });
    g = t.by_wr(wr, s->conn);
    ok = ok && g && g->c.status == Status::Ok && g->c.op == Op::WriteImm;
    auto m = t.message(s->conn, kImmSeen);
    ok = ok && m && m->imm == imm && m->a == len && m->b == checksum(a->data, len);
    report(ok, "write_imm " + std::to_string(len) + " B, peer saw imm+len+data", t0);
  }
  t0 = Clock::now();
  {
    bool ok = t.post([&] { return ep->post_write(s->conn, *z, 0, s->remote, 0, 0, ++wr); });
    auto g = t.by_wr(wr, s->conn);
    report(ok && g && g->c.status == Status::Ok, "0 B write from a 0 B region", t0);
  }

  // 5. send / recv
  for (size_t len : {size_t{4}, size_t{100}, size_t{512}, size_t{4096}}) {
    t0 = Clock::now();
    std::vector<std::byte> msg(len);
    fill(msg.data(), len, 9);
    uint32_t type = kEcho;
    std::memcpy(msg.data(), &type, 4);
    bool ok = t.post([&] { return ep->post_send(s->conn, msg, ++wr); });
    auto g = t.by_wr(wr, s->conn);
    ok = ok && g && g->c.status == Status::Ok && g->c.op == Op::Send;
    auto r = t.completion(
        [&](const Completion& c) { return c.conn == s->conn && c.op == Op::Recv && c.len == len; });
    ok = ok && r && r->data == msg;
    report(ok, "send/recv echo " + std::to_string(len) + " B", t0);
  }
  t0 = Clock::now();
  {
    std::vector<std::byte> big(4097);
    bool ok = ep->post_send(s->conn, big, ++wr);
    auto g = t.by_wr(wr, s->conn);
    report(ok && g && g->c.status == Status::TooLarge, "send 4097 B -> TooLarge", t0);
  }

  // 5b. wait_fd(): wait(0) arms, then the fd wakes up for a completion
  t0 = Clock::now();
  {
    t.pump();
    ep->wait(std::chrono::microseconds(0));
    Msg q;
    q.type = kEcho;
    bool ok = t.post([&] { return ep->post_send(s->conn, bytes_of(q), ++wr); });
    pollfd pfd{ep->wait_fd(), POLLIN, 0};
    ok = ok && ::poll(&pfd, 1, 30000) == 1;
    auto g = t.by_wr(wr, s->conn);
    ok = ok && g && g->c.status == Status::Ok;
    t.message(s->conn, kEcho);
    // Idle: wait(0) must leave the fd quiet (no busy loop for fd users).
    t.pump();
    ep->wait(std::chrono::microseconds(0));
    t.pump();
    ep->wait(std::chrono::microseconds(0));
    bool quiet = ::poll(&pfd, 1, 200) == 0;
    report(ok && quiet, "wait_fd wakes on completion, quiet when idle", t0);
  }

  // 6. many unsignaled writes are reclaimed; data lands in order
  t0 = Clock::now();
  {
    const int kCount = 3000;
    for (int i = 0; i < kCount; ++i) {
      uint64_t v = 0x1000000ull + i;
      std::memcpy(a->data + 8 * (i % 1024), &v, 8);
      bool ok = t.post([&] {
        return ep->post_write(s->conn, *a, 8 * (i % 1024), s->remote, 8 * (i % 1024), 8, ++wr,
                              false);
      });
      if (!ok) break;
    }
    bool ok = t.post([&] { return ep->post_read(s->conn, *b, 0, s->remote, 0, 8192, ++wr); });
    auto g = t.by_wr(wr, s->conn);
    ok = ok && g && g->c.status == Status::Ok && std::memcmp(a->data, b->data, 8192) == 0;
    t.pump();
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    report(ok,
           std::to_string(kCount) + " unsignaled 8 B writes (" +
               std::to_string(static_cast<int>(kCount / ms * 1000)) + "/s)",
           t0);
  }

  // 7. local range errors are completions, and the connection survives
  t0 = Clock::now();
  {
    bool ok = ep->post_write(s->conn, *a, a->size - 4, s->remote, 0, 8, ++wr);
    auto g = t.by_wr(wr, s->conn);
    ok = ok && g && g->c.status == Status::LocalAccess;
    ok = ok && t.post([&] { return ep->post_read(s->conn, *b, 0, s->remote, 0, 8, ++wr); });
    g = t.by_wr(wr, s->conn);
    report(ok && g && g->c.status == Status::Ok, "local out of range -> LocalAccess, conn ok", t0);
  }

  // 8. 64 concurrent connections
  t0 = Clock::now();
  {
    const int kConns = 64;
    std::vector<ConnId> conns;
    for (int i = 0; i < kConns; ++i) conns.push_back(ep->connect(agent_addr, 2));
    int connected = 0;
    for (ConnId c : conns) {
      auto ev = t.event([&](const Event& e) { return e.conn == c; });
      if (ev && ev->type == EventType::Connected)
        ++connected;
      else if (ev)
        std::printf("  conn: %s: %s\n", to_string(ev->type), ev->detail.c_str());
    }
    report(connected == kConns, std::to_string(connected) + "/64 connections established", t0);
    t0 = Clock::now();
    int echoed = 0;
    std::vector<Msg> msgs(kConns);
    for (int i = 0; i < kConns; ++i) {
      msgs[i].type = kEcho;
      msgs[i].a = 5000 + i;
      t.post([&] { return ep->post_send(conns[i], bytes_of(msgs[i]), 7000 + i); });
    }
    for (int i = 0; i < kConns; ++i) {
      auto r = t.completion([&](const Completion& c) {
        if (c.conn != conns[i] || c.op != Op::Recv) return false;
        return true;
      });
      while (r) {
        Msg m;
        std::memcpy(&m, r->data.data(), std::min(sizeof(m), r->data.size()));
        if (m.type == kEcho) {
          echoed += m.a == uint64_t(5000 + i);
          break;
        }
        r = t.completion(
            [&](const Completion& c) { return c.conn == conns[i] && c.op == Op::Recv; });
      }
    }
    report(echoed == kConns, std::to_string(echoed) + "/64 echoes on concurrent connections", t0);
    t0 = Clock::now();
    for (ConnId c : conns) ep->disconnect(c);
    int closed = 0;
    for (ConnId c : conns) closed += t.event_on(c, EventType::Disconnected).has_value();
    Msg q;
    q.type = kStats;
    t.post([&] { return ep->post_send(s->conn, bytes_of(q), 0); });
    auto m = t.message(s->conn, kStatsReply);
    for (int tries = 0; m && m->b < uint64_t(kConns) && tries < 50; ++tries) {
      usleep(100000);
      t.post([&] { return ep->post_send(s->conn, bytes_of(q), 0); });
      m = t.message(s->conn, kStatsReply);
    }
    report(closed == kConns && m && m->b == uint64_t(kConns),
           "64 disconnects: Disconnected here and at the peer", t0);
    t.drop_completions();
  }

  // 9. remote access errors break the connection; later ops flush
  t0 = Clock::now();
  {
    auto s2 = open(t, *ep, agent_addr);
    bool ok = s2.has_value();
    if (ok) {
      ok = ep->post_write(s2->conn, *a, 0, s2->remote, s2->remote.length - 4, 8, 901);
      ok = ok && ep->post_write(s2->conn, *a, 0, s2->remote, 0, 8, 902);
      ok = ok && ep->post_write(s2->conn, *a, 0, s2->remote, 0, 8, 903, false);
      ok = ok && ep->post_read(s2->conn, *b, 0, s2->remote, 0, 8, 904);
      auto g1 = t.by_wr(901, s2->conn);
      auto g2 = t.by_wr(902, s2->conn);
      auto g3 = t.by_wr(903, s2->conn);
      auto g4 = t.by_wr(904, s2->conn);
      if (g1)
        std::printf("  oob: %s / %s / %s / %s\n", to_string(g1->c.status),
                    g2 ? to_string(g2->c.status) : "-", g3 ? to_string(g3->c.status) : "-",
                    g4 ? to_string(g4->c.status) : "-");
      ok = ok && g1 && g1->c.status == Status::RemoteAccess && g2 &&
           g2->c.status == Status::Flushed && g3 && g3->c.status == Status::Flushed && g4 &&
           g4->c.status == Status::Flushed;
      ok = ok && t.event_on(s2->conn, EventType::Disconnected).has_value();
      ok = ok && !ep->post_write(s2->conn, *a, 0, s2->remote, 0, 8, 905);
    }
    report(ok, "out-of-bounds write -> RemoteAccess, Flushed x3, Disconnected", t0);

    t0 = Clock::now();
    auto s3 = open(t, *ep, agent_addr);
    ok = s3.has_value();
    if (ok) {
      RemoteRegion bad = s3->remote;
      bad.rkey ^= 0x5500;
      ok = ep->post_read(s3->conn, *b, 0, bad, 0, 64, 911);
      auto g = t.by_wr(911, s3->conn);
      ok = ok && g && g->c.status == Status::RemoteAccess;
      ok = ok && t.event_on(s3->conn, EventType::Disconnected).has_value();
    }
    report(ok, "bad rkey read -> RemoteAccess, Disconnected", t0);
  }

  // 10. peer killed with operations in flight
  t0 = Clock::now();
  {
    const int kOps = 16;
    int posted = 0;
    for (int i = 0; i < kOps; ++i)
      posted += ep->post_write(s->conn, *a, 0, s->remote, 0, kMiB, 1000 + i, i % 2 == 0);
    ::kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    auto ev = t.event_on(s->conn, EventType::Disconnected);
    int ok_n = 0, flushed = 0, other = 0, missing = 0;
    for (int i = 0; i < kOps; ++i) {
      auto g = t.completion([&](const Completion& c) { return c.wr_id == uint64_t(1000 + i); });
      if (!g) {
        // Unsignaled ops that succeeded produce nothing.
        if (i % 2) continue;
        ++missing;
      } else if (g->c.status == Status::Ok) {
        ++ok_n;
      } else if (g->c.status == Status::Flushed) {
        ++flushed;
      } else {
        ++other;
      }
    }
    std::printf("  killed peer: %d posted, %d ok, %d flushed, %d other, %d missing\n", posted, ok_n,
                flushed, other, missing);
    report(ev.has_value() && missing == 0 && other == 0,
           "peer killed -> Disconnected, ops complete Ok/Flushed", t0);
  }

  t0 = Clock::now();
  ep.reset();
  report(true, "endpoint destroyed", t0);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // --late-fork: the parent opens verbs before forking the agent, as a test
  // harness that creates its endpoint first would.
  bool late_fork = false;
  for (int i = 1; i < argc; ++i) {
    late_fork |= std::string(argv[i]) == "--late-fork";
    quick |= std::string(argv[i]) == "--quick";  // largest op 1 MiB
  }
  std::vector<std::string> hosts;
  const char* env = std::getenv("RCPG_HOST_ADDRS");
  std::stringstream ss(env ? env : "10.77.0.1,10.77.0.2");
  for (std::string h; std::getline(ss, h, ',');) hosts.push_back(h);
  if (hosts.size() < 2) hosts.push_back(hosts.at(0));
  int port = 18000 + getpid() % 1000;
  std::string agent_addr = hosts[1] + ":" + std::to_string(port);
  std::string bad_addr = hosts[1] + ":" + std::to_string(port + 1);

  std::unique_ptr<Endpoint> early;
  if (late_fork) {
    EndpointConfig cfg;
    cfg.node_id = 9;
    cfg.source_address = hosts[0];
    std::string why;
    early = make_verbs_endpoint(cfg, why);
    Region* r = early ? early->register_region(kMiB) : nullptr;
    if (r) std::memset(r->data, 1, kMiB);
    std::printf("late fork: parent endpoint %s\n", r ? "ready" : why.c_str());
  }
  int fds[2];
  if (pipe(fds) != 0) return 1;
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    agent_main(agent_addr, fds[1]);
  }
  close(fds[1]);
  pollfd p{fds[0], POLLIN, 0};
  char status = 0;
  if (::poll(&p, 1, 60000) != 1 || read(fds[0], &status, 1) != 1 || status != 'R') {
    std::printf("agent failed to start\n");
    kill(pid, SIGKILL);
    return 1;
  }
  auto t0 = Clock::now();
  int rc = tester_main(hosts[0], agent_addr, bad_addr, pid);
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("total %.1f s\n%d passed, %d failed\n", s, passed, failed);
  return rc != 0 || failed != 0 ? 1 : 0;
}
