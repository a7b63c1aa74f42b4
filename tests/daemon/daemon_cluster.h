// N rcpgd processes in a private temporary directory: one configuration
// file, one key, one client socket and listen address per node. On shm the
// nodes listen on socket paths; on verbs node n listens on the n-th address
// of RCPG_HOST_ADDRS (scripts/softroce --hosts N).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace rcpg::test {

// Failure detection for test clusters: slower than the defaults so that two
// cores shared by three daemons, their clients and sanitizers do not make a
// busy node look dead, yet a killed one is gone well within a second.
inline constexpr const char* kTestMembership =
    "[membership]\nheartbeat_interval_ms = 20\nsuspect_timeout_ms = 300\n";

class DaemonCluster {
 public:
  // `membership` is the [membership] table of the configuration.
  explicit DaemonCluster(int nodes, std::string fabric = "shm",
                         std::string membership = kTestMembership)
      : nodes_(nodes), fabric_(std::move(fabric)), membership_(std::move(membership)) {}
  ~DaemonCluster();
  DaemonCluster(const DaemonCluster&) = delete;
  DaemonCluster& operator=(const DaemonCluster&) = delete;

  // Writes the files, starts every daemon, waits until each reports all
  // nodes connected. false + why (with the daemons' logs) on failure.
  bool start(std::string& why);
  void stop();
  // SIGKILL one daemon (node ids start at 1).
  void kill_node(int node);
  // Starts a killed daemon again (its log continues in the same file) and
  // waits until its client socket answers. false + why on failure.
  bool restart_node(int node, std::string& why);
  // Waits until every listed node's daemon has applied a view of exactly
  // `nodes` with the engine in the normal state. false + why on timeout.
  bool wait_view(const std::vector<int>& nodes, std::string& why,
                 std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // Empty when every daemon stopped by stop() exited 0 and no log holds a
  // sanitizer report; else what went wrong, with the logs concerned.
  std::string problems() const;
  std::string socket(int node) const;
  pid_t pid(int node) const { return pids_[static_cast<size_t>(node - 1)]; }
  std::string log_of(int node) const;
  const std::string& dir() const { return dir_; }

 private:
  std::string address(int node) const;
  pid_t launch(int node, bool append_log);

  int nodes_;
  std::string fabric_;
  std::string membership_;
  std::vector<std::string> hosts_;  // verbs
  int port_base_ = 0;
  std::string dir_;
  std::vector<pid_t> pids_;
  std::vector<std::string> exit_problems_;
};

}  // namespace rcpg::test
