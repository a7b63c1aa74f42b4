// Smoke test and measurements for the shm fabric, across real processes
// (fork). Not part of the main suite: build and run with ./run.sh.
//
//   shm_smoke            all functional checks, then the measurements
//   shm_smoke --quick    functional checks only
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dirent.h>
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "transport/fabric.h"
#include "transport/shm/shm_endpoint.h"
#include "transport/spin_wait.h"

using namespace rcpg::transport;
using Clock = std::chrono::steady_clock;

namespace {

int g_failures = 0;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::fprintf(stderr, "  FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      ++g_failures;                                                            \
    }                                                                          \
  } while (0)
// In a child process: a failed requirement ends the child with status 1.
#define REQUIRE_CHILD(cond)                                                          \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "  child FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      _exit(1);                                                                      \
    }                                                                                \
  } while (0)

constexpr NodeId kClient = 1;
constexpr NodeId kServer = 2;
constexpr size_t kServerRegion = (size_t{16} << 20) + (size_t{1} << 20);
constexpr size_t kMaxOp = size_t{16} << 20;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

EndpointConfig config(NodeId id, std::string listen = {}, uint8_t key = 7) {
  EndpointConfig cfg;
  cfg.node_id = id;
  cfg.listen_address = std::move(listen);
  cfg.cluster_key.fill(key);
  cfg.log = [](std::string_view) {};
  return cfg;
}

std::string sock_path(const std::string& tag) {
  return "/tmp/rcpg-shm-smoke-" + std::to_string(getpid()) + "-" + tag + ".sock";
}

void fill_pattern(std::byte* p, size_t len, uint32_t seed) {
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < len; ++i) {
    x = x * 1664525u + 1013904223u;
    p[i] = static_cast<std::byte>(x >> 24);
  }
}

uint64_t checksum(const std::byte* p, size_t len) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < len; ++i) {
    h ^= static_cast<uint8_t>(p[i]);
    h *= 1099511628211ull;
  }
  return h;
}

// ---------------------------------------------------------------- protocol

enum class Cmd : uint32_t {
  Hello = 1,    // server -> client: region
  Checksum,     // off, len -> Result{value}
  Fill,         // off, len, a = seed -> Ack
  NewRegion,    // len, a = seed: register, fill, -> Result{region} at once
  Dereg,        // region.rkey -> Ack
  WriteInto,    // region, len, a = seed: server writes its pattern there -> Result{a=status}
  Pause,        // a = ms: stop polling, then count Fillers -> Result{a = count}
  Filler,       //
  PingPong,     // len, value = 0 spin / 1 wait() / 2 wait_fd, region = client's; until kStop
  Sink,         // swallow RecvImm until kStop -> Result{a = count}
  BurstAndDie,  // a = count: send that many Fillers, then exit at once
  Ack,
  Result,
  ImmSeen,  // a = imm, len, value = checksum of the server region [0, imm)
};

constexpr uint32_t kStop = 0xffffffff;  // immediate that ends PingPong / Sink

struct Msg {
  Cmd cmd{};
  uint32_t a = 0;
  uint64_t off = 0;
  uint64_t len = 0;
  uint64_t value = 0;
  RemoteRegion region{};
};

std::span<const std::byte> bytes_of(const Msg& m) {
  return std::as_bytes(std::span(&m, 1));
}

// Collects what an endpoint produces.
struct Pump {
  Endpoint& ep;
  std::deque<Event> events;
  std::deque<Completion> done;  // local completions
  std::deque<std::pair<ConnId, Msg>> msgs;
  std::deque<Completion> imms;

  explicit Pump(Endpoint& e) : ep(e) {}

  void step(bool block) {
    while (auto ev = ep.next_event()) events.push_back(std::move(*ev));
    std::array<Completion, 64> wc;
    size_t n = ep.poll(wc);
    for (size_t i = 0; i < n; ++i) {
      const Completion& c = wc[i];
      if (c.op == Op::Recv) {
        Msg m;
        std::memcpy(&m, c.data, std::min<size_t>(c.len, sizeof(m)));
        msgs.emplace_back(c.conn, m);
      } else if (c.op == Op::RecvImm) {
        imms.push_back(c);
      } else {
        done.push_back(c);
      }
    }
    if (n == 0 && block) ep.wait(std::chrono::milliseconds(2));
  }
  bool until(const std::function<bool()>& pred, double timeout_ms = 20000) {
    auto t = Clock::now();
    while (!pred()) {
      if (ms_since(t) > timeout_ms) return false;
      step(true);
    }
    return true;
  }
  std::optional<Event> event_of(ConnId c, EventType t) {
    for (auto it = events.begin(); it != events.end(); ++it)
      if (it->conn == c && it->type == t) {
        Event e = *it;
        events.erase(it);
        return e;
      }
    return std::nullopt;
  }
  bool wait_event(ConnId c, EventType t, double timeout_ms = 20000) {
    bool found = false;
    until([&] { return (found = event_of(c, t).has_value()); }, timeout_ms);
    return found;
  }
  std::optional<Completion> wait_done(uint64_t wr_id, double timeout_ms = 20000) {
    std::optional<Completion> out;
    until(
        [&] {
          for (auto it = done.begin(); it != done.end(); ++it)
            if (it->wr_id == wr_id) {
              out = *it;
              done.erase(it);
              return true;
            }
          return false;
        },
        timeout_ms);
    return out;
  }
  std::optional<Msg> wait_msg(Cmd cmd, double timeout_ms = 20000) {
    std::optional<Msg> out;
    until(
        [&] {
          for (auto it = msgs.begin(); it != msgs.end(); ++it)
            if (it->second.cmd == cmd) {
              out = it->second;
              msgs.erase(it);
              return true;
            }
          return false;
        },
        timeout_ms);
    return out;
  }
};

// ---------------------------------------------------------------- server

// The passive side: serves requests on every connection until killed or
// until `stop` says so.
class Server {
 public:
  explicit Server(std::unique_ptr<Endpoint> ep) : ep_(std::move(ep)) {
    if (!ep_) return;
    main_ = ep_->register_region(kServerRegion);
  }
  bool ok() const { return main_ != nullptr; }
  Endpoint& ep() { return *ep_; }
  int connected = 0, disconnected = 0;

  void run(const std::function<bool()>& stop = {}) {
    SpinWait spin(2000, std::chrono::milliseconds(20));
    for (;;) {
      if (stop && stop()) return;
      if (step()) {
        spin.busy();
      } else {
        spin.idle(*ep_);
      }
    }
  }

 private:
  // The client keeps polling, so its ring frees up; a dead client is given up on.
  void reply(ConnId c, const Msg& m) {
    for (int i = 0; i < 10000000 && !ep_->post_send(c, bytes_of(m), 0); ++i) {
    }
  }

  bool step() {
    bool did = false;
    while (auto ev = ep_->next_event()) {
      did = true;
      if (ev->type == EventType::Connected && ev->inbound) {
        ++connected;
        Msg m;
        m.cmd = Cmd::Hello;
        m.region = main_->remote;
        reply(ev->conn, m);
      } else if (ev->type == EventType::Disconnected) {
        ++disconnected;
      }
    }
    std::array<Completion, 64> wc;
    size_t n = ep_->poll(wc);
    std::vector<std::pair<ConnId, Msg>> later;  // need polling of their own
    for (size_t i = 0; i < n; ++i) {
      did = true;
      const Completion& c = wc[i];
      if (c.op == Op::RecvImm) {
        Msg m;
        m.cmd = Cmd::ImmSeen;
        m.a = c.imm;
        m.len = c.len;
        m.value = checksum(main_->data, std::min<size_t>(c.imm, main_->size));
        reply(c.conn, m);
      } else if (c.op == Op::Recv) {
        Msg m;
        std::memcpy(&m, c.data, std::min<size_t>(c.len, sizeof(m)));
        handle(c.conn, m, later);
      } else if (c.op == Op::Write && c.wr_id >= 1000) {
        Msg r;
        r.cmd = Cmd::Result;
        r.a = static_cast<uint32_t>(c.status);
        reply(write_conn_, r);
      }
    }
    for (auto& [conn, m] : later) {
      if (m.cmd == Cmd::Pause) pause(conn, m);
      if (m.cmd == Cmd::PingPong) ping_pong(conn, m);
      if (m.cmd == Cmd::Sink) sink(conn, m);
    }
    return did;
  }

  void handle(ConnId conn, const Msg& m, std::vector<std::pair<ConnId, Msg>>& later) {
    Msg r;
    r.cmd = Cmd::Ack;
    switch (m.cmd) {
      case Cmd::Checksum:
        r.cmd = Cmd::Result;
        r.value = checksum(main_->data + m.off, m.len);
        break;
      case Cmd::Fill:
        fill_pattern(main_->data + m.off, m.len, m.a);
        break;
      case Cmd::NewRegion: {
        Region* x = ep_->register_region(m.len);
        if (x) {
          fill_pattern(x->data, x->size, m.a);
          extra_[x->remote.rkey] = x;
          r.region = x->remote;
        }
        r.cmd = Cmd::Result;
        break;
      }
      case Cmd::Dereg: {
        auto it = extra_.find(m.region.rkey);
        if (it != extra_.end()) {
          ep_->deregister(it->second);
          extra_.erase(it);
        }
        break;
      }
      case Cmd::WriteInto:
        fill_pattern(main_->data, m.len, m.a);
        write_conn_ = conn;
        if (!ep_->post_write(conn, *main_, 0, m.region, 0, m.len, 1000 + m.a)) {
          r.cmd = Cmd::Result;
          r.a = 99;
          break;
        }
        return;  // answered on completion
      case Cmd::Filler:
        ++fillers_;
        return;
      case Cmd::BurstAndDie: {
        Msg f;
        f.cmd = Cmd::Filler;
        for (uint32_t i = 0; i < m.a; ++i) {
          f.a = i;
          reply(conn, f);
        }
        _exit(0);
      }
      case Cmd::Pause:
      case Cmd::PingPong:
      case Cmd::Sink:
        later.emplace_back(conn, m);
        return;
      default:
        return;
    }
    reply(conn, r);
  }

  void pause(ConnId conn, const Msg& m) {
    std::this_thread::sleep_for(std::chrono::milliseconds(m.a));
    fillers_ = 0;
    std::array<Completion, 64> wc;
    size_t n;
    while ((n = ep_->poll(wc)) > 0)
      for (size_t i = 0; i < n; ++i)
        if (wc[i].op == Op::Recv && wc[i].len >= sizeof(Cmd)) {
          Cmd c;
          std::memcpy(&c, wc[i].data, sizeof(c));
          if (c == Cmd::Filler) ++fillers_;
        }
    Msg r;
    r.cmd = Cmd::Result;
    r.a = fillers_;
    reply(conn, r);
  }

  // Reflects `iters` WRITE_WITH_IMMs of m.len bytes; idles as m.value says.
  void ping_pong(ConnId conn, const Msg& m) {
    Msg ack;
    ack.cmd = Cmd::Ack;
    reply(conn, ack);  // the client starts only now: no ping is taken by step()
    int fd = m.value == 2 ? ep_->wait_fd() : -1;
    std::array<Completion, 16> wc;
    for (bool stop = false; !stop;) {
      size_t n = ep_->poll(wc);
      for (size_t k = 0; k < n; ++k) {
        if (wc[k].op != Op::RecvImm) continue;
        if (wc[k].imm == kStop) {
          stop = true;
          break;
        }
        while (!ep_->post_write_imm(conn, *main_, 0, m.region, 0, m.len, wc[k].imm, 0, false)) {
        }
      }
      if (n == 0 && m.value == 1) ep_->wait(std::chrono::seconds(1));
      if (n == 0 && m.value == 2) {
        pollfd p{fd, POLLIN, 0};
        ::poll(&p, 1, 1000);
      }
    }
    Msg r;
    r.cmd = Cmd::Result;
    reply(conn, r);
  }

  void sink(ConnId conn, const Msg&) {
    Msg ack;
    ack.cmd = Cmd::Ack;
    reply(conn, ack);
    std::array<Completion, 64> wc;
    uint32_t got = 0;
    for (bool stop = false; !stop;) {
      size_t n = ep_->poll(wc);
      for (size_t k = 0; k < n; ++k) {
        if (wc[k].op != Op::RecvImm) continue;
        if (wc[k].imm == kStop)
          stop = true;
        else
          ++got;
      }
    }
    Msg r;
    r.cmd = Cmd::Result;
    r.a = got;
    reply(conn, r);
  }

  std::unique_ptr<Endpoint> ep_;
  Region* main_ = nullptr;
  std::map<uint32_t, Region*> extra_;
  ConnId write_conn_ = kNoConn;
  uint32_t fillers_ = 0;
};

// A forked server process listening at `addr`.
struct Child {
  pid_t pid = -1;
  std::string addr;
  ~Child() { stop(); }
  void stop() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      pid = -1;
    }
  }
};

bool start_server(Child& ch, const std::string& addr, std::vector<NodeId> allowed = {}) {
  int fds[2];
  if (pipe(fds) != 0) return false;
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    auto cfg = config(kServer, addr);
    cfg.allowed_peers = std::move(allowed);
    std::string why;
    auto ep = make_shm_endpoint(cfg, why);
    if (!ep) std::fprintf(stderr, "server: %s\n", why.c_str());
    Server s(std::move(ep));
    char st = s.ok() ? 'R' : 'E';
    if (write(fds[1], &st, 1) != 1 || st != 'R') _exit(2);
    close(fds[1]);
    s.run();
    _exit(0);
  }
  close(fds[1]);
  char st = 0;
  bool ok = read(fds[0], &st, 1) == 1 && st == 'R';
  close(fds[0]);
  ch.pid = pid;
  ch.addr = addr;
  return ok;
}

// A client connection to a server, with the server's region.
struct Session {
  std::unique_ptr<Endpoint> ep;
  std::unique_ptr<Pump> pump;
  ConnId conn = kNoConn;
  RemoteRegion remote{};

  bool open(const std::string& addr, uint8_t key = 7) {
    std::string why;
    if (!ep) ep = make_shm_endpoint(config(kClient, {}, key), why);
    if (!ep) return false;
    pump = std::make_unique<Pump>(*ep);
    return reconnect(addr);
  }
  bool reconnect(const std::string& addr) {
    conn = ep->connect(addr, kServer);
    if (!pump->wait_event(conn, EventType::Connected)) return false;
    auto hello = pump->wait_msg(Cmd::Hello);
    if (!hello) return false;
    remote = hello->region;
    return true;
  }
  std::optional<Msg> call(const Msg& m, Cmd expect) {
    while (!ep->post_send(conn, bytes_of(m), 0)) pump->step(false);
    return pump->wait_msg(expect);
  }
};

// ---------------------------------------------------------------- checks

void test_connect_and_auth() {
  std::puts("connect, authentication, rejection");
  Child srv;
  CHECK(start_server(srv, sock_path("auth"), {kClient, 9}));
  Session good;
  CHECK(good.open(srv.addr));
  CHECK(good.remote.length == kServerRegion);

  // Wrong key: Rejected, and the server keeps serving.
  std::string why;
  auto bad = make_shm_endpoint(config(kClient, {}, 99), why);
  Pump bp(*bad);
  ConnId bc = bad->connect(srv.addr, kServer);
  bool rejected = false;
  bp.until([&] {
    rejected = bp.event_of(bc, EventType::Rejected).has_value();
    return rejected || bp.event_of(bc, EventType::Connected).has_value();
  });
  CHECK(rejected);
  // Right key, wrong target node id: rejected too.
  ConnId wrong = good.ep->connect(srv.addr, 77);
  CHECK(good.pump->wait_event(wrong, EventType::Rejected));
  // A node that is not in allowed_peers.
  auto stranger = make_shm_endpoint(config(5), why);
  Pump sp(*stranger);
  ConnId sc = stranger->connect(srv.addr, kServer);
  CHECK(sp.wait_event(sc, EventType::Rejected));
  // Somebody there who never answers: Unreachable once the handshake times out.
  {
    std::string mute = sock_path("mute");
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, mute.c_str(), sizeof(sa.sun_path) - 1);
    CHECK(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0 && ::listen(fd, 4) == 0);
    auto t = Clock::now();
    ConnId m = good.ep->connect(mute, kServer);
    std::optional<Event> ev;
    good.pump->until(
        [&] { return (ev = good.pump->event_of(m, EventType::Unreachable)).has_value(); });
    CHECK(ev && ev->detail.find("timed out") != std::string::npos);
    std::printf("  unanswered handshake given up after %.1f s\n", ms_since(t) / 1000);
    ::close(fd);
    ::unlink(mute.c_str());
  }
  // Nobody there: Unreachable.
  ConnId none = good.ep->connect(sock_path("nobody"), kServer);
  CHECK(good.pump->wait_event(none, EventType::Unreachable));
  // The first connection still works.
  Msg m;
  m.cmd = Cmd::Checksum;
  m.len = 16;
  CHECK(good.call(m, Cmd::Result).has_value());
}

void test_listener_peer_rejected_event() {
  std::puts("listener raises PeerRejected and logs");
  std::vector<std::string> lines;
  auto cfg = config(kServer, sock_path("prej"));
  cfg.log = [&](std::string_view l) { lines.emplace_back(l); };
  std::string why;
  auto lis = make_shm_endpoint(cfg, why);
  auto cli = make_shm_endpoint(config(kClient, {}, 3), why);
  Pump lp(*lis), cp(*cli);
  ConnId c = cli->connect(cfg.listen_address, kServer);
  bool got = false, rej = false;
  auto t = Clock::now();
  while ((!got || !rej) && ms_since(t) < 10000) {
    lp.step(false);
    cp.step(false);
    for (auto& e : lp.events) got = got || (e.type == EventType::PeerRejected && e.inbound);
    rej = rej || cp.event_of(c, EventType::Rejected).has_value();
  }
  CHECK(got);
  CHECK(rej);
  CHECK(lines.size() == 1);
}

void test_sizes(Session& s) {
  std::puts("write / write_imm / read, 0 B .. 16 MiB, verified");
  Region* out = s.ep->register_region(kMaxOp);
  Region* in = s.ep->register_region(kMaxOp);
  CHECK(out && in);
  uint64_t wr = 1;
  for (size_t size : {size_t{0}, size_t{1}, size_t{8}, size_t{63}, size_t{4096}, size_t{65536},
                      size_t{1} << 20, kMaxOp}) {
    uint32_t seed = static_cast<uint32_t>(size) + 11;
    fill_pattern(out->data, size, seed);
    uint64_t want = checksum(out->data, size);
    // WRITE at an odd offset, verified by the server's checksum.
    uint64_t off = size == kMaxOp ? 0 : 13;
    CHECK(s.ep->post_write(s.conn, *out, 0, s.remote, off, size, ++wr));
    auto w = s.pump->wait_done(wr);
    CHECK(w && w->status == Status::Ok && w->op == Op::Write && w->len == size);
    Msg q;
    q.cmd = Cmd::Checksum;
    q.off = off;
    q.len = size;
    auto r = s.call(q, Cmd::Result);
    CHECK(r && r->value == want);
    // WRITE_WITH_IMM at offset 0: the server checksums [0, imm) on arrival.
    fill_pattern(out->data, size, seed + 1);
    want = checksum(out->data, size);
    CHECK(s.ep->post_write_imm(s.conn, *out, 0, s.remote, 0, size, static_cast<uint32_t>(size),
                               ++wr));
    auto seen = s.pump->wait_msg(Cmd::ImmSeen);
    CHECK(seen && seen->a == size && seen->len == size && seen->value == want);
    CHECK(s.pump->wait_done(wr).has_value());
    // READ of a range the server filled.
    Msg f;
    f.cmd = Cmd::Fill;
    f.off = 7;
    f.len = std::min(size, kServerRegion - 7);
    f.a = seed + 2;
    CHECK(s.call(f, Cmd::Ack).has_value());
    std::memset(in->data, 0xEE, size);
    CHECK(s.ep->post_read(s.conn, *in, 0, s.remote, 7, size, ++wr));
    auto rd = s.pump->wait_done(wr);
    CHECK(rd && rd->status == Status::Ok && rd->op == Op::Read);
    std::vector<std::byte> expect(size + 1);  // + 1: never a null data() for memcmp
    fill_pattern(expect.data(), size, seed + 2);
    CHECK(std::memcmp(in->data, expect.data(), size) == 0);
  }
  s.ep->deregister(out);
  s.ep->deregister(in);
}

void test_send_recv(Session& s) {
  std::puts("send / recv, back-pressure, oversize");
  // Back-pressure: the server stops polling; sends are refused once its
  // ring (recv_queue_depth = 128 slots) is full, never overwritten.
  Msg p;
  p.cmd = Cmd::Pause;
  p.a = 300;
  CHECK(s.ep->post_send(s.conn, bytes_of(p), 0));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  Msg f;
  f.cmd = Cmd::Filler;
  uint32_t accepted = 0;
  while (s.ep->post_send(s.conn, bytes_of(f), 0)) {
    ++accepted;
    std::array<Completion, 64> wc;
    s.ep->poll(wc);  // only our own Send completions can be there
  }
  CHECK(accepted >= 126 && accepted <= 128);
  auto r = s.pump->wait_msg(Cmd::Result);
  CHECK(r && r->a == accepted);
  std::printf("  ring full after %u sends; all %u delivered after the pause\n", accepted,
              r ? r->a : 0);
  // Oversize.
  std::vector<std::byte> huge(4097);
  CHECK(s.ep->post_send(s.conn, huge, 4242));
  auto c = s.pump->wait_done(4242);
  CHECK(c && c->status == Status::TooLarge);
  // Largest and empty messages still go through (the server ignores them).
  std::vector<std::byte> max(4096), none;
  CHECK(s.ep->post_send(s.conn, max, 4243));
  CHECK(s.ep->post_send(s.conn, none, 4244));
  CHECK(s.pump->wait_done(4243).has_value() && s.pump->wait_done(4244).has_value());
}

void test_ordering(Session& s) {
  std::puts("ordering: many unsignaled writes, then write_imm sees all of them");
  constexpr size_t kBlock = 4096;
  constexpr uint32_t kBlocks = 1024;  // 4 MiB
  Region* buf = s.ep->register_region(kBlocks * kBlock);
  CHECK(buf);
  for (int round = 0; round < 20; ++round) {
    fill_pattern(buf->data, kBlocks * kBlock, 500 + round);
    uint64_t want = checksum(buf->data, kBlocks * kBlock);
    for (uint32_t b = 0; b < kBlocks; ++b)
      while (!s.ep->post_write(s.conn, *buf, b * kBlock, s.remote, b * kBlock, kBlock, 0, false))
        s.pump->step(false);
    while (!s.ep->post_write_imm(s.conn, *buf, 0, s.remote, 0, 0, kBlocks * kBlock, 0, false))
      s.pump->step(false);
    auto seen = s.pump->wait_msg(Cmd::ImmSeen);
    CHECK(seen && seen->value == want && seen->len == 0);
  }
  for (const auto& c : s.pump->done) CHECK(c.op == Op::Send);  // unsignaled: no completions
  s.ep->deregister(buf);
}

void test_region_races(Session& s) {
  std::puts("regions registered after connect: used the moment their key arrives");
  Region* local = s.ep->register_region(1 << 16);
  Region* back = s.ep->register_region(1 << 16);
  uint64_t wr = 50000;
  for (uint32_t i = 0; i < 200; ++i) {
    // Server registers and at once sends us the key (through the ring).
    Msg q;
    q.cmd = Cmd::NewRegion;
    q.len = 4096 + i;
    q.a = i;
    auto r = s.call(q, Cmd::Result);
    CHECK(r && r->region.length == q.len);
    if (!r) return;
    CHECK(s.ep->post_read(s.conn, *back, 0, r->region, 0, q.len, ++wr));
    auto c = s.pump->wait_done(wr);
    CHECK(c && c->status == Status::Ok);
    std::vector<std::byte> expect(q.len);
    fill_pattern(expect.data(), q.len, i);
    CHECK(std::memcmp(back->data, expect.data(), q.len) == 0);
    // We register and at once send the server our key.
    Region* mine = s.ep->register_region(8192 + i);
    Msg w;
    w.cmd = Cmd::WriteInto;
    w.region = mine->remote;
    w.len = 8192 + i;
    w.a = i + 7;
    auto res = s.call(w, Cmd::Result);
    CHECK(res && res->a == static_cast<uint32_t>(Status::Ok));
    std::vector<std::byte> e2(w.len);
    fill_pattern(e2.data(), w.len, i + 7);
    CHECK(std::memcmp(mine->data, e2.data(), w.len) == 0);
    s.ep->deregister(mine);
    // The server deregisters its region: after its Ack (and our next look
    // at control messages) the key is gone.
    Msg d;
    d.cmd = Cmd::Dereg;
    d.region = r->region;
    CHECK(s.call(d, Cmd::Ack).has_value());
    if (i == 199) {
      s.pump->step(false);  // next_event(): the server hinted at its message
      CHECK(s.ep->post_write(s.conn, *local, 0, r->region, 0, 8, ++wr));
      auto bad = s.pump->wait_done(wr);
      CHECK(bad && bad->status == Status::RemoteAccess);
      CHECK(s.pump->wait_event(s.conn, EventType::Disconnected));
    }
  }
  s.ep->deregister(local);
  s.ep->deregister(back);
}

void test_out_of_bounds(const std::string& addr) {
  std::puts("out-of-bounds: RemoteAccess, Disconnected, both sides survive");
  Session s;
  CHECK(s.open(addr));
  Region* buf = s.ep->register_region(8192);
  struct Case {
    bool read;
    uint64_t off;
    size_t len;
    uint32_t key_xor;
    uint64_t addr_delta;
  };
  for (Case k : {Case{false, kServerRegion - 100, 4096, 0, 0}, Case{true, kServerRegion, 8, 0, 0},
                 Case{false, 0, 64, 0x5a5a5a, 0}, Case{false, ~uint64_t{0} - 3, 64, 0, 0},
                 Case{true, 0, 64, 0, ~uint64_t{0}}, Case{false, 0, 64, 0, kServerRegion}}) {
    RemoteRegion r = s.remote;
    r.rkey ^= k.key_xor;
    r.addr += k.addr_delta;
    CHECK(k.read ? s.ep->post_read(s.conn, *buf, 0, r, k.off, k.len, 1)
                 : s.ep->post_write(s.conn, *buf, 0, r, k.off, k.len, 1, false));
    auto c = s.pump->wait_done(1);
    CHECK(c && c->status == Status::RemoteAccess);
    CHECK(s.pump->wait_event(s.conn, EventType::Disconnected));
    CHECK(!s.ep->post_write(s.conn, *buf, 0, s.remote, 0, 8, 2));
    CHECK(s.reconnect(addr));
  }
  // Sub-range RemoteRegion (addr moved forward) is fine, as on verbs.
  RemoteRegion sub = s.remote;
  sub.addr += 4096;
  sub.length -= 4096;
  CHECK(s.ep->post_write(s.conn, *buf, 0, sub, 0, 8192, 3));
  auto ok = s.pump->wait_done(3);
  CHECK(ok && ok->status == Status::Ok);
  // Local range outside the region: LocalAccess, the connection stays.
  CHECK(s.ep->post_write(s.conn, *buf, 8000, s.remote, 0, 200, 4));
  auto la = s.pump->wait_done(4);
  CHECK(la && la->status == Status::LocalAccess);
  CHECK(s.ep->post_write(s.conn, *buf, 0, s.remote, 0, 200, 5));
  auto ok2 = s.pump->wait_done(5);
  CHECK(ok2 && ok2->status == Status::Ok);
}

void test_peer_killed() {
  std::puts("peer killed with SIGKILL: Disconnected, posts complete or are refused");
  Child srv;
  CHECK(start_server(srv, sock_path("kill")));
  Session s;
  CHECK(s.open(srv.addr));
  Region* buf = s.ep->register_region(65536);
  CHECK(s.ep->post_write(s.conn, *buf, 0, s.remote, 0, 65536, 1));
  CHECK(s.pump->wait_done(1).has_value());
  srv.stop();
  uint64_t posted = 0;
  auto t = Clock::now();
  bool disc = false;
  while (!disc && ms_since(t) < 20000) {
    if (s.ep->post_write(s.conn, *buf, 0, s.remote, 0, 64, 100 + posted)) ++posted;
    s.pump->step(true);
    disc = s.pump->event_of(s.conn, EventType::Disconnected).has_value();
  }
  CHECK(disc);
  s.pump->until([&] { return s.pump->done.size() >= posted; }, 5000);
  CHECK(s.pump->done.size() == posted);
  for (auto& d : s.pump->done) CHECK(d.status == Status::Ok || d.status == Status::Flushed);
  CHECK(!s.ep->post_write(s.conn, *buf, 0, s.remote, 0, 64, 9));
  std::printf("  %llu posts accepted before the death was seen, detected in %.1f ms\n",
              static_cast<unsigned long long>(posted), ms_since(t));

  // What a peer sent just before it died is still delivered, then the end.
  Child srv3;
  CHECK(start_server(srv3, sock_path("kill3")));
  CHECK(s.reconnect(srv3.addr));
  Msg burst;
  burst.cmd = Cmd::BurstAndDie;
  burst.a = 50;
  CHECK(s.ep->post_send(s.conn, bytes_of(burst), 0));
  waitpid(srv3.pid, nullptr, 0);  // exited on its own
  srv3.pid = -1;
  CHECK(s.pump->wait_event(s.conn, EventType::Disconnected));
  s.pump->until([&] { return s.pump->msgs.size() >= 50; }, 5000);
  CHECK(s.pump->msgs.size() == 50);
  for (uint32_t i = 0; i < s.pump->msgs.size(); ++i) CHECK(s.pump->msgs[i].second.a == i);
  s.pump->msgs.clear();

  // A survivor blocked in wait() wakes up when the peer dies.
  Child srv2;
  CHECK(start_server(srv2, sock_path("kill2")));
  CHECK(s.reconnect(srv2.addr));
  std::thread killer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    srv2.stop();
  });
  auto t2 = Clock::now();
  s.ep->wait(std::chrono::seconds(10));
  double woke = ms_since(t2);
  killer.join();
  CHECK(woke < 5000);
  CHECK(s.pump->wait_event(s.conn, EventType::Disconnected));
  std::printf("  survivor blocked in wait() woke %.1f ms after start (peer killed at 100 ms)\n",
              woke);
}

void test_many_processes() {
  std::puts("64 concurrent connections from 64 processes");
  constexpr int kProcs = 64;
  std::string addr = sock_path("many");
  std::string why;
  Server server(make_shm_endpoint(config(kServer, addr), why));
  CHECK(server.ok());
  std::vector<pid_t> kids;
  for (int i = 0; i < kProcs; ++i) {
    pid_t pid = fork();
    if (pid == 0) {
      Session s;
      s.ep = make_shm_endpoint(config(100 + i), why);
      REQUIRE_CHILD(s.ep != nullptr);
      s.pump = std::make_unique<Pump>(*s.ep);
      REQUIRE_CHILD(s.reconnect(addr));
      Region* r = s.ep->register_region(8192);
      fill_pattern(r->data, 4096, 9000 + i);
      uint64_t off = 1 << 20 | static_cast<uint64_t>(i) * 4096;
      REQUIRE_CHILD(s.ep->post_write(s.conn, *r, 0, s.remote, off, 4096, 1, false));
      REQUIRE_CHILD(s.ep->post_read(s.conn, *r, 4096, s.remote, off, 4096, 2));
      auto c = s.pump->wait_done(2);
      REQUIRE_CHILD(c && c->status == Status::Ok);
      REQUIRE_CHILD(std::memcmp(r->data, r->data + 4096, 4096) == 0);
      Msg q;
      q.cmd = Cmd::Checksum;
      q.off = off;
      q.len = 4096;
      auto res = s.call(q, Cmd::Result);
      REQUIRE_CHILD(res && res->value == checksum(r->data, 4096));
      _exit(0);
    }
    kids.push_back(pid);
  }
  int exited = 0, ok = 0;
  auto t = Clock::now();
  server.run([&] {
    int st;
    pid_t p;
    while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
      ++exited;
      ok += WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    return (exited == kProcs && server.disconnected == kProcs) || ms_since(t) > 60000;
  });
  CHECK(ok == kProcs);
  CHECK(server.connected == kProcs);
  CHECK(server.disconnected == kProcs);
  std::printf("  %d/%d processes verified their data, %d connects, %d disconnects, %.0f ms\n", ok,
              kProcs, server.connected, server.disconnected, ms_since(t));
}

size_t count_fds() {
  size_t n = 0;
  DIR* d = opendir("/proc/self/fd");
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

size_t count_maps() {
  std::ifstream in("/proc/self/maps");
  size_t n = 0;
  std::string line;
  while (std::getline(in, line)) n += line.find("memfd:rcpg") != std::string::npos;
  return n;
}

void test_in_process_and_leaks() {
  std::puts("in-process pair, self-connection, stale and abstract sockets, no leaks");
  size_t fds0 = count_fds(), maps0 = count_maps();
  std::string path = sock_path("inproc");
  for (int round = 0; round < 3; ++round) {
    std::string why;
    auto a = make_shm_endpoint(config(1, path), why);
    auto b = make_shm_endpoint(config(2, "@rcpg-smoke-" + std::to_string(getpid())), why);
    CHECK(a && b);
    Pump pa(*a), pb(*b);
    Region* ra = a->register_region(1 << 20);
    CHECK(a->register_region(size_t{1} << 50) == nullptr);  // refused, not an OOM kill
    Region* empty = a->register_region(0);
    CHECK(empty && empty->size == 0);
    std::vector<ConnId> ab;
    for (int i = 0; i < 4; ++i)
      ab.push_back(a->connect("@rcpg-smoke-" + std::to_string(getpid()), 2));
    ConnId self = a->connect(path, 1);         // to itself
    Region* rb = b->register_region(1 << 20);  // after the connects started
    auto t = Clock::now();
    int up = 0;
    while (up < 10 && ms_since(t) < 10000) {
      pa.step(false);
      pb.step(false);
      for (auto& e : pa.events) up += e.type == EventType::Connected;
      for (auto& e : pb.events) up += e.type == EventType::Connected;
      pa.events.clear();
      pb.events.clear();
    }
    CHECK(up == 10);  // 4 + 4 + 2 (self: both ends)
    fill_pattern(ra->data, 1 << 20, 3);
    CHECK(a->post_write_imm(ab[0], *ra, 0, rb->remote, 0, 1 << 20, 77, 1));
    CHECK(pb.until([&] { return !pb.imms.empty(); }));
    CHECK(pb.imms.front().imm == 77 && pb.imms.front().len == 1u << 20);
    CHECK(std::memcmp(ra->data, rb->data, 1 << 20) == 0);
    CHECK(a->post_write(self, *ra, 0, ra->remote, 4096, 4096, 2));  // overlapping, via self
    CHECK(pa.wait_done(2).has_value());
    // A live listener's path is reported in use.
    auto dup = make_shm_endpoint(config(3, path), why);
    CHECK(!dup);
    CHECK(why.find("in use") != std::string::npos);
    a->disconnect(ab[1]);
    CHECK(pa.wait_event(ab[1], EventType::Disconnected));
    b->deregister(rb);
    a.reset();  // b's remaining connections see EOF
    int down = 0;
    pb.until([&] {
      for (auto& e : pb.events) down += e.type == EventType::Disconnected;
      pb.events.clear();
      return down == 4;
    });
    CHECK(down == 4);
    b.reset();
  }
  CHECK(access(path.c_str(), F_OK) != 0);  // unlinked by its owner
  CHECK(count_fds() == fds0);
  CHECK(count_maps() == maps0);
  std::printf("  fds %zu -> %zu, rcpg mappings %zu -> %zu\n", fds0, count_fds(), maps0,
              count_maps());

  // A socket file left by a killed endpoint is replaced.
  std::string stale = sock_path("stale");
  pid_t pid = fork();
  if (pid == 0) {
    std::string why;
    auto ep = make_shm_endpoint(config(4, stale), why);
    ::kill(getpid(), SIGKILL);
  }
  waitpid(pid, nullptr, 0);
  CHECK(access(stale.c_str(), F_OK) == 0);
  std::string why;
  auto e = make_shm_endpoint(config(4, stale), why);
  CHECK(e != nullptr);
  e.reset();
  // A path that is not a socket is never replaced.
  std::string plain = sock_path("plain");
  { std::ofstream(plain) << "x"; }
  CHECK(make_shm_endpoint(config(4, plain), why) == nullptr);
  CHECK(access(plain.c_str(), F_OK) == 0);
  unlink(plain.c_str());
}

// Steps two in-process endpoints until `pred` or the timeout.
bool step_both(Pump& a, Pump& b, const std::function<bool()>& pred, double timeout_ms = 10000) {
  auto t = Clock::now();
  while (!pred()) {
    if (ms_since(t) > timeout_ms) return false;
    a.step(false);
    b.step(false);
  }
  return true;
}

void test_churn_and_backlog() {
  std::puts("connection churn; a control backlog holds posts back until it drains");
  std::string why;
  std::string addr = "@rcpg-smoke-churn-" + std::to_string(getpid());
  auto a = make_shm_endpoint(config(1), why);
  auto b = make_shm_endpoint(config(2, addr), why);
  Pump pa(*a), pb(*b);
  size_t fds0 = count_fds(), maps0 = count_maps();
  ConnId last = kNoConn;
  for (int i = 0; i < 300; ++i) {
    ConnId c = a->connect(addr, 2);
    bool up = step_both(pa, pb, [&] { return pa.event_of(c, EventType::Connected).has_value(); });
    CHECK(up);
    if (!up) return;
    a->disconnect(c);
    last = c;
  }
  CHECK(step_both(pa, pb, [&] {
    size_t down = 0;
    for (auto& e : pb.events) down += e.type == EventType::Disconnected;
    return down == 300;
  }));
  CHECK(last == 299);  // dense ids, like the other fabrics
  pa.events.clear();
  pb.events.clear();
  a->poll({});  // frees what the last poll() may still have been using
  b->poll({});
  size_t fds1 = count_fds(), maps1 = count_maps();
  CHECK(fds1 == fds0);
  CHECK(maps1 == maps0);

  // b stops reading its socket while a registers many regions: a's control
  // messages back up, and a refuses posts on that connection meanwhile.
  ConnId c = a->connect(addr, 2);
  CHECK(step_both(pa, pb, [&] { return pa.event_of(c, EventType::Connected).has_value(); }));
  ConnId cb = kNoConn;
  CHECK(step_both(pa, pb, [&] {
    for (auto& e : pb.events)
      if (e.type == EventType::Connected) cb = e.conn;
    return cb != kNoConn;
  }));
  Region* rb = b->register_region(4096);
  std::vector<Region*> many;
  bool refused = false;
  for (int i = 0; i < 3000; ++i) {
    many.push_back(a->register_region(4096));
    if (!a->post_write(c, *many.back(), 0, rb->remote, 0, 8, 0, false)) refused = true;
  }
  CHECK(refused);
  // Once b reads again, a's posts flow and b can use every region at once.
  CHECK(step_both(pa, pb, [&] { return a->post_write(c, *many[0], 0, rb->remote, 0, 8, 1); }));
  uint64_t ok = 0;
  for (size_t i = 0; i < many.size(); ++i) {
    std::memset(many[i]->data, static_cast<int>(i & 0x7f), 64);
    if (b->post_read(cb, *rb, 0, many[i]->remote, 0, 64, 100 + i)) ++ok;
    std::array<Completion, 64> wc;
    size_t n = b->poll(wc);
    for (size_t k = 0; k < n; ++k) CHECK(wc[k].status == Status::Ok);
    CHECK(rb->data[63] == static_cast<std::byte>(i & 0x7f));
  }
  CHECK(ok == many.size());
  for (Region* r : many) a->deregister(r);
  std::printf("  300 connect/disconnect cycles: fds %zu -> %zu, mappings %zu -> %zu\n", fds0, fds1,
              maps0, maps1);
}

// ---------------------------------------------------------------- measurements

struct Stats {
  double p50, p99, p999, mean;
};

Stats stats(std::vector<double>& v) {
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  auto at = [&](double q) { return v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))]; };
  return {at(0.5), at(0.99), at(0.999), sum / v.size()};
}

// Round trips until `iters` or 3 s, whichever comes first.
// `gap_us` of idle time before each ping lets a blocking server fall asleep.
void ping_pong(Session& s, Region* local, size_t len, uint32_t mode, uint32_t iters,
               const char* what, int gap_us = 0) {
  Msg q;
  q.cmd = Cmd::PingPong;
  q.len = len;
  q.value = mode;
  q.region = local->remote;
  CHECK(s.call(q, Cmd::Ack).has_value());
  std::vector<double> rtt;
  rtt.reserve(iters);
  std::array<Completion, 16> wc;
  auto start = Clock::now();
  for (uint32_t i = 0; i < iters && (i % 256 != 0 || ms_since(start) < 3000); ++i) {
    if (gap_us > 0) {
      auto g = Clock::now();
      while (ms_since(g) * 1000 < gap_us) {
      }
    }
    auto t = Clock::now();
    while (!s.ep->post_write_imm(s.conn, *local, 0, s.remote, 0, len, i, 0, false)) {
    }
    bool got = false;
    while (!got) {
      size_t n = s.ep->poll(wc);
      for (size_t k = 0; k < n; ++k) got = got || wc[k].op == Op::RecvImm;
    }
    rtt.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t).count());
  }
  while (!s.ep->post_write_imm(s.conn, *local, 0, s.remote, 0, 0, kStop, 0, false)) {
  }
  s.pump->wait_msg(Cmd::Result);
  Stats st = stats(rtt);
  std::printf("  %-36s %6zu B  one-way p50 %6.2f us  p99 %7.2f us  p99.9 %7.2f us  (%zu)\n", what,
              len, st.p50 / 2, st.p99 / 2, st.p999 / 2, rtt.size());
}

void measure(const std::string& addr) {
  std::puts("measurements (2 processes on this host; numbers depend on the machine's load)");
  Session s;
  CHECK(s.open(addr));
  Region* local = s.ep->register_region(kMaxOp);
  ping_pong(s, local, 8, 0, 200000, "write_imm ping-pong, both spin");
  ping_pong(s, local, 4096, 0, 100000, "write_imm ping-pong, both spin");
  ping_pong(s, local, 65536, 0, 20000, "write_imm ping-pong, both spin");

  // Streaming WRITEs into the server's region (its CPU is idle).
  for (size_t size : {size_t{4096}, size_t{65536}, size_t{1} << 20, kMaxOp}) {
    fill_pattern(local->data, size, 1);
    uint64_t bytes = 0, ops = 0;
    auto t = Clock::now();
    std::array<Completion, 64> wc;
    while (ms_since(t) < 1000) {
      for (int k = 0; k < 64; ++k) {
        bool sig = (ops + 1) % 64 == 0;  // unsignaled, but for one in 64
        if (!s.ep->post_write(s.conn, *local, 0, s.remote, 0, size, ops, sig)) break;
        ++ops;
        bytes += size;
      }
      s.ep->poll(wc);
    }
    double sec = ms_since(t) / 1000;
    std::printf("  streaming write %8zu B: %7.2f GB/s  %9.0f ops/s\n", size, bytes / sec / 1e9,
                ops / sec);
  }
  // Message rate of small WRITE_WITH_IMMs, the server consuming them.
  {
    Msg q;
    q.cmd = Cmd::Sink;
    CHECK(s.call(q, Cmd::Ack).has_value());
    auto t = Clock::now();
    uint64_t sent = 0, full = 0;
    while (ms_since(t) < 1000) {
      for (int k = 0; k < 256; ++k) {
        if (s.ep->post_write_imm(s.conn, *local, 0, s.remote, 0, 8, 1, 0, false)) {
          ++sent;
        } else {
          ++full;
          sched_yield();  // ring full: let the consumer have a CPU
        }
      }
    }
    while (!s.ep->post_write_imm(s.conn, *local, 0, s.remote, 0, 0, kStop, 0, false)) {
    }
    auto r = s.pump->wait_msg(Cmd::Result, 60000);
    double sec = ms_since(t) / 1000;
    CHECK(r && r->a == sent);
    std::printf("  write_imm 8 B message rate: %.2f M msg/s (%llu msgs, ring full %llu times)\n",
                sent / sec / 1e6, static_cast<unsigned long long>(sent),
                static_cast<unsigned long long>(full));
  }
  // The server blocks whenever idle: measures its wake-up through the eventfd.
  ping_pong(s, local, 8, 1, 20000, "write_imm ping-pong, server wait()");
  ping_pong(s, local, 8, 1, 5000, "  same, server asleep (200 us gaps)", 200);
  ping_pong(s, local, 8, 2, 20000, "write_imm ping-pong, server wait_fd");
  ping_pong(s, local, 8, 2, 5000, "  same, server asleep (200 us gaps)", 200);
}

}  // namespace

int main(int argc, char** argv) {
  setvbuf(stdout, nullptr, _IOLBF, 0);
  signal(SIGPIPE, SIG_DFL);  // the fabric must not need SIGPIPE ignored
  bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  bool bench_only = argc > 1 && std::string(argv[1]) == "--bench";
  if (bench_only) {
    Child srv;
    CHECK(start_server(srv, sock_path("bench")));
    measure(srv.addr);
    return g_failures == 0 ? 0 : 1;
  }
  test_connect_and_auth();
  test_listener_peer_rejected_event();
  {
    Child srv;
    CHECK(start_server(srv, sock_path("main")));
    Session s;
    CHECK(s.open(srv.addr));
    if (s.ep) {
      test_sizes(s);
      test_send_recv(s);
      test_ordering(s);
      test_region_races(s);
    }
    test_out_of_bounds(srv.addr);
  }
  test_peer_killed();
  test_many_processes();
  test_in_process_and_leaks();
  test_churn_and_backlog();
  if (!quick) {
    Child srv;
    CHECK(start_server(srv, sock_path("bench")));
    measure(srv.addr);
  }
  std::printf("%s (%d failed checks)\n", g_failures == 0 ? "PASS" : "FAIL", g_failures);
  return g_failures == 0 ? 0 : 1;
}
