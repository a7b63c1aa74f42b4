#include "ipc_test_client.h"

#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>

namespace rcpg::test {

using Clock = std::chrono::steady_clock;

namespace {
std::string list(const char* what, const std::vector<ipc::MemberEntry>& v) {
  static const char* reasons[] = {"UNDEFINED", "JOIN", "LEAVE", "NODEDOWN", "NODEUP", "PROCDOWN"};
  std::string s = std::string(what) + "[" + std::to_string(v.size()) + "]={";
  for (size_t i = 0; i < v.size(); ++i) {
    s += (i ? ",(" : "(") + std::to_string(v[i].nodeid) + "," + std::to_string(v[i].pid) + "," +
         (v[i].reason < 6 ? reasons[v[i].reason] : "?") + ")";
  }
  return s + "}";
}
}  // namespace

std::string TestEvent::describe() const {
  if (type == ipc::RecordType::Confchg)
    return "CONFCHG group=" + group + " " + list("members", members) + " " + list("left", left) +
           " " + list("joined", joined);
  if (type == ipc::RecordType::TotemConfchg) {
    std::string s = "TOTEM ring=(" + std::to_string(ring_nodeid) + "," + std::to_string(ring_seq) +
                    ") members[" + std::to_string(nodes.size()) + "]={";
    for (size_t i = 0; i < nodes.size(); ++i) s += (i ? "," : "") + std::to_string(nodes[i]);
    return s + "}";
  }
  uint64_t sum = 1469598103934665603ull;
  for (std::byte b : data) sum = (sum ^ static_cast<uint8_t>(b)) * 1099511628211ull;
  return "DELIVER (" + std::to_string(nodeid) + "," + std::to_string(pid) +
         ") len=" + std::to_string(data.size()) + " sum=" + std::to_string(sum);
}

IpcTestClient::~IpcTestClient() {
  if (seg_) munmap(seg_, seg_bytes_);
  if (log_) munmap(const_cast<std::byte*>(log_), log_bytes_);
  if (fd_ >= 0) close(fd_);
  if (doorbell_ >= 0) close(doorbell_);
}

bool IpcTestClient::connect(const std::string& path, std::string& why) {
  fd_ = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof(sa.sun_path) - 1);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    why = "connect " + path + ": " + std::strerror(errno);
    return false;
  }
  return true;
}

bool IpcTestClient::request(ipc::MsgType type, const void* body, size_t len,
                            std::vector<std::byte>& reply, int* fds, size_t* nfds) {
  if (gone_) return false;
  std::vector<std::byte> msg(sizeof(ipc::MsgHeader) + len);
  ipc::MsgHeader h{type, static_cast<uint32_t>(len)};
  std::memcpy(msg.data(), &h, sizeof(h));
  if (len) std::memcpy(msg.data() + sizeof(h), body, len);
  if (send(fd_, msg.data(), msg.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(msg.size())) {
    gone_ = true;
    return false;
  }
  std::vector<std::byte> buf(ipc::kMaxControlBytes);
  for (;;) {
    alignas(8) char cbuf[CMSG_SPACE(sizeof(int) * 4)];
    iovec iov{buf.data(), buf.size()};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf;
    mh.msg_controllen = sizeof(cbuf);
    ssize_t n = recvmsg(fd_, &mh, MSG_CMSG_CLOEXEC);
    if (n <= 0) {
      gone_ = true;
      return false;
    }
    std::memcpy(&h, buf.data(), sizeof(h));
    if (h.type == ipc::MsgType::Wake) continue;
    if (h.type != type) {
      gone_ = true;
      return false;
    }
    if (fds && nfds) {
      *nfds = 0;
      for (cmsghdr* cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_type != SCM_RIGHTS) continue;
        size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        std::memcpy(fds, CMSG_DATA(cm), k * sizeof(int));
        *nfds = k;
      }
    }
    reply.assign(buf.begin() + sizeof(h), buf.begin() + n);
    return true;
  }
}

bool IpcTestClient::hello(std::string& why, uint32_t model_flags) {
  ipc::HelloRequest req;
  req.pid = static_cast<uint32_t>(getpid());
  req.model_flags = model_flags;
  std::vector<std::byte> rep;
  int fds[4];
  size_t nfds = 0;
  if (!request(ipc::MsgType::Hello, &req, sizeof(req), rep, fds, &nfds) ||
      rep.size() != sizeof(reply_)) {
    why = "no Hello reply";
    return false;
  }
  std::memcpy(&reply_, rep.data(), sizeof(reply_));
  if (reply_.status != ipc::Status::Ok) {
    why = "Hello refused: " + std::to_string(static_cast<int>(reply_.status));
    return false;
  }
  size_t want = reply_.log_bytes ? 3 : 2;
  if (nfds != want) {
    why = "Hello passed " + std::to_string(nfds) + " fds";
    return false;
  }
  seg_bytes_ = reply_.segment_bytes;
  void* p = mmap(nullptr, seg_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
  close(fds[0]);
  if (p == MAP_FAILED) {
    why = "mmap segment";
    return false;
  }
  seg_ = static_cast<std::byte*>(p);
  hdr_ = reinterpret_cast<ipc::SegmentHeader*>(seg_);
  if (reply_.log_bytes) {
    log_bytes_ = reply_.log_bytes;
    p = mmap(nullptr, log_bytes_, PROT_READ, MAP_SHARED, fds[1], 0);
    close(fds[1]);
    if (p == MAP_FAILED) {
      why = "mmap log";
      return false;
    }
    log_ = static_cast<const std::byte*>(p);
  }
  doorbell_ = fds[want - 1];
  return true;
}

namespace {
ipc::Status status_of(const std::vector<std::byte>& rep) {
  if (rep.size() < sizeof(ipc::StatusReply)) return ipc::Status::Library;
  ipc::StatusReply r;
  std::memcpy(&r, rep.data(), sizeof(r));
  return r.status;
}
ipc::GroupRequest group_req(const std::string& g) {
  ipc::GroupRequest r;
  r.group.length = static_cast<uint32_t>(g.size());
  std::memcpy(r.group.value, g.data(), std::min(g.size(), ipc::kMaxGroupName));
  return r;
}
}  // namespace

ipc::Status IpcTestClient::join(const std::string& group) {
  auto r = group_req(group);
  std::vector<std::byte> rep;
  if (!request(ipc::MsgType::Join, &r, sizeof(r), rep)) return ipc::Status::Library;
  return status_of(rep);
}

ipc::Status IpcTestClient::leave(const std::string& group) {
  auto r = group_req(group);
  std::vector<std::byte> rep;
  if (!request(ipc::MsgType::Leave, &r, sizeof(r), rep)) return ipc::Status::Library;
  return status_of(rep);
}

ipc::Status IpcTestClient::finalize() {
  std::vector<std::byte> rep;
  if (!request(ipc::MsgType::Finalize, nullptr, 0, rep)) return ipc::Status::Library;
  return status_of(rep);
}

ipc::Status IpcTestClient::membership(const std::string& group,
                                      std::vector<ipc::MemberEntry>& out) {
  auto r = group_req(group);
  std::vector<std::byte> rep;
  if (!request(ipc::MsgType::MembershipGet, &r, sizeof(r), rep)) return ipc::Status::Library;
  ipc::MembersReply m;
  if (rep.size() < sizeof(m)) return ipc::Status::Library;
  std::memcpy(&m, rep.data(), sizeof(m));
  if (rep.size() != sizeof(m) + m.count * sizeof(ipc::MemberEntry)) return ipc::Status::Library;
  out.resize(m.count);
  if (m.count) std::memcpy(out.data(), rep.data() + sizeof(m), m.count * sizeof(ipc::MemberEntry));
  return m.status;
}

std::string IpcTestClient::status_text(uint32_t what, uint32_t flags) {
  uint32_t body[2] = {what, flags};
  std::vector<std::byte> rep;
  if (!request(ipc::MsgType::Status, body, sizeof(body), rep)) return {};
  return std::string(reinterpret_cast<const char*>(rep.data()), rep.size());
}

std::byte* IpcTestClient::reserve(ipc::RecordType type, uint32_t body,
                                  std::chrono::milliseconds timeout) {
  auto& ctl = hdr_->request;
  uint64_t size = hdr_->request_bytes;
  std::byte* base = seg_ + hdr_->request_offset;
  uint64_t need = sizeof(ipc::RecordHeader) + ipc::ipc_align(body);
  auto deadline = Clock::now() + timeout;
  for (;;) {
    uint64_t off = req_pending_ & (size - 1);
    uint64_t to_end = size - off;
    uint64_t pad = need > to_end ? to_end : 0;
    uint64_t tail = ctl.tail.value.load(std::memory_order_acquire);
    if (req_pending_ + pad + need - tail <= size) {
      if (pad) {
        ipc::RecordHeader p{ipc::RecordType::Pad, static_cast<uint32_t>(pad - 8)};
        std::memcpy(base + off, &p, sizeof(p));
        req_pending_ += pad;
        off = 0;
      }
      ipc::RecordHeader h{type, body};
      std::memcpy(base + off, &h, sizeof(h));
      req_pending_ += need;
      return base + off + sizeof(h);
    }
    pollfd pf{fd_, 0, 0};  // a daemon that died frees no space
    if (::poll(&pf, 1, 0) == 1 && (pf.revents & (POLLHUP | POLLERR))) gone_ = true;
    if (gone_ || Clock::now() > deadline) return nullptr;
    publish();  // make sure the daemon sees what is waiting
    pump();     // like an application dispatching on TRY_AGAIN
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

void IpcTestClient::publish() {
  req_head_ = req_pending_;
  auto& ctl = hdr_->request;
  ctl.head.value.store(req_head_, std::memory_order_seq_cst);
  if (ctl.sleeping.value.load(std::memory_order_seq_cst) && ctl.sleeping.value.exchange(0) != 0) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t r = write(doorbell_, &one, sizeof(one));
  }
}

bool IpcTestClient::write_raw(ipc::RecordType type, const void* body, uint32_t length) {
  std::byte* p = reserve(type, length, std::chrono::seconds(5));
  if (!p) return false;
  if (length) std::memcpy(p, body, length);
  publish();
  return true;
}

bool IpcTestClient::mcast(uint32_t guarantee, const std::vector<std::byte>& payload,
                          std::chrono::milliseconds timeout) {
  size_t atomic = reply_.max_atomic_msg;
  if (payload.size() <= atomic) {
    std::byte* p =
        reserve(ipc::RecordType::Mcast,
                static_cast<uint32_t>(sizeof(ipc::McastRecord) + payload.size()), timeout);
    if (!p) return false;
    ipc::McastRecord m{guarantee, 0, payload.size()};
    std::memcpy(p, &m, sizeof(m));
    if (!payload.empty()) std::memcpy(p + sizeof(m), payload.data(), payload.size());
    publish();
    return true;
  }
  for (size_t off = 0; off < payload.size();) {
    size_t n = std::min(atomic, payload.size() - off);
    std::byte* p = reserve(ipc::RecordType::McastChunk,
                           static_cast<uint32_t>(sizeof(ipc::McastRecord) + n), timeout);
    if (!p) return false;
    ipc::McastRecord m{
        guarantee,
        (off == 0 ? ipc::kChunkFirst : 0u) | (off + n == payload.size() ? ipc::kChunkLast : 0u),
        payload.size()};
    std::memcpy(p, &m, sizeof(m));
    std::memcpy(p + sizeof(m), payload.data() + off, n);
    publish();
    off += n;
  }
  return true;
}

uint64_t IpcTestClient::zcb_post(uint32_t guarantee, const std::vector<std::byte>& payload,
                                 uint64_t pool_off) {
  if (pool_off + payload.size() > hdr_->pool_bytes) return 0;
  if (!payload.empty())
    std::memcpy(seg_ + hdr_->pool_offset + pool_off, payload.data(), payload.size());
  ipc::ZcbRecord z{guarantee, 0, hdr_->pool_offset + pool_off, payload.size(), ticket_ + 1};
  if (!write_raw(ipc::RecordType::ZcbMcast, &z, sizeof(z))) return 0;
  return ++ticket_;
}

ipc::Status IpcTestClient::zcb_mcast(uint32_t guarantee, const std::vector<std::byte>& payload,
                                     uint64_t pool_off, std::chrono::milliseconds timeout) {
  if (pool_off + payload.size() > hdr_->pool_bytes) return ipc::Status::InvalidParam;
  auto deadline = Clock::now() + timeout;
  for (;;) {
    uint64_t ticket = zcb_post(guarantee, payload, pool_off);
    if (ticket == 0) return ipc::Status::Library;
    while (hdr_->zcb_done.value.load(std::memory_order_acquire) != ticket) {
      if (gone_ || Clock::now() > deadline) return ipc::Status::Library;
      pump();
      drain_socket(1);
    }
    auto s = static_cast<ipc::Status>(
        static_cast<int32_t>(hdr_->zcb_status.value.load(std::memory_order_relaxed)));
    if (s != ipc::Status::TryAgain || Clock::now() > deadline) return s;
    ++try_agains_;
    pump();  // like an application dispatching on TRY_AGAIN
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

bool IpcTestClient::drain_socket(int timeout_ms) {
  pollfd p{fd_, POLLIN, 0};
  if (poll(&p, 1, timeout_ms) <= 0) return false;
  if (p.revents & POLLIN) {
    char buf[64];
    ssize_t n = recv(fd_, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0) gone_ = true;
  } else if (p.revents & (POLLHUP | POLLERR)) {
    gone_ = true;
  }
  return true;
}

bool IpcTestClient::read_one(TestEvent& out) {
  auto& ctl = hdr_->event;
  uint64_t size = hdr_->event_bytes;
  const std::byte* base = seg_ + hdr_->event_offset;
  for (;;) {
    uint64_t head = ctl.head.value.load(std::memory_order_acquire);
    if (head == ev_tail_) return false;
    uint64_t off = ev_tail_ & (size - 1);
    ipc::RecordHeader h;
    std::memcpy(&h, base + off, sizeof(h));
    const std::byte* body = base + off + sizeof(h);
    uint64_t span = sizeof(h) + ipc::ipc_align(h.length);
    TestEvent ev;
    ev.type = h.type;
    bool complete = true;
    if (h.type == ipc::RecordType::Deliver) {
      ipc::DeliverRecord d;
      std::memcpy(&d, body, sizeof(d));
      const std::byte* payload =
          d.source == ipc::DeliverSource::Log ? log_ + d.log_offset : body + sizeof(d);
      // Parts of different senders' messages interleave: one stream each.
      uint64_t key = (uint64_t{d.nodeid} << 32) | d.pid;
      if (d.flags & ipc::kChunkFirst) {
        TestEvent& p = partial_[key];
        p = TestEvent{};
        p.type = h.type;
        p.nodeid = d.nodeid;
        p.pid = d.pid;
      }
      if (d.flags & (ipc::kChunkFirst | ipc::kChunkLast | ipc::kChunkMiddle)) {
        auto it = partial_.find(key);
        if (it != partial_.end())
          it->second.data.insert(it->second.data.end(), payload, payload + d.bytes);
        complete = (d.flags & ipc::kChunkLast) && it != partial_.end();
        if (complete) {
          ev = std::move(it->second);
          partial_.erase(it);
        }
      } else {
        ev.nodeid = d.nodeid;
        ev.pid = d.pid;
        ev.data.assign(payload, payload + d.bytes);
      }
      ev.by_reference = d.source == ipc::DeliverSource::Log;
      if (d.position) hdr_->released.value.store(d.position, std::memory_order_release);
    } else if (h.type == ipc::RecordType::Confchg) {
      ipc::ConfchgRecord c;
      std::memcpy(&c, body, sizeof(c));
      ev.group.assign(c.group.value, c.group.length);
      auto* m = reinterpret_cast<const ipc::MemberEntry*>(body + sizeof(c));
      ev.members.assign(m, m + c.member_count);
      ev.left.assign(m + c.member_count, m + c.member_count + c.left_count);
      ev.joined.assign(m + c.member_count + c.left_count,
                       m + c.member_count + c.left_count + c.joined_count);
      // A sender that left never finishes its message (as libcpg does).
      for (const ipc::MemberEntry& l : ev.left) partial_.erase((uint64_t{l.nodeid} << 32) | l.pid);
    } else if (h.type == ipc::RecordType::TotemConfchg) {
      ipc::TotemRecord t;
      std::memcpy(&t, body, sizeof(t));
      ev.ring_seq = t.ring_seq;
      ev.ring_nodeid = t.ring_nodeid;
      auto* n = reinterpret_cast<const uint32_t*>(body + sizeof(t));
      ev.nodes.assign(n, n + t.count);
    } else {
      complete = false;  // Pad
    }
    ev_tail_ += h.type == ipc::RecordType::Pad ? size - off : span;
    ctl.tail.value.store(ev_tail_, std::memory_order_release);
    if (complete) {
      out = std::move(ev);
      return true;
    }
  }
}

void IpcTestClient::pump() {
  TestEvent e;
  while (read_one(e)) backlog_.push_back(std::move(e));
}

std::optional<TestEvent> IpcTestClient::next_event(std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  auto& ctl = hdr_->event;
  for (;;) {
    if (!backlog_.empty()) {
      TestEvent e = std::move(backlog_.front());
      backlog_.pop_front();
      return e;
    }
    TestEvent e;
    if (read_one(e)) return e;
    ctl.sleeping.value.store(1, std::memory_order_seq_cst);
    if (ctl.head.value.load(std::memory_order_seq_cst) == ev_tail_) {
      if (gone_ || Clock::now() > deadline) return std::nullopt;
      drain_socket(10);
    }
    ctl.sleeping.value.store(0, std::memory_order_relaxed);
  }
}

}  // namespace rcpg::test
