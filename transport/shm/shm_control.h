// Control messages of the shm fabric, carried on the connection's Unix
// SOCK_SEQPACKET socket (one message per packet, file descriptors passed with
// SCM_RIGHTS). The socket lives as long as the connection: its EOF is how a
// peer's exit or crash is noticed.
//
// Handshake (I = initiator, L = listener):
//   I -> L  HelloRequest(Hello)
//   L -> I  HelloReply(Hello)            or Reject(reason), then close
//   L -> I  Setup, Region*, Ready        L's ring, doorbell, eventfd, regions
//   I -> L  Setup, Region*, Ready        I raises Connected after sending
//   L raises Connected on I's Ready.
// Each side's regions reach the peer before its Ready, and regions registered
// later are sent by register_region() itself, before it returns; so by the
// time a region's rkey can reach a peer through this connection, its memfd is
// already queued in the peer's socket (see ShmEndpoint::find_peer_region).
#pragma once

#include <sys/socket.h>
#include <sys/un.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace rcpg::transport::shm {

inline constexpr uint32_t kMsgMagic = 0x4d534352;  // "RCSM"

enum class MsgType : uint32_t {
  HelloRequest = 1,
  HelloReply = 2,
  Reject = 3,      // body: reason text
  Setup = 4,       // fds: ring memfd, doorbell memfd, eventfd
  Region = 5,      // fd: region memfd
  Deregister = 6,  //
  Ready = 7,       // the sender's setup and regions are complete
};

struct MsgHeader {
  uint32_t magic = kMsgMagic;
  MsgType type{};
  uint32_t key = 0;   // Region/Deregister: rkey; Setup: ring slots
  uint32_t aux = 0;   // Setup: largest SEND payload
  uint64_t size = 0;  // Region: bytes
  uint64_t base = 0;  // Region: the owner's RemoteRegion::addr
};
static_assert(sizeof(MsgHeader) == 32);

inline constexpr size_t kMaxBody = 256;
inline constexpr int kMaxFds = 3;

// A received message. Owns the received file descriptors until taken.
struct InMsg {
  MsgHeader h{};
  std::array<std::byte, kMaxBody> body{};
  size_t body_len = 0;
  std::array<int, kMaxFds> fds{-1, -1, -1};
  int nfds = 0;

  InMsg() = default;
  InMsg(const InMsg&) = delete;
  InMsg& operator=(const InMsg&) = delete;
  ~InMsg() { close_fds(); }
  int take_fd(int i) {
    int fd = fds[i];
    fds[i] = -1;
    return fd;
  }
  void close_fds();
  std::span<const uint8_t> body_bytes() const {
    return {reinterpret_cast<const uint8_t*>(body.data()), body_len};
  }
};

// A queued outgoing message. Owns duplicates of the descriptors it carries,
// so the originals may be closed before it is sent.
struct OutMsg {
  std::vector<std::byte> bytes;
  std::array<int, kMaxFds> fds{-1, -1, -1};
  int nfds = 0;

  OutMsg() = default;
  OutMsg(OutMsg&& other) noexcept;
  OutMsg& operator=(OutMsg&& other) noexcept;
  OutMsg(const OutMsg&) = delete;
  OutMsg& operator=(const OutMsg&) = delete;
  ~OutMsg() { close_fds(); }
  void close_fds();

  // Returns false (and `why`) when a descriptor cannot be duplicated.
  static bool make(const MsgHeader& h, std::span<const std::byte> body,
                   std::span<const int> fds_to_share, OutMsg& out, std::string& why);
};

// 0 when sent; EAGAIN/ETOOMANYREFS when it must be retried later; another
// errno when the connection is unusable (EPIPE, ECONNRESET, ...).
int send_msg(int sock, const OutMsg& m);

// 0 when a message was received into `m`; EAGAIN when none is pending;
// ECONNRESET on EOF; EPROTO for a malformed message; another errno otherwise.
int recv_msg(int sock, InMsg& m);

// "@name" is an abstract-namespace socket, anything else a filesystem path.
bool make_address(std::string_view address, sockaddr_un& sa, socklen_t& len, std::string& why);

}  // namespace rcpg::transport::shm
