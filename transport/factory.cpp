#include "transport/factory.h"

#include <cstdlib>
#include <sstream>

#include "transport/shm/shm_endpoint.h"
#include "transport/verbs/verbs_endpoint.h"

namespace rcpg::transport {

std::unique_ptr<Endpoint> make_endpoint(const std::string& fabric, const EndpointConfig& cfg,
                                        std::string& why) {
  if (fabric == "shm") return make_shm_endpoint(cfg, why);
  if (fabric == "verbs") return make_verbs_endpoint(cfg, why);
  why = "unknown fabric '" + fabric + "' (expected shm or verbs)";
  return nullptr;
}

std::vector<std::string> softroce_hosts() {
  std::vector<std::string> out;
  const char* env = std::getenv("RCPG_HOST_ADDRS");
  if (!env) return out;
  std::stringstream ss(env);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

}  // namespace rcpg::transport
