// daemon/: what a hostile local client can make rcpgd do.
//
// A real rcpgd Server (one node, shm fabric) runs in a thread of the fuzzer
// for the whole session. Each input is one client: it connects to the
// daemon's socket and plays a script of control requests (Hello, Join,
// Leave, MembershipGet, Iterate, Status, Finalize, unknown types; bodies
// well-formed, truncated, oversized or with lying length fields) and of
// request-ring records (Mcast, McastChunk, ZcbMcast, Pad, unknown types;
// any lengths, flags, totals, pool offsets; published heads right or
// impossible), plus writes to the indices and flags it shares with the
// daemon. It reads and checks its event ring as a client would.
//
// Oracles: the daemon never crashes, answers every request (or disconnects
// the client) within a deadline, keeps serving later clients, and only ever
// writes well-formed event records (lengths, log references, counts).
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "api/ipc/protocol.h"
#include "daemon/server.h"
#include "daemon/status_request.h"
#include "fuzz/fuzz_input.h"

using namespace rcpg;
using rcpg::fuzz::Input;

namespace {

constexpr int kReplyTimeoutMs = 10000;  // generous: the machine may be loaded

std::string g_socket;
std::atomic<bool> g_daemon_running{false};
std::atomic<bool> g_daemon_exited{false};

void daemon_thread() {
  daemon::Config cfg;
  cfg.cluster_name = "fuzz";
  cfg.fabric = "shm";
  cfg.nodeid = 1;
  cfg.nodes = {{1, "@rcpg-fuzz-daemon-" + std::to_string(getpid()), ""}};
  cfg.log_bytes = 64 << 10;
  cfg.inbound_bytes = 64 << 10;
  cfg.max_fragment = 4096;
  cfg.request_bytes = 64 << 10;
  cfg.event_bytes = 64 << 10;
  cfg.pool_bytes = 64 << 10;
  cfg.max_clients = 64;
  cfg.max_sleep_ms = 1;
  cfg.spin_iterations = 64;
  cfg.shutdown_linger_ms = 0;
  transport::ClusterKey key{};
  key.fill(0x42);
  auto* server = new daemon::Server(cfg, key, g_socket, [](const std::string& line) {
    if (std::getenv("RCPG_FUZZ_TRACE")) std::fprintf(stderr, "rcpgd: %s\n", line.c_str());
  });
  std::string why;
  if (!server->start(why)) {
    std::fprintf(stderr, "fuzz_daemon_ipc: rcpgd did not start: %s\n", why.c_str());
    std::abort();
  }
  g_daemon_running = true;
  server->run();  // returns only if the engine failed: a bug in this setting
  g_daemon_exited = true;
}

class ClientSession {
 public:
  explicit ClientSession(Input& in) : in_(in) {}
  ~ClientSession() {
    if (seg_) munmap(seg_, seg_bytes_);
    if (log_) munmap(log_, log_bytes_);
    for (int fd : {sock_, doorbell_})
      if (fd >= 0) close(fd);
  }

  void run() {
    sock_ = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strcpy(sa.sun_path, g_socket.c_str());
    FUZZ_CHECK(connect(sock_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0);
    hello();
    for (int steps = 0; steps < 32 && alive_ && !in_.empty(); ++steps) {
      switch (in_.u8() % 8) {
        case 0:
        case 1:
          control();
          break;
        case 2:
        case 3:
          record();
          break;
        case 4:
          consume_events();
          break;
        case 5:
          shared_words();
          break;
        case 6:
          pool_bytes();
          break;
        default:
          publish(in_.flag());
          break;
      }
    }
    if (alive_) {
      consume_events();
      ipc::MsgHeader h{ipc::MsgType::Finalize, 0};
      send_packet(&h, sizeof(h));
      await_reply(ipc::MsgType::Finalize);
    }
    FUZZ_CHECK(!g_daemon_exited);
  }

 private:
  void send_packet(const void* p, size_t n) {
    if (send(sock_, p, n, MSG_NOSIGNAL) != static_cast<ssize_t>(n)) alive_ = false;
  }

  // Waits for the answer to our request; Wake packets may come first. A
  // closed socket means the daemon disconnected us (a protocol violation).
  void await_reply(ipc::MsgType type, std::vector<uint8_t>* body = nullptr,
                   std::vector<int>* fds = nullptr) {
    std::vector<uint8_t> buf(ipc::kMaxControlBytes + 16);
    for (;;) {
      pollfd p{sock_, POLLIN, 0};
      int r = poll(&p, 1, kReplyTimeoutMs);
      if (r == 0) {
        std::fprintf(stderr, "rcpgd did not answer request type %u within %d ms\n",
                     static_cast<unsigned>(type), kReplyTimeoutMs);
        FUZZ_CHECK(!"rcpgd answers every request");
      }
      alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * 8)];
      iovec iov{buf.data(), buf.size()};
      msghdr mh{};
      mh.msg_iov = &iov;
      mh.msg_iovlen = 1;
      mh.msg_control = cbuf;
      mh.msg_controllen = sizeof(cbuf);
      ssize_t n = recvmsg(sock_, &mh, MSG_CMSG_CLOEXEC);
      if (n < 0) mh.msg_controllen = 0;
      for (cmsghdr* cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
        size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; ++i) {
          int fd;
          std::memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
          if (fds)
            fds->push_back(fd);
          else
            close(fd);
        }
      }
      if (n <= 0) {
        alive_ = false;
        return;
      }
      ipc::MsgHeader h;
      FUZZ_CHECK(static_cast<size_t>(n) >= sizeof(h));
      std::memcpy(&h, buf.data(), sizeof(h));
      FUZZ_CHECK(h.length == n - sizeof(h));
      if (h.type == ipc::MsgType::Wake) continue;
      FUZZ_CHECK(h.type == type);
      if (body) body->assign(buf.begin() + sizeof(h), buf.begin() + n);
      return;
    }
  }

  void hello() {
    struct {
      ipc::MsgHeader h;
      ipc::HelloRequest r;
    } req{{ipc::MsgType::Hello, sizeof(ipc::HelloRequest)}, {}};
    req.r.pid = static_cast<uint32_t>(getpid());
    uint8_t mode = in_.u8();
    if (mode & 1) req.r.magic = in_.u32();
    if (mode & 2) req.r.version = in_.u32();
    req.r.model_flags = in_.u8() & 3;
    if (mode & 4) req.h.length = in_.u32();
    send_packet(&req, (mode & 8) ? in_.below(sizeof(req) + 1) : sizeof(req));
    std::vector<uint8_t> body;
    std::vector<int> fds;
    if (alive_) await_reply(ipc::MsgType::Hello, &body, &fds);
    if (!alive_ || body.size() != sizeof(ipc::HelloReply)) {
      for (int fd : fds) close(fd);
      return;
    }
    std::memcpy(&rep_, body.data(), sizeof(rep_));
    if (rep_.status != ipc::Status::Ok) {
      for (int fd : fds) close(fd);
      return;
    }
    FUZZ_CHECK(fds.size() == (rep_.log_bytes ? 3u : 2u));
    seg_bytes_ = rep_.segment_bytes;
    void* p = mmap(nullptr, seg_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
    FUZZ_CHECK(p != MAP_FAILED);
    seg_ = static_cast<std::byte*>(p);
    hdr_ = reinterpret_cast<ipc::SegmentHeader*>(seg_);
    if (rep_.log_bytes) {
      log_bytes_ = rep_.log_bytes;
      p = mmap(nullptr, log_bytes_, PROT_READ, MAP_SHARED, fds[1], 0);
      FUZZ_CHECK(p != MAP_FAILED);
      log_ = static_cast<std::byte*>(p);
    }
    doorbell_ = fds.back();
    for (size_t i = 0; i + 1 < fds.size(); ++i) close(fds[i]);
    req_ = seg_ + hdr_->request_offset;
    req_size_ = hdr_->request_bytes;
    ev_ = seg_ + hdr_->event_offset;
    ev_size_ = hdr_->event_bytes;
  }

  ipc::GroupName group_name() {
    ipc::GroupName g{};
    uint8_t mode = in_.u8();
    g.length = (mode & 1) ? in_.u32() : in_.below(ipc::kMaxGroupName + 1);
    if (mode & 2) g.length = 1 + in_.u8() % 3;  // few names: joins and leaves meet
    for (size_t i = 0; i < std::min<size_t>(g.length, ipc::kMaxGroupName); ++i)
      g.value[i] = static_cast<char>('a' + in_.u8() % 3);
    return g;
  }

  void control() {
    static const ipc::MsgType kTypes[] = {
        ipc::MsgType::Join,    ipc::MsgType::Leave,  ipc::MsgType::MembershipGet,
        ipc::MsgType::Iterate, ipc::MsgType::Status, ipc::MsgType::Finalize,
        ipc::MsgType::Hello,   ipc::MsgType::Wake,   static_cast<ipc::MsgType>(77)};
    ipc::MsgType type = kTypes[in_.u8() % std::size(kTypes)];
    std::vector<uint8_t> body;
    uint8_t mode = in_.u8();
    if (mode & 1) {
      auto raw = in_.bytes(in_.below(400));
      body.assign(raw.begin(), raw.end());
    } else if (type == ipc::MsgType::Iterate) {
      ipc::IterateRequest r;
      r.type = static_cast<ipc::IterationType>(in_.u8() % 5);
      r.group = group_name();
      body.resize(sizeof(r));
      std::memcpy(body.data(), &r, sizeof(r));
    } else if (type == ipc::MsgType::Status) {
      daemon::StatusRequest r;
      r.what = static_cast<daemon::StatusWhat>(in_.u8() % 4);
      r.flags = in_.u8() % 3;
      body.resize(sizeof(r));
      std::memcpy(body.data(), &r, sizeof(r));
    } else if (type != ipc::MsgType::Finalize) {
      ipc::GroupRequest r{group_name()};
      body.resize(sizeof(r));
      std::memcpy(body.data(), &r, sizeof(r));
    }
    ipc::MsgHeader h{type, static_cast<uint32_t>(body.size())};
    if (mode & 2) h.length = in_.u32();
    std::vector<uint8_t> packet(sizeof(h) + body.size());
    std::memcpy(packet.data(), &h, sizeof(h));
    if (!body.empty()) std::memcpy(packet.data() + sizeof(h), body.data(), body.size());
    send_packet(packet.data(), (mode & 4) ? in_.below(packet.size() + 1) : packet.size());
    if (!alive_) return;
    std::vector<uint8_t> reply;
    std::vector<int> fds;
    await_reply(type, &reply, &fds);
    for (int fd : fds) close(fd);
    if (std::getenv("RCPG_FUZZ_TRACE") && reply.size() >= 4)
      std::fprintf(stderr, "client: request %u -> status %d (%zu bytes)\n",
                   static_cast<unsigned>(type), *reinterpret_cast<const int32_t*>(reply.data()),
                   reply.size());
    if (type == ipc::MsgType::Finalize && alive_) {
      // The daemon closes a finalized client.
      char c;
      pollfd p{sock_, POLLIN, 0};
      FUZZ_CHECK(poll(&p, 1, kReplyTimeoutMs) == 1);
      while (recv(sock_, &c, 1, 0) > 0) {
      }
      alive_ = false;
    }
  }

  // Appends one record at our producer position (published by publish()).
  void record() {
    if (!seg_) return;
    uint8_t mode = in_.u8();
    ipc::RecordType type = static_cast<ipc::RecordType>(in_.u8() % 4);
    if (mode & 1) type = static_cast<ipc::RecordType>(in_.u8());
    std::vector<uint8_t> body;
    if (type == ipc::RecordType::ZcbMcast) {
      ipc::ZcbRecord z;
      z.guarantee = in_.u8() % 5;
      z.pool_offset =
          (mode & 2) ? in_.u64() : hdr_->pool_offset + ipc::kZcbHeadroom + 64 * in_.below(512);
      z.bytes = (mode & 4) ? in_.u64() : in_.below(20000);
      z.ticket = ++ticket_;
      body.resize(sizeof(z));
      std::memcpy(body.data(), &z, sizeof(z));
    } else {
      ipc::McastRecord m;
      m.guarantee = in_.u8() % 5;
      size_t len = in_.below(6000);
      m.flags = (mode & 2) ? in_.u32() : (type == ipc::RecordType::McastChunk ? in_.u8() % 8 : 0);
      m.total_bytes = (mode & 4) ? in_.u64() : len;
      body.resize(sizeof(m) + len, 'x');
      std::memcpy(body.data(), &m, sizeof(m));
    }
    uint32_t length = static_cast<uint32_t>(body.size());
    if (mode & 8) length = in_.u32();
    size_t need = sizeof(ipc::RecordHeader) + ipc::ipc_align(body.size());
    if (need > req_size_ / 2) return;
    size_t off = pending_ & (req_size_ - 1);
    if (req_size_ - off < need) {
      ipc::RecordHeader pad{ipc::RecordType::Pad,
                            static_cast<uint32_t>(req_size_ - off - sizeof(ipc::RecordHeader))};
      std::memcpy(req_ + off, &pad, sizeof(pad));
      pending_ += req_size_ - off;
      off = 0;
    }
    uint64_t tail = hdr_->request.tail.value.load();
    if (pending_ + need - tail > req_size_) return;  // full: the daemon frees it as it reads
    ipc::RecordHeader rh{type, length};
    std::memcpy(req_ + off, &rh, sizeof(rh));
    std::memcpy(req_ + off + sizeof(rh), body.data(), body.size());
    pending_ += need;
  }

  void publish(bool hostile) {
    if (!seg_) return;
    uint64_t head = hostile ? in_.u64() : pending_;
    hdr_->request.head.value.store(head, std::memory_order_seq_cst);
    uint64_t one = 1;
    [[maybe_unused]] ssize_t r = write(doorbell_, &one, sizeof(one));
  }

  void shared_words() {
    if (!seg_) return;
    uint64_t v = in_.u64();
    switch (in_.u8() % 5) {
      case 0:
        hdr_->event.tail.value.store(v);
        break;
      case 1:
        hdr_->released.value.store(v);
        break;
      case 2:
        hdr_->request.tail.value.store(v);
        break;
      case 3:
        hdr_->event.sleeping.value.store(v & 1);
        break;
      default:
        hdr_->request.sleeping.value.store(v & 1);
        break;
    }
  }

  void pool_bytes() {
    if (!seg_) return;
    uint64_t off = hdr_->pool_offset + in_.below(static_cast<uint32_t>(hdr_->pool_bytes));
    auto b = in_.bytes(in_.below(256));
    size_t n = std::min<size_t>(b.size(), hdr_->pool_offset + hdr_->pool_bytes - off);
    std::memcpy(seg_ + off, b.data(), n);
  }

  // Reads the event ring as a well-behaved client; the daemon wrote it, so
  // every record must be well-formed.
  void consume_events() {
    if (!seg_) return;
    uint64_t head = hdr_->event.head.value.load(std::memory_order_acquire);
    uint64_t tail = hdr_->event.tail.value.load();
    if (tail != ev_tail_) return;  // we scribbled on it: the daemon judges that
    FUZZ_CHECK(head >= ev_tail_ && head - ev_tail_ <= ev_size_);
    while (ev_tail_ < head) {
      size_t off = ev_tail_ & (ev_size_ - 1);
      ipc::RecordHeader h;
      std::memcpy(&h, ev_ + off, sizeof(h));
      size_t span = sizeof(h) + ipc::ipc_align(h.length);
      FUZZ_CHECK(span <= ev_size_ - off && span <= head - ev_tail_);
      const std::byte* b = ev_ + off + sizeof(h);
      switch (h.type) {
        case ipc::RecordType::Pad:
          FUZZ_CHECK(span == ev_size_ - off);
          break;
        case ipc::RecordType::Deliver: {
          ipc::DeliverRecord d;
          FUZZ_CHECK(h.length >= sizeof(d));
          std::memcpy(&d, b, sizeof(d));
          if (d.source == ipc::DeliverSource::Inline) {
            FUZZ_CHECK(d.bytes == h.length - sizeof(d));
          } else {
            FUZZ_CHECK(d.source == ipc::DeliverSource::Log && log_);
            FUZZ_CHECK(d.log_offset <= log_bytes_ && d.bytes <= log_bytes_ - d.log_offset);
            released_ = std::max(released_, d.position);
          }
          FUZZ_CHECK(d.bytes <= d.total_bytes);
          FUZZ_CHECK((d.flags & ~uint32_t{7}) == 0);
          break;
        }
        case ipc::RecordType::Confchg: {
          ipc::ConfchgRecord c;
          FUZZ_CHECK(h.length >= sizeof(c));
          std::memcpy(&c, b, sizeof(c));
          FUZZ_CHECK(c.group.length <= ipc::kMaxGroupName);
          uint64_t n = uint64_t{c.member_count} + c.left_count + c.joined_count;
          FUZZ_CHECK(h.length == sizeof(c) + n * sizeof(ipc::MemberEntry));
          FUZZ_CHECK(c.left_count + c.joined_count == 1);
          break;
        }
        case ipc::RecordType::TotemConfchg: {
          ipc::TotemRecord t;
          FUZZ_CHECK(h.length >= sizeof(t));
          std::memcpy(&t, b, sizeof(t));
          FUZZ_CHECK(h.length == sizeof(t) + uint64_t{t.count} * 4);
          break;
        }
        default:
          FUZZ_CHECK(!"event record of a known type");
      }
      ev_tail_ += span;
    }
    hdr_->event.tail.value.store(ev_tail_, std::memory_order_release);
    if (released_) hdr_->released.value.store(released_, std::memory_order_release);
  }

  Input& in_;
  int sock_ = -1, doorbell_ = -1;
  bool alive_ = true;
  ipc::HelloReply rep_{};
  std::byte* seg_ = nullptr;
  size_t seg_bytes_ = 0;
  std::byte* log_ = nullptr;
  size_t log_bytes_ = 0;
  ipc::SegmentHeader* hdr_ = nullptr;
  std::byte *req_ = nullptr, *ev_ = nullptr;
  size_t req_size_ = 0, ev_size_ = 0;
  uint64_t pending_ = 0, ev_tail_ = 0, released_ = 0, ticket_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  signal(SIGPIPE, SIG_IGN);
  std::string dir = "/tmp/rcpg-fuzz-daemon-" + std::to_string(getpid());
  mkdir(dir.c_str(), 0700);
  g_socket = dir + "/rcpgd.sock";
  std::thread(daemon_thread).detach();
  while (!g_daemon_running) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  ClientSession s(in);
  s.run();
  return 0;
}
