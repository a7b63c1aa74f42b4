// daemon/config: rcpgd's TOML file. Any contents must give either a
// configuration that satisfies every documented constraint or an error of
// the form "<file>:<line>: <what>"; never a crash, hang or exception.
#include <set>
#include <string>

#include "daemon/config.h"
#include "fuzz/fuzz_input.h"
#include "ordering/log_format.h"

using namespace rcpg::daemon;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  const std::string source = "/etc/rcpg/fuzz.toml";
  std::string error;
  std::optional<Config> cfg = parse_config(text, source, error);
  if (!cfg) {
    FUZZ_CHECK(error.rfind(source + ":", 0) == 0);
    FUZZ_CHECK(error.size() > source.size() + 3);
    return 0;
  }
  FUZZ_CHECK(!cfg->nodes.empty());
  FUZZ_CHECK(!cfg->key_file.empty());
  std::set<uint32_t> ids;
  std::set<std::string> addrs;
  for (const NodeEntry& n : cfg->nodes) {
    FUZZ_CHECK(n.nodeid != 0 && !n.address.empty());
    FUZZ_CHECK(ids.insert(n.nodeid).second && addrs.insert(n.address).second);
  }
  if (cfg->nodeid != 0) FUZZ_CHECK(ids.count(cfg->nodeid) == 1);
  FUZZ_CHECK(cfg->fabric == "verbs" || cfg->fabric == "shm");
  auto pow2 = [](size_t v) { return v != 0 && (v & (v - 1)) == 0; };
  FUZZ_CHECK(pow2(cfg->log_bytes) && cfg->log_bytes <= rcpg::ordering::kMaxRingBytes);
  FUZZ_CHECK(pow2(cfg->inbound_bytes) && cfg->inbound_bytes <= rcpg::ordering::kMaxRingBytes);
  FUZZ_CHECK(pow2(cfg->request_bytes) && pow2(cfg->event_bytes));
  size_t frag = cfg->max_fragment ? cfg->max_fragment : cfg->inbound_bytes / 4;
  FUZZ_CHECK(frag + rcpg::ordering::record_bytes(0) <= cfg->inbound_bytes / 2);
  FUZZ_CHECK(frag + 256 <= cfg->request_bytes / 2 && frag + 256 <= cfg->event_bytes / 4);
  FUZZ_CHECK(cfg->socket_mode <= 0777 && cfg->max_clients >= 1);
  // What rcpgd derives from a valid file must not fail on its own terms.
  std::string sock = socket_path(*cfg, "");
  FUZZ_CHECK(!sock.empty());
  return 0;
}
