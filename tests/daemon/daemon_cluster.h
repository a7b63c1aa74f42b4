// N rcpgd processes on the shm fabric in a private temporary directory: one
// configuration file, one key, one client socket and listen address per node.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace rcpg::test {

class DaemonCluster {
 public:
  explicit DaemonCluster(int nodes) : nodes_(nodes) {}
  ~DaemonCluster();
  DaemonCluster(const DaemonCluster&) = delete;
  DaemonCluster& operator=(const DaemonCluster&) = delete;

  // Writes the files, starts every daemon, waits until each reports all
  // nodes connected. false + why (with the daemons' logs) on failure.
  bool start(std::string& why);
  void stop();
  // SIGKILL one daemon (node ids start at 1).
  void kill_node(int node);
  std::string socket(int node) const;
  std::string log_of(int node) const;
  const std::string& dir() const { return dir_; }

 private:
  int nodes_;
  std::string dir_;
  std::vector<pid_t> pids_;
};

}  // namespace rcpg::test
