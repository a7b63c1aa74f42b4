// shm fabric: construction, teardown, the data path, poll() and wait().
#include "transport/shm/shm_endpoint.h"

#include <sodium.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <new>

#include "transport/shm/shm_endpoint_impl.h"
#include "transport/shm/shm_errors.h"

namespace rcpg::transport {

std::unique_ptr<Endpoint> make_shm_endpoint(const EndpointConfig& cfg, std::string& why) {
  return shm::ShmEndpoint::create(cfg, why);
}

}  // namespace rcpg::transport

namespace rcpg::transport::shm {
namespace {

// In wait_fd() mode, an armed doorbell whose eventfd a late producer made
// readable again is drained every this many empty polls.
constexpr uint32_t kFdModeDrainEvery = 64;

// memmove: a connection to oneself may copy between overlapping ranges.
inline void copy_bytes(std::byte* dst, const std::byte* src, size_t len) {
  std::memmove(dst, src, len);
#if defined(__x86_64__)
  // Large copies may use non-temporal stores, which a later plain store does
  // not order; glibc fences them itself, this keeps it true regardless.
  if (len >= (size_t{64} << 10)) __builtin_ia32_sfence();
#endif
}

}  // namespace

// ---------------------------------------------------------------- lifecycle

std::unique_ptr<Endpoint> ShmEndpoint::create(const EndpointConfig& cfg, std::string& why) {
  if (cfg.send_queue_depth == 0 || cfg.recv_queue_depth == 0) {
    why = "send_queue_depth and recv_queue_depth must be at least 1";
    return nullptr;
  }
  if (RingGeometry::make(cfg.recv_queue_depth, cfg.max_send_bytes).bytes() > kMaxRingBytes) {
    why = "recv_queue_depth x max_send_bytes exceeds 1 GiB per connection";
    return nullptr;
  }
  std::unique_ptr<ShmEndpoint> ep(new ShmEndpoint(cfg));
  if (!ep->init(why)) return nullptr;
  return ep;
}

ShmEndpoint::ShmEndpoint(const EndpointConfig& cfg) : cfg_(cfg) {}

bool ShmEndpoint::init(std::string& why) {
  if (sodium_init() < 0) {
    why = "libsodium initialisation failed";
    return false;
  }
  efd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (efd_ < 0) {
    why = errno_text("eventfd");
    return false;
  }
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) {
    why = errno_text("epoll_create1");
    return false;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kTagEventFd;
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, efd_, &ev) != 0) {
    why = errno_text("epoll_ctl");
    return false;
  }
  if (!db_map_.create("rcpg-doorbell", sizeof(Doorbell), false, why)) return false;
  db_ = new (db_map_.data()) Doorbell{};
  db_->magic = kDoorbellMagic;
  if (!cfg_.listen_address.empty() && !open_listener(why)) return false;
  ensure_cq_capacity();
  return true;
}

ShmEndpoint::~ShmEndpoint() {
  // Closing every socket is what tells the peers we are gone.
  for (auto& c : live_) {
    close_socket(*c);
    release_peer_resources(*c);
  }
  live_.clear();
  graveyard_.clear();
  regions_.clear();
  close_listener();
  if (epfd_ >= 0) ::close(epfd_);
  if (efd_ >= 0) ::close(efd_);
}

void ShmEndpoint::log(const std::string& line) const {
  if (cfg_.log) {
    cfg_.log(line);
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

// ---------------------------------------------------------------- completions

Conn* ShmEndpoint::find_conn(ConnId id) const {
  return id < by_id_.size() ? by_id_[id] : nullptr;
}

bool ShmEndpoint::can_complete(const Conn& c) const {
  return c.outstanding < cfg_.send_queue_depth && cq_count_ < cq_.size();
}

void ShmEndpoint::complete(Conn& c, uint64_t wr_id, Op op, Status status, uint32_t len) {
  size_t tail = cq_head_ + cq_count_;
  if (tail >= cq_.size()) tail -= cq_.size();
  cq_[tail] = Completion{wr_id, c.id, op, status, 0, len, nullptr};
  ++cq_count_;
  ++c.outstanding;
}

// Room for a full send queue on every live connection (and one more), plus
// what forgotten connections still have queued.
void ShmEndpoint::ensure_cq_capacity() {
  size_t need = (live_.size() + 1) * size_t{cfg_.send_queue_depth} + orphans_;
  if (cq_.size() >= need) return;
  std::vector<Completion> grown(std::max(need, cq_.size() * 2));
  for (size_t i = 0; i < cq_count_; ++i) grown[i] = cq_[(cq_head_ + i) % cq_.size()];
  cq_ = std::move(grown);
  cq_head_ = 0;
}

// ---------------------------------------------------------------- data path

bool ShmEndpoint::post_write(ConnId conn, const Region& local, size_t local_off,
                             const RemoteRegion& remote, uint64_t remote_off, size_t len,
                             uint64_t wr_id, bool signaled) {
  return post_rdma(conn, Op::Write, local, local_off, remote, remote_off, len, 0, wr_id, signaled);
}

bool ShmEndpoint::post_write_imm(ConnId conn, const Region& local, size_t local_off,
                                 const RemoteRegion& remote, uint64_t remote_off, size_t len,
                                 uint32_t imm, uint64_t wr_id, bool signaled) {
  return post_rdma(conn, Op::WriteImm, local, local_off, remote, remote_off, len, imm, wr_id,
                   signaled);
}

bool ShmEndpoint::post_read(ConnId conn, const Region& local, size_t local_off,
                            const RemoteRegion& remote, uint64_t remote_off, size_t len,
                            uint64_t wr_id) {
  return post_rdma(conn, Op::Read, local, local_off, remote, remote_off, len, 0, wr_id, true);
}

bool ShmEndpoint::post_rdma(ConnId id, Op op, const Region& local, size_t local_off,
                            const RemoteRegion& remote, uint64_t remote_off, size_t len,
                            uint32_t imm, uint64_t wr_id, bool signaled) {
  Conn* c = find_conn(id);
  // Operations execute inside post_*(), so none is ever outstanding when a
  // connection ends; later ones are refused (the connection is not usable).
  // Queued control messages (new regions) must reach the peer first.
  if (!c || c->state != ConnState::Established || !c->outq.empty() || !can_complete(*c))
    return false;
  SlotHeader* slot = nullptr;
  if (op == Op::WriteImm && !(slot = c->tx.reserve())) return false;

  const LocalRegion* lr = find_local(local);
  if (!lr || local_off > lr->pub.size || len > lr->pub.size - local_off || len > kMaxOpBytes) {
    complete(*c, wr_id, op, Status::LocalAccess, 0);
    return true;
  }
  if (len != 0) {  // a zero-length operation touches no memory and checks no key
    const PeerRegion* pr = find_peer_region(*c, remote.rkey);
    if (c->state != ConnState::Established) return false;  // it ended while we looked
    uint64_t start = remote.addr - (pr ? pr->base : 0);
    if (!pr || remote.addr < pr->base || start > pr->size || remote_off > pr->size - start ||
        len > pr->size - start - remote_off) {
      complete(*c, wr_id, op, Status::RemoteAccess, 0);
      break_conn(*c, pr ? "remote access outside region " + std::to_string(remote.rkey)
                        : "remote access with unknown rkey " + std::to_string(remote.rkey));
      return true;
    }
    std::byte* rp = pr->map.data() + start + remote_off;
    std::byte* lp = lr->pub.data + local_off;
    if (op == Op::Read) {
      copy_bytes(lp, rp, len);
    } else {
      copy_bytes(rp, lp, len);
    }
  }
  if (op == Op::WriteImm) {
    slot->kind = static_cast<uint32_t>(SlotKind::Imm);
    slot->imm = imm;
    slot->len = static_cast<uint32_t>(len);
    c->tx.publish(slot);
    ring_doorbell(c->peer_db, c->peer_efd);
  }
  if (signaled || op == Op::Read) complete(*c, wr_id, op, Status::Ok, static_cast<uint32_t>(len));
  return true;
}

bool ShmEndpoint::post_send(ConnId id, std::span<const std::byte> bytes, uint64_t wr_id) {
  Conn* c = find_conn(id);
  if (!c || c->state != ConnState::Established || !c->outq.empty() || !can_complete(*c))
    return false;
  if (bytes.size() > cfg_.max_send_bytes || bytes.size() > c->tx.payload_cap()) {
    complete(*c, wr_id, Op::Send, Status::TooLarge, 0);
    return true;
  }
  SlotHeader* slot = c->tx.reserve();
  if (!slot) return false;
  if (!bytes.empty()) std::memcpy(RingProducer::payload(slot), bytes.data(), bytes.size());
  slot->kind = static_cast<uint32_t>(SlotKind::Send);
  slot->imm = 0;
  slot->len = static_cast<uint32_t>(bytes.size());
  c->tx.publish(slot);
  ring_doorbell(c->peer_db, c->peer_efd);
  complete(*c, wr_id, Op::Send, Status::Ok, static_cast<uint32_t>(bytes.size()));
  return true;
}

size_t ShmEndpoint::poll(std::span<Completion> out) {
  // Recv data handed out by the previous poll() is released now.
  for (Conn* c : deferred_) c->rx.commit();
  deferred_.clear();
  if (!graveyard_.empty()) graveyard_.clear();
  if (outq_conns_ != 0) flush_all_outqs();

  size_t n = 0;
  while (n < out.size() && cq_count_ != 0) {
    const Completion& e = cq_[cq_head_];
    if (Conn* c = find_conn(e.conn)) {
      --c->outstanding;
    } else {
      --orphans_;
    }
    out[n++] = e;
    if (++cq_head_ == cq_.size()) cq_head_ = 0;
    --cq_count_;
  }

  size_t rings = rx_conns_.size();
  Conn* drained = nullptr;  // an ended connection with nothing left to deliver
  if (n < out.size() && rings != 0) {
    if (rr_ >= rings) rr_ = 0;
    for (size_t k = 0; k < rings && n < out.size(); ++k) {
      size_t i = rr_ + k < rings ? rr_ + k : rr_ + k - rings;
      Conn* c = rx_conns_[i];
      bool took = false, holds_data = false;
      while (n < out.size()) {
        const SlotHeader* s = c->rx.peek();
        if (!s) break;
        Completion& o = out[n];
        o = Completion{};
        o.conn = c->id;
        if (s->kind == static_cast<uint32_t>(SlotKind::Send)) {
          o.op = Op::Recv;
          o.len = std::min(s->len, c->rx.payload_cap());
          o.data = RingConsumer::payload(s);
          holds_data = true;
          ++n;
        } else if (s->kind == static_cast<uint32_t>(SlotKind::Imm)) {
          o.op = Op::RecvImm;
          o.imm = s->imm;
          o.len = s->len;
          ++n;
        }  // anything else is not ours to deliver: skipped
        c->rx.consume();
        took = true;
      }
      if (holds_data) {
        deferred_.push_back(c);  // capacity reserved in new_conn()
      } else if (took) {
        c->rx.commit();
      }
      if (c->state == ConnState::Broken && !c->rx.peek()) drained = c;
    }
    rr_ = rr_ + 1 >= rings ? 0 : rr_ + 1;
  }
  if (drained) forget_conn(*drained);  // its ring goes at the next poll()

  if (n == 0 && fd_mode_) {
    // The application blocks on wait_fd() after an empty poll: make sure the
    // next producer writes our eventfd.
    bool taken = armed_ && db_->sleeping.load(std::memory_order_relaxed) == 0;
    bool rearm = !armed_ || taken;
    if (!rearm && ++empty_polls_ >= kFdModeDrainEvery) {
      efd_signaled_ = true;  // a write that raced with the last arming may linger
      rearm = true;
    }
    if (rearm) {
      empty_polls_ = 0;
      arm_doorbell();
      if (work_pending()) signal_self();
    }
  }
  return n;
}

// ---------------------------------------------------------------- blocking

bool ShmEndpoint::work_pending() const {
  if (cq_count_ != 0 || !events_.empty()) return true;
  for (const Conn* c : rx_conns_) {
    if (c->rx.ready_seq_cst()) return true;
  }
  return false;
}

void ShmEndpoint::drain_eventfd() {
  uint64_t v;
  [[maybe_unused]] ssize_t r = ::read(efd_, &v, sizeof(v));
  efd_signaled_ = false;
}

void ShmEndpoint::signal_self() {
  uint64_t one = 1;
  [[maybe_unused]] ssize_t r = ::write(efd_, &one, sizeof(one));
  efd_signaled_ = true;
}

void ShmEndpoint::arm_doorbell() {
  // A producer that swapped the flag to 0 has written (or will write) the
  // eventfd: clear it before arming again.
  if (armed_ && db_->sleeping.load(std::memory_order_relaxed) == 0) efd_signaled_ = true;
  if (efd_signaled_) drain_eventfd();
  db_->sleeping.store(1, std::memory_order_seq_cst);
  armed_ = true;
}

void ShmEndpoint::wait(std::chrono::microseconds timeout) {
  // Control messages first: they may raise events, and unread ones would
  // keep the epoll set readable.
  progress_control(false);
  if (work_pending()) return;
  arm_doorbell();
  if (!work_pending()) {
    // Connections still retrying connect(2), or control messages the socket
    // has not taken, need another look soon.
    bool retry = outq_conns_ != 0;
    for (const auto& c : live_) retry = retry || c->state == ConnState::Connecting;
    if (retry) timeout = std::min(timeout, std::chrono::microseconds(1000));
    if (timeout.count() < 0) timeout = std::chrono::microseconds(0);
    timespec ts{static_cast<time_t>(timeout.count() / 1000000),
                static_cast<long>(timeout.count() % 1000000) * 1000};
    epoll_event evs[16];
    int n = ::epoll_pwait2(epfd_, evs, 16, &ts, nullptr);
    if (n < 0 && errno == ENOSYS) {
      int ms = static_cast<int>(std::min<int64_t>((timeout.count() + 999) / 1000, 1 << 30));
      n = ::epoll_wait(epfd_, evs, 16, ms);
    }
    for (int i = 0; i < n; ++i) {
      if (evs[i].data.u64 == kTagEventFd) {
        efd_signaled_ = true;
      } else {
        ctrl_ready_ = true;  // next_event() or wait() looks at the sockets at once
      }
    }
  }
  if (db_->sleeping.exchange(0, std::memory_order_acq_rel) == 0) efd_signaled_ = true;
  armed_ = false;
}

int ShmEndpoint::wait_fd() const {
  fd_mode_ = true;
  return epfd_;
}

}  // namespace rcpg::transport::shm
