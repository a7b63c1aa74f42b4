#include "daemon/config.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <toml++/toml.h>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "api/ipc/protocol.h"
#include "ordering/log_format.h"

namespace rcpg::daemon {
namespace {

// Collects the first error with its location; every check returns false on failure.
struct Checker {
  const std::string& source;
  std::string& error;

  bool fail(const toml::source_region& where, const std::string& what) {
    error = source + ":" + std::to_string(where.begin.line) + ": " + what;
    return false;
  }
};

bool is_pow2(size_t v) {
  return v != 0 && (v & (v - 1)) == 0;
}

bool get_string(Checker& c, const toml::node& n, const std::string& key, std::string& out) {
  auto s = n.value<std::string>();
  if (!n.is_string() || !s) return c.fail(n.source(), "'" + key + "' must be a string");
  out = *s;
  return true;
}

bool get_bool(Checker& c, const toml::node& n, const std::string& key, bool& out) {
  if (!n.is_boolean()) return c.fail(n.source(), "'" + key + "' must be true or false");
  out = *n.value<bool>();
  return true;
}

bool get_uint(Checker& c, const toml::node& n, const std::string& key, uint64_t lo, uint64_t hi,
              uint64_t& out) {
  if (!n.is_integer()) return c.fail(n.source(), "'" + key + "' must be an integer");
  int64_t v = *n.value<int64_t>();
  if (v < 0 || static_cast<uint64_t>(v) < lo || static_cast<uint64_t>(v) > hi)
    return c.fail(n.source(), "'" + key + "' = " + std::to_string(v) + " is out of range [" +
                                  std::to_string(lo) + ", " + std::to_string(hi) + "]");
  out = static_cast<uint64_t>(v);
  return true;
}

template <typename T>
bool get_num(Checker& c, const toml::node& n, const std::string& key, uint64_t lo, uint64_t hi,
             T& out) {
  uint64_t v;
  if (!get_uint(c, n, key, lo, hi, v)) return false;
  out = static_cast<T>(v);
  return true;
}

// A size is an integer (bytes) or a string with a binary suffix ("16MiB", "4k").
bool get_size(Checker& c, const toml::node& n, const std::string& key, size_t lo, size_t hi,
              bool pow2, size_t& out) {
  std::optional<size_t> v;
  if (n.is_integer()) {
    int64_t i = *n.value<int64_t>();
    if (i >= 0) v = static_cast<size_t>(i);
  } else if (n.is_string()) {
    v = parse_size(*n.value<std::string>());
  }
  if (!v)
    return c.fail(n.source(), "'" + key + "' must be a size in bytes (e.g. 1048576 or \"1MiB\")");
  if (*v < lo || *v > hi)
    return c.fail(n.source(), "'" + key + "' = " + std::to_string(*v) + " is out of range [" +
                                  std::to_string(lo) + ", " + std::to_string(hi) + "]");
  if (pow2 && !is_pow2(*v))
    return c.fail(n.source(), "'" + key + "' = " + std::to_string(*v) + " must be a power of two");
  out = *v;
  return true;
}

using Handler = bool (*)(Checker&, const toml::node&, const std::string&, Config&);
struct KeyRule {
  const char* key;
  Handler handle;
};

// Walks a table, dispatching each key to its rule; unknown keys are errors.
template <size_t N>
bool walk(Checker& c, const toml::table& t, const std::string& prefix, const KeyRule (&rules)[N],
          Config& cfg) {
  for (auto&& [k, v] : t) {
    std::string name = prefix + std::string(k.str());
    const KeyRule* rule = nullptr;
    for (const KeyRule& r : rules)
      if (k.str() == r.key) rule = &r;
    if (!rule) return c.fail(k.source(), "unknown key '" + name + "'");
    if (!rule->handle(c, v, name, cfg)) return false;
  }
  return true;
}

constexpr size_t kMiB = size_t{1} << 20;

const KeyRule kClusterRules[] = {
    {"name", [](Checker& c, const toml::node& n, const std::string& k,
                Config& cfg) { return get_string(c, n, k, cfg.cluster_name); }},
    {"key_file",
     [](Checker& c, const toml::node& n, const std::string& k, Config& cfg) {
       if (!get_string(c, n, k, cfg.key_file)) return false;
       if (cfg.key_file.empty()) return c.fail(n.source(), "'" + k + "' must not be empty");
       return true;
     }},
    {"fabric",
     [](Checker& c, const toml::node& n, const std::string& k, Config& cfg) {
       if (!get_string(c, n, k, cfg.fabric)) return false;
       if (cfg.fabric != "verbs" && cfg.fabric != "shm")
         return c.fail(n.source(),
                       "'" + k + "' = \"" + cfg.fabric + "\" is not a fabric (verbs or shm)");
       return true;
     }},
};

const KeyRule kLocalRules[] = {
    {"nodeid", [](Checker& c, const toml::node& n, const std::string& k,
                  Config& cfg) { return get_num(c, n, k, 1, UINT32_MAX, cfg.nodeid); }},
    {"state_dir", [](Checker& c, const toml::node& n, const std::string& k,
                     Config& cfg) { return get_string(c, n, k, cfg.state_dir); }},
};

const KeyRule kEngineRules[] = {
    {"log_bytes",
     [](Checker& c, const toml::node& n, const std::string& k, Config& cfg) {
       return get_size(c, n, k, size_t{64} << 10, ordering::kMaxRingBytes, true, cfg.log_bytes);
     }},
    {"inbound_bytes",
     [](Checker& c, const toml::node& n, const std::string& k, Config& cfg) {
       return get_size(c, n, k, size_t{64} << 10, ordering::kMaxRingBytes, true, cfg.inbound_bytes);
     }},
    {"max_fragment",
     [](Checker& c, const toml::node& n, const std::string& k, Config& cfg) {
       return get_size(c, n, k, 1024, ordering::kMaxRingBytes, false, cfg.max_fragment);
     }},
    {"zero_copy_receive", [](Checker& c, const toml::node& n, const std::string& k,
                             Config& cfg) { return get_bool(c, n, k, cfg.zero_copy_receive); }},
};

const KeyRule kIpcRules[] = {
    {"socket",
     [](Checker& c, const toml::node& n, const std::string& k, Config& cfg) {
       if (!get_string(c, n, k, cfg.socket_path)) return false;
       if (cfg.socket_path.empty()) return c.fail(n.source(), "'" + k + "' must not be empty");
       return true;
     }},
    {"socket_mode",
     [](Checker& c, const toml::node& n, const std::string& k, Config& cfg) {
       // An octal string ("0660") reads as intended; a bare 660 would be decimal.
       std::string s;
       if (!n.is_string())
         return c.fail(n.source(), "'" + k + "' must be an octal string like \"0660\"");
       get_string(c, n, k, s);
       char* end = nullptr;
       unsigned long v = std::strtoul(s.c_str(), &end, 8);
       if (s.empty() || *end != '\0' || v > 0777)
         return c.fail(n.source(), "'" + k + "' = \"" + s + "\" is not an octal mode (0000-0777)");
       cfg.socket_mode = static_cast<uint32_t>(v);
       return true;
     }},
    {"request_bytes",
     [](Checker& c, const toml::node& n, const std::string& k, Config& cfg) {
       return get_size(c, n, k, size_t{64} << 10, size_t{1} << 30, true, cfg.request_bytes);
     }},
    {"event_bytes",
     [](Checker& c, const toml::node& n, const std::string& k, Config& cfg) {
       return get_size(c, n, k, size_t{64} << 10, size_t{1} << 30, true, cfg.event_bytes);
     }},
    {"pool_bytes",
     [](Checker& c, const toml::node& n, const std::string& k, Config& cfg) {
       return get_size(c, n, k, 0, size_t{1} << 34, false, cfg.pool_bytes);
     }},
    {"max_clients", [](Checker& c, const toml::node& n, const std::string& k,
                       Config& cfg) { return get_num(c, n, k, 1, 1u << 20, cfg.max_clients); }},
};

const KeyRule kTimeoutRules[] = {
    {"max_sleep_ms", [](Checker& c, const toml::node& n, const std::string& k,
                        Config& cfg) { return get_num(c, n, k, 1, 10000, cfg.max_sleep_ms); }},
    {"peer_warn_ms", [](Checker& c, const toml::node& n, const std::string& k,
                        Config& cfg) { return get_num(c, n, k, 100, 3600000, cfg.peer_warn_ms); }},
    {"shutdown_linger_ms",
     [](Checker& c, const toml::node& n, const std::string& k, Config& cfg) {
       return get_num(c, n, k, 0, 60000, cfg.shutdown_linger_ms);
     }},
};

const KeyRule kMembershipRules[] = {
    {"heartbeat_interval_ms",
     [](Checker& c, const toml::node& n, const std::string& k, Config& cfg) {
       return get_num(c, n, k, 1, 10000, cfg.heartbeat_interval_ms);
     }},
    {"suspect_timeout_ms",
     [](Checker& c, const toml::node& n, const std::string& k, Config& cfg) {
       return get_num(c, n, k, 2, 600000, cfg.suspect_timeout_ms);
     }},
    {"suspect_timeout_max_ms",
     [](Checker& c, const toml::node& n, const std::string& k, Config& cfg) {
       return get_num(c, n, k, 2, 600000, cfg.suspect_timeout_max_ms);
     }},
    {"form_timeout_ms",
     [](Checker& c, const toml::node& n, const std::string& k, Config& cfg) {
       return get_num(c, n, k, 0, 3600000, cfg.form_timeout_ms);
     }},
    {"two_node", [](Checker& c, const toml::node& n, const std::string& k,
                    Config& cfg) { return get_bool(c, n, k, cfg.two_node); }},
};

// Checks between keys of [membership], reported at the line of the key that
// has to change.
bool check_membership(Checker& c, const toml::table& t, const Config& cfg) {
  if (cfg.suspect_timeout_ms < 2 * cfg.heartbeat_interval_ms) {
    const toml::node* at = t.get("suspect_timeout_ms");
    if (!at) at = t.get("heartbeat_interval_ms");
    return c.fail(at->source(),
                  "'membership.suspect_timeout_ms' = " + std::to_string(cfg.suspect_timeout_ms) +
                      " must be at least twice 'membership.heartbeat_interval_ms' (" +
                      std::to_string(cfg.heartbeat_interval_ms) +
                      "): one lost heartbeat must not make a peer suspect");
  }
  return true;
}

const KeyRule kSpinRules[] = {
    {"iterations", [](Checker& c, const toml::node& n, const std::string& k,
                      Config& cfg) { return get_num(c, n, k, 1, 100000000, cfg.spin_iterations); }},
    {"yield", [](Checker& c, const toml::node& n, const std::string& k,
                 Config& cfg) { return get_bool(c, n, k, cfg.spin_yield); }},
    {"pin", [](Checker& c, const toml::node& n, const std::string& k,
               Config& cfg) { return get_bool(c, n, k, cfg.pin); }},
    {"pin_core",
     [](Checker& c, const toml::node& n, const std::string& k, Config& cfg) {
       if (!n.is_integer()) return c.fail(n.source(), "'" + k + "' must be an integer");
       int64_t v = *n.value<int64_t>();
       if (v < -1 || v > 65535)
         return c.fail(n.source(), "'" + k + "' = " + std::to_string(v) + " is out of range");
       cfg.pin_core = static_cast<int>(v);
       return true;
     }},
};

bool parse_nodes(Checker& c, const toml::node& n, Config& cfg) {
  const toml::array* arr = n.as_array();
  if (!arr || !arr->is_array_of_tables())
    return c.fail(n.source(), "'nodes' must be an array of tables ([[nodes]] or nodes = [{...}])");
  std::set<uint32_t> ids;
  std::set<std::string> addrs;
  for (const toml::node& e : *arr) {
    const toml::table& t = *e.as_table();
    NodeEntry ne;
    bool have_id = false;
    for (auto&& [k, v] : t) {
      std::string name = "nodes." + std::string(k.str());
      if (k.str() == "nodeid") {
        if (!get_num(c, v, name, 1, UINT32_MAX, ne.nodeid)) return false;
        have_id = true;
      } else if (k.str() == "address") {
        if (!get_string(c, v, name, ne.address)) return false;
      } else if (k.str() == "source_address") {
        if (!get_string(c, v, name, ne.source_address)) return false;
      } else {
        return c.fail(k.source(), "unknown key '" + name + "'");
      }
    }
    if (!have_id) return c.fail(t.source(), "a [[nodes]] entry has no 'nodeid'");
    if (ne.address.empty()) return c.fail(t.source(), "a [[nodes]] entry has no 'address'");
    if (!ids.insert(ne.nodeid).second)
      return c.fail(t.source(), "nodeid " + std::to_string(ne.nodeid) + " is listed twice");
    if (!addrs.insert(ne.address).second)
      return c.fail(t.source(), "address \"" + ne.address + "\" is listed twice");
    cfg.nodes.push_back(std::move(ne));
  }
  return true;
}

std::string dir_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

}  // namespace

std::optional<size_t> parse_size(std::string_view text) {
  size_t i = 0;
  uint64_t v = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    if (v > (UINT64_MAX - 9) / 10) return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(text[i++] - '0');
  }
  if (i == 0) return std::nullopt;
  std::string_view unit = text.substr(i);
  while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
  int shift = 0;
  if (unit.empty() || unit == "B") {
    shift = 0;
  } else if (unit == "k" || unit == "K" || unit == "KiB" || unit == "kiB") {
    shift = 10;
  } else if (unit == "M" || unit == "MiB") {
    shift = 20;
  } else if (unit == "G" || unit == "GiB") {
    shift = 30;
  } else {
    return std::nullopt;
  }
  if (shift && v > (UINT64_MAX >> shift)) return std::nullopt;
  return static_cast<size_t>(v << shift);
}

std::optional<Config> parse_config(std::string_view text, const std::string& source,
                                   std::string& error) {
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    error =
        source + ":" + std::to_string(e.source().begin.line) + ": " + std::string(e.description());
    return std::nullopt;
  }
  Config cfg;
  cfg.source = source;
  Checker c{source, error};
  bool have_key = false;
  bool have_state_dir = false;
  std::optional<toml::source_region> two_node_at;
  for (auto&& [k, v] : root) {
    std::string name(k.str());
    if (name == "nodes") {
      if (!parse_nodes(c, v, cfg)) return std::nullopt;
      continue;
    }
    const toml::table* t = v.as_table();
    bool ok = true;
    if (name == "cluster" || name == "local" || name == "engine" || name == "ipc" ||
        name == "timeouts" || name == "membership" || name == "spin") {
      if (!t) {
        c.fail(v.source(), "'" + name + "' must be a table ([" + name + "])");
        return std::nullopt;
      }
    }
    if (name == "cluster") {
      ok = walk(c, *t, "cluster.", kClusterRules, cfg);
      have_key = t->contains("key_file");
    } else if (name == "local") {
      ok = walk(c, *t, "local.", kLocalRules, cfg);
      have_state_dir = t->contains("state_dir");
    } else if (name == "engine") {
      ok = walk(c, *t, "engine.", kEngineRules, cfg);
    } else if (name == "ipc") {
      ok = walk(c, *t, "ipc.", kIpcRules, cfg);
    } else if (name == "timeouts") {
      ok = walk(c, *t, "timeouts.", kTimeoutRules, cfg);
    } else if (name == "membership") {
      ok = walk(c, *t, "membership.", kMembershipRules, cfg) && check_membership(c, *t, cfg);
      if (const toml::node* tn = t->get("two_node")) two_node_at = tn->source();
    } else if (name == "spin") {
      ok = walk(c, *t, "spin.", kSpinRules, cfg);
    } else {
      c.fail(k.source(), "unknown key '" + name + "'");
      return std::nullopt;
    }
    if (!ok) return std::nullopt;
  }
  toml::source_region top{};
  top.begin.line = 1;
  if (!have_key) {
    c.fail(top, "missing 'cluster.key_file' (the cluster authentication key)");
    return std::nullopt;
  }
  if (cfg.nodes.empty()) {
    c.fail(top, "no [[nodes]] entries: list every node of the cluster (nodeid, address)");
    return std::nullopt;
  }
  if (cfg.two_node && cfg.nodes.size() != 2) {
    c.fail(*two_node_at, "'membership.two_node' = true needs exactly 2 [[nodes]] (there are " +
                             std::to_string(cfg.nodes.size()) + ")");
    return std::nullopt;
  }
  if (cfg.nodeid != 0) {
    bool found = false;
    for (const NodeEntry& n : cfg.nodes) found |= n.nodeid == cfg.nodeid;
    if (!found) {
      c.fail(top, "local.nodeid = " + std::to_string(cfg.nodeid) + " is not in [[nodes]]");
      return std::nullopt;
    }
  }
  size_t frag = cfg.max_fragment ? cfg.max_fragment : cfg.inbound_bytes / 4;
  if (frag + ordering::record_bytes(0) > cfg.inbound_bytes / 2) {
    c.fail(top, "engine.max_fragment (" + std::to_string(frag) +
                    ") must be below half of engine.inbound_bytes");
    return std::nullopt;
  }
  if (frag + 256 > cfg.request_bytes / 2 || frag + 256 > cfg.event_bytes / 4) {
    c.fail(top, "the largest fragment (" + std::to_string(frag) +
                    " bytes) must fit in half of ipc.request_bytes and a quarter of "
                    "ipc.event_bytes; raise those or lower engine.max_fragment");
    return std::nullopt;
  }
  if (cfg.key_file[0] != '/' && source.find('/') != std::string::npos)
    cfg.key_file = dir_of(source) + "/" + cfg.key_file;
  if (!have_state_dir) cfg.state_dir = kDefaultStateDir;
  if (!cfg.state_dir.empty() && cfg.state_dir[0] != '/' && source.find('/') != std::string::npos)
    cfg.state_dir = dir_of(source) + "/" + cfg.state_dir;
  return cfg;
}

std::optional<Config> load_config(const std::string& path, std::string& error) {
  std::ifstream in(path);
  if (!in) {
    error = path + ": cannot open the configuration file";
    return std::nullopt;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path, error);
}

namespace {

// IPv4 addresses configured on this host's interfaces.
std::set<std::string> local_ips() {
  std::set<std::string> out;
  ifaddrs* ifa = nullptr;
  if (getifaddrs(&ifa) != 0) return out;
  for (ifaddrs* i = ifa; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    char buf[INET_ADDRSTRLEN];
    auto* sin = reinterpret_cast<sockaddr_in*>(i->ifa_addr);
    if (inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf))) out.insert(buf);
  }
  freeifaddrs(ifa);
  return out;
}

}  // namespace

bool resolve_nodeid(Config& cfg, uint32_t override_id, std::string& error) {
  if (override_id != 0) {
    for (const NodeEntry& n : cfg.nodes)
      if (n.nodeid == override_id) {
        cfg.nodeid = override_id;
        return true;
      }
    error = "--nodeid " + std::to_string(override_id) + " is not a node of " + cfg.source;
    return false;
  }
  if (cfg.nodeid != 0) return true;
  if (cfg.fabric != "verbs") {
    error = cfg.source + ": cannot tell which node this is on fabric '" + cfg.fabric +
            "': set local.nodeid or pass --nodeid";
    return false;
  }
  auto ips = local_ips();
  std::vector<uint32_t> matches;
  for (const NodeEntry& n : cfg.nodes) {
    std::string ip = n.address.substr(0, n.address.rfind(':'));
    if (ips.count(ip)) matches.push_back(n.nodeid);
  }
  if (matches.size() != 1) {
    error = cfg.source + ": " +
            (matches.empty() ? std::string("no [[nodes]] address is on a local interface")
                             : std::string("several [[nodes]] addresses are local")) +
            ": set local.nodeid or pass --nodeid";
    return false;
  }
  cfg.nodeid = matches[0];
  return true;
}

std::string socket_path(const Config& cfg, const std::string& cli) {
  if (!cli.empty()) return cli;
  if (const char* env = std::getenv(ipc::kSocketEnv); env && *env) return env;
  if (!cfg.socket_path.empty()) return cfg.socket_path;
  return ipc::kDefaultSocket;
}

std::optional<transport::ClusterKey> load_cluster_key(const Config& cfg, std::string& error) {
  std::string why;
  auto key = transport::load_key_file(cfg.key_file, why);
  if (!key) error = cfg.source + ": cluster.key_file \"" + cfg.key_file + "\": " + why;
  return key;
}

}  // namespace rcpg::daemon
