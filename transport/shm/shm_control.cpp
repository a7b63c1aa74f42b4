#include "transport/shm/shm_control.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace rcpg::transport::shm {

void InMsg::close_fds() {
  for (int& fd : fds) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  nfds = 0;
}

OutMsg::OutMsg(OutMsg&& other) noexcept {
  *this = static_cast<OutMsg&&>(other);
}

OutMsg& OutMsg::operator=(OutMsg&& other) noexcept {
  if (this != &other) {
    close_fds();
    bytes = std::move(other.bytes);
    fds = other.fds;
    nfds = other.nfds;
    other.fds = {-1, -1, -1};
    other.nfds = 0;
  }
  return *this;
}

void OutMsg::close_fds() {
  for (int& fd : fds) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  nfds = 0;
}

bool OutMsg::make(const MsgHeader& h, std::span<const std::byte> body,
                  std::span<const int> fds_to_share, OutMsg& out, std::string& why) {
  out = OutMsg{};
  if (body.size() > kMaxBody || fds_to_share.size() > static_cast<size_t>(kMaxFds)) {
    why = "control message too large";
    return false;
  }
  out.bytes.resize(sizeof(h) + body.size());
  std::memcpy(out.bytes.data(), &h, sizeof(h));
  if (!body.empty()) std::memcpy(out.bytes.data() + sizeof(h), body.data(), body.size());
  for (int fd : fds_to_share) {
    int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) {
      why = std::string("dup: ") + std::strerror(errno);
      out.close_fds();
      return false;
    }
    out.fds[out.nfds++] = dup;
  }
  return true;
}

int send_msg(int sock, const OutMsg& m) {
  iovec iov{const_cast<std::byte*>(m.bytes.data()), m.bytes.size()};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * kMaxFds)];
  if (m.nfds > 0) {
    size_t fd_bytes = sizeof(int) * static_cast<size_t>(m.nfds);
    std::memset(cbuf, 0, sizeof(cbuf));
    mh.msg_control = cbuf;
    mh.msg_controllen = CMSG_SPACE(fd_bytes);
    cmsghdr* cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(fd_bytes);
    std::memcpy(CMSG_DATA(cm), m.fds.data(), fd_bytes);
  }
  for (;;) {
    ssize_t r = ::sendmsg(sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r >= 0) return 0;
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) return EAGAIN;
    return errno;
  }
}

int recv_msg(int sock, InMsg& m) {
  m.close_fds();
  std::array<std::byte, sizeof(MsgHeader) + kMaxBody + 1> buf;
  iovec iov{buf.data(), buf.size()};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * (kMaxFds + 1))];
  mh.msg_control = cbuf;
  mh.msg_controllen = sizeof(cbuf);
  ssize_t r;
  do {
    r = ::recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return errno == EWOULDBLOCK ? EAGAIN : errno;
  // Take ownership of every descriptor that arrived, even in a bad message.
  bool extra_fds = false;
  for (cmsghdr* cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
    if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
    size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
      if (m.nfds < kMaxFds) {
        m.fds[m.nfds++] = fd;
      } else {
        ::close(fd);
        extra_fds = true;
      }
    }
  }
  if (r == 0) return ECONNRESET;  // we never send empty packets: this is EOF
  if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || extra_fds ||
      static_cast<size_t>(r) < sizeof(MsgHeader)) {
    m.close_fds();
    return EPROTO;
  }
  std::memcpy(&m.h, buf.data(), sizeof(MsgHeader));
  if (m.h.magic != kMsgMagic) {
    m.close_fds();
    return EPROTO;
  }
  m.body_len = static_cast<size_t>(r) - sizeof(MsgHeader);
  std::memcpy(m.body.data(), buf.data() + sizeof(MsgHeader), m.body_len);
  return 0;
}

bool make_address(std::string_view address, sockaddr_un& sa, socklen_t& len, std::string& why) {
  std::memset(&sa, 0, sizeof(sa));
  sa.sun_family = AF_UNIX;
  if (address.empty()) {
    why = "empty socket address";
    return false;
  }
  bool abstract = address.front() == '@';
  // A path needs its terminating NUL; an abstract name uses the leading NUL.
  if (address.size() + (abstract ? 0 : 1) > sizeof(sa.sun_path)) {
    why = "socket address longer than " + std::to_string(sizeof(sa.sun_path) - 1) + " bytes";
    return false;
  }
  std::memcpy(sa.sun_path, address.data(), address.size());
  if (abstract) sa.sun_path[0] = '\0';
  len =
      static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address.size() + (abstract ? 0 : 1));
  return true;
}

}  // namespace rcpg::transport::shm
