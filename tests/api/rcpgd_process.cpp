#include "rcpgd_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

namespace rcpg::test {

std::string rcpgd_binary() {
  if (const char* p = std::getenv("RCPGD")) return p;
  return RCPGD_PATH;
}

RcpgdProcess::~RcpgdProcess() {
  stop(true);
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

namespace {

bool can_connect(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

bool RcpgdProcess::start(std::string& why) {
  char tmpl[] = "/tmp/rcpg-api-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    why = std::string("mkdtemp: ") + std::strerror(errno);
    return false;
  }
  dir_ = tmpl;
  socket_ = dir_ + "/rcpgd.sock";
  {
    std::random_device rd;
    std::ofstream key(dir_ + "/cluster.key");
    for (int i = 0; i < 32; ++i) {
      char hex[3];
      std::snprintf(hex, sizeof(hex), "%02x", rd() & 0xff);
      key << hex;
    }
    key << "\n";
  }
  {
    std::ofstream cfg(dir_ + "/rcpg.toml");
    cfg << "[cluster]\n"
        << "name = \"libcpg-test\"\n"
        << "key_file = \"cluster.key\"\n"
        << "fabric = \"shm\"\n\n"
        << "[local]\nnodeid = 1\nstate_dir = \"state\"\n\n"
        << "[ipc]\nsocket = \"" << socket_ << "\"\n\n"
        << "[[nodes]]\nnodeid = 1\naddress = \"" << dir_ << "/node1.sock\"\n";
  }
  return launch(why);
}

bool RcpgdProcess::restart(std::string& why) {
  if (pid_ > 0) {
    why = "the daemon is still running";
    return false;
  }
  return launch(why);
}

bool RcpgdProcess::launch(std::string& why) {
  std::string bin = rcpgd_binary();
  std::string cfg = dir_ + "/rcpg.toml";
  std::string log = dir_ + "/rcpgd.log";
  pid_ = ::fork();
  if (pid_ == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    ::unsetenv("RCPG_SOCKET");
    ::execl(bin.c_str(), bin.c_str(), "--config", cfg.c_str(), static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  if (pid_ < 0) {
    why = std::string("fork: ") + std::strerror(errno);
    return false;
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    int status;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      std::ifstream in(log);
      std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      why = bin + " exited (status " + std::to_string(status) + "): " + text;
      return false;
    }
    if (can_connect(socket_)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  why = bin + " did not open " + socket_ + " within 20 s";
  stop(true);
  return false;
}

void RcpgdProcess::stop(bool kill) {
  if (pid_ <= 0) return;
  ::kill(pid_, kill ? SIGKILL : SIGTERM);
  int status;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (::waitpid(pid_, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  pid_ = -1;
}

void RcpgdProcess::export_socket() const {
  ::setenv("RCPG_SOCKET", socket_.c_str(), 1);
}

}  // namespace rcpg::test
