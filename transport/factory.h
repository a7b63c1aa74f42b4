// Picks a fabric by name ("shm", "verbs"), for programs that let the user
// choose. The sim fabric needs a SimWorld and is created through it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "transport/fabric.h"

namespace rcpg::transport {

std::unique_ptr<Endpoint> make_endpoint(const std::string& fabric, const EndpointConfig& cfg,
                                        std::string& why);

// Soft-RoCE runner hosts (RCPG_HOST_ADDRS="10.77.0.1,10.77.0.2,..."), empty
// when not set.
std::vector<std::string> softroce_hosts();

}  // namespace rcpg::transport
