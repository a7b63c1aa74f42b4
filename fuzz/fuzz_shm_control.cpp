// transport/shm: the setup socket's control messages (shm_control.h) and the
// shared-memory notification ring, as a hostile peer can drive them.
//
// Each input makes a real shm endpoint (node 1) and plays its peer (node 2)
// over a raw SOCK_SEQPACKET socket: either the endpoint listens and we
// connect, or the endpoint connects to our listener. The input is a script
// of steps: handshakes (signed with the cluster key, optionally tampered
// with), Setup / Region / Deregister / Ready messages with chosen header
// fields and chosen descriptors (sealed or unsealed memfds of chosen sizes,
// rings with right or wrong geometry, eventfds), raw packets, writes into
// the endpoint's notification ring, one-sided operations the endpoint posts
// against the regions we announced, and our death. Oracles: no crash, no
// leak, completions of Recv never exceed the ring's payload size, and an
// operation that completes Ok stayed inside the region we announced.
#include <fcntl.h>
#include <sodium.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fuzz/fuzz_input.h"
#include "transport/auth.h"
#include "transport/shm/shm_control.h"
#include "transport/shm/shm_doorbell.h"
#include "transport/shm/shm_endpoint.h"
#include "transport/shm/shm_ring.h"

using namespace rcpg::transport;
using namespace rcpg::transport::shm;
using rcpg::fuzz::Input;

namespace {

constexpr NodeId kSelf = 1, kPeer = 2;
constexpr uint32_t kSlots = 4, kPayloadCap = 128;
constexpr size_t kLocalRegion = 8192;
constexpr size_t kMaxMemfd = size_t{1} << 20;  // keeps the fuzzer's own memory bounded

ClusterKey cluster_key() {
  ClusterKey k;
  for (size_t i = 0; i < k.size(); ++i) k[i] = static_cast<uint8_t>(i * 7 + 1);
  return k;
}

void sign(const ClusterKey& key, Hello& h) {
  h.mac = {};
  crypto_generichash(h.mac.data(), h.mac.size(), reinterpret_cast<const uint8_t*>(&h), sizeof(h),
                     key.data(), key.size());
}

int make_memfd(size_t bytes, bool sealed, std::byte** map_out = nullptr) {
  int fd = memfd_create("fuzz-peer", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return -1;
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    close(fd);
    return -1;
  }
  if (map_out) {
    void* p = bytes ? mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
    *map_out = p == MAP_FAILED ? nullptr : static_cast<std::byte*>(p);
  }
  if (sealed) fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
  return fd;
}

void send_packet(int sock, const MsgHeader& h, std::span<const uint8_t> body,
                 const std::vector<int>& fds) {
  std::vector<uint8_t> bytes(sizeof(h) + body.size());
  std::memcpy(bytes.data(), &h, sizeof(h));
  if (!body.empty()) std::memcpy(bytes.data() + sizeof(h), body.data(), body.size());
  iovec iov{bytes.data(), bytes.size()};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * 8)];
  if (!fds.empty()) {
    mh.msg_control = cbuf;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cm), fds.data(), sizeof(int) * fds.size());
  }
  [[maybe_unused]] ssize_t r = sendmsg(sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
}

struct Announced {
  uint64_t base = 0, size = 0;
  int fd = -1;
};

class Session {
 public:
  Session(Input& in, bool outbound) : in_(in), outbound_(outbound), key_(cluster_key()) {}
  ~Session() {
    ep_.reset();  // before our side goes: the endpoint may still read our memory
    if (sock_ >= 0) close(sock_);
    if (listener_ >= 0) close(listener_);
    if (ring_) munmap(ring_, ring_bytes_);
    if (db_) munmap(db_, db_bytes_);
    for (auto& [k, a] : announced_) close(a.fd);
  }

  bool start() {
    static unsigned serial = 0;
    std::string base =
        "@rcpg-fuzz-shm-" + std::to_string(getpid()) + "-" + std::to_string(++serial);
    EndpointConfig ec;
    ec.node_id = kSelf;
    ec.cluster_key = key_;
    ec.allowed_peers = {kSelf, kPeer};
    ec.recv_queue_depth = kSlots;
    ec.max_send_bytes = kPayloadCap;
    ec.send_queue_depth = 16;
    ec.log = [](std::string_view) {};
    if (!outbound_) ec.listen_address = base + "-ep";
    std::string why;
    ep_ = make_shm_endpoint(ec, why);
    if (!ep_) return false;
    local_ = ep_->register_region(kLocalRegion);
    if (!local_) return false;
    std::string addr = base + (outbound_ ? "-peer" : "-ep");
    sockaddr_un sa{};
    socklen_t len = 0;
    if (!make_address(addr, sa, len, why)) return false;
    if (outbound_) {
      listener_ = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (bind(listener_, reinterpret_cast<sockaddr*>(&sa), len) != 0 || listen(listener_, 4) != 0)
        return false;
      ep_->connect(addr, kPeer);
      sock_ = accept4(listener_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    } else {
      sock_ = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (connect(sock_, reinterpret_cast<sockaddr*>(&sa), len) != 0) return false;
    }
    return sock_ >= 0;
  }

  void run() {
    for (int steps = 0; steps < 48 && !in_.empty(); ++steps) {
      switch (in_.u8() % 11) {
        case 0:
          hello();
          break;
        case 1:
          raw_packet();
          break;
        case 2:
          setup();
          break;
        case 3:
          region();
          break;
        case 4: {
          MsgHeader h;
          h.type = MsgType::Deregister;
          h.key = in_.flag() ? in_.u32() : last_rkey_;
          if (announced_.count(h.key)) {
            close(announced_[h.key].fd);
            announced_.erase(h.key);
          }
          send_packet(sock_, h, {}, {});
          break;
        }
        case 5: {
          MsgHeader h;
          h.type = MsgType::Ready;
          send_packet(sock_, h, {}, {});
          break;
        }
        case 6:
          pump();
          break;
        case 7:
          ring_write();
          break;
        case 8:
          endpoint_op();
          break;
        case 9:
          pump();
          endpoint_op();
          break;
        default:
          if (sock_ >= 0) close(sock_);
          sock_ = -1;
          pump();
          return;
      }
    }
    pump();
  }

 private:
  // Drives the endpoint (control messages, events, completions) and reads
  // what it sent us.
  void pump() {
    for (int round = 0; round < 3; ++round) {
      ep_->wait(std::chrono::microseconds(0));
      while (auto ev = ep_->next_event()) {
        if (ev->type == EventType::Connected) conn_ = ev->conn;
        if (ev->type != EventType::Connected && ev->conn == conn_) conn_ = kNoConn;
        if (ev->type == EventType::Connected) FUZZ_CHECK(ev->peer == kPeer);
      }
      Completion wc[16];
      size_t n = ep_->poll(wc);
      for (size_t i = 0; i < n; ++i) check_completion(wc[i]);
      read_socket();
    }
  }

  void check_completion(const Completion& c) {
    if (c.op == Op::Recv) {
      FUZZ_CHECK(c.len <= kPayloadCap);
      volatile uint8_t sink = 0;
      for (uint32_t i = 0; i < c.len; ++i) sink = sink ^ static_cast<uint8_t>(c.data[i]);
      return;
    }
    if (c.op == Op::RecvImm || c.status != Status::Ok || c.wr_id == 0) return;
    // Our own one-sided operation succeeded: it must have stayed inside the
    // region we announced under that rkey.
    auto it = pending_.find(c.wr_id);
    FUZZ_CHECK(it != pending_.end());
    const Pending& p = it->second;
    if (p.len != 0 && p.op != Op::Send) {
      auto a = announced_.find(p.rkey);
      FUZZ_CHECK(a != announced_.end());
      FUZZ_CHECK(p.addr >= a->second.base);
      uint64_t start = p.addr - a->second.base;
      FUZZ_CHECK(start <= a->second.size && p.off <= a->second.size - start &&
                 p.len <= a->second.size - start - p.off);
    }
    pending_.erase(it);
  }

  void read_socket() {
    if (sock_ < 0) return;
    for (;;) {
      InMsg m;
      int err = recv_msg(sock_, m);
      if (err != 0) return;
      if (m.h.type == MsgType::HelloRequest && m.body_len >= sizeof(Hello))
        std::memcpy(&request_, m.body.data(), sizeof(Hello));
      if (m.h.type == MsgType::Setup && m.nfds == 3 && !ring_) attach_ring(m);
    }
  }

  // The endpoint's ring for our notifications: we are its producer.
  void attach_ring(InMsg& m) {
    RingGeometry g = RingGeometry::make(m.h.key, m.h.aux);
    FUZZ_CHECK(g.slots == kSlots && g.payload_cap == kPayloadCap);
    struct stat st {};
    if (fstat(m.fds[0], &st) != 0 || static_cast<size_t>(st.st_size) < g.bytes()) return;
    void* p = mmap(nullptr, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, m.fds[0], 0);
    if (p == MAP_FAILED) return;
    ring_ = static_cast<std::byte*>(p);
    ring_bytes_ = static_cast<size_t>(st.st_size);
    geo_ = g;
    if (fstat(m.fds[1], &st) == 0 && st.st_size > 0) {
      p = mmap(nullptr, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, m.fds[1], 0);
      if (p != MAP_FAILED) {
        db_ = static_cast<std::byte*>(p);
        db_bytes_ = static_cast<size_t>(st.st_size);
      }
    }
  }

  void hello() {
    Hello h;
    if (outbound_) {
      h = request_;
      h.kind = 1;
      h.from = request_.to;
      h.to = request_.from;
    } else {
      h.kind = 0;
      h.from = kPeer;
      h.to = kSelf;
      h.nonce = in_.u64();
    }
    uint8_t mode = in_.u8();
    if (mode & 1) h.from = in_.u8() % 4;
    if (mode & 2) h.nonce ^= in_.u8();
    sign(key_, h);
    auto* b = reinterpret_cast<uint8_t*>(&h);
    if (mode & 4) b[in_.u8() % sizeof(h)] ^= in_.u8();
    MsgHeader mh;
    mh.type = outbound_ ? MsgType::HelloReply : MsgType::HelloRequest;
    if (mode & 8) mh.type = MsgType::Reject;
    size_t len = (mode & 16) ? in_.below(sizeof(h) + 1) : sizeof(h);
    send_packet(sock_, mh, {b, len}, {});
  }

  // Descriptors of the kinds a peer could pass.
  int any_fd(uint8_t kind) {
    switch (kind % 6) {
      case 0:
        return make_memfd(in_.below(16384), true);
      case 1:
        return make_memfd(in_.below(16384), false);
      case 2:
        return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      case 3:
        return open("/dev/null", O_RDWR | O_CLOEXEC);
      case 4: {
        int fd = make_memfd(4096, false);
        if (fd >= 0) fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
        return fd;
      }
      default:
        return socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    }
  }

  void send_with_fds(const MsgHeader& h, std::span<const uint8_t> body, std::vector<int> fds) {
    send_packet(sock_, h, body, fds);
    for (int fd : fds)
      if (fd >= 0) close(fd);
  }

  void raw_packet() {
    MsgHeader h;
    h.magic = in_.flag() ? in_.u32() : kMsgMagic;
    h.type = static_cast<MsgType>(in_.u8() % 9);
    h.key = in_.u32();
    h.aux = in_.u32();
    h.size = in_.u64();
    h.base = in_.u64();
    auto body = in_.bytes(in_.below(kMaxBody + 8));
    std::vector<int> fds;
    for (uint8_t n = in_.u8() % 6; n > 0; --n) fds.push_back(any_fd(in_.u8()));
    if (in_.flag()) {
      // Shorter than a header.
      auto b = in_.bytes(in_.below(sizeof(MsgHeader)));
      if (!b.empty()) send(sock_, b.data(), b.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      for (int fd : fds) close(fd);
      return;
    }
    send_with_fds(h, body, fds);
  }

  void setup() {
    uint8_t mode = in_.u8();
    uint32_t slots = (mode & 1) ? in_.u32() : kSlots;
    uint32_t cap = (mode & 2) ? in_.u32() : kPayloadCap;
    RingGeometry g = RingGeometry::make(slots, cap);
    size_t bytes = (mode & 4) ? in_.below(65536) : g.bytes();
    if (bytes > kMaxMemfd) bytes = in_.below(65536);
    std::byte* map = nullptr;
    int ring = make_memfd(bytes, !(mode & 8), &map);
    if (map) {
      if (!(mode & 16) && bytes >= sizeof(RingHeader)) ring_init(map, g);
      if (mode & 32) {
        auto junk = in_.bytes(in_.below(256));
        std::memcpy(map, junk.data(), std::min(junk.size(), bytes));
      }
      munmap(map, bytes);
    }
    std::byte* dbm = nullptr;
    int db = make_memfd((mode & 64) ? in_.below(256) : 4096, true, &dbm);
    if (dbm) {
      if (!(mode & 128)) reinterpret_cast<Doorbell*>(dbm)->magic = kDoorbellMagic;
      munmap(dbm, 4096);
    }
    uint8_t fdmode = in_.u8();
    int third = (fdmode & 1) ? any_fd(in_.u8()) : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    std::vector<int> fds = {ring, db, third};
    if (fdmode & 2) fds.resize(in_.below(3));
    MsgHeader h;
    h.type = MsgType::Setup;
    h.key = g.slots;
    h.aux = g.payload_cap;
    send_with_fds(h, {}, fds);
  }

  void region() {
    uint8_t mode = in_.u8();
    size_t file = (mode & 1) ? in_.below(65536) : 4096 * (1 + in_.u8() % 4);
    uint64_t size = (mode & 2) ? in_.u64() : file - in_.below(static_cast<uint32_t>(file));
    uint64_t base = (mode & 4) ? in_.u64() : 0x10000 * (1 + in_.u8());
    uint32_t rkey = (mode & 8) ? in_.u32() : (1u << 16) | in_.u8() % 8;
    int fd = make_memfd(file, !(mode & 16));
    MsgHeader h;
    h.type = MsgType::Region;
    h.key = rkey;
    h.size = size;
    h.base = base;
    std::vector<int> fds;
    if (!(mode & 32) && fd >= 0) fds.push_back(fd);
    send_packet(sock_, h, {}, fds);
    if (fd < 0) return;
    if (announced_.count(rkey)) close(announced_[rkey].fd);
    announced_[rkey] = Announced{base, size, fd};  // kept: the endpoint may map it
    last_rkey_ = rkey;
  }

  void ring_write() {
    if (!ring_) return;
    uint8_t mode = in_.u8();
    uint32_t pos = (mode & 1) ? in_.below(kSlots) : static_cast<uint32_t>(next_ % kSlots);
    auto* s = reinterpret_cast<SlotHeader*>(ring_ + sizeof(RingHeader) + size_t{pos} * geo_.stride);
    s->kind = (mode & 2) ? in_.u32() : 1 + in_.u8() % 2;
    s->imm = in_.u32();
    s->len = (mode & 4) ? in_.u32() : in_.below(kPayloadCap + 1);
    auto payload = in_.bytes(in_.below(kPayloadCap));
    std::memcpy(s + 1, payload.data(), payload.size());
    uint64_t seq = (mode & 8) ? in_.u64() : next_ + 1;
    s->seq.store(seq, std::memory_order_seq_cst);
    if (!(mode & 8)) ++next_;
    if (mode & 16) reinterpret_cast<RingHeader*>(ring_)->head.store(in_.u64());
    if (db_ && (mode & 32)) reinterpret_cast<Doorbell*>(db_)->ctrl_hint.store(1);
  }

  void endpoint_op() {
    if (conn_ == kNoConn) return;
    uint8_t mode = in_.u8();
    RemoteRegion r;
    auto a = announced_.find(last_rkey_);
    r.rkey = (mode & 1) || a == announced_.end() ? in_.u32() : last_rkey_;
    r.addr = (mode & 2) || a == announced_.end() ? in_.u64() : a->second.base + in_.below(8192);
    r.length = in_.u64();
    uint64_t off = (mode & 4) ? in_.u64() : in_.below(8192);
    size_t len = (mode & 8) ? in_.u64() : in_.below(8192);
    size_t loff = in_.below(kLocalRegion);
    if (loff + len > kLocalRegion) len = kLocalRegion - loff;
    uint64_t wr = ++wr_;
    bool ok = false;
    Op op = Op::Write;
    switch ((mode >> 4) % 4) {
      case 0:
        ok = ep_->post_write(conn_, *local_, loff, r, off, len, wr, true);
        break;
      case 1:
        op = Op::WriteImm;
        ok = ep_->post_write_imm(conn_, *local_, loff, r, off, len, in_.u32(), wr, true);
        break;
      case 2:
        op = Op::Read;
        ok = ep_->post_read(conn_, *local_, loff, r, off, len, wr);
        break;
      default: {
        op = Op::Send;
        auto b = in_.bytes(in_.below(kPayloadCap + 16));
        ok = ep_->post_send(conn_, std::as_bytes(b), wr);
        break;
      }
    }
    if (ok) pending_[wr] = Pending{op, r.rkey, r.addr, off, len};
    pump();
  }

  struct Pending {
    Op op;
    uint32_t rkey;
    uint64_t addr, off, len;
  };

  Input& in_;
  bool outbound_;
  ClusterKey key_;
  std::unique_ptr<Endpoint> ep_;
  Region* local_ = nullptr;
  int sock_ = -1, listener_ = -1;
  ConnId conn_ = kNoConn;
  Hello request_{};
  std::byte* ring_ = nullptr;
  size_t ring_bytes_ = 0;
  RingGeometry geo_{};
  uint64_t next_ = 0;
  std::byte* db_ = nullptr;
  size_t db_bytes_ = 0;
  std::map<uint32_t, Announced> announced_;
  uint32_t last_rkey_ = 0;
  std::map<uint64_t, Pending> pending_;
  uint64_t wr_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (sodium_init() < 0) std::abort();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  Session s(in, in.flag());
  if (s.start()) s.run();
  return 0;
}
