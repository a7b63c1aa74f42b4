// rcpg-tool: inspect a running rcpgd (like corosync-cpgtool).
//   rcpg-tool             groups and their members
//   rcpg-tool status      node, view, groups, counters, clients
//   rcpg-tool counters    daemon and engine counters
//   --json                machine-readable output
// Talks to the daemon's client socket ($RCPG_SOCKET, --socket) and gives up
// after --timeout seconds without an answer.
//
// Exit status: 0 on success, 1 when the daemon cannot be reached or answers
// badly, 2 for a bad command line.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "api/ipc/protocol.h"
#include "daemon/status_request.h"

namespace {

using namespace rcpg;

int fail(const std::string& what) {
  std::fprintf(stderr, "rcpg-tool: %s\n", what.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"rcpg-tool - show the groups, members and counters of a running rcpgd"};
  std::string socket_path;
  bool json = false;
  double timeout_s = 5;
  app.add_option(
      "-s,--socket", socket_path,
      "daemon socket (default $RCPG_SOCKET or " + std::string(ipc::kDefaultSocket) + ")");
  app.add_flag("-j,--json", json, "print JSON");
  app.add_option("-t,--timeout", timeout_s, "seconds to wait for the daemon's answer (default 5)")
      ->check(CLI::Range(0.001, 3600.0));
  app.require_subcommand(0, 1);
  app.fallthrough();  // `rcpg-tool status --json` as well as `rcpg-tool --json status`
  auto* status = app.add_subcommand("status", "node, view, groups, counters and clients");
  auto* counters = app.add_subcommand("counters", "daemon and engine counters");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  if (socket_path.empty()) {
    const char* env = std::getenv(ipc::kSocketEnv);
    socket_path = env && *env ? env : ipc::kDefaultSocket;
  }

  daemon::StatusRequest req;
  req.what = status->parsed()     ? daemon::StatusWhat::All
             : counters->parsed() ? daemon::StatusWhat::Counters
                                  : daemon::StatusWhat::Groups;
  req.flags = json ? daemon::kStatusJson : 0;

  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (socket_path.empty() || socket_path.size() >= sizeof(sa.sun_path))
    return fail("socket path \"" + socket_path + "\" is empty or longer than " +
                std::to_string(sizeof(sa.sun_path) - 1) + " bytes");
  std::memcpy(sa.sun_path, socket_path.c_str(), socket_path.size() + 1);
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0)
    return fail("cannot reach rcpgd at " + socket_path + ": " + std::strerror(errno));
  // A socket that accepts but never answers (a stopped daemon, something
  // else listening there) must not hang us.
  auto us = static_cast<long>(timeout_s * 1e6);
  timeval tv{us / 1000000, us % 1000000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));

  std::vector<char> msg(sizeof(ipc::MsgHeader) + sizeof(req));
  ipc::MsgHeader h{ipc::MsgType::Status, sizeof(req)};
  std::memcpy(msg.data(), &h, sizeof(h));
  std::memcpy(msg.data() + sizeof(h), &req, sizeof(req));
  if (send(fd, msg.data(), msg.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(msg.size()))
    return fail(std::string("sending the request: ") + std::strerror(errno));

  std::vector<char> buf(ipc::kMaxControlBytes);
  for (;;) {
    ssize_t n = recv(fd, buf.data(), buf.size(), 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return fail("no answer from " + socket_path + " within " + fmt::format("{:g}", timeout_s) +
                  " s (is rcpgd running, or stopped?)");
    if (n < 0) return fail("reading the answer: " + std::string(std::strerror(errno)));
    if (n == 0) return fail("rcpgd closed the connection without answering");
    if (static_cast<size_t>(n) < sizeof(h)) return fail("short reply");
    std::memcpy(&h, buf.data(), sizeof(h));
    if (h.type == ipc::MsgType::Wake) continue;
    if (h.type != ipc::MsgType::Status || h.length != static_cast<size_t>(n) - sizeof(h))
      return fail("unexpected reply from " + socket_path + " (is it an rcpgd socket?)");
    std::fwrite(buf.data() + sizeof(h), 1, h.length, stdout);
    break;
  }
  close(fd);
  return 0;
}
