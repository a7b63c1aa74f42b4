#include "daemon_cluster.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "ipc_test_client.h"

namespace rcpg::test {

using Clock = std::chrono::steady_clock;

DaemonCluster::~DaemonCluster() {
  stop();
  if (!dir_.empty() && !std::getenv("RCPG_KEEP_TEST_DIR")) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

std::string DaemonCluster::socket(int node) const {
  return dir_ + "/client" + std::to_string(node) + ".sock";
}

std::string DaemonCluster::log_of(int node) const {
  std::ifstream in(dir_ + "/rcpgd" + std::to_string(node) + ".log");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string DaemonCluster::address(int node) const {
  if (fabric_ == "verbs")
    return hosts_[static_cast<size_t>(node - 1)] + ":" + std::to_string(port_base_ + node);
  return dir_ + "/node" + std::to_string(node) + ".sock";
}

bool DaemonCluster::start(std::string& why) {
  if (fabric_ == "verbs") {
    std::stringstream ss(std::getenv("RCPG_HOST_ADDRS") ? std::getenv("RCPG_HOST_ADDRS") : "");
    for (std::string item; std::getline(ss, item, ',');)
      if (!item.empty()) hosts_.push_back(item);
    if (hosts_.size() < static_cast<size_t>(nodes_)) {
      why = "verbs needs " + std::to_string(nodes_) + " addresses in RCPG_HOST_ADDRS";
      return false;
    }
    port_base_ = 31000 + (getpid() % 1000) * 10;
  }
  char tmpl[] = "/tmp/rcpgd-test-XXXXXX";
  if (!mkdtemp(tmpl)) {
    why = "mkdtemp failed";
    return false;
  }
  dir_ = tmpl;
  {
    std::ofstream key(dir_ + "/authkey");
    key << "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n";
  }
  {
    std::ofstream cfg(dir_ + "/rcpg.toml");
    cfg << "[cluster]\nname = \"daemon-test\"\nkey_file = \"authkey\"\nfabric = \"" << fabric_
        << "\"\n"
        << "[engine]\nlog_bytes = \"4MiB\"\ninbound_bytes = \"1MiB\"\n"
        << "[ipc]\nrequest_bytes = \"1MiB\"\nevent_bytes = \"4MiB\"\npool_bytes = \"4MiB\"\n"
        // 2 cores shared by daemons and clients: spin briefly and yield.
        << "[spin]\niterations = 200\nyield = true\n"
        << "[timeouts]\nshutdown_linger_ms = 0\n"
        << "[local]\nstate_dir = \"state\"\n"
        // Soft-RoCE under emulation stalls nodes for hundreds of ms.
        << ((membership_.empty() || membership_ == kTestMembership) && fabric_ == "verbs"
                ? "[membership]\nheartbeat_interval_ms = 50\nsuspect_timeout_ms = 2000\n"
                  "suspect_timeout_max_ms = 10000\n"
                : membership_);
    for (int n = 1; n <= nodes_; ++n)
      cfg << "[[nodes]]\nnodeid = " << n << "\naddress = \"" << address(n) << "\"\n";
  }
  for (int n = 1; n <= nodes_; ++n) pids_.push_back(launch(n, false));
  // Soft-RoCE under emulation connects slowly.
  auto deadline = Clock::now() + std::chrono::seconds(fabric_ == "verbs" ? 120 : 30);
  for (int n = 1; n <= nodes_; ++n) {
    for (;;) {
      IpcTestClient c;
      std::string err;
      if (c.connect(socket(n), err) &&
          c.status_text(0, 1).find("\"all_connected\":true") != std::string::npos)
        break;
      int status;
      if (waitpid(pids_[n - 1], &status, WNOHANG) == pids_[n - 1]) {
        pids_[n - 1] = -1;
        why = "rcpgd " + std::to_string(n) + " exited: " + log_of(n);
        return false;
      }
      if (Clock::now() > deadline) {
        why = "rcpgd " + std::to_string(n) + " not ready: " + log_of(n);
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  // Connected is not enough: clients may join once the first view is in.
  std::vector<int> all;
  for (int n = 1; n <= nodes_; ++n) all.push_back(n);
  return wait_view(all, why,
                   std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::max(deadline - Clock::now(), Clock::duration{0})));
}

pid_t DaemonCluster::launch(int node, bool append_log) {
  std::string log = dir_ + "/rcpgd" + std::to_string(node) + ".log";
  std::string cfg = dir_ + "/rcpg.toml";
  std::string id = std::to_string(node);
  std::string sock = socket(node);
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | (append_log ? O_APPEND : O_TRUNC), 0644);
    if (append_log) {
      const char mark[] = "----- restarted -----\n";
      [[maybe_unused]] ssize_t w = write(fd, mark, sizeof(mark) - 1);
    }
    dup2(fd, 1);
    dup2(fd, 2);
    execl(RCPGD_PATH, RCPGD_PATH, "--config", cfg.c_str(), "--nodeid", id.c_str(), "--socket",
          sock.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

bool DaemonCluster::restart_node(int node, std::string& why) {
  if (pids_[node - 1] > 0) {
    why = "rcpgd " + std::to_string(node) + " is still running";
    return false;
  }
  pids_[node - 1] = launch(node, true);
  auto deadline = Clock::now() + std::chrono::seconds(fabric_ == "verbs" ? 120 : 20);
  for (;;) {
    IpcTestClient c;
    std::string err;
    if (c.connect(socket(node), err) && !c.status_text(0, 1).empty()) return true;
    int status;
    if (waitpid(pids_[node - 1], &status, WNOHANG) == pids_[node - 1]) {
      pids_[node - 1] = -1;
      why = "restarted rcpgd " + std::to_string(node) + " exited: " + log_of(node);
      return false;
    }
    if (Clock::now() > deadline) {
      why = "restarted rcpgd " + std::to_string(node) + " not serving: " + log_of(node);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

bool DaemonCluster::wait_view(const std::vector<int>& nodes, std::string& why,
                              std::chrono::milliseconds timeout) {
  std::string want = "\"view\":[";
  for (size_t i = 0; i < nodes.size(); ++i) want += (i ? "," : "") + std::to_string(nodes[i]);
  want += "],\"membership\":{\"state\":\"normal\"";
  auto deadline = Clock::now() + timeout;
  for (int n : nodes) {
    std::string last;
    for (;;) {
      IpcTestClient c;
      std::string err;
      if (c.connect(socket(n), err)) last = c.status_text(0, 1);
      if (last.find(want) != std::string::npos) break;
      if (Clock::now() > deadline) {
        why = "rcpgd " + std::to_string(n) + " never showed " + want + "; last status: " + last;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  return true;
}

void DaemonCluster::kill_node(int node) {
  pid_t& p = pids_[node - 1];
  if (p <= 0) return;
  kill(p, SIGKILL);
  waitpid(p, nullptr, 0);
  p = -1;
}

void DaemonCluster::stop() {
  for (pid_t& p : pids_)
    if (p > 0) kill(p, SIGTERM);
  for (size_t n = 0; n < pids_.size(); ++n) {
    pid_t& p = pids_[n];
    if (p <= 0) continue;
    auto deadline = Clock::now() + std::chrono::seconds(10);
    int status = 0;
    while (waitpid(p, &status, WNOHANG) == 0) {
      if (Clock::now() > deadline) {
        kill(p, SIGKILL);
        waitpid(p, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    // A lost peer is a view change: every daemon must end with status 0.
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      exit_problems_.push_back("rcpgd " + std::to_string(n + 1) + " ended with " +
                               (WIFEXITED(status)
                                    ? "exit status " + std::to_string(WEXITSTATUS(status))
                                    : std::string("signal ") + strsignal(WTERMSIG(status))));
    p = -1;
  }
}

std::string DaemonCluster::problems() const {
  std::string out;
  for (const std::string& e : exit_problems_) out += e + "\n";
  for (int n = 1; n <= nodes_; ++n) {
    std::string log = log_of(n);
    for (const char* mark : {"AddressSanitizer", "LeakSanitizer", "runtime error:"})
      if (log.find(mark) != std::string::npos) {
        out += "rcpgd " + std::to_string(n) + " log has a sanitizer report:\n" + log;
        break;
      }
  }
  return out;
}

}  // namespace rcpg::test
