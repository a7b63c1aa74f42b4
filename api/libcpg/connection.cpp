#include "api/libcpg/connection.h"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace rcpg::cpg {

namespace {

bool power_of_two(uint64_t n) {
  return n != 0 && (n & (n - 1)) == 0;
}

// [off, off+len) lies inside [lo, hi) and does not wrap.
bool inside(uint64_t off, uint64_t len, uint64_t lo, uint64_t hi) {
  return off >= lo && off <= hi && len <= hi - off;
}

bool disjoint(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
  return a + alen <= b || b + blen <= a;
}

bool send_all(int fd, const void* data, size_t len) {
  for (;;) {
    ssize_t n = ::send(fd, data, len, MSG_NOSIGNAL);
    if (n == static_cast<ssize_t>(len)) return true;
    if (n < 0 && errno == EINTR) continue;
    return false;
  }
}

}  // namespace

Connection::~Connection() {
  for (Stashed& e : stashed) std::free(e.message);
  if (seg != nullptr) ::munmap(seg, seg_bytes);
  if (log != nullptr) ::munmap(const_cast<uint8_t*>(log), log_bytes);
  for (int fd : {sock, epfd, localfd, doorbell})
    if (fd >= 0) ::close(fd);
}

cs_error_t Connection::open(const Callbacks& callbacks, void* ctx) {
  cb = callbacks;
  context.store(ctx);
  const char* path = std::getenv(ipc::kSocketEnv);
  if (path == nullptr || *path == '\0') path = ipc::kDefaultSocket;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (std::strlen(path) >= sizeof(addr.sun_path)) return CS_ERR_LIBRARY;
  std::strcpy(addr.sun_path, path);
  sock = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (sock < 0) return CS_ERR_LIBRARY;
  if (::connect(sock, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return CS_ERR_LIBRARY;
  localfd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  epfd = ::epoll_create1(EPOLL_CLOEXEC);
  if (localfd < 0 || epfd < 0) return CS_ERR_NO_RESOURCES;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = sock;
  if (::epoll_ctl(epfd, EPOLL_CTL_ADD, sock, &ev) != 0) return CS_ERR_NO_RESOURCES;
  ev.data.fd = localfd;
  if (::epoll_ctl(epfd, EPOLL_CTL_ADD, localfd, &ev) != 0) return CS_ERR_NO_RESOURCES;
  return hello();
}

cs_error_t Connection::hello() {
  struct {
    ipc::MsgHeader h;
    ipc::HelloRequest r;
  } req{{ipc::MsgType::Hello, sizeof(ipc::HelloRequest)}, {}};
  req.r.pid = static_cast<uint32_t>(::getpid());
  req.r.model_flags = cb.model_flags;
  if (!send_all(sock, &req, sizeof(req))) return CS_ERR_LIBRARY;

  struct {
    ipc::MsgHeader h;
    ipc::HelloReply r;
    uint8_t slack[64];
  } rep{};
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int) * 3)];
  iovec iov{&rep, sizeof(rep)};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctrl;
  msg.msg_controllen = sizeof(ctrl);
  ssize_t n;
  do n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  int fds[3] = {-1, -1, -1};
  int nfds = 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      if (nfds < 3)
        fds[nfds++] = fd;
      else
        ::close(fd);
    }
  }
  auto close_fds = [&] {
    for (int& fd : fds)
      if (fd >= 0) ::close(fd), fd = -1;
  };
  if (n < static_cast<ssize_t>(sizeof(ipc::MsgHeader) + sizeof(ipc::HelloReply)) ||
      rep.h.type != ipc::MsgType::Hello || rep.h.length != n - sizeof(ipc::MsgHeader) ||
      (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
    close_fds();
    return CS_ERR_LIBRARY;
  }
  if (rep.r.status != ipc::Status::Ok) {
    close_fds();
    return static_cast<cs_error_t>(rep.r.status);
  }
  int want = rep.r.log_bytes != 0 ? 3 : 2;
  if (nfds != want) {
    close_fds();
    return CS_ERR_LIBRARY;
  }
  int segfd = fds[0];
  int logfd = want == 3 ? fds[1] : -1;
  doorbell = fds[want - 1];
  cs_error_t st = map_segment(segfd, logfd, rep.r);
  ::close(segfd);
  if (logfd >= 0) ::close(logfd);
  if (st != CS_OK) return st;
  nodeid = rep.r.nodeid;
  max_atomic = rep.r.max_atomic_msg;
  max_msg = rep.r.max_msg_bytes == 0 ? (uint64_t{1} << 30) : rep.r.max_msg_bytes;
  ring_seq = rep.r.ring_id_seq;
  ring_nodeid = rep.r.ring_id_nodeid;
  return CS_OK;
}

cs_error_t Connection::map_segment(int segfd, int logfd, const ipc::HelloReply& rep) {
  struct stat st {};
  if (::fstat(segfd, &st) != 0 || rep.segment_bytes < sizeof(ipc::SegmentHeader) ||
      static_cast<uint64_t>(st.st_size) < rep.segment_bytes)
    return CS_ERR_LIBRARY;
  void* p = ::mmap(nullptr, rep.segment_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, segfd, 0);
  if (p == MAP_FAILED) return CS_ERR_NO_RESOURCES;
  seg = static_cast<uint8_t*>(p);
  seg_bytes = rep.segment_bytes;
  hdr = reinterpret_cast<ipc::SegmentHeader*>(seg);
  // The daemon wrote the geometry before sending the fd; a copy keeps a
  // concurrent (hostile) writer from changing it between check and use.
  ipc::SegmentHeader g;
  std::memcpy(static_cast<void*>(&g), hdr, offsetof(ipc::SegmentHeader, request));
  const uint64_t lo = sizeof(ipc::SegmentHeader);
  if (g.magic != ipc::kMagic || g.version != ipc::kVersion || g.segment_bytes != seg_bytes ||
      !power_of_two(g.request_bytes) || !power_of_two(g.event_bytes) || g.request_bytes < 4096 ||
      g.event_bytes < 4096 || g.request_offset % 8 != 0 || g.event_offset % 8 != 0 ||
      !inside(g.request_offset, g.request_bytes, lo, seg_bytes) ||
      !inside(g.event_offset, g.event_bytes, lo, seg_bytes) ||
      !inside(g.pool_offset, g.pool_bytes, lo, seg_bytes) ||
      !disjoint(g.request_offset, g.request_bytes, g.event_offset, g.event_bytes) ||
      !disjoint(g.request_offset, g.request_bytes, g.pool_offset, g.pool_bytes) ||
      !disjoint(g.event_offset, g.event_bytes, g.pool_offset, g.pool_bytes))
    return CS_ERR_LIBRARY;
  requests = RingProducer(&hdr->request, seg + g.request_offset, g.request_bytes);
  events = RingConsumer(&hdr->event, seg + g.event_offset, g.event_bytes);
  // From the start, as if a dispatcher were asleep: the first event then
  // comes with a Wake and makes cpg_fd_get's descriptor readable.
  hdr->event.sleeping.value.store(1, std::memory_order_seq_cst);
  // The pool's first kZcbHeadroom bytes can only ever be headroom.
  pool.reset(g.pool_offset, g.pool_bytes);
  pool_offset = g.pool_offset;
  pool_bytes = g.pool_bytes;
  if (logfd >= 0) {
    if (::fstat(logfd, &st) != 0 || static_cast<uint64_t>(st.st_size) < rep.log_bytes)
      return CS_ERR_LIBRARY;
    p = ::mmap(nullptr, rep.log_bytes, PROT_READ, MAP_SHARED, logfd, 0);
    if (p == MAP_FAILED) return CS_ERR_NO_RESOURCES;
    log = static_cast<const uint8_t*>(p);
    log_bytes = rep.log_bytes;
  }
  const char* writable = std::getenv("RCPG_WRITABLE_DELIVERY");
  copy_deliveries = writable != nullptr && std::strcmp(writable, "1") == 0;
  return CS_OK;
}

cs_error_t Connection::request(ipc::MsgType type, const void* body, size_t len,
                               std::vector<uint8_t>& reply, size_t min_reply) {
  std::lock_guard lock(control_mu);
  if (dead()) return CS_ERR_LIBRARY;
  std::vector<uint8_t> packet(sizeof(ipc::MsgHeader) + len);
  ipc::MsgHeader h{type, static_cast<uint32_t>(len)};
  std::memcpy(packet.data(), &h, sizeof(h));
  if (len != 0) std::memcpy(packet.data() + sizeof(h), body, len);
  if (!send_all(sock, packet.data(), packet.size())) {
    mark_dead();
    return CS_ERR_LIBRARY;
  }
  cs_error_t st = read_reply(type, reply);
  if (st == CS_OK && reply.size() < min_reply) {
    mark_dead();
    return CS_ERR_LIBRARY;
  }
  return st;
}

cs_error_t Connection::read_reply(ipc::MsgType type, std::vector<uint8_t>& reply) {
  reply.resize(ipc::kMaxControlBytes);
  for (;;) {
    iovec iov{reply.data(), reply.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    ssize_t n = ::recvmsg(sock, &msg, 0);
    if (n < 0 && errno == EINTR) continue;
    ipc::MsgHeader h{};
    if (n >= static_cast<ssize_t>(sizeof(h))) std::memcpy(&h, reply.data(), sizeof(h));
    if (n < static_cast<ssize_t>(sizeof(h)) || (msg.msg_flags & MSG_TRUNC) != 0 ||
        h.length != n - sizeof(h)) {
      mark_dead();
      return CS_ERR_LIBRARY;
    }
    if (h.type == ipc::MsgType::Wake) {
      // A dispatcher may be blocked waiting for exactly this packet.
      kick_local();
      continue;
    }
    if (h.type != type) {
      mark_dead();
      return CS_ERR_LIBRARY;
    }
    reply.erase(reply.begin(), reply.begin() + sizeof(h));
    reply.resize(h.length);
    return CS_OK;
  }
}

bool Connection::check_alive() {
  if (dead()) return false;
  pollfd p{sock, 0, 0};
  if (::poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR | POLLNVAL)) != 0) mark_dead();
  return !dead();
}

void Connection::kick_local() {
  uint64_t one = 1;
  [[maybe_unused]] ssize_t r = ::write(localfd, &one, sizeof(one));
}

void Connection::drain_local() {
  uint64_t v;
  [[maybe_unused]] ssize_t r = ::read(localfd, &v, sizeof(v));
}

void Connection::drain_wakes() {
  std::lock_guard lock(control_mu);
  for (;;) {
    ipc::MsgHeader h{};
    ssize_t n = ::recv(sock, &h, sizeof(h), MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    // EOF, an error, or anything but a bare Wake with no request outstanding.
    if (n != sizeof(h) || h.type != ipc::MsgType::Wake || h.length != 0) {
      mark_dead();
      return;
    }
  }
}

void Connection::wait_readable() {
  pollfd p[2] = {{sock, POLLIN, 0}, {localfd, POLLIN, 0}};
  if (::poll(p, 2, -1) > 0 && (p[0].revents & (POLLHUP | POLLERR | POLLNVAL)) != 0) mark_dead();
}

void Connection::ring_doorbell() {
  uint64_t one = 1;
  [[maybe_unused]] ssize_t r = ::write(doorbell, &one, sizeof(one));
}

}  // namespace rcpg::cpg
