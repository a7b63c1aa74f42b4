// shm fabric: connections. Listening, connecting, the handshake described in
// shm_control.h, control events, and the end of connections.
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>

#include "transport/shm/shm_endpoint_impl.h"
#include "transport/shm/shm_errors.h"

namespace rcpg::transport::shm {
namespace {

const char* msg_name(MsgType t) {
  switch (t) {
    case MsgType::HelloRequest:
      return "hello request";
    case MsgType::HelloReply:
      return "hello reply";
    case MsgType::Reject:
      return "reject";
    case MsgType::Setup:
      return "setup";
    case MsgType::Region:
      return "region";
    case MsgType::Deregister:
      return "deregister";
    case MsgType::Ready:
      return "ready";
  }
  return "unknown";
}

std::span<const std::byte> as_bytes(const Hello& h) {
  return {reinterpret_cast<const std::byte*>(&h), sizeof(h)};
}

// We write to a peer's doorbell fd: make sure it is an eventfd, not a file.
bool is_eventfd(int fd) {
  char link[64];
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  ssize_t n = ::readlink(path.c_str(), link, sizeof(link));
  return n > 0 && std::string_view(link, static_cast<size_t>(n)) == "anon_inode:[eventfd]";
}

}  // namespace

// ---------------------------------------------------------------- listening

bool ShmEndpoint::open_listener(std::string& why) {
  const std::string& addr = cfg_.listen_address;
  sockaddr_un sa{};
  socklen_t len = 0;
  if (!make_address(addr, sa, len, why)) return false;
  bool abstract = addr.front() == '@';
  listen_fd_ = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) {
    why = errno_text("socket");
    return false;
  }
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&sa), len) != 0) {
    if (errno != EADDRINUSE || abstract) {
      why = errno_text("bind " + addr);
      return false;
    }
    // A socket file exists: replace it only if nobody listens on it any more.
    struct stat st {};
    int probe = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int rc = probe < 0 ? -1 : ::connect(probe, reinterpret_cast<sockaddr*>(&sa), len);
    int err = errno;
    if (probe >= 0) ::close(probe);
    bool stale =
        rc != 0 && err == ECONNREFUSED && ::lstat(addr.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
    if (!stale) {
      why = "listen address " + addr + " is in use";
      return false;
    }
    ::unlink(addr.c_str());
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&sa), len) != 0) {
      why = errno_text("bind " + addr);
      return false;
    }
  }
  if (!abstract) {
    struct stat st {};
    if (::stat(addr.c_str(), &st) == 0) {
      listen_path_ = addr;
      listen_dev_ = st.st_dev;
      listen_ino_ = st.st_ino;
    }
  }
  if (::listen(listen_fd_, SOMAXCONN) != 0) {
    why = errno_text("listen " + addr);
    return false;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kTagListen;
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, listen_fd_, &ev) != 0) {
    why = errno_text("epoll_ctl");
    return false;
  }
  return true;
}

void ShmEndpoint::close_listener() {
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
  // Unlink the socket file only if it is still the one we created.
  struct stat st {};
  if (!listen_path_.empty() && ::lstat(listen_path_.c_str(), &st) == 0 &&
      st.st_dev == listen_dev_ && st.st_ino == listen_ino_)
    ::unlink(listen_path_.c_str());
  listen_path_.clear();
}

void ShmEndpoint::accept_incoming() {
  for (;;) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        log("rcpg shm node " + std::to_string(cfg_.node_id) + ": " + errno_text("accept"));
      return;
    }
    Conn* c = new_conn(true);
    if (!c) {
      log("rcpg shm node " + std::to_string(cfg_.node_id) +
          ": refusing a connection: too many connections");
      ::close(fd);
      continue;
    }
    c->sock = fd;
    c->state = ConnState::AwaitHello;
    if (!watch(*c)) fail_setup(*c, std::nullopt, errno_text("epoll_ctl"));
  }
}

// ---------------------------------------------------------------- connecting

Conn* ShmEndpoint::new_conn(bool inbound) {
  if (by_id_.size() >= kNoConn || live_.size() >= kMaxConns) return nullptr;
  auto owned = std::make_unique<Conn>();
  Conn* c = owned.get();
  c->id = static_cast<ConnId>(by_id_.size());
  c->live_index = live_.size();
  by_id_.push_back(c);
  live_.push_back(std::move(owned));
  c->inbound = inbound;
  c->deadline = Clock::now() + kHandshakeTimeout;
  // The data path must not allocate: size everything per-connection now.
  ensure_cq_capacity();
  rx_conns_.reserve(live_.size());
  deferred_.reserve(live_.size());
  return c;
}

ConnId ShmEndpoint::connect(std::string_view address, NodeId peer) {
  Conn* c = new_conn(false);
  if (!c) {
    events_.push_back(Event{EventType::Unreachable, kNoConn, peer, false,
                            "too many connections on this endpoint"});
    return kNoConn;
  }
  ConnId id = c->id;
  c->peer = peer;
  c->address = std::string(address);
  c->request = make_request(cfg_.cluster_key, cfg_.node_id, peer);
  c->sock = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->sock < 0) {
    fail_setup(*c, EventType::Unreachable, errno_text("socket"));
    return id;
  }
  try_connect(*c);
  return id;
}

void ShmEndpoint::try_connect(Conn& c) {
  sockaddr_un sa{};
  socklen_t len = 0;
  std::string why;
  if (!make_address(c.address, sa, len, why)) {
    fail_setup(c, EventType::Unreachable, why);
    return;
  }
  if (::connect(c.sock, reinterpret_cast<sockaddr*>(&sa), len) != 0 && errno != EISCONN) {
    if (errno == EAGAIN || errno == EINTR) {  // listener backlog full: retried
      c.state = ConnState::Connecting;
      return;
    }
    fail_setup(c, EventType::Unreachable, errno_text("cannot reach " + c.address));
    return;
  }
  c.state = ConnState::AwaitReply;
  if (!watch(c)) {
    fail_setup(c, EventType::Unreachable, errno_text("epoll_ctl"));
    return;
  }
  OutMsg m;
  MsgHeader h;
  h.type = MsgType::HelloRequest;
  if (!OutMsg::make(h, as_bytes(c.request), {}, m, why)) {
    fail_setup(c, EventType::Unreachable, why);
    return;
  }
  send_ctrl(c, std::move(m));
}

bool ShmEndpoint::watch(Conn& c) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP;
  ev.data.u64 = c.id;
  return ::epoll_ctl(epfd_, EPOLL_CTL_ADD, c.sock, &ev) == 0;
}

// ---------------------------------------------------------------- events

std::optional<Event> ShmEndpoint::next_event() {
  if (events_.empty()) progress_control(false);
  if (events_.empty()) return std::nullopt;
  Event e = std::move(events_.front());
  events_.pop_front();
  return e;
}

void ShmEndpoint::push_event(EventType type, const Conn& c, std::string detail) {
  events_.push_back(Event{type, c.id, c.peer, c.inbound, std::move(detail)});
}

// Looks at the sockets when a peer hinted at a control message, wait() saw
// one readable, or kControlInterval passed (peer death, incoming
// connections): one epoll_wait, not a syscall per connection.
void ShmEndpoint::progress_control(bool force) {
  Clock::time_point now = Clock::now();
  bool hinted = db_->ctrl_hint.load(std::memory_order_relaxed) != 0;
  if (!force && !hinted && !ctrl_ready_ && now < next_ctrl_check_) return;
  if (hinted) db_->ctrl_hint.store(0, std::memory_order_relaxed);
  ctrl_ready_ = false;
  next_ctrl_check_ = now + kControlInterval;
  for (int round = 0; round < 8; ++round) {
    epoll_event evs[64];
    int n = ::epoll_wait(epfd_, evs, 64, 0);
    for (int i = 0; i < n; ++i) {
      uint64_t tag = evs[i].data.u64;
      if (tag == kTagListen) {
        accept_incoming();
      } else if (tag <= ~ConnId{0}) {
        Conn* c = find_conn(static_cast<ConnId>(tag));
        if (c && c->sock >= 0) on_readable(*c);
      } else {
        efd_signaled_ = true;  // our eventfd; drained when we next arm
      }
    }
    if (n < 64) break;
  }
  if (outq_conns_ != 0) flush_all_outqs();
  check_deadlines(now);
}

void ShmEndpoint::check_deadlines(Clock::time_point now) {
  for_each_conn([&](Conn& c) {
    if (c.state == ConnState::Connecting) try_connect(c);
    if (c.handshaking() && find_conn(c.id) && now >= c.deadline)
      fail_setup(c, c.inbound ? std::nullopt : std::optional(EventType::Unreachable),
                 "connection handshake timed out");
  });
}

// ---------------------------------------------------------------- messages

void ShmEndpoint::on_readable(Conn& c) {
  while (c.sock >= 0) {
    InMsg m;
    int err = recv_msg(c.sock, m);
    if (err == EAGAIN) return;
    if (err != 0) {
      std::string why = err == ECONNRESET ? "peer closed the connection"
                        : err == EPROTO   ? "malformed control message from peer"
                                          : std::string("control socket: ") + std::strerror(err);
      if (c.handshaking()) {
        fail_setup(c, c.inbound ? std::nullopt : std::optional(EventType::Unreachable),
                   why + " during the handshake");
      } else {
        break_conn(c, why);
      }
      return;
    }
    if (!on_message(c, m)) return;
  }
}

bool ShmEndpoint::on_message(Conn& c, InMsg& m) {
  MsgType t = m.h.type;
  switch (c.state) {
    case ConnState::AwaitHello:
      if (t == MsgType::HelloRequest) return on_hello_request(c, m);
      break;
    case ConnState::AwaitReply:
      if (t == MsgType::HelloReply) return on_hello_reply(c, m);
      [[fallthrough]];
    case ConnState::AwaitPeerReady:
      if (t == MsgType::Reject && !c.inbound) {
        std::string reason(reinterpret_cast<const char*>(m.body.data()), m.body_len);
        fail_setup(c, EventType::Rejected,
                   "node " + std::to_string(c.peer) + " refused the connection: " + reason);
        return false;
      }
      if (c.state != ConnState::AwaitPeerReady) break;
      if (t == MsgType::Setup) return on_setup(c, m);
      if (t == MsgType::Region) return on_region(c, m);
      if (t == MsgType::Ready) return on_ready(c);
      break;
    case ConnState::Established:
      if (t == MsgType::Region) return on_region(c, m);
      if (t == MsgType::Deregister) {
        on_deregister(c, m);
        return true;
      }
      break;
    case ConnState::Connecting:
    case ConnState::Broken:
      break;
  }
  std::string why = std::string("unexpected ") + msg_name(t) + " message from peer";
  if (c.handshaking()) {
    fail_setup(c, c.inbound ? std::nullopt : std::optional(EventType::Unreachable), why);
  } else {
    break_conn(c, why);
  }
  return false;
}

bool ShmEndpoint::on_hello_request(Conn& c, InMsg& m) {
  std::string why;
  std::optional<NodeId> peer =
      verify_request(cfg_.cluster_key, cfg_.node_id, cfg_.allowed_peers, m.body_bytes(), why);
  if (!peer) {
    if (m.body_len >= sizeof(Hello)) {
      Hello claimed;
      std::memcpy(&claimed, m.body.data(), sizeof(claimed));
      c.peer = claimed.from;
    }
    log("rcpg shm node " + std::to_string(cfg_.node_id) + ": rejected a connection: " + why);
    OutMsg rej;
    MsgHeader h;
    h.type = MsgType::Reject;
    std::string_view reason = std::string_view(why).substr(0, kMaxBody);
    std::string ignored;
    if (OutMsg::make(h, std::as_bytes(std::span(reason.data(), reason.size())), {}, rej, ignored))
      send_msg(c.sock, rej);  // best effort: the socket closes right after
    fail_setup(c, EventType::PeerRejected, why);
    return false;
  }
  c.peer = *peer;
  Hello request;
  std::memcpy(&request, m.body.data(), sizeof(request));
  Hello reply = make_reply(cfg_.cluster_key, cfg_.node_id, request);
  OutMsg out;
  MsgHeader h;
  h.type = MsgType::HelloReply;
  if (!OutMsg::make(h, as_bytes(reply), {}, out, why)) {
    fail_setup(c, std::nullopt, why);
    return false;
  }
  c.state = ConnState::AwaitPeerReady;
  if (!send_ctrl(c, std::move(out))) return false;
  return send_snapshot(c);
}

bool ShmEndpoint::on_hello_reply(Conn& c, InMsg& m) {
  std::string why;
  if (!verify_reply(cfg_.cluster_key, c.request, m.body_bytes(), why)) {
    fail_setup(c, EventType::Rejected, why);
    return false;
  }
  c.state = ConnState::AwaitPeerReady;
  return true;
}

bool ShmEndpoint::on_setup(Conn& c, InMsg& m) {
  std::string why;
  RingGeometry g = RingGeometry::make(m.h.key, m.h.aux);
  if (c.tx.attached() || m.nfds != 3 || g.slots == 0 || g.slots > kMaxRingSlots ||
      g.bytes() > kMaxRingBytes || !g.valid()) {
    why = "invalid setup message from peer";
  } else if (c.tx_map.attach(m.take_fd(0), g.bytes(), why) &&
             c.peer_db_map.attach(m.take_fd(1), sizeof(Doorbell), why)) {
    if (!ring_matches(c.tx_map.data(), g) ||
        reinterpret_cast<const Doorbell*>(c.peer_db_map.data())->magic != kDoorbellMagic ||
        !is_eventfd(m.fds[2])) {
      why = "peer's ring or doorbell is malformed";
    } else {
      c.tx.attach(c.tx_map.data(), g);
      c.peer_db = reinterpret_cast<Doorbell*>(c.peer_db_map.data());
      c.peer_efd = m.take_fd(2);
      return true;
    }
  }
  fail_setup(c, c.inbound ? std::nullopt : std::optional(EventType::Unreachable), why);
  return false;
}

bool ShmEndpoint::on_ready(Conn& c) {
  if (!c.tx.attached()) {
    fail_setup(c, c.inbound ? std::nullopt : std::optional(EventType::Unreachable),
               "peer was ready before its setup");
    return false;
  }
  // The initiator sends its own side only now, having verified the listener.
  if (!c.sent_snapshot && !send_snapshot(c)) return false;
  c.state = ConnState::Established;
  set_scanned(c, true);
  push_event(EventType::Connected, c, c.inbound ? "accepted" : "connected to " + c.address);
  return true;
}

// Our ring for this connection, our doorbell and eventfd, our regions, Ready.
bool ShmEndpoint::send_snapshot(Conn& c) {
  std::string why;
  RingGeometry g = RingGeometry::make(cfg_.recv_queue_depth, cfg_.max_send_bytes);
  OutMsg setup;
  MsgHeader h;
  h.type = MsgType::Setup;
  h.key = g.slots;
  h.aux = g.payload_cap;
  if (c.rx_map.create("rcpg-ring", g.bytes(), false, why)) {
    ring_init(c.rx_map.data(), g);
    c.rx.attach(c.rx_map.data(), g);
    const int fds[3] = {c.rx_map.fd(), db_map_.fd(), efd_};
    if (OutMsg::make(h, {}, fds, setup, why)) {
      c.rx_map.close_fd();
      // From here on register_region() sends new regions to this peer too.
      c.sent_snapshot = true;
      if (!send_ctrl(c, std::move(setup))) return false;
      for (const auto& r : regions_) {
        if (!r || r->local_only) continue;
        OutMsg rm;
        if (!region_message(*r, rm, why)) break;
        if (!send_ctrl(c, std::move(rm))) return false;
      }
      if (why.empty()) {
        OutMsg ready;
        MsgHeader rh;
        rh.type = MsgType::Ready;
        if (OutMsg::make(rh, {}, {}, ready, why)) return send_ctrl(c, std::move(ready));
      }
    }
  }
  fail_setup(c, c.inbound ? std::nullopt : std::optional(EventType::Unreachable),
             "cannot set up the connection: " + why);
  return false;
}

// ---------------------------------------------------------------- control sends

bool ShmEndpoint::send_ctrl(Conn& c, OutMsg msg) {
  if (c.sock < 0) return false;
  if (c.outq.empty()) ++outq_conns_;
  c.outq.push_back(std::move(msg));
  return flush_outq(c);
}

bool ShmEndpoint::flush_outq(Conn& c) {
  while (!c.outq.empty()) {
    int err = send_msg(c.sock, c.outq.front());
    if (err == EAGAIN || err == ETOOMANYREFS) return true;  // retried from poll()/next_event()
    if (err != 0) {
      std::string why = std::string("control socket: ") + std::strerror(err);
      if (c.handshaking()) {
        fail_setup(c, c.inbound ? std::nullopt : std::optional(EventType::Unreachable), why);
      } else {
        break_conn(c, why);
      }
      return false;
    }
    c.outq.pop_front();
    if (c.outq.empty()) --outq_conns_;
  }
  // The peer looks at its sockets at once rather than at its next interval.
  if (c.peer_db) c.peer_db->ctrl_hint.store(1, std::memory_order_relaxed);
  return true;
}

void ShmEndpoint::flush_all_outqs() {
  for_each_conn([&](Conn& c) {
    if (!c.outq.empty()) flush_outq(c);
  });
}

// ---------------------------------------------------------------- endings

void ShmEndpoint::disconnect(ConnId id) {
  Conn* c = find_conn(id);
  if (!c) return;
  if (c->state == ConnState::Established) {
    close_socket(*c);  // the peer sees EOF
    release_peer_resources(*c);
    c->state = ConnState::Broken;
    push_event(EventType::Disconnected, *c, "disconnected locally");
  } else if (c->handshaking() && !c->inbound) {
    push_event(EventType::Unreachable, *c, "connect abandoned locally");
  }
  forget_conn(*c);
}

void ShmEndpoint::fail_setup(Conn& c, std::optional<EventType> type, const std::string& why) {
  // Rejections are logged where they happen; a connection that closes before
  // saying anything (a listener probing for a stale socket) is not news.
  if (c.inbound && type != EventType::PeerRejected && c.state != ConnState::AwaitHello)
    log("rcpg shm node " + std::to_string(cfg_.node_id) + ": incoming connection from node " +
        std::to_string(c.peer) + " failed: " + why);
  if (type) push_event(*type, c, why);
  forget_conn(c);
}

void ShmEndpoint::break_conn(Conn& c, const std::string& why) {
  if (c.state == ConnState::Broken) return;
  close_socket(c);
  release_peer_resources(c);
  c.state = ConnState::Broken;
  push_event(EventType::Disconnected, c, why);
  // What the peer published before the end is still delivered (its sender
  // saw those operations complete); poll() forgets the connection once its
  // ring is drained.
  if (!c.rx.attached() || !c.rx.ready_seq_cst()) forget_conn(c);
}

void ShmEndpoint::close_socket(Conn& c) {
  if (!c.outq.empty()) --outq_conns_;
  c.outq.clear();
  if (c.sock >= 0) {
    // Explicitly: a copy of the socket inherited by a forked child would
    // otherwise keep it in our epoll set after close().
    ::epoll_ctl(epfd_, EPOLL_CTL_DEL, c.sock, nullptr);
    ::close(c.sock);
  }
  c.sock = -1;
}

void ShmEndpoint::release_peer_resources(Conn& c) {
  c.tx.detach();
  c.tx_map.reset();
  c.peer_db = nullptr;
  c.peer_db_map.reset();
  if (c.peer_efd >= 0) ::close(c.peer_efd);
  c.peer_efd = -1;
  c.regions.clear();
}

void ShmEndpoint::set_scanned(Conn& c, bool on) {
  if (c.scanned == on) return;
  c.scanned = on;
  if (on) {
    rx_conns_.push_back(&c);
  } else {
    rx_conns_.erase(std::find(rx_conns_.begin(), rx_conns_.end(), &c));
  }
}

void ShmEndpoint::forget_conn(Conn& c) {
  close_socket(c);
  release_peer_resources(c);
  set_scanned(c, false);
  orphans_ += c.outstanding;
  by_id_[c.id] = nullptr;
  size_t i = c.live_index;
  std::swap(live_[i], live_.back());
  live_[i]->live_index = i;
  std::unique_ptr<Conn> owned = std::move(live_.back());
  live_.pop_back();
  // Its ring may hold Recv data the last poll() handed out, and callers up
  // the stack may still hold `c`: freed at the next poll().
  graveyard_.push_back(std::move(owned));
}

}  // namespace rcpg::transport::shm
