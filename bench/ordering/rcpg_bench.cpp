// rcpg-bench: end-to-end ordered multicast benchmark. Forks one process per
// node (on shm, or on soft-RoCE/RDMA hosts given by RCPG_HOST_ADDRS for
// verbs); the nodes run the same schedule, kept in step by barrier messages
// that travel through the ordered log itself.
//
// Per message size:
//   latency    - the highest node id (not the sequencer, so the full path
//                sender -> sequencer -> members is measured) sends one message
//                at a time and waits for its own delivery; every member
//                records send-to-delivery time (all "hosts" share one clock:
//                one machine, or one soft-RoCE guest kernel).
//   throughput - every node sends concurrently as fast as back-pressure
//                allows; each member reports delivered msgs/s and MB/s.
#include <fmt/format.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <vector>

#include "ordering/engine.h"
#include "ordering/node_runtime.h"
#include "transport/factory.h"

using namespace rcpg;
using namespace rcpg::ordering;
using namespace rcpg::transport;

namespace {

constexpr uint32_t kBenchGroup = 1;
constexpr uint32_t kBarrierGroup = 2;

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

struct MsgHeader {
  uint32_t phase;
  uint32_t seq;
  uint64_t sent_ns;
};

struct Options {
  std::string fabric = "shm";
  int nodes = 3;
  std::vector<size_t> sizes = {64, 1024, 16384, 65536, 1 << 20};
  int lat_iters = 0;      // 0 = by fabric
  double tput_bytes = 0;  // bytes per sender per size; 0 = by fabric
  uint32_t spin = 300;
  bool yield = false;
  std::string json;
  int timeout_s = 600;
  size_t log_mib = 32;
  size_t inbound_mib = 4;
};

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  return v[i];
}

std::string address_of(const Options& o, int node, const std::vector<std::string>& hosts) {
  if (o.fabric == "verbs")
    return hosts[static_cast<size_t>(node - 1) % hosts.size()] + ":" + std::to_string(19000 + node);
  return "@rcpg-bench-" + std::to_string(getppid()) + "-" + std::to_string(node);
}

class Node {
 public:
  Node(const Options& o, int self) : o_(o), self_(self) {}

  int run(std::ostream& out) {
    auto hosts = softroce_hosts();
    if (o_.fabric == "verbs" && hosts.empty()) {
      fmt::print(stderr, "rcpg-bench: verbs needs RCPG_HOST_ADDRS (run under scripts/softroce)\n");
      return 2;
    }
    NodeConfig nc;
    nc.fabric = o_.fabric;
    nc.endpoint.node_id = NodeId(self_);
    nc.endpoint.listen_address = address_of(o_, self_, hosts);
    if (o_.fabric == "verbs") nc.endpoint.source_address = hosts[size_t(self_ - 1) % hosts.size()];
    nc.endpoint.cluster_key.fill(0x5c);
    for (int n = 1; n <= o_.nodes; ++n)
      nc.engine.nodes.push_back({NodeId(n), address_of(o_, n, hosts)});
    nc.engine.log_bytes = o_.log_mib << 20;
    nc.engine.inbound_bytes = o_.inbound_mib << 20;
    nc.spin_iterations = o_.spin;
    nc.spin_yield = o_.yield;
    rt_ = std::make_unique<NodeRuntime>(nc, [this](const Delivery& d) { on_deliver(d); });
    std::string why;
    if (!rt_->start(why)) {
      fmt::print(stderr, "node {}: {}\n", self_, why);
      return 3;
    }
    deadline_ = now_ns() + uint64_t(o_.timeout_s) * 1000000000ull;
    while (!rt_->engine().all_connected())
      if (!pump()) return fail("connecting");
    uint32_t phase = 0;
    for (size_t size : o_.sizes) {
      if (!barrier(++phase) || !latency_phase(++phase, size, out)) return fail("latency");
      if (!barrier(++phase) || !throughput_phase(++phase, size, out)) return fail("throughput");
    }
    if (!barrier(++phase)) return fail("final barrier");
    // Let slower members finish delivering before connections close.
    uint64_t linger = now_ns() + (o_.fabric == "verbs" ? 3000000000ull : 300000000ull);
    while (now_ns() < linger) pump();
    return 0;
  }

 private:
  int fail(const char* what) {
    fmt::print(stderr, "node {}: {} phase did not finish in time\n", self_, what);
    return 5;
  }

  bool pump() {
    rt_->run_once();
    return now_ns() < deadline_ && !rt_->engine().failed();
  }

  // Sends, retrying under back-pressure; large payloads stay alive until
  // the engine has streamed them.
  bool send(uint32_t group, std::span<const std::byte> payload) {
    auto left = std::chrono::nanoseconds(deadline_ - std::min(deadline_, now_ns()));
    return rt_->send_blocking(EntryKind::Data, Guarantee::Agreed, group, 0, payload,
                              std::chrono::duration_cast<std::chrono::milliseconds>(left));
  }

  bool barrier(uint32_t phase) {
    std::byte b[4];
    std::memcpy(b, &phase, 4);
    if (!send(kBarrierGroup, b)) return false;
    while (barrier_count_[phase] < o_.nodes)
      if (!pump()) return false;
    return true;
  }

  void on_deliver(const Delivery& d) {
    if (d.kind != EntryKind::Data) return;
    if (d.group == kBarrierGroup && d.len == 4) {
      uint32_t p;
      std::memcpy(&p, d.data, 4);
      // The phase starts at the barrier's position in the log, not when
      // barrier() returns: later messages may be delivered in the same round.
      if (++barrier_count_[p] == o_.nodes) start_phase(p + 1);
      return;
    }
    if (d.group != kBenchGroup || d.len < sizeof(MsgHeader)) return;
    MsgHeader h;
    std::memcpy(&h, d.data, sizeof(h));
    if (h.phase != cur_phase_) return;
    uint64_t t = now_ns();
    if (first_ns_ == 0) first_ns_ = t;
    last_ns_ = t;
    ++delivered_;
    bytes_ += d.len;
    lat_us_.push_back(double(t - h.sent_ns) / 1000.0);
    if (d.sender == NodeId(self_) && h.seq == awaiting_) own_seen_ = true;
  }

  void start_phase(uint32_t phase) {
    cur_phase_ = phase;
    delivered_ = bytes_ = 0;
    first_ns_ = last_ns_ = 0;
    lat_us_.clear();
  }

  bool latency_phase(uint32_t phase, size_t size, std::ostream& out) {
    int iters = o_.lat_iters > 0 ? o_.lat_iters : (o_.fabric == "verbs" ? 200 : 2000);
    if (size >= (1 << 20))
      iters = std::max(10, iters / 20);
    else if (size >= 65536)
      iters = std::max(20, iters / 5);
    std::vector<std::byte> buf(std::max(size, sizeof(MsgHeader)));
    std::vector<double> rtt;
    if (self_ == o_.nodes) {
      for (int i = 0; i < iters; ++i) {
        MsgHeader h{phase, uint32_t(i), now_ns()};
        std::memcpy(buf.data(), &h, sizeof(h));
        awaiting_ = uint32_t(i);
        own_seen_ = false;
        if (!send(kBenchGroup, buf)) return false;
        while (!own_seen_)
          if (!pump()) return false;
        rtt.push_back(double(now_ns() - h.sent_ns) / 1000.0);
      }
    }
    while (delivered_ < uint64_t(iters))
      if (!pump()) return false;
    out << fmt::format(
        "{{\"node\":{},\"size\":{},\"test\":\"latency\",\"iters\":{},\"p50_us\":{:.2f},"
        "\"p99_us\":{:.2f},\"p999_us\":{:.2f},\"min_us\":{:.2f},\"sender\":{}",
        self_, size, iters, percentile(lat_us_, 0.5), percentile(lat_us_, 0.99),
        percentile(lat_us_, 0.999),
        lat_us_.empty() ? 0.0 : *std::min_element(lat_us_.begin(), lat_us_.end()),
        self_ == o_.nodes);
    if (!rtt.empty())
      out << fmt::format(",\"self_rtt_p50_us\":{:.2f},\"self_rtt_p99_us\":{:.2f}",
                         percentile(rtt, 0.5), percentile(rtt, 0.99));
    out << "}\n";
    return true;
  }

  bool throughput_phase(uint32_t phase, size_t size, std::ostream& out) {
    double budget = o_.tput_bytes > 0 ? o_.tput_bytes : (o_.fabric == "verbs" ? 2e6 : 256e6);
    uint64_t count = std::clamp<uint64_t>(uint64_t(budget / double(size)), 20, 200000);
    if (o_.fabric == "verbs") count = std::min<uint64_t>(count, 3000);
    std::vector<std::byte> buf(std::max(size, sizeof(MsgHeader)));
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < count; ++i) {
      MsgHeader h{phase, uint32_t(i), now_ns()};
      std::memcpy(buf.data(), &h, sizeof(h));
      if (!send(kBenchGroup, buf)) return false;
    }
    uint64_t total = count * uint64_t(o_.nodes);
    while (delivered_ < total)
      if (!pump()) return false;
    double secs = double(last_ns_ - t0) / 1e9;
    const EngineCounters& c = rt_->engine().counters();
    out << fmt::format(
        "{{\"node\":{},\"size\":{},\"test\":\"throughput\",\"senders\":{},\"msgs\":{},"
        "\"seconds\":{:.4f},\"msgs_per_s\":{:.0f},\"mb_per_s\":{:.2f},\"load_p50_us\":{:.1f},"
        "\"log_batches\":{},\"inbound_batches\":{},\"credit_stalls\":{}}}\n",
        self_, size, o_.nodes, total, secs, double(total) / secs, double(bytes_) / secs / 1e6,
        percentile(lat_us_, 0.5), c.log_batches, c.inbound_batches, c.credit_stalls);
    return true;
  }

  const Options& o_;
  int self_;
  std::unique_ptr<NodeRuntime> rt_;
  uint64_t deadline_ = 0;
  std::map<uint32_t, int> barrier_count_;
  uint32_t cur_phase_ = 0, awaiting_ = 0;
  bool own_seen_ = false;
  uint64_t delivered_ = 0, bytes_ = 0, first_ns_ = 0, last_ns_ = 0;
  std::vector<double> lat_us_;
};

std::string field(const std::string& line, const std::string& key) {
  auto p = line.find("\"" + key + "\":");
  if (p == std::string::npos) return "";
  p += key.size() + 3;
  auto e = line.find_first_of(",}", p);
  return line.substr(p, e - p);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"rcpg-bench: latency and throughput of ordered multicast across N nodes"};
  app.add_option("--fabric", o.fabric, "shm or verbs")->check(CLI::IsMember({"shm", "verbs"}));
  app.add_option("--nodes", o.nodes, "cluster size")->check(CLI::Range(2, 7));
  app.add_option("--sizes", o.sizes, "message sizes in bytes")->delimiter(',');
  app.add_option("--lat-iters", o.lat_iters, "latency iterations (default by fabric)");
  app.add_option("--tput-bytes", o.tput_bytes, "bytes each sender sends per size");
  app.add_option("--spin", o.spin, "poll iterations before blocking");
  std::string yield = "auto";
  app.add_option("--yield", yield,
                 "yield the core while spinning: on, off, auto (= when nodes"
                 " outnumber cores)")
      ->check(CLI::IsMember({"on", "off", "auto"}));
  app.add_option("--log-mib", o.log_mib, "replicated log size (MiB)");
  app.add_option("--inbound-mib", o.inbound_mib, "per-sender inbound ring (MiB)");
  app.add_option("--timeout", o.timeout_s, "give up after this many seconds");
  app.add_option("--json", o.json, "write all results as JSON to this file");
  CLI11_PARSE(app, argc, argv);
  // Soft-RoCE does its packet work in the kernel (softirq): pollers that never
  // yield starve it, and latency grows from microseconds to milliseconds.
  o.yield = yield == "on" || (yield == "auto" && (o.nodes >= int(sysconf(_SC_NPROCESSORS_ONLN)) ||
                                                  std::getenv("RCPG_SOFTROCE") != nullptr));

  std::vector<pid_t> pids;
  std::vector<int> fds;
  for (int n = 1; n <= o.nodes; ++n) {
    int p[2];
    if (pipe(p) != 0) return 1;
    pid_t pid = fork();
    if (pid == 0) {
      close(p[0]);
      std::ostringstream out;
      int rc = Node(o, n).run(out);
      std::string s = out.str();
      if (write(p[1], s.data(), s.size()) != ssize_t(s.size())) rc = rc ? rc : 6;
      _exit(rc);
    }
    close(p[1]);
    pids.push_back(pid);
    fds.push_back(p[0]);
  }
  std::vector<std::string> lines;
  int failed = 0;
  for (size_t i = 0; i < pids.size(); ++i) {
    std::string all;
    char buf[4096];
    ssize_t r;
    while ((r = read(fds[i], buf, sizeof(buf))) > 0) all.append(buf, size_t(r));
    close(fds[i]);
    int status = 0;
    waitpid(pids[i], &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failed;
    std::istringstream in(all);
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) lines.push_back(line);
  }

  fmt::print("rcpg-bench: fabric={} nodes={} (sequencer = node 1, latency sender = node {})\n",
             o.fabric, o.nodes, o.nodes);
  fmt::print("{:>9} | {:>10} {:>10} {:>10} {:>12} | {:>12} {:>10} {:>12}\n", "size", "p50 us",
             "p99 us", "p999 us", "self-rtt p50", "msgs/s/mbr", "MB/s/mbr", "load p50 us");
  for (size_t size : o.sizes) {
    double p50 = 0, p99 = 0, p999 = 0, rtt = 0, mps = 1e300, mbs = 1e300, load = 0;
    for (auto& l : lines) {
      if (field(l, "size") != std::to_string(size)) continue;
      if (field(l, "test") == "\"latency\"") {
        p50 = std::max(p50, std::stod(field(l, "p50_us")));
        p99 = std::max(p99, std::stod(field(l, "p99_us")));
        p999 = std::max(p999, std::stod(field(l, "p999_us")));
        if (!field(l, "self_rtt_p50_us").empty()) rtt = std::stod(field(l, "self_rtt_p50_us"));
      } else {
        mps = std::min(mps, std::stod(field(l, "msgs_per_s")));
        mbs = std::min(mbs, std::stod(field(l, "mb_per_s")));
        load = std::max(load, std::stod(field(l, "load_p50_us")));
      }
    }
    if (mps > 1e299) mps = mbs = 0;
    fmt::print("{:>9} | {:>10.1f} {:>10.1f} {:>10.1f} {:>12.1f} | {:>12.0f} {:>10.1f} {:>12.1f}\n",
               size, p50, p99, p999, rtt, mps, mbs, load);
  }
  fmt::print(
      "(latency: worst member's send-to-delivery percentiles; throughput: slowest member,"
      " all {} nodes sending)\n",
      o.nodes);
  if (!o.json.empty()) {
    std::ofstream j(o.json);
    j << "{\"fabric\":\"" << o.fabric << "\",\"nodes\":" << o.nodes << ",\"results\":[\n";
    for (size_t i = 0; i < lines.size(); ++i)
      j << "  " << lines[i] << (i + 1 < lines.size() ? ",\n" : "\n");
    j << "]}\n";
  }
  if (failed) fmt::print(stderr, "rcpg-bench: {} node(s) failed\n", failed);
  return failed ? 1 : 0;
}
