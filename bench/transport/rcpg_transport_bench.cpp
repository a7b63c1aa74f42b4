// rcpg-transport-bench: latency and bandwidth of one Fabric connection,
// measured the way perftest's ib_write_lat / ib_write_bw measure a verbs QP,
// so the two can be compared side by side (scripts/bench-transport does).
//
//   server: rcpg-transport-bench --role server --fabric verbs --listen 10.77.0.2:18600
//   client: rcpg-transport-bench --role client --fabric verbs --listen 10.77.0.2:18600
//                                --source 10.77.0.1 --json out.json
//   both:   rcpg-transport-bench --fork --fabric shm          (forks the server itself)
//
// Latency (ping-pong): the client WRITE_WITH_IMMs `size` bytes into the
// server's region; the server answers, on seeing the RecvImm, with a
// WRITE_WITH_IMM of the same size into the client's region. One-way latency
// is RTT/2, exactly what ib_write_lat reports (its t_typical is the median of
// half round trips; ib_write_lat itself uses plain WRITEs and polls memory).
//
// Bandwidth (streaming): the client posts RDMA WRITEs of `size` bytes, keeping
// at most --tx-depth outstanding (ib_write_bw's default is 128) and signaling
// every --cq-mod-th one; the run ends when the last completion arrives.
// MB/s uses 1e6 bytes (perftest's "MB/sec" is 2^20 bytes/s: the JSON has both).
//
// Both sides busy-poll (spin) like perftest does by default. The server spins
// for --server-spin-ms after its last activity, then blocks in Endpoint::wait,
// so it does not steal a core from the client during the bandwidth test.
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

#include <CLI/CLI.hpp>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fmt/core.h>
#include <fmt/format.h>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench/transport/bench_common.h"
#include "transport/auth.h"
#include "transport/placement.h"
#include "transport/spin_wait.h"

namespace {

using namespace rcpg::transport;
using rcpg::bench::Summary;
using Clock = std::chrono::steady_clock;

constexpr NodeId kClientNode = 1;
constexpr NodeId kServerNode = 2;
constexpr uint32_t kMagic = 0x48434e42;  // "BNCH"

enum class MsgType : uint32_t { Region = 1, Done = 2 };

// Control message (post_send). The client's Region also says where in its
// region the server writes its latency replies.
struct CtlMsg {
  uint32_t magic = kMagic;
  MsgType type = MsgType::Region;
  RemoteRegion region{};
  uint64_t reply_off = 0;
};

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Options {
  std::string role = "client";
  bool fork = false;
  std::string fabric = "shm";
  std::string listen;
  std::string connect;
  std::string source;
  std::string device;
  std::vector<std::string> size_args{"8", "64", "512", "4k", "64k", "1m"};
  std::vector<uint64_t> iters{100000};
  std::vector<uint64_t> bw_iters{10000000};
  uint64_t warmup = 100;
  double seconds = 1.0;
  uint32_t tx_depth = 128;
  uint32_t cq_mod = 100;  // ib_write_bw's default (clamped to tx_depth)
  std::string tests = "lat,bw";
  std::string json;
  double timeout = 60.0;
  double server_spin_ms = 200.0;
  int core = -1;
  int server_core = -1;
  bool no_pin = false;
  std::string key_file;
  bool quiet = false;
  bool yield = false;  // spin with sched_yield() (oversubscribed cores)

  std::vector<size_t> sizes;  // parsed size_args
  ClusterKey key{};
};

size_t parse_size(const std::string& s) {
  if (s.empty()) throw CLI::ValidationError("size", "empty size");
  size_t pos = 0;
  unsigned long long v = std::stoull(s, &pos, 10);
  std::string suffix = s.substr(pos);
  for (auto& ch : suffix) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (suffix == "" || suffix == "b") {
  } else if (suffix == "k" || suffix == "kib" || suffix == "kb") {
    v <<= 10;
  } else if (suffix == "m" || suffix == "mib" || suffix == "mb") {
    v <<= 20;
  } else {
    throw CLI::ValidationError("size", "bad size '" + s + "' (use e.g. 8, 4k, 1m)");
  }
  if (v == 0 || v > (size_t{1} << 30)) throw CLI::ValidationError("size", "size out of range: " + s);
  return static_cast<size_t>(v);
}

// Per-size value from a list that is either one value or one per size.
uint64_t per_size(const std::vector<uint64_t>& v, size_t i) {
  return v.size() == 1 ? v[0] : v.at(i);
}

size_t max_size(const Options& o) {
  size_t m = 4096;
  for (size_t s : o.sizes) m = std::max(m, s);
  return m;
}

double since(Clock::time_point t0, Clock::time_point t1) {
  return std::chrono::duration<double>(t1 - t0).count();
}

// Latency timestamps: the TSC, like perftest (cheap everywhere; under
// emulation clock_gettime may be a syscall reading an emulated HPET). Its rate
// is measured against steady_clock over the whole run, so it needs no
// nominal frequency. Elsewhere: steady_clock nanoseconds.
class TickClock {
 public:
  TickClock() : t0_(ticks()), c0_(Clock::now()) {}
  static uint64_t ticks() {
#if defined(__x86_64__) || defined(__i386__)
    return __rdtsc();
#else
    return static_cast<uint64_t>(Clock::now().time_since_epoch().count());
#endif
  }
  static const char* name() {
#if defined(__x86_64__) || defined(__i386__)
    return "rdtsc";
#else
    return "steady_clock";
#endif
  }
  // Ticks per microsecond, from everything seen so far (at least 20 ms).
  double per_us() {
#if defined(__x86_64__) || defined(__i386__)
    auto c = Clock::now();
    if (c - c0_ < std::chrono::milliseconds(20)) {
      std::this_thread::sleep_until(c0_ + std::chrono::milliseconds(20));
      c = Clock::now();
    }
    uint64_t t = ticks();
    return static_cast<double>(t - t0_) / std::chrono::duration<double, std::micro>(c - c0_).count();
#else
    return 1e3 / (static_cast<double>(Clock::period::num) * 1e9 / Clock::period::den);
#endif
  }

 private:
  uint64_t t0_;
  Clock::time_point c0_;
};

void logf(const Options& o, const std::string& line) {
  if (!o.quiet) fmt::print(stderr, "rcpg-transport-bench[{}]: {}\n", o.role, line);
}

EndpointConfig base_config(const Options& o) {
  EndpointConfig cfg;
  cfg.cluster_key = o.key;
  cfg.send_queue_depth = std::max<uint32_t>(512, o.tx_depth * 2);
  cfg.recv_queue_depth = 128;
  cfg.device_hint = o.device;
  const std::string role = o.role;
  bool quiet = o.quiet;
  cfg.log = [role, quiet](std::string_view line) {
    if (!quiet) fmt::print(stderr, "rcpg-transport-bench[{}] fabric: {}\n", role, line);
  };
  return cfg;
}

void maybe_pin(const Options& o, int core) {
  if (core < 0) return;
  Placement p = pin_current_thread(o.device, core);
  logf(o, fmt::format("pinning: {}", p.detail));
}

// ============================================================== server
int run_server(const Options& o, int ready_fd) {
  auto signal_ready = [&](char c) {
    if (ready_fd >= 0) {
      if (write(ready_fd, &c, 1) != 1) {
      }
      close(ready_fd);
      ready_fd = -1;
    }
  };
  maybe_pin(o, o.fork ? o.server_core : o.core);
  EndpointConfig cfg = base_config(o);
  cfg.node_id = kServerNode;
  cfg.listen_address = o.listen;
  std::string why;
  auto ep = rcpg::bench::make_endpoint(o.fabric, cfg, why);
  if (!ep) {
    fmt::print(stderr, "rcpg-transport-bench[server]: cannot create {} endpoint on {}: {}\n", o.fabric,
               o.listen, why);
    signal_ready('E');
    return 1;
  }
  Region* region = ep->register_region(max_size(o));
  if (!region) {
    fmt::print(stderr, "rcpg-transport-bench[server]: cannot register {} bytes\n", max_size(o));
    signal_ready('E');
    return 1;
  }
  std::memset(region->data, 0, region->size);
  logf(o, fmt::format("listening on {} ({} fabric, region {} bytes)", o.listen, o.fabric, region->size));
  signal_ready('R');

  ConnId conn = kNoConn;
  bool have_client = false, done = false;
  RemoteRegion client{};
  uint64_t reply_off = 0;
  uint64_t replies = 0;
  struct Pending {
    uint32_t imm, len;
  };
  std::vector<Pending> pending;  // replies the send queue had no room for
  pending.reserve(256);
  std::array<Completion, 64> wc;
  const auto start = Clock::now();
  auto last_activity = start;
  const auto spin_window = std::chrono::duration<double, std::milli>(o.server_spin_ms);
  uint64_t loops = 0;
  bool blocked = true;  // look at events first, and after every wait()
  std::string lost;  // set when the client's connection ended
  bool active = false;  // did work since the clock was last read
  uint32_t idle_spins = 0;

  auto post_reply = [&](uint32_t imm, uint32_t len) {
    bool sig = (replies + 1) % o.cq_mod == 0;
    if (!ep->post_write_imm(conn, *region, 0, client, reply_off, len, imm, replies, sig)) return false;
    ++replies;
    return true;
  };

  while (!done) {
    bool did = false;
    // Events are rare: look every 1024 spins (a syscall on verbs), or after blocking.
    if (blocked || (++loops & 1023) == 0) {
      blocked = false;
      while (auto ev = ep->next_event()) {
        did = true;
        switch (ev->type) {
          case EventType::Connected:
            if (conn == kNoConn && ev->inbound) {
              conn = ev->conn;
              logf(o, fmt::format("client node {} connected", ev->peer));
              CtlMsg m;
              m.type = MsgType::Region;
              m.region = region->remote;
              if (!ep->post_send(conn, std::as_bytes(std::span(&m, 1)), ~uint64_t{0})) {
                fmt::print(stderr, "rcpg-transport-bench[server]: post_send(Region) failed\n");
                return 1;
              }
            } else {
              logf(o, fmt::format("ignoring extra connection from node {}", ev->peer));
              ep->disconnect(ev->conn);
            }
            break;
          case EventType::Disconnected:
            // The Done message may still sit in the receive queue: look once more.
            if (ev->conn == conn) lost = ev->detail.empty() ? "disconnected" : ev->detail;
            break;
          default:
            logf(o, fmt::format("event {} conn {}: {}", to_string(ev->type), ev->conn, ev->detail));
            break;
        }
      }
    }
    while (!pending.empty()) {
      if (!post_reply(pending.front().imm, pending.front().len)) break;
      pending.erase(pending.begin());
    }
    size_t n = ep->poll(wc);
    for (size_t i = 0; i < n; ++i) {
      const Completion& c = wc[i];
      did = true;
      if (c.status != Status::Ok) {
        fmt::print(stderr, "rcpg-transport-bench[server]: completion {} wr_id {} failed: {}\n",
                   to_string(c.op), c.wr_id, to_string(c.status));
        return 1;
      }
      if (c.op == Op::RecvImm) {
        if (!have_client) {
          fmt::print(stderr, "rcpg-transport-bench[server]: RecvImm before the client's region\n");
          return 1;
        }
        if (!pending.empty() || !post_reply(c.imm, c.len)) pending.push_back({c.imm, c.len});
      } else if (c.op == Op::Recv && c.len >= sizeof(CtlMsg)) {
        CtlMsg m;
        std::memcpy(&m, c.data, sizeof(m));
        if (m.magic != kMagic) continue;
        if (m.type == MsgType::Region) {
          client = m.region;
          reply_off = m.reply_off;
          have_client = true;
        } else if (m.type == MsgType::Done) {
          done = true;
        }
      }
    }
    if (!lost.empty() && !done && n == 0) {
      fmt::print(stderr, "rcpg-transport-bench[server]: client disconnected before Done: {}\n", lost);
      return 1;
    }
    // No clock read on the hot path (under emulation clock_gettime can be a
    // syscall reading an emulated HPET): activity is only flagged, and the
    // clock is consulted every 256 idle spins to decide when to block.
    if (did) {
      active = true;
      idle_spins = 0;
      continue;
    }
    if ((++idle_spins & 255) != 0) {
      if (o.yield)
        sched_yield();
      else
        SpinWait::cpu_relax();
      continue;
    }
    const auto now = Clock::now();
    if (active) {
      last_activity = now;
      active = false;
    }
    if (now - last_activity >= spin_window) {
      ep->wait(std::chrono::milliseconds(10));
      blocked = true;
      if (since(last_activity, Clock::now()) > o.timeout) {
        fmt::print(stderr, "rcpg-transport-bench[server]: {} for {:.0f} s, giving up\n",
                   conn == kNoConn ? "no client" : "no activity", o.timeout);
        return 1;
      }
    }
  }
  logf(o, fmt::format("done: {} latency replies", replies));
  return 0;
}

// ============================================================== client
struct LatResult {
  size_t bytes = 0;
  uint64_t iters = 0;
  std::vector<uint64_t> rtt_ticks;  // converted by finish(): the rate is known best at the end
  Summary one_way;  // microseconds, RTT/2
  Summary rtt;      // microseconds
  uint64_t verify_errors = 0;
  double seconds = 0;

  void finish(double ticks_per_us) {
    std::vector<double> rtt_us(rtt_ticks.size()), half(rtt_ticks.size());
    for (size_t k = 0; k < rtt_ticks.size(); ++k) {
      rtt_us[k] = static_cast<double>(rtt_ticks[k]) / ticks_per_us;
      half[k] = rtt_us[k] / 2;
    }
    rtt = rcpg::bench::summarize(rtt_us);
    one_way = rcpg::bench::summarize(half);
  }
};

struct BwResult {
  size_t bytes = 0;
  uint64_t msgs = 0;
  double seconds = 0;
  double mb_per_s = 0;   // 1e6 bytes/s
  double mib_per_s = 0;  // 2^20 bytes/s (perftest's "MB/sec")
  double msgs_per_s = 0;
};

class Client {
 public:
  explicit Client(const Options& o) : o_(o) {}

  void setup() {
    maybe_pin(o_, o_.core);
    EndpointConfig cfg = base_config(o_);
    cfg.node_id = kClientNode;
    cfg.source_address = o_.source;
    std::string why;
    ep_ = rcpg::bench::make_endpoint(o_.fabric, cfg, why);
    if (!ep_) throw Failure(fmt::format("cannot create {} endpoint: {}", o_.fabric, why));
    reply_off_ = max_size(o_);
    region_ = ep_->register_region(2 * reply_off_);
    if (!region_) throw Failure(fmt::format("cannot register {} bytes", 2 * reply_off_));
    std::memset(region_->data, 0, region_->size);
    connect();
  }

  LatResult latency(size_t size, uint64_t iters) {
    LatResult r;
    r.bytes = size;
    check_fits(size);
    r.rtt_ticks.reserve(iters);
    const uint64_t warmup = std::min(o_.warmup, iters / 10);  // at most 10% extra
    Clock::time_point measure_start{};
    for (uint64_t i = 0; i < warmup + iters; ++i) {
      if (i == warmup) measure_start = Clock::now();
      const uint32_t tag = ++seq_;
      const uint64_t tag64 = tag;
      if (size >= sizeof(tag64)) std::memcpy(region_->data, &tag64, sizeof(tag64));
      const bool sig = tag % o_.cq_mod == 0;
      const uint64_t t0 = TickClock::ticks();
      while (!ep_->post_write_imm(conn_, *region_, 0, server_, 0, size, tag, tag, sig))
        drain_for_room(Clock::now(), "post_write_imm");
      bool got = false;
      uint32_t spins = 0;
      Clock::time_point wait_start{};
      while (!got) {
        size_t n = ep_->poll(wc_);
        for (size_t k = 0; k < n; ++k) {
          const Completion& c = wc_[k];
          check_ok(c);
          if (c.op == Op::RecvImm) {
            if (c.imm != tag || c.len != size)
              throw Failure(fmt::format("latency: expected imm {} len {}, got imm {} len {}", tag, size,
                                        c.imm, c.len));
            got = true;
          }
        }
        if (n == 0 && o_.yield) sched_yield();
        if (n == 0 && (++spins & 0xfff) == 0) {
          if (wait_start == Clock::time_point{}) wait_start = Clock::now();
          check_alive(wait_start, "waiting for the latency reply");
        }
      }
      const uint64_t t1 = TickClock::ticks();
      if (size >= sizeof(tag64) && std::memcmp(region_->data + reply_off_, &tag64, sizeof(tag64)) != 0)
        ++r.verify_errors;
      if (i >= warmup) {
        r.rtt_ticks.push_back(t1 - t0);
        if ((r.rtt_ticks.size() & 15) == 0 && since(measure_start, Clock::now()) > o_.seconds) break;
      }
    }
    r.seconds = since(measure_start, Clock::now());
    r.iters = r.rtt_ticks.size();
    r.finish(tick_clock_.per_us());  // provisional (for the progress line); redone at the end
    return r;
  }

  // The tick rate over the whole run, for the final conversion.
  double ticks_per_us() { return tick_clock_.per_us(); }

  BwResult bandwidth(size_t size, uint64_t msgs) {
    check_fits(size);
    // Warm-up (not measured): up to two windows, at most 10% of the run.
    stream(size, std::min<uint64_t>(2 * uint64_t{o_.tx_depth}, std::max<uint64_t>(1, msgs / 10)), 1e9);
    return stream(size, msgs, o_.seconds);
  }

  void finish() {
    CtlMsg m;
    m.type = MsgType::Done;
    const uint64_t id = kCtlWrId + 1;
    auto t0 = Clock::now();
    while (!ep_->post_send(conn_, std::as_bytes(std::span(&m, 1)), id)) drain_for_room(t0, "post_send(Done)");
    // The server exits when it reads Done: wait (bounded) for it to go away,
    // so it is not left behind when we exit first.
    for (;;) {
      size_t n = ep_->poll(wc_);
      for (size_t k = 0; k < n; ++k) {
        if (wc_[k].status != Status::Ok && wc_[k].status != Status::Flushed) check_ok(wc_[k]);
      }
      while (auto ev = ep_->next_event())
        if (ev->type == EventType::Disconnected && ev->conn == conn_) return;
      if (since(t0, Clock::now()) > std::min(o_.timeout, 10.0)) {
        logf(o_, "the server did not close the connection after Done");
        return;
      }
      if (n == 0) ep_->wait(std::chrono::milliseconds(1));
    }
  }

 private:
  static constexpr uint64_t kCtlWrId = uint64_t{1} << 62;
  static constexpr uint64_t kBwWrId = uint64_t{1} << 61;

  void connect() {
    const std::string addr = o_.connect.empty() ? o_.listen : o_.connect;
    const auto t0 = Clock::now();
    int attempts = 0;
    for (;;) {
      ++attempts;
      conn_ = ep_->connect(addr, kServerNode);
      std::optional<Event> outcome;
      while (!outcome) {
        while (auto ev = ep_->next_event()) {
          if (ev->conn == conn_) {
            outcome = std::move(ev);
            break;
          }
        }
        if (outcome) break;
        std::array<Completion, 8> wc;
        ep_->poll(wc);
        if (since(t0, Clock::now()) > o_.timeout)
          throw Failure(fmt::format("no answer from {} within {:.0f} s", addr, o_.timeout));
        ep_->wait(std::chrono::milliseconds(5));
      }
      if (outcome->type == EventType::Connected) break;
      if (outcome->type == EventType::Unreachable && since(t0, Clock::now()) < o_.timeout) {
        // The server may not be listening yet.
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        continue;
      }
      throw Failure(fmt::format("connect to {} failed after {} attempt(s): {} ({})", addr, attempts,
                                to_string(outcome->type), outcome->detail));
    }
    logf(o_, fmt::format("connected to {} ({} attempt(s), {:.2f} s)", addr, attempts, since(t0, Clock::now())));
    CtlMsg m;
    m.type = MsgType::Region;
    m.region = region_->remote;
    m.reply_off = reply_off_;
    while (!ep_->post_send(conn_, std::as_bytes(std::span(&m, 1)), kCtlWrId)) drain_for_room(t0, "post_send(Region)");
    // Wait for the server's region.
    for (;;) {
      size_t n = ep_->poll(wc_);
      bool got = false;
      for (size_t k = 0; k < n; ++k) {
        const Completion& c = wc_[k];
        check_ok(c);
        if (c.op == Op::Recv && c.len >= sizeof(CtlMsg)) {
          CtlMsg r;
          std::memcpy(&r, c.data, sizeof(r));
          if (r.magic == kMagic && r.type == MsgType::Region) {
            server_ = r.region;
            got = true;
          }
        }
      }
      if (got) break;
      if (n == 0) {
        check_alive(t0, "waiting for the server's region");
        ep_->wait(std::chrono::milliseconds(1));
      }
    }
  }

  void check_fits(size_t size) const {
    if (size > server_.length)
      throw Failure(fmt::format("size {} does not fit the server's region ({} bytes): give the server the same --sizes",
                                size, server_.length));
  }

  void check_ok(const Completion& c) const {
    if (c.status != Status::Ok)
      throw Failure(fmt::format("completion {} wr_id {:#x} failed: {}", to_string(c.op), c.wr_id,
                                to_string(c.status)));
  }

  // Called while spinning without progress: watch for disconnects and hangs.
  void check_alive(Clock::time_point since_t, const char* what) {
    while (auto ev = ep_->next_event()) {
      if (ev->type == EventType::Disconnected && ev->conn == conn_)
        throw Failure(fmt::format("disconnected while {}: {}", what, ev->detail));
    }
    if (since(since_t, Clock::now()) > o_.timeout)
      throw Failure(fmt::format("timed out ({:.0f} s) {}", o_.timeout, what));
  }

  // The send queue is full: reap completions (signaled ones retire the rest).
  void drain_for_room(Clock::time_point t0, const char* what) {
    size_t n = ep_->poll(wc_);
    for (size_t k = 0; k < n; ++k) check_ok(wc_[k]);
    if (n == 0) check_alive(t0, what);
  }

  BwResult stream(size_t size, uint64_t msgs, double bound_s) {
    BwResult r;
    r.bytes = size;
    uint64_t target = msgs, posted = 0, completed = 0;
    bool last_signaled = false, stopped = false;
    uint32_t spins = 0;
    const auto t0 = Clock::now();
    auto last_progress = t0;
    while (completed < target) {
      while (posted < target && posted - completed < o_.tx_depth) {
        const bool sig = (posted + 1) % o_.cq_mod == 0 || posted + 1 == target;
        if (!ep_->post_write(conn_, *region_, 0, server_, 0, size, kBwWrId + posted, sig)) break;
        ++posted;
        last_signaled = sig;
      }
      size_t n = ep_->poll(wc_);
      for (size_t k = 0; k < n; ++k) {
        const Completion& c = wc_[k];
        check_ok(c);
        if (c.op == Op::Write && c.wr_id >= kBwWrId) completed = std::max(completed, c.wr_id - kBwWrId + 1);
      }
      if (n) {
        spins = 0;
        last_progress = Clock::now();
        if (!stopped && since(t0, last_progress) > bound_s) {
          // Time bound: stop after one more signaled write (so the end is observed).
          stopped = true;
          target = posted + (last_signaled ? 0 : 1);
        }
      } else if ((++spins & 0xfff) == 0) {
        check_alive(last_progress, "streaming writes");
      }
    }
    const auto t1 = Clock::now();
    r.msgs = completed;
    r.seconds = since(t0, t1);
    const double bytes = static_cast<double>(size) * static_cast<double>(completed);
    r.mb_per_s = bytes / r.seconds / 1e6;
    r.mib_per_s = bytes / r.seconds / double(1 << 20);
    r.msgs_per_s = static_cast<double>(completed) / r.seconds;
    return r;
  }

  const Options& o_;
  TickClock tick_clock_;
  std::unique_ptr<Endpoint> ep_;
  Region* region_ = nullptr;
  RemoteRegion server_{};
  ConnId conn_ = kNoConn;
  size_t reply_off_ = 0;
  uint32_t seq_ = 0;
  std::array<Completion, 64> wc_{};
};

// ============================================================== output
std::string json_str(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (static_cast<unsigned char>(ch) < 0x20) {
      out += fmt::format("\\u{:04x}", ch);
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

std::string json_summary(const Summary& s) {
  return fmt::format(
      "{{\"min\": {:.4f}, \"p50\": {:.4f}, \"p99\": {:.4f}, \"p999\": {:.4f}, \"max\": {:.4f}, "
      "\"mean\": {:.4f}, \"stdev\": {:.4f}}}",
      s.min, s.p50, s.p99, s.p999, s.max, s.mean, s.stdev);
}

std::string size_label(size_t b) {
  if (b >= (1u << 20) && b % (1u << 20) == 0) return fmt::format("{} MiB", b >> 20);
  if (b >= 1024 && b % 1024 == 0) return fmt::format("{} KiB", b >> 10);
  return fmt::format("{} B", b);
}

void print_tables(const Options& o, const std::vector<LatResult>& lat, const std::vector<BwResult>& bw) {
  const std::string addr = o.connect.empty() ? o.listen : o.connect;
  fmt::print("rcpg-transport-bench: fabric {}, server {}{}\n", o.fabric, addr,
             o.source.empty() ? "" : ", source " + o.source);
  if (!lat.empty()) {
    fmt::print("\nLatency: WRITE_WITH_IMM ping-pong, one-way = RTT/2 (as ib_write_lat's t_typical), usec\n");
    fmt::print("{:>9} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}\n", "bytes", "iters", "min", "p50", "mean", "p99",
               "max");
    for (const auto& r : lat) {
      fmt::print("{:>9} {:>8} {:>10.2f} {:>10.2f} {:>10.2f} {:>10.2f} {:>10.2f}{}\n", r.bytes, r.iters,
                 r.one_way.min, r.one_way.p50, r.one_way.mean, r.one_way.p99, r.one_way.max,
                 r.verify_errors ? fmt::format("  ({} payload mismatches!)", r.verify_errors) : "");
    }
  }
  if (!bw.empty()) {
    fmt::print("\nBandwidth: RDMA WRITE stream, tx-depth {}, signaled every {} (MB = 1e6 bytes)\n", o.tx_depth,
               o.cq_mod);
    fmt::print("{:>9} {:>9} {:>9} {:>11} {:>12}\n", "bytes", "msgs", "seconds", "MB/s", "msgs/s");
    for (const auto& r : bw) {
      fmt::print("{:>9} {:>9} {:>9.3f} {:>11.2f} {:>12.0f}\n", r.bytes, r.msgs, r.seconds, r.mb_per_s,
                 r.msgs_per_s);
    }
  }
  std::fflush(stdout);
}

bool write_json(const Options& o, const std::vector<LatResult>& lat, const std::vector<BwResult>& bw,
                double tick_mhz) {
  std::string out = "{\n";
  out += "  \"tool\": \"rcpg-transport-bench\",\n";
  out += fmt::format("  \"fabric\": {},\n", json_str(o.fabric));
  out += fmt::format("  \"server\": {},\n", json_str(o.connect.empty() ? o.listen : o.connect));
  out += fmt::format("  \"source\": {},\n", json_str(o.source));
  out += fmt::format("  \"unix_time\": {},\n", static_cast<long long>(std::time(nullptr)));
  // Latency timer and its measured rate (ticks per microsecond = MHz for the TSC).
  out += fmt::format("  \"timer\": {}, \"timer_mhz\": {:.4f},\n", json_str(TickClock::name()), tick_mhz);
  out += fmt::format(
      "  \"config\": {{\"tx_depth\": {}, \"cq_mod\": {}, \"warmup\": {}, \"seconds_bound\": {}, "
      "\"polling\": \"{}\", \"latency_op\": \"write_with_imm ping-pong\", \"bandwidth_op\": \"write\"}},\n",
      o.tx_depth, o.cq_mod, o.warmup, o.seconds, o.yield ? "spin+sched_yield" : "spin");
  out += "  \"latency\": [";
  for (size_t i = 0; i < lat.size(); ++i) {
    const auto& r = lat[i];
    out += fmt::format(
        "{}\n    {{\"bytes\": {}, \"iters\": {}, \"seconds\": {:.4f}, \"verify_errors\": {}, "
        "\"one_way_us\": {}, \"rtt_us\": {}}}",
        i ? "," : "", r.bytes, r.iters, r.seconds, r.verify_errors, json_summary(r.one_way), json_summary(r.rtt));
  }
  out += lat.empty() ? "],\n" : "\n  ],\n";
  out += "  \"bandwidth\": [";
  for (size_t i = 0; i < bw.size(); ++i) {
    const auto& r = bw[i];
    out += fmt::format(
        "{}\n    {{\"bytes\": {}, \"msgs\": {}, \"seconds\": {:.6f}, \"MB_per_s\": {:.4f}, "
        "\"MiB_per_s\": {:.4f}, \"msgs_per_s\": {:.2f}}}",
        i ? "," : "", r.bytes, r.msgs, r.seconds, r.mb_per_s, r.mib_per_s, r.msgs_per_s);
  }
  out += bw.empty() ? "]\n" : "\n  ]\n";
  out += "}\n";
  FILE* f = std::fopen(o.json.c_str(), "w");
  if (!f) {
    fmt::print(stderr, "rcpg-transport-bench: cannot write {}: {}\n", o.json, std::strerror(errno));
    return false;
  }
  bool ok = std::fwrite(out.data(), 1, out.size(), f) == out.size();
  ok = std::fclose(f) == 0 && ok;
  return ok;
}

int run_client(const Options& o) {
  const bool do_lat = o.tests.find("lat") != std::string::npos;
  const bool do_bw = o.tests.find("bw") != std::string::npos;
  std::vector<LatResult> lat;
  std::vector<BwResult> bw;
  double tick_mhz = 0;
  int rc = 0;
  try {
    Client c(o);
    c.setup();
    if (do_lat) {
      for (size_t i = 0; i < o.sizes.size(); ++i) {
        lat.push_back(c.latency(o.sizes[i], per_size(o.iters, i)));
        const auto& r = lat.back();
        logf(o, fmt::format("latency {:>8}: p50 {:.2f} us over {} iters", size_label(r.bytes), r.one_way.p50,
                            r.iters));
      }
    }
    if (do_bw) {
      for (size_t i = 0; i < o.sizes.size(); ++i) {
        bw.push_back(c.bandwidth(o.sizes[i], per_size(o.bw_iters, i)));
        const auto& r = bw.back();
        logf(o, fmt::format("bandwidth {:>8}: {:.2f} MB/s, {:.0f} msgs/s", size_label(r.bytes), r.mb_per_s,
                            r.msgs_per_s));
      }
    }
    c.finish();
    tick_mhz = c.ticks_per_us();
    for (auto& r : lat) r.finish(tick_mhz);
  } catch (const Failure& e) {
    fmt::print(stderr, "rcpg-transport-bench[client]: {}\n", e.what());
    rc = 1;
  }
  print_tables(o, lat, bw);
  if (!o.json.empty() && !write_json(o, lat, bw, tick_mhz)) rc = 1;
  for (const auto& r : lat)
    if (r.verify_errors) rc = 1;
  return rc;
}

// --fork: unless told otherwise, put the client and the server on two
// different allowed cores. Otherwise both spinning processes may start on one
// core (fork places the child next to its parent when no core is idle) and
// ping-pong in whole scheduler ticks until the load balancer separates them.
void choose_fork_cores(Options& o) {
  if (o.no_pin || o.core >= 0 || o.server_core >= 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return;
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  if (cpus.size() < 2) return;
  o.core = cpus[0];
  o.server_core = cpus[1];
}

int run_fork(Options o) {
  choose_fork_cores(o);
  if (o.listen.empty()) {
    if (o.fabric == "shm")
      o.listen = fmt::format("/tmp/rcpg-bench-{}.sock", getpid());
    else
      throw Failure("--fork with --fabric verbs needs --listen IP:PORT (and --source IP)");
  }
  int fds[2];
  if (pipe(fds) != 0) throw Failure("pipe failed");
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) throw Failure("fork failed");
  if (pid == 0) {
    close(fds[0]);
    Options so = o;
    so.role = "server";
    _exit(run_server(so, fds[1]));
  }
  close(fds[1]);
  pollfd p{fds[0], POLLIN, 0};
  char status = 0;
  bool ready = ::poll(&p, 1, static_cast<int>(o.timeout * 1000)) == 1 && read(fds[0], &status, 1) == 1 &&
               status == 'R';
  close(fds[0]);
  int rc = 1;
  if (ready) {
    o.role = "client";
    rc = run_client(o);
  } else {
    fmt::print(stderr, "rcpg-transport-bench: the forked server did not start\n");
  }
  // Reap the server: it exits after Done; give it a little time.
  int wstatus = 0;
  for (int i = 0; i < 500; ++i) {
    if (waitpid(pid, &wstatus, WNOHANG) == pid) {
      if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) rc = rc ? rc : 1;
      return rc;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &wstatus, 0);
  fmt::print(stderr, "rcpg-transport-bench: the forked server did not exit; killed it\n");
  return rc ? rc : 1;
}

ClusterKey default_key() {
  // Benchmarks need no secrecy, only the same key on both sides.
  ClusterKey k{};
  const char* seed = "rcpg-transport-bench-cluster-key";
  for (size_t i = 0; i < k.size(); ++i) k[i] = static_cast<uint8_t>(seed[i % std::strlen(seed)]);
  return k;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{
      "rcpg transport benchmark: WRITE_WITH_IMM ping-pong latency (RTT/2, like ib_write_lat) and "
      "RDMA WRITE streaming bandwidth (like ib_write_bw) over one Fabric connection."};
  app.add_option("--role", o.role, "server or client")->check(CLI::IsMember({"server", "client"}));
  app.add_flag("--fork", o.fork, "fork the server from the client (one command does both)");
  app.add_option("--fabric", o.fabric, "shm or verbs")->check(CLI::IsMember({"shm", "verbs"}));
  app.add_option("--listen", o.listen,
                 "server address: verbs IP:PORT, shm socket path (the client connects here unless --connect)");
  app.add_option("--connect", o.connect, "client: server address (default: --listen)");
  app.add_option("--source", o.source, "client, verbs: source IP to bind (needed on multi-host soft-RoCE)");
  app.add_option("--device", o.device, "verbs: RDMA device to expect (hint)");
  app.add_option("--sizes", o.size_args, "message sizes (suffix k, m)")->delimiter(',');
  app.add_option("--iters", o.iters, "latency iterations: one number or one per size")->delimiter(',');
  app.add_option("--bw-iters", o.bw_iters, "bandwidth messages: one number or one per size")->delimiter(',');
  app.add_option("--warmup", o.warmup, "latency warm-up iterations per size (not measured; at most 10% of --iters)");
  app.add_option("--seconds", o.seconds, "time bound per measurement (each size, each test)");
  app.add_option("--tx-depth", o.tx_depth, "bandwidth: outstanding writes (ib_write_bw's default 128)")
      ->check(CLI::Range(1u, 4096u));
  app.add_option("--cq-mod", o.cq_mod, "signal every N-th write (ib_write_bw's default 100)")->check(CLI::Range(1u, 4096u));
  app.add_option("--tests", o.tests, "which measurements: lat, bw or lat,bw");
  app.add_option("--json", o.json, "client: write all numbers to this JSON file");
  app.add_option("--timeout", o.timeout, "give up after this many seconds without progress");
  app.add_option("--server-spin-ms", o.server_spin_ms, "server: busy-poll this long after activity, then block");
  app.add_option("--core", o.core, "pin this process to a core");
  app.add_option("--server-core", o.server_core, "--fork: pin the forked server to a core");
  app.add_flag("--no-pin", o.no_pin,
               "--fork: do not pin (default: client and server on the first two allowed cores)");
  app.add_option("--key-file", o.key_file, "cluster key file (default: a fixed benchmark key)");
  app.add_flag("--yield", o.yield,
               "latency: spin with sched_yield() instead of a pause (helps when cores are oversubscribed; "
               "perftest does not)");
  app.add_flag("-q,--quiet", o.quiet, "less chatter on stderr");
  CLI11_PARSE(app, argc, argv);

  try {
    for (const auto& s : o.size_args) o.sizes.push_back(parse_size(s));
  } catch (const std::exception& e) {
    fmt::print(stderr, "rcpg-transport-bench: {}\n", e.what());
    return 2;
  }
  if (o.iters.size() != 1 && o.iters.size() != o.sizes.size()) {
    fmt::print(stderr, "rcpg-transport-bench: --iters needs one value or one per size\n");
    return 2;
  }
  if (o.bw_iters.size() != 1 && o.bw_iters.size() != o.sizes.size()) {
    fmt::print(stderr, "rcpg-transport-bench: --bw-iters needs one value or one per size\n");
    return 2;
  }
  if (o.cq_mod > o.tx_depth) o.cq_mod = o.tx_depth;
  if (o.key_file.empty()) {
    o.key = default_key();
  } else {
    std::string why;
    auto k = load_key_file(o.key_file, why);
    if (!k) {
      fmt::print(stderr, "rcpg-transport-bench: {}\n", why);
      return 2;
    }
    o.key = *k;
  }
  signal(SIGPIPE, SIG_IGN);
  try {
    if (o.fork) return run_fork(o);
    if (o.listen.empty() && o.connect.empty()) {
      fmt::print(stderr, "rcpg-transport-bench: --listen is required (or --fork with --fabric shm)\n");
      return 2;
    }
    if (o.role == "server") return run_server(o, -1);
    return run_client(o);
  } catch (const Failure& e) {
    fmt::print(stderr, "rcpg-transport-bench: {}\n", e.what());
    return 1;
  }
}
