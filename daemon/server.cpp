#include "daemon/server.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "transport/factory.h"
#include "transport/placement.h"
#include "transport/spin_wait.h"

namespace rcpg::daemon {

using namespace std::chrono;
using ordering::EntryKind;

namespace {
// epoll tags; clients carry (serial << 32 | slot), serials start at 1.
constexpr uint64_t kTagListen = 1, kTagDoorbell = 2, kTagFabric = 3, kTagSignal = 4;
constexpr size_t kRequestBudget = 64;   // records per client per round (fairness)
constexpr uint32_t kControlEvery = 64;  // rounds between looks at the sockets while busy
}  // namespace

Server::Server(Config cfg, transport::ClusterKey key, std::string socket_path, LogFn log)
    : cfg_(std::move(cfg)),
      key_(key),
      socket_path_(std::move(socket_path)),
      log_(std::move(log)),
      rx_buf_(ipc::kMaxControlBytes) {
  geo_.request_bytes = cfg_.request_bytes;
  geo_.event_bytes = cfg_.event_bytes;
  geo_.pool_bytes = cfg_.pool_bytes;
  pause_reserve_ = cfg_.event_bytes / 4;
}

Server::~Server() {
  for (auto& c : clients_)
    if (c && (c->fd >= 0 || c->seg)) destroy(*c);
  registrar_.reset();
  registered_.clear();
  engine_.reset();
  ep_.reset();
  if (listen_fd_ >= 0) {
    close(listen_fd_);
    unlink(socket_path_.c_str());
  }
  for (int fd : {epoll_fd_, doorbell_fd_, signal_fd_, log_ro_fd_})
    if (fd >= 0) close(fd);
}

void Server::log(const std::string& line) const {
  if (log_) log_(line);
}

bool Server::start(std::string& why) {
  started_ = steady_clock::now();
  const NodeEntry* self = nullptr;
  for (const NodeEntry& n : cfg_.nodes)
    if (n.nodeid == cfg_.nodeid) self = &n;
  if (!self) {
    why = "node " + std::to_string(cfg_.nodeid) + " is not in the configuration";
    return false;
  }
  if (cfg_.pin) {
    auto pl = transport::pin_current_thread("", cfg_.pin_core);
    log("placement: " + pl.detail);
  }
  transport::EndpointConfig ec;
  ec.node_id = cfg_.nodeid;
  ec.listen_address = self->address;
  if (cfg_.fabric == "verbs")
    ec.source_address = self->source_address.empty()
                            ? self->address.substr(0, self->address.rfind(':'))
                            : self->source_address;
  ec.cluster_key = key_;
  for (const NodeEntry& n : cfg_.nodes) ec.allowed_peers.push_back(n.nodeid);
  ec.log = [this](std::string_view s) { log("fabric: " + std::string(s)); };
  ep_ = transport::make_endpoint(cfg_.fabric, ec, why);
  if (!ep_) return false;

  ordering::EngineConfig e;
  e.self = cfg_.nodeid;
  for (const NodeEntry& n : cfg_.nodes) e.nodes.push_back({n.nodeid, n.address});
  e.log_bytes = cfg_.log_bytes;
  e.inbound_bytes = cfg_.inbound_bytes;
  e.max_fragment = cfg_.max_fragment;
  e.deliver_fragments = true;
  e.hold_deliveries = cfg_.zero_copy_receive;
  e.heartbeat_interval_us = cfg_.heartbeat_interval_ms * 1000;
  e.suspect_timeout_us = cfg_.suspect_timeout_ms * 1000;
  e.suspect_timeout_max_us = std::max(cfg_.suspect_timeout_max_ms, cfg_.suspect_timeout_ms) * 1000;
  e.form_timeout_us = cfg_.form_timeout_ms * 1000;
  e.two_node = cfg_.two_node;
  epochs_ = EpochStore(cfg_.state_dir, cfg_.nodeid);
  if (!epochs_.load(e.epoch_floor, why)) {
    why = "the kept view epoch cannot be read: " + why + " (fix or remove the file)";
    return false;
  }
  if (e.epoch_floor != 0)
    log("views of an earlier run went up to epoch " + std::to_string(e.epoch_floor) + " (" +
        epochs_.path() + ")");
  engine_ = std::make_unique<ordering::Engine>(
      *ep_, e, [this](const ordering::Delivery& d) { on_delivery(d); },
      [this](const std::string& s) { log("engine: " + s); });
  engine_->on_send_done([this](uint64_t ticket, bool ok) { on_send_done(ticket, ok); });
  registrar_ = std::make_unique<SegmentRegistrar>(*ep_);
  if (!engine_->start(why)) return false;
  max_fragment_ = engine_->max_fragment();
  const transport::Region& lr = engine_->log_region();
  log_base_ = lr.data;
  log_size_ = lr.size;
  if (cfg_.zero_copy_receive && lr.fd >= 0) {
    // Clients get a read-only file description: they can map the log but
    // never write into it (the engine trusts what it reads there).
    std::string proc = "/proc/self/fd/" + std::to_string(lr.fd);
    log_ro_fd_ = open(proc.c_str(), O_RDONLY | O_CLOEXEC);
    if (log_ro_fd_ < 0)
      log("cannot reopen the log read-only (" + std::string(std::strerror(errno)) +
          "): deliveries are copied");
  }

  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  doorbell_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigprocmask(SIG_BLOCK, &set, nullptr);
  signal_fd_ = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (epoll_fd_ < 0 || doorbell_fd_ < 0 || signal_fd_ < 0) {
    why = std::string("epoll/eventfd/signalfd: ") + std::strerror(errno);
    return false;
  }
  auto add = [this](int fd, uint64_t tag) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag;
    return epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) == 0;
  };
  int wfd = ep_->wait_fd();
  if (!add(doorbell_fd_, kTagDoorbell) || !add(signal_fd_, kTagSignal) ||
      (wfd >= 0 && !add(wfd, kTagFabric))) {
    why = std::string("epoll_ctl: ") + std::strerror(errno);
    return false;
  }
  if (!open_listener(why)) return false;
  if (!add(listen_fd_, kTagListen)) {
    why = std::string("epoll_ctl: ") + std::strerror(errno);
    return false;
  }
  log("node " + std::to_string(cfg_.nodeid) + " of cluster '" + cfg_.cluster_name + "' (" +
      std::to_string(cfg_.nodes.size()) + " nodes, fabric " + cfg_.fabric + ") serving " +
      socket_path_);
  return true;
}

bool Server::open_listener(std::string& why) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (socket_path_.empty() || socket_path_.size() >= sizeof(sa.sun_path)) {
    why = "socket path \"" + socket_path_ + "\" is empty or longer than " +
          std::to_string(sizeof(sa.sun_path) - 1) + " bytes";
    return false;
  }
  std::memcpy(sa.sun_path, socket_path_.c_str(), socket_path_.size() + 1);
  auto slash = socket_path_.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    std::string dir = socket_path_.substr(0, slash);
    if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      why = "cannot create " + dir + ": " + std::strerror(errno);
      return false;
    }
  }
  // A socket file left by a dead daemon is replaced; a live one is not.
  int probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (probe >= 0) {
    if (connect(probe, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0) {
      close(probe);
      why = "another rcpgd is already serving " + socket_path_;
      return false;
    }
    if (errno == ECONNREFUSED) unlink(socket_path_.c_str());
    close(probe);
  }
  listen_fd_ = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0 || bind(listen_fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
      chmod(socket_path_.c_str(), cfg_.socket_mode) != 0 || listen(listen_fd_, 128) != 0) {
    why = "cannot listen on " + socket_path_ + ": " + std::strerror(errno);
    return false;
  }
  return true;
}

Client* Server::client_by_tag(uint64_t tag) {
  uint32_t slot = static_cast<uint32_t>(tag);
  uint64_t serial = (tag >> 32);
  if (slot >= clients_.size() || !clients_[slot]) return nullptr;
  Client* c = clients_[slot].get();
  return c->serial == serial && c->fd >= 0 ? c : nullptr;
}

void Server::accept_clients() {
  for (;;) {
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno != EAGAIN && errno != EINTR) log(std::string("accept: ") + std::strerror(errno));
      return;
    }
    ucred cred{};
    socklen_t cl = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0 ||
        live_clients_ >= cfg_.max_clients) {
      ++counters_.clients_refused;
      log("refusing a client connection (pid " + std::to_string(cred.pid) + "): " +
          (live_clients_ >= cfg_.max_clients ? "ipc.max_clients reached" : "no credentials"));
      close(fd);
      continue;
    }
    uint32_t slot;
    if (!free_slots_.empty()) {
      slot = free_slots_.back();
      free_slots_.pop_back();
    } else {
      slot = static_cast<uint32_t>(clients_.size());
      clients_.emplace_back();
    }
    clients_[slot] = std::make_unique<Client>();
    Client& c = *clients_[slot];
    c.slot = slot;
    c.serial = next_serial_++;
    c.fd = fd;
    c.pid = cred.pid;
    c.uid = cred.uid;
    c.handle.pid = static_cast<uint32_t>(cred.pid);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = (c.serial << 32) | slot;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
    active_.push_back(&c);
    ++live_clients_;
    ++counters_.clients_accepted;
  }
}

void Server::client_readable(Client& c) {
  for (int n = 0; n < 16 && c.fd >= 0 && !c.closing; ++n) {
    alignas(8) char cbuf[CMSG_SPACE(sizeof(int) * 8)];
    iovec iov{rx_buf_.data(), rx_buf_.size()};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf;
    mh.msg_controllen = sizeof(cbuf);
    ssize_t r = recvmsg(c.fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    // A client has no reason to pass descriptors: close any it sent.
    for (cmsghdr* cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
      if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
      size_t nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < nfd; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
        close(fd);
      }
    }
    if (r == 0) {
      hangup(c);
      return;
    }
    if (r < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      hangup(c);
      return;
    }
    if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
      violation(c, "control message larger than " + std::to_string(rx_buf_.size()) + " bytes");
      return;
    }
    handle_request(c, rx_buf_.data(), static_cast<size_t>(r));
  }
}

void Server::hangup(Client& c) {
  if (c.fd >= 0) {
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c.fd, nullptr);
    close(c.fd);
    c.fd = -1;
  }
  if (c.closing) return;
  c.closing = true;
  // Records published before the end are still sent (Corosync delivers a
  // killed process's last messages before its PROCDOWN); nothing after.
  // The loop's closing pass destroys the client (never here: callers still
  // hold it).
  if (c.hello) c.requests.freeze();
}

void Server::destroy(Client& c) {
  if (c.fd >= 0) {
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c.fd, nullptr);
    close(c.fd);
    c.fd = -1;
  }
  // The empty name is a valid group: membership is told by the phase.
  bool ever_joined = c.handle.phase != Phase::None;
  if (Group* g = ever_joined ? groups_.find(c.handle.group) : nullptr)
    g->local.erase(std::remove(g->local.begin(), g->local.end(), c.slot), g->local.end());
  active_.erase(std::remove(active_.begin(), active_.end(), &c), active_.end());
  dirty_.erase(std::remove(dirty_.begin(), dirty_.end(), &c), dirty_.end());
  detach_segment(c);  // the fabric keeps its own mapping while sends are in flight
  c.release_segment();
  uint32_t slot = c.slot;
  clients_[slot].reset();  // c is gone from here on
  free_slots_.push_back(slot);
  --live_clients_;
}

void Server::poll_control(int timeout_ms) {
  epoll_event evs[64];
  int n = epoll_wait(epoll_fd_, evs, 64, timeout_ms);
  for (int i = 0; i < n; ++i) {
    uint64_t tag = evs[i].data.u64;
    if (tag == kTagListen) {
      accept_clients();
    } else if (tag == kTagDoorbell) {
      uint64_t v;
      [[maybe_unused]] ssize_t r = read(doorbell_fd_, &v, sizeof(v));
    } else if (tag == kTagFabric) {
      // Nothing to read: the next engine round polls the fabric.
    } else if (tag == kTagSignal) {
      signalfd_siginfo si;
      while (read(signal_fd_, &si, sizeof(si)) == sizeof(si)) {
        if (si.ssi_signo == SIGHUP) {
          log("SIGHUP ignored (the configuration is read at start only)");
        } else {
          log(std::string("signal ") + strsignal(static_cast<int>(si.ssi_signo)) +
              ": shutting down");
          stop_ = true;
        }
      }
    } else if (Client* c = client_by_tag(tag)) {
      if (evs[i].events & EPOLLIN) client_readable(*c);
      if (c->fd >= 0 && !c->closing && (evs[i].events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR))) {
        // Read what is left first (a Finalize may be queued behind the hangup).
        client_readable(*c);
        if (!c->closing) hangup(*c);
      }
    }
  }
}

void Server::idle_block() {
  // Dekker with the clients: set `sleeping`, then look again; a client
  // publishing after our look sees the flag and rings the doorbell.
  bool work = false, closing = false;
  for (Client* c : active_) {
    closing = closing || c->closing;  // waits for engine credit: look again soon
    if (c->hello && !c->closing)
      c->requests.control().sleeping.value.store(1, std::memory_order_seq_cst);
  }
  for (Client* c : active_)
    work = work || (c->hello && !c->closing && c->requests.maybe_nonempty());
  if (!work) {
    // The engine's timers (heartbeats, suspicion, view formation) run in
    // progress(): never sleep past a heartbeat interval.
    int timeout = static_cast<int>(std::min(cfg_.max_sleep_ms, cfg_.heartbeat_interval_ms));
    // Still forming the first view, or delivery paused until a client makes
    // room (clients do not signal consumption), or sync entries due that
    // the engine can take (without a quorum it refuses them): look again soon.
    bool sync_due =
        (announce_pending_ || marker_epoch_ != 0) && block_ != ipc::MembershipBlock::NoQuorum;
    if (view_epoch_ == 0 || engine_->delivery_paused() || !deferred_leaves_.empty() || closing ||
        sync_due)
      timeout = 1;
    ++counters_.sleeps;
    poll_control(timeout);
  }
  for (Client* c : active_)
    if (c->hello) c->requests.control().sleeping.value.store(0, std::memory_order_relaxed);
}

int Server::run() {
  uint32_t spins = 0, since_control = 0;
  auto last_warn = steady_clock::now();
  bool announced = false;
  int rc = 0;
  while (!stop_) {
    ++counters_.rounds;
    bool did = engine_->progress();
    if (engine_->failed()) {
      // Lost peers are view changes; only an unrecoverable local error
      // (the engine's log says which) ends the daemon.
      log("the ordering engine failed: node " + std::to_string(cfg_.nodeid) +
          " stops serving (clients get CS_ERR_LIBRARY)");
      rc = 1;
      break;
    }
    watch_membership();
    // Announcements go before the clients' new requests of this round.
    did |= send_sync();
    did |= retry_deferred_leaves();
    for (size_t i = 0; i < active_.size(); ++i) {
      Client* c = active_[i];
      if (c->closing) continue;
      did |= process_requests(*c, kRequestBudget);
      if (c->deferred != ipc::MsgType::Wake) run_deferred(*c);
    }
    // Clients that hung up: send what they published, then PROCDOWN.
    for (size_t i = 0; i < active_.size();) {
      Client* c = active_[i];
      if (!c->closing) {
        ++i;
        continue;
      }
      if (!c->broken && c->hello) {
        did |= process_requests(*c, kRequestBudget);
        if ((c->requests.used() != 0 || c->zcb.streaming()) && !c->broken) {
          ++i;
          continue;
        }
      }
      procdown(*c);
      destroy(*c);  // removes it from active_
      did = true;
    }
    update_release();
    update_pause();
    release_idle_sources();
    adopt_segments();
    wake_dirty();
    if (!announced && engine_->all_connected()) {
      announced = true;
      log("all " + std::to_string(cfg_.nodes.size()) + " nodes connected; sequencer is node " +
          std::to_string(engine_->sequencer()));
    }
    // Before the first view (afterwards the membership lines say it all).
    if (view_epoch_ == 0 && !engine_->all_connected() &&
        steady_clock::now() - last_warn > milliseconds(cfg_.peer_warn_ms)) {
      last_warn = steady_clock::now();
      log(std::string("still waiting for the other nodes to connect") +
          (engine_->can_send() ? " (the sequencer is reachable)" : ""));
    }
    if (++since_control >= kControlEvery) {
      since_control = 0;
      poll_control(0);
    }
    if (did) {
      spins = 0;
    } else if (++spins >= cfg_.spin_iterations) {
      spins = 0;
      idle_block();
    } else if (cfg_.spin_yield) {
      sched_yield();
    } else {
      transport::SpinWait::cpu_relax();
    }
  }
  // Closing the sockets tells every client the daemon is gone (POLLHUP).
  for (auto& c : clients_)
    if (c) destroy(*c);
  if (cfg_.shutdown_linger_ms && rc == 0) {
    // Let peers finish reading what we sent before the connections close.
    auto until = steady_clock::now() + milliseconds(cfg_.shutdown_linger_ms);
    while (steady_clock::now() < until && !engine_->failed())
      if (!engine_->progress()) usleep(1000);
  }
  return rc;
}

}  // namespace rcpg::daemon
