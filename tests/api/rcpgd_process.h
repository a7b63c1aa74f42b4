// Starts a one-node rcpgd on the shm fabric in a private temporary
// directory (config, cluster key, sockets) for tests of libcpg.
#pragma once

#include <sys/types.h>

#include <string>

namespace rcpg::test {

class RcpgdProcess {
 public:
  RcpgdProcess() = default;
  ~RcpgdProcess();
  RcpgdProcess(const RcpgdProcess&) = delete;
  RcpgdProcess& operator=(const RcpgdProcess&) = delete;

  // Writes the configuration, starts the daemon and waits (up to 20 s)
  // until its client socket accepts connections. false + why on failure.
  bool start(std::string& why);
  // SIGTERM (or SIGKILL), then reap.
  void stop(bool kill = false);
  // Starts the stopped daemon again with the same configuration and socket
  // (a new incarnation of the same node) and waits until it serves.
  bool restart(std::string& why);
  bool running() const { return pid_ > 0; }

  const std::string& socket_path() const { return socket_; }
  const std::string& dir() const { return dir_; }
  // Sets $RCPG_SOCKET to this daemon's socket.
  void export_socket() const;

 private:
  bool launch(std::string& why);

  std::string dir_, socket_;
  pid_t pid_ = -1;
};

// Path of the rcpgd binary of this build (RCPGD_PATH at compile time,
// overridable with $RCPGD).
std::string rcpgd_binary();

}  // namespace rcpg::test
