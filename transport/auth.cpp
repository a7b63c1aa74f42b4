#include "transport/auth.h"

#include <sodium.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>

namespace rcpg::transport {
namespace {

std::array<uint8_t, 16> compute_mac(const ClusterKey& key, const Hello& h) {
  Hello copy = h;
  copy.mac = {};
  std::array<uint8_t, 16> mac{};
  crypto_generichash(mac.data(), mac.size(), reinterpret_cast<const uint8_t*>(&copy), sizeof(copy),
                     key.data(), key.size());
  return mac;
}

bool parse(std::span<const uint8_t> bytes, Hello& out, std::string& why) {
  if (bytes.size() < sizeof(Hello)) {
    why = "handshake too short (" + std::to_string(bytes.size()) + " bytes)";
    return false;
  }
  std::memcpy(&out, bytes.data(), sizeof(Hello));
  if (out.magic != kHelloMagic) {
    why = "handshake has bad magic (not an rcpg peer)";
    return false;
  }
  if (out.version != kHelloVersion) {
    why = "handshake version " + std::to_string(out.version) + " unsupported";
    return false;
  }
  return true;
}

bool mac_ok(const ClusterKey& key, const Hello& h) {
  auto expect = compute_mac(key, h);
  return sodium_memcmp(expect.data(), h.mac.data(), expect.size()) == 0;
}

}  // namespace

Hello make_request(const ClusterKey& key, NodeId self, NodeId target) {
  if (sodium_init() < 0) std::abort();
  Hello h;
  h.kind = 0;
  h.from = self;
  h.to = target;
  randombytes_buf(&h.nonce, sizeof(h.nonce));
  h.mac = compute_mac(key, h);
  return h;
}

Hello make_reply(const ClusterKey& key, NodeId self, const Hello& request) {
  Hello h;
  h.kind = 1;
  h.from = self;
  h.to = request.from;
  h.nonce = request.nonce;
  h.mac = compute_mac(key, h);
  return h;
}

std::optional<NodeId> verify_request(const ClusterKey& key, NodeId self,
                                     const std::vector<NodeId>& allowed,
                                     std::span<const uint8_t> bytes, std::string& why) {
  Hello h;
  if (!parse(bytes, h, why)) return std::nullopt;
  if (h.kind != 0) {
    why = "handshake is not a connect request";
    return std::nullopt;
  }
  if (!mac_ok(key, h)) {
    why = "node " + std::to_string(h.from) + " failed to prove the cluster key";
    return std::nullopt;
  }
  if (h.to != self) {
    why = "node " + std::to_string(h.from) + " wanted node " + std::to_string(h.to) +
          ", this is node " + std::to_string(self);
    return std::nullopt;
  }
  if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), h.from) == allowed.end()) {
    why = "node " + std::to_string(h.from) + " is not a configured peer";
    return std::nullopt;
  }
  return h.from;
}

bool verify_reply(const ClusterKey& key, const Hello& request, std::span<const uint8_t> bytes,
                  std::string& why) {
  Hello h;
  if (!parse(bytes, h, why)) return false;
  if (h.kind != 1 || h.nonce != request.nonce || h.to != request.from) {
    why = "handshake reply does not answer our request";
    return false;
  }
  if (!mac_ok(key, h)) {
    why = "listener failed to prove the cluster key";
    return false;
  }
  if (h.from != request.to) {
    why =
        "reached node " + std::to_string(h.from) + " instead of node " + std::to_string(request.to);
    return false;
  }
  return true;
}

std::optional<ClusterKey> load_key_file(const std::string& path, std::string& why) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    why = "cannot open key file " + path;
    return std::nullopt;
  }
  std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ClusterKey key{};
  if (raw.size() == key.size()) {
    std::memcpy(key.data(), raw.data(), key.size());
    return key;
  }
  while (!raw.empty() && (raw.back() == '\n' || raw.back() == '\r' || raw.back() == ' '))
    raw.pop_back();
  size_t bin_len = 0;
  if (raw.size() == 64 &&
      sodium_hex2bin(key.data(), key.size(), raw.data(), raw.size(), nullptr, &bin_len, nullptr) ==
          0 &&
      bin_len == key.size())
    return key;
  why = "key file " + path + " must hold 32 raw bytes or 64 hex digits";
  return std::nullopt;
}

}  // namespace rcpg::transport
