// N rcpgd processes in a private temporary directory: one configuration
// file, one key, one client socket and listen address per node. On shm the
// nodes listen on socket paths; on verbs node n listens on the n-th address
// of RCPG_HOST_ADDRS (scripts/softroce --hosts N).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace rcpg::test {

class DaemonCluster {
 public:
  explicit DaemonCluster(int nodes, std::string fabric = "shm")
      : nodes_(nodes), fabric_(std::move(fabric)) {}
  ~DaemonCluster();
  DaemonCluster(const DaemonCluster&) = delete;
  DaemonCluster& operator=(const DaemonCluster&) = delete;

  // Writes the files, starts every daemon, waits until each reports all
  // nodes connected. false + why (with the daemons' logs) on failure.
  bool start(std::string& why);
  void stop();
  // SIGKILL one daemon (node ids start at 1).
  void kill_node(int node);
  // Empty when every daemon stopped by stop() exited 0 and no log holds a
  // sanitizer report; else what went wrong, with the logs concerned.
  std::string problems() const;
  std::string socket(int node) const;
  pid_t pid(int node) const { return pids_[static_cast<size_t>(node - 1)]; }
  std::string log_of(int node) const;
  const std::string& dir() const { return dir_; }

 private:
  std::string address(int node) const;

  int nodes_;
  std::string fabric_;
  std::vector<std::string> hosts_;  // verbs
  int port_base_ = 0;
  std::string dir_;
  std::vector<pid_t> pids_;
  std::vector<std::string> exit_problems_;
};

}  // namespace rcpg::test
