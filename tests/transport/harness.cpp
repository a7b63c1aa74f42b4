#include "tests/transport/harness.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <sstream>
#include <vector>

#include "tests/transport/peer_agent.h"
#include "transport/sim/sim_world.h"
#if __has_include("transport/shm/shm_endpoint.h")
#include "transport/shm/shm_endpoint.h"
#define RCPG_HAVE_SHM 1
#endif
#if __has_include("transport/verbs/verbs_endpoint.h")
#include "transport/verbs/verbs_endpoint.h"
#define RCPG_HAVE_VERBS 1
#endif

namespace rcpg::test {

using namespace rcpg::transport;

bool Harness::wait_for(Endpoint& ep, const std::function<bool()>& done) {
  auto deadline = std::chrono::steady_clock::now() + patience();
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    progress(ep);
  }
  return true;
}

namespace {

// --- sim: everything in one SimWorld, the agent polled in-process ---------
class SimHarness final : public Harness {
 public:
  explicit SimHarness(uint64_t seed) : world_(seed) {}
  ~SimHarness() override { agent_.reset(); }

  std::unique_ptr<Endpoint> make_endpoint(EndpointConfig cfg) override {
    return world_.create_endpoint(cfg);
  }
  std::string start_peer(EndpointConfig cfg) override {
    cfg.listen_address = "sim-peer-" + std::to_string(++peers_);
    peer_node_ = cfg.node_id;
    agent_ = std::make_unique<PeerAgent>(world_.create_endpoint(cfg));
    return agent_->ok() ? cfg.listen_address : std::string();
  }
  void kill_peer() override {
    world_.kill(peer_node_);
    agent_.reset();
  }
  void progress(Endpoint&) override {
    for (int i = 0; i < 8 && world_.step(); ++i) {
    }
    if (agent_) agent_->poll_once();
  }
  std::string unused_address() override { return "sim-nobody"; }
  std::chrono::milliseconds patience() const override { return std::chrono::seconds(10); }

 private:
  SimWorld world_;
  std::unique_ptr<PeerAgent> agent_;
  NodeId peer_node_ = 0;
  int peers_ = 0;
};

// --- shm / verbs: the agent runs in a forked child process ------------------
using Factory = std::unique_ptr<Endpoint> (*)(const EndpointConfig&, std::string&);

class ProcessHarness final : public Harness {
 public:
  ProcessHarness(std::string fabric, Factory factory)
      : fabric_(std::move(fabric)), factory_(factory) {
    if (fabric_ == "verbs") init_verbs();
  }
  ~ProcessHarness() override { kill_peer(); }

  std::string unavailable() const override { return unavailable_; }

  std::unique_ptr<Endpoint> make_endpoint(EndpointConfig cfg) override {
    if (fabric_ == "verbs" && cfg.source_address.empty()) cfg.source_address = hosts_[0];
    std::string why;
    auto ep = factory_(cfg, why);
    if (!ep) last_error_ = why;
    return ep;
  }

  std::string start_peer(EndpointConfig cfg) override {
    kill_peer();
    cfg.listen_address = next_address();
    int fds[2];
    if (pipe(fds) != 0) return {};
    pid_t pid = fork();
    if (pid == 0) {
      close(fds[0]);
      std::string why;
      auto ep = factory_(cfg, why);
      std::unique_ptr<PeerAgent> agent;
      if (ep) agent = std::make_unique<PeerAgent>(std::move(ep));
      char status = agent && agent->ok() ? 'R' : 'E';
      if (write(fds[1], &status, 1) != 1) _exit(3);
      if (status != 'R') {
        fprintf(stderr, "peer agent failed to start: %s\n", why.c_str());
        _exit(2);
      }
      close(fds[1]);
      agent->run_forever();
    }
    close(fds[1]);
    pollfd p{fds[0], POLLIN, 0};
    char status = 0;
    bool ready = ::poll(&p, 1, 60000) == 1 && read(fds[0], &status, 1) == 1 && status == 'R';
    close(fds[0]);
    child_ = pid;
    if (!ready) {
      kill_peer();
      return {};
    }
    return cfg.listen_address;
  }

  void kill_peer() override {
    if (child_ > 0) {
      ::kill(child_, SIGKILL);
      waitpid(child_, nullptr, 0);
      child_ = -1;
    }
  }

  void progress(Endpoint& ep) override { ep.wait(std::chrono::milliseconds(5)); }

  std::string unused_address() override {
    if (fabric_ == "verbs") return hosts_[1] + ":" + std::to_string(base_port() + 999);
    return "/tmp/rcpg-nobody-" + std::to_string(getpid()) + ".sock";
  }
  std::chrono::milliseconds patience() const override { return std::chrono::seconds(60); }

 private:
  void init_verbs() {
    const char* env = std::getenv("RCPG_HOST_ADDRS");
    if (env) {
      std::stringstream ss(env);
      std::string item;
      while (std::getline(ss, item, ',')) hosts_.push_back(item);
    }
    if (hosts_.size() < 2)
      unavailable_ = "verbs needs two RDMA hosts (run under scripts/softroce --hosts 2)";
  }
  int base_port() const { return 20000 + (getpid() % 2000) * 10; }
  std::string next_address() {
    ++serial_;
    if (fabric_ == "verbs") return hosts_[1] + ":" + std::to_string(base_port() + serial_ % 900);
    return "/tmp/rcpg-conf-" + std::to_string(getpid()) + "-" + std::to_string(serial_) + ".sock";
  }

  std::string fabric_;
  Factory factory_;
  std::vector<std::string> hosts_;
  std::string unavailable_;
  std::string last_error_;
  pid_t child_ = -1;
  int serial_ = 0;
};

class UnavailableHarness final : public Harness {
 public:
  explicit UnavailableHarness(std::string why) : why_(std::move(why)) {}
  std::string unavailable() const override { return why_; }
  std::unique_ptr<Endpoint> make_endpoint(EndpointConfig) override { return nullptr; }
  std::string start_peer(EndpointConfig) override { return {}; }
  void kill_peer() override {}
  void progress(Endpoint&) override {}
  std::string unused_address() override { return {}; }

 private:
  std::string why_;
};

}  // namespace

std::unique_ptr<Harness> make_harness(const std::string& fabric, uint64_t seed) {
  if (fabric == "sim") return std::make_unique<SimHarness>(seed);
#ifdef RCPG_HAVE_SHM
  if (fabric == "shm") return std::make_unique<ProcessHarness>("shm", &make_shm_endpoint);
#endif
#ifdef RCPG_HAVE_VERBS
  if (fabric == "verbs") return std::make_unique<ProcessHarness>("verbs", &make_verbs_endpoint);
#endif
  return std::make_unique<UnavailableHarness>(fabric + " fabric is not built");
}

}  // namespace rcpg::test
