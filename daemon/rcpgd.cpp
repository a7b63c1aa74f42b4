// rcpgd: the rcpg node daemon (one per node, like corosync). Reads the
// cluster configuration, joins the cluster and serves local CPG clients
// (libcpg.so.4) on a Unix socket.
//
// Exit status: 0 after SIGTERM/SIGINT, 1 when the daemon cannot start or its
// engine fails, 2 for a bad command line or configuration.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>

#include "daemon/config.h"
#include "daemon/server.h"

namespace {

void log_line(uint32_t nodeid, const std::string& line) {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t;
  localtime_r(&ts.tv_sec, &t);
  char when[32];
  strftime(when, sizeof(when), "%H:%M:%S", &t);
  std::fprintf(stderr, "%s.%03ld rcpgd[%u]: %s\n", when, ts.tv_nsec / 1000000, nodeid,
               line.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  using namespace rcpg::daemon;
  CLI::App app{"rcpgd - rcpg node daemon (totally ordered group multicast, CPG API)"};
  std::string config_path = kDefaultConfigPath;
  uint32_t nodeid = 0;
  std::string socket;
  bool check = false;
  app.add_option("-c,--config", config_path, "cluster configuration (TOML)")->capture_default_str();
  app.add_option("-n,--nodeid", nodeid, "this node's id (overrides local.nodeid)");
  app.add_option("-s,--socket", socket,
                 "client socket path (overrides $RCPG_SOCKET and ipc.socket)");
  app.add_flag("--check", check, "validate the configuration and key, then exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }

  std::string error;
  auto cfg = load_config(config_path, error);
  if (!cfg) {
    std::fprintf(stderr, "rcpgd: %s\n", error.c_str());
    return 2;
  }
  if (!resolve_nodeid(*cfg, nodeid, error)) {
    std::fprintf(stderr, "rcpgd: %s\n", error.c_str());
    return 2;
  }
  auto key = load_cluster_key(*cfg, error);
  if (!key) {
    std::fprintf(stderr, "rcpgd: %s\n", error.c_str());
    return 2;
  }
  std::string path = socket_path(*cfg, socket);
  if (check) {
    std::printf("%s: ok (cluster '%s', %zu nodes, this is node %u, fabric %s, socket %s)\n",
                config_path.c_str(), cfg->cluster_name.c_str(), cfg->nodes.size(), cfg->nodeid,
                cfg->fabric.c_str(), path.c_str());
    return 0;
  }

  signal(SIGPIPE, SIG_IGN);
  uint32_t self = cfg->nodeid;
  Server server(std::move(*cfg), *key, path, [self](const std::string& l) { log_line(self, l); });
  if (!server.start(error)) {
    log_line(self, "cannot start: " + error);
    return 1;
  }
  return server.run();
}
