// transport/auth: the 40-byte connection handshake and the key file.
//
// Every handshake a peer can send reaches verify_request() (listener) or
// verify_reply() (initiator). Random bytes almost never carry a valid MAC,
// so half of the modes sign a fuzzer-chosen Hello with the cluster key (or a
// fuzzer-chosen wrong key) and then tamper with it. The oracle recomputes,
// independently, what must be accepted: exactly the Hellos whose keyed
// BLAKE2b MAC is right and whose fields answer the expected connection.
#include <sodium.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <string>
#include <vector>

#include "fuzz/fuzz_input.h"
#include "transport/auth.h"

using namespace rcpg::transport;
using rcpg::fuzz::Input;

namespace {

ClusterKey cluster_key() {
  ClusterKey k;
  for (size_t i = 0; i < k.size(); ++i) k[i] = static_cast<uint8_t>(0x5a ^ (i * 37));
  return k;
}

bool mac_matches(const ClusterKey& key, const Hello& h) {
  Hello copy = h;
  copy.mac = {};
  uint8_t mac[16];
  crypto_generichash(mac, sizeof(mac), reinterpret_cast<const uint8_t*>(&copy), sizeof(copy),
                     key.data(), key.size());
  return std::memcmp(mac, h.mac.data(), sizeof(mac)) == 0;
}

void sign(const ClusterKey& key, Hello& h) {
  h.mac = {};
  crypto_generichash(h.mac.data(), h.mac.size(), reinterpret_cast<const uint8_t*>(&h), sizeof(h),
                     key.data(), key.size());
}

bool parse(std::span<const uint8_t> bytes, Hello& h) {
  if (bytes.size() < sizeof(Hello)) return false;
  std::memcpy(&h, bytes.data(), sizeof(h));
  return h.magic == kHelloMagic && h.version == kHelloVersion;
}

// A Hello from the input: either signed (with the cluster key or another
// one) and then tampered with, or raw bytes.
std::vector<uint8_t> make_hello_bytes(Input& in, const ClusterKey& key, uint16_t kind_hint) {
  uint8_t mode = in.u8();
  if ((mode & 1) == 0) {
    auto raw = in.bytes(in.below(64));
    return {raw.begin(), raw.end()};
  }
  Hello h;
  h.magic = (mode & 2) ? in.u32() : kHelloMagic;
  h.version = (mode & 4) ? in.u16() : kHelloVersion;
  h.kind = (mode & 8) ? in.u16() : kind_hint;
  h.from = in.u32();
  h.to = in.u32();
  h.nonce = in.u64();
  if (mode & 16) {
    ClusterKey other;
    auto kb = in.bytes(other.size());
    other.fill(0);
    std::copy(kb.begin(), kb.end(), other.begin());
    sign(other, h);
  } else {
    sign(key, h);
  }
  std::vector<uint8_t> out(sizeof(h));
  std::memcpy(out.data(), &h, sizeof(h));
  for (uint8_t n = in.u8() % 4; n > 0; --n) out[in.u8() % out.size()] ^= in.u8();
  if (mode & 32) {
    out.resize(in.below(sizeof(h) + 16));
    for (size_t i = sizeof(h); i < out.size(); ++i) out[i] = in.u8();
  }
  return out;
}

void check_request(Input& in, const ClusterKey& key) {
  NodeId self = in.u8() % 8;
  std::vector<NodeId> allowed;
  if (in.flag()) allowed = {1, 3, 5};
  std::vector<uint8_t> bytes = make_hello_bytes(in, key, 0);
  std::string why;
  std::optional<NodeId> got = verify_request(key, self, allowed, bytes, why);

  Hello h;
  bool expect = parse(bytes, h) && h.kind == 0 && mac_matches(key, h) && h.to == self &&
                (allowed.empty() || std::count(allowed.begin(), allowed.end(), h.from) > 0);
  FUZZ_CHECK(got.has_value() == expect);
  if (got) FUZZ_CHECK(*got == h.from);
  if (!got) FUZZ_CHECK(!why.empty());
}

void check_reply(Input& in, const ClusterKey& key) {
  Hello request;
  request.kind = 0;
  request.from = in.u8() % 8;
  request.to = in.u8() % 8;
  request.nonce = in.flag() ? in.u64() : in.u8();
  sign(key, request);
  std::vector<uint8_t> bytes = make_hello_bytes(in, key, 1);
  std::string why;
  bool got = verify_reply(key, request, bytes, why);

  Hello h;
  bool expect = parse(bytes, h) && h.kind == 1 && h.nonce == request.nonce &&
                h.to == request.from && h.from == request.to && mac_matches(key, h);
  FUZZ_CHECK(got == expect);
  if (!got) FUZZ_CHECK(!why.empty());
}

void check_key_file(Input& in) {
  auto content = in.rest();
  int fd = memfd_create("fuzz-key", MFD_CLOEXEC);
  if (fd < 0) return;
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = write(fd, content.data() + done, content.size() - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  std::string why;
  std::optional<ClusterKey> got = load_key_file("/proc/self/fd/" + std::to_string(fd), why);
  close(fd);

  std::optional<ClusterKey> expect;
  if (content.size() == 32) {
    ClusterKey k;
    std::copy(content.begin(), content.end(), k.begin());
    expect = k;
  } else {
    std::string s(content.begin(), content.end());
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
    if (s.size() == 64 &&
        std::all_of(s.begin(), s.end(), [](char ch) { return std::isxdigit(uint8_t(ch)) != 0; })) {
      ClusterKey k;
      for (size_t i = 0; i < k.size(); ++i)
        k[i] = uint8_t(std::stoul(s.substr(2 * i, 2), nullptr, 16));
      expect = k;
    }
  }
  FUZZ_CHECK(got.has_value() == expect.has_value());
  if (got) FUZZ_CHECK(*got == *expect);
  if (!got) FUZZ_CHECK(!why.empty());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (sodium_init() < 0) std::abort();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  static const ClusterKey key = cluster_key();
  switch (in.u8() % 3) {
    case 0:
      check_request(in, key);
      break;
    case 1:
      check_reply(in, key);
      break;
    default:
      check_key_file(in);
      break;
  }
  return 0;
}
