// Connection handshake carried in connection private data (rdma_cm private
// data on verbs, the setup socket on shm, a struct in sim). Both sides prove
// knowledge of the cluster key with a keyed BLAKE2b MAC, so a peer without
// the key is rejected before any memory is exposed to it.
//
// 40 bytes: fits rdma_cm's 56-byte limit for RC connect requests.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "transport/fabric.h"

namespace rcpg::transport {

inline constexpr uint32_t kHelloMagic = 0x47504352;  // "RCPG"
inline constexpr uint16_t kHelloVersion = 1;

struct Hello {
  uint32_t magic = kHelloMagic;
  uint16_t version = kHelloVersion;
  uint16_t kind = 0;   // 0 = request (initiator), 1 = reply (listener)
  uint32_t from = 0;   // sender's node id
  uint32_t to = 0;     // node id the sender expects to talk to
  uint64_t nonce = 0;  // chosen by the initiator, echoed in the reply
  std::array<uint8_t, 16> mac{};
};
static_assert(sizeof(Hello) == 40);

using ClusterKey = std::array<uint8_t, 32>;

Hello make_request(const ClusterKey& key, NodeId self, NodeId target);
Hello make_reply(const ClusterKey& key, NodeId self, const Hello& request);

// Checks a request received by `self`. On success returns the peer's node id;
// on failure fills `why` with a reason fit for a log line.
std::optional<NodeId> verify_request(const ClusterKey& key, NodeId self,
                                     const std::vector<NodeId>& allowed,
                                     std::span<const uint8_t> bytes, std::string& why);
// Checks the listener's reply to `request`.
bool verify_reply(const ClusterKey& key, const Hello& request, std::span<const uint8_t> bytes,
                  std::string& why);

// Reads a 32-byte key: a file holding 32 raw bytes or 64 hex digits.
std::optional<ClusterKey> load_key_file(const std::string& path, std::string& why);

}  // namespace rcpg::transport
