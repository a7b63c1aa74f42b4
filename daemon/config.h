// rcpgd's cluster configuration: one TOML file shared by every node of the
// cluster (see daemon/rcpg.example.toml for every key and its default).
// Parsing is strict: a wrong type, an unknown key or an impossible value is
// an error that names the key and its line, so a typo never silently falls
// back to a default.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "transport/auth.h"

namespace rcpg::daemon {

inline constexpr const char* kDefaultConfigPath = "/etc/rcpg/rcpg.toml";

struct NodeEntry {
  uint32_t nodeid = 0;
  std::string address;         // verbs: "IP:PORT"; shm: socket path or "@name"
  std::string source_address;  // verbs: optional source IP (multi-host soft-RoCE)
};

inline constexpr const char* kDefaultStateDir = "/var/lib/rcpg";

struct Config {
  std::string source;  // file the configuration came from (for messages)

  // [cluster]
  std::string cluster_name = "rcpg";
  std::string key_file;  // resolved relative to the config file's directory
  std::string fabric = "verbs";

  // [local]
  uint32_t nodeid = 0;  // 0 = not given (CLI --nodeid, or found by local address)
  // Where the highest view epoch is kept across restarts (daemon/epoch_store.h).
  // A configuration file without the key gets kDefaultStateDir; empty: not kept.
  std::string state_dir;

  // [[node]]
  std::vector<NodeEntry> nodes;

  // [engine]
  size_t log_bytes = size_t{16} << 20;
  size_t inbound_bytes = size_t{4} << 20;
  size_t max_fragment = 0;  // 0 = inbound_bytes / 4
  bool zero_copy_receive = true;

  // [ipc]
  std::string socket_path;  // empty = $RCPG_SOCKET, else ipc::kDefaultSocket
  uint32_t socket_mode = 0660;
  size_t request_bytes = size_t{4} << 20;
  size_t event_bytes = size_t{8} << 20;
  size_t pool_bytes = size_t{16} << 20;
  uint32_t max_clients = 1024;

  // [timeouts]
  uint32_t max_sleep_ms = 50;    // longest block of the idle loop
  uint32_t peer_warn_ms = 5000;  // log missing peers this often while forming
  uint32_t shutdown_linger_ms = 200;

  // [membership] failure detection and quorum (the engine's EngineConfig).
  // Every node should use the same values.
  uint32_t heartbeat_interval_ms = 10;  // a heartbeat to every peer this often
  uint32_t suspect_timeout_ms = 100;    // silence after which a peer is suspected
  // ...adapting up to this to the longest silences seen lately (loaded hosts)
  uint32_t suspect_timeout_max_ms = 1000;
  uint32_t form_timeout_ms = 3000;  // the first view waits this long for every node
  bool two_node = false;            // a 2-node cluster stays up on one node

  // [spin]
  uint32_t spin_iterations = 2000;  // empty rounds before blocking
  bool spin_yield = false;          // sched_yield while spinning
  bool pin = false;                 // pin the loop near the RDMA device (hwloc)
  int pin_core = -1;
};

// Parses TOML text. On failure returns nullopt and fills `error` with
// "<source>:<line>: <what>" naming the offending key.
std::optional<Config> parse_config(std::string_view text, const std::string& source,
                                   std::string& error);
// Reads and parses a file.
std::optional<Config> load_config(const std::string& path, std::string& error);

// Decides which configured node this is: `override_id` (CLI) if non-zero,
// else [local] nodeid, else the node whose address is on a local interface
// (verbs) or whose socket this host can claim. Fails if none or several match.
bool resolve_nodeid(Config& cfg, uint32_t override_id, std::string& error);

// Socket path: `cli` if non-empty, else $RCPG_SOCKET, else [ipc] socket,
// else ipc::kDefaultSocket.
std::string socket_path(const Config& cfg, const std::string& cli);

// Loads the cluster key named by [cluster] key_file.
std::optional<transport::ClusterKey> load_cluster_key(const Config& cfg, std::string& error);

// "16MiB", "4k", 1048576 ... -> bytes (used for sizes in the file).
std::optional<size_t> parse_size(std::string_view text);

}  // namespace rcpg::daemon
