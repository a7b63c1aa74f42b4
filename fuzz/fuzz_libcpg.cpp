// api/libcpg: what a hostile or broken daemon can make libcpg.so.4 do.
//
// A fake rcpgd (a thread of the fuzzer, listening on $RCPG_SOCKET) answers
// a real libcpg client according to the input: the Hello reply (status,
// sizes, descriptors) with a shared segment whose geometry is right or
// anything, an event ring pre-filled with Deliver / Confchg / TotemConfchg /
// Pad / unknown records with any lengths, flags, totals, log offsets and
// member counts, and replies to every later request (Join, MembershipGet,
// Iterate, Leave, Finalize) with any status, counts, lengths and types,
// optionally preceded by Wake packets. The client calls the CPG API as an
// application would (initialize, join, dispatch, membership_get, the
// iteration calls, mcast, leave, finalize); its callbacks read every byte
// they are handed. Oracles: no crash (ASan/UBSan), no hang, no leak.
#include <corosync/cpg.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "api/ipc/protocol.h"
#include "fuzz/fuzz_input.h"

using namespace rcpg;
using rcpg::fuzz::Input;

namespace {

constexpr size_t kHeader = 4096, kRing = 8192, kPool = 8192, kLog = 16384;

std::string g_socket;
int g_listener = -1;

// What the fake daemon will do, decided by the main thread from the input
// before the client starts (the daemon thread never reads the input).
struct Script {
  ipc::HelloReply hello{};
  bool send_segment = true, send_log = true, send_doorbell = true;
  size_t segment_file = 0, log_file = kLog;
  // The segment header's geometry part (SegmentHeader up to its rings).
  struct Geometry {
    uint32_t magic = ipc::kMagic;
    uint32_t version = ipc::kVersion;
    uint64_t segment_bytes = 0;
    uint64_t request_offset = 0, request_bytes = 0;
    uint64_t event_offset = 0, event_bytes = 0;
    uint64_t pool_offset = 0, pool_bytes = 0;
  } geometry;
  static_assert(sizeof(Geometry) == offsetof(ipc::SegmentHeader, request));
  std::vector<uint8_t> event_ring;  // initial contents of the event ring
  uint64_t event_head = 0;
  uint64_t request_tail = 0;
  std::vector<uint8_t> log_bytes;
  struct Reply {
    uint32_t wakes = 0;
    bool wrong_type = false;
    std::vector<uint8_t> body;
    int64_t length_delta = 0;
  };
  std::vector<Reply> replies;
};

void append(std::vector<uint8_t>& v, const void* p, size_t n) {
  auto* b = static_cast<const uint8_t*>(p);
  v.insert(v.end(), b, b + n);
}

// One event record (header + body, padded to 8) in the ring image.
void event_record(Input& in, std::vector<uint8_t>& ring) {
  uint8_t mode = in.u8();
  std::vector<uint8_t> body;
  ipc::RecordType type;
  switch (mode % 5) {
    case 0: {
      type = ipc::RecordType::Deliver;
      ipc::DeliverRecord d;
      d.nodeid = in.u8();
      d.pid = in.u8();
      d.source = static_cast<ipc::DeliverSource>((mode & 8) ? in.u32() : in.u8() % 2);
      d.flags = (mode & 16) ? in.u32() : (in.flag() ? in.u8() % 8 : 0);
      size_t inline_len = in.below(600);
      d.bytes = (mode & 32)
                    ? in.u64()
                    : (d.source == ipc::DeliverSource::Inline ? inline_len : in.below(kLog + 64));
      d.total_bytes = (mode & 64) ? in.u64() : d.bytes + (d.flags ? in.below(2000) : 0);
      d.log_offset = (mode & 128) ? in.u64() : in.below(kLog + 64);
      d.position = in.u32();
      append(body, &d, sizeof(d));
      if (d.source == ipc::DeliverSource::Inline) body.resize(body.size() + inline_len, 'p');
      break;
    }
    case 1: {
      type = ipc::RecordType::Confchg;
      ipc::ConfchgRecord c;
      c.group.length = (mode & 8) ? in.u32() : in.below(ipc::kMaxGroupName + 1);
      c.member_count = (mode & 16) ? in.u32() : in.u8() % 8;
      c.left_count = (mode & 32) ? in.u32() : in.u8() % 3;
      c.joined_count = (mode & 64) ? in.u32() : in.u8() % 3;
      append(body, &c, sizeof(c));
      size_t n = (mode & 128)
                     ? in.below(16)
                     : size_t{c.member_count % 64} + c.left_count % 64 + c.joined_count % 64;
      for (size_t i = 0; i < n; ++i) {
        ipc::MemberEntry e{in.u8(), in.u8(), static_cast<uint32_t>(in.u8() % 6)};
        append(body, &e, sizeof(e));
      }
      break;
    }
    case 2: {
      type = ipc::RecordType::TotemConfchg;
      ipc::TotemRecord t;
      t.ring_seq = in.u64();
      t.count = (mode & 8) ? in.u32() : in.u8() % 8;
      append(body, &t, sizeof(t));
      size_t n = (mode & 16) ? in.below(16) : t.count % 64;
      for (size_t i = 0; i < n; ++i) {
        uint32_t id = in.u8();
        append(body, &id, sizeof(id));
      }
      break;
    }
    case 3:
      type = ipc::RecordType::Pad;
      body.resize(in.below(64));
      break;
    default: {
      type = static_cast<ipc::RecordType>(in.u32());
      auto raw = in.bytes(in.below(64));
      body.assign(raw.begin(), raw.end());
      break;
    }
  }
  ipc::RecordHeader h{type, static_cast<uint32_t>(body.size())};
  if (in.u8() == 0xff) h.length = in.u32();
  append(ring, &h, sizeof(h));
  append(ring, body.data(), body.size());
  ring.resize(ipc::ipc_align(ring.size()));
}

Script make_script(Input& in) {
  Script s;
  uint8_t mode = in.u8();
  ipc::HelloReply& h = s.hello;
  h.status = (mode & 1) ? static_cast<ipc::Status>(in.u8() % 30) : ipc::Status::Ok;
  h.nodeid = in.u8();
  h.max_atomic_msg = (mode & 2) ? in.u32() : 1024;
  h.max_msg_bytes = (mode & 2) ? in.u32() : 0;
  h.ring_id_seq = in.u8();
  Script::Geometry& g = s.geometry;
  g.segment_bytes = kHeader + 2 * kRing + kPool;
  g.request_offset = kHeader;
  g.request_bytes = kRing;
  g.event_offset = kHeader + kRing;
  g.event_bytes = kRing;
  g.pool_offset = kHeader + 2 * kRing;
  g.pool_bytes = kPool;
  if (mode & 4) {  // any geometry
    g.magic = in.flag() ? in.u32() : g.magic;
    g.segment_bytes = in.below(2 * g.segment_bytes);
    g.request_offset = in.flag() ? in.u64() : in.below(32768);
    g.request_bytes = in.flag() ? in.u64() : uint64_t{1} << in.below(16);
    g.event_offset = in.flag() ? in.u64() : in.below(32768);
    g.event_bytes = in.flag() ? in.u64() : uint64_t{1} << in.below(16);
    g.pool_offset = in.flag() ? in.u64() : in.below(32768);
    g.pool_bytes = in.flag() ? in.u64() : in.below(32768);
  }
  h.segment_bytes = (mode & 8) ? in.u64() % (4 * g.segment_bytes + 1) : g.segment_bytes;
  s.segment_file = (mode & 16) ? in.below(65536) : h.segment_bytes;
  s.send_log = !(mode & 32);
  h.log_bytes = s.send_log ? ((mode & 64) ? in.below(2 * kLog) : kLog) : 0;
  if (mode & 128) {
    uint8_t fds = in.u8();
    s.send_segment = fds & 1;
    s.send_log = fds & 2;
    s.send_doorbell = fds & 4;
  }
  for (int n = in.u8() % 12; n > 0; --n) event_record(in, s.event_ring);
  if (s.event_ring.size() > kRing) s.event_ring.resize(kRing);
  s.event_head = in.u8() == 0xff ? in.u64() : s.event_ring.size();
  s.request_tail = in.u8() == 0xff ? in.u64() : 0;
  auto log = in.bytes(in.below(64));
  s.log_bytes.assign(log.begin(), log.end());
  for (int n = in.u8() % 10; n > 0; --n) {
    Script::Reply r;
    uint8_t rm = in.u8();
    r.wakes = rm % 3;
    r.wrong_type = (rm & 4) && (rm & 8);
    int32_t status = (rm & 16) ? static_cast<int32_t>(in.u8() % 30) : 1;
    append(r.body, &status, sizeof(status));
    uint32_t count = (rm & 32) ? in.u32() : in.u8() % 6;
    append(r.body, &count, sizeof(count));
    size_t entry = (rm & 64) ? sizeof(ipc::IterationEntry) : sizeof(ipc::MemberEntry);
    size_t n_entries = (rm & 128) ? in.below(8) : count % 64;
    for (size_t i = 0; i < n_entries * entry / 4; ++i) {
      uint32_t w = (i % 35 == 0) ? in.u8() : in.u8() % 4;  // group lengths mostly sane
      append(r.body, &w, sizeof(w));
    }
    if (in.u8() == 0xff) r.length_delta = static_cast<int8_t>(in.u8());
    s.replies.push_back(std::move(r));
  }
  return s;
}

int memfd_of(size_t bytes) {
  int fd = memfd_create("fuzz-daemon", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd >= 0 && ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

void send_packet(int sock, const std::vector<uint8_t>& bytes, const std::vector<int>& fds) {
  iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * 4)];
  if (!fds.empty()) {
    mh.msg_control = cbuf;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cm), fds.data(), sizeof(int) * fds.size());
  }
  [[maybe_unused]] ssize_t r = sendmsg(sock, &mh, MSG_NOSIGNAL);
}

// The fake daemon: one client connection, served by the script until EOF.
void serve(const Script& s) {
  pollfd p{g_listener, POLLIN, 0};
  if (poll(&p, 1, 5000) != 1) return;
  int sock = accept4(g_listener, nullptr, nullptr, SOCK_CLOEXEC);
  if (sock < 0) return;
  std::vector<uint8_t> buf(ipc::kMaxControlBytes);
  size_t next_reply = 0;
  bool hello_done = false;
  for (;;) {
    ssize_t n = recv(sock, buf.data(), buf.size(), 0);
    if (n < static_cast<ssize_t>(sizeof(ipc::MsgHeader))) break;
    ipc::MsgHeader req;
    std::memcpy(&req, buf.data(), sizeof(req));
    std::vector<uint8_t> out;
    if (!hello_done) {
      hello_done = true;
      std::vector<int> fds;
      int seg = memfd_of(s.segment_file), log = memfd_of(s.log_file);
      int db = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      if (seg >= 0 && s.segment_file >= kHeader) {
        void* m = mmap(nullptr, s.segment_file, PROT_READ | PROT_WRITE, MAP_SHARED, seg, 0);
        if (m != MAP_FAILED) {
          auto* base = static_cast<uint8_t*>(m);
          auto* hdr = new (base) ipc::SegmentHeader();
          std::memcpy(static_cast<void*>(hdr), &s.geometry, offsetof(ipc::SegmentHeader, request));
          hdr->event.head.value.store(s.event_head);
          hdr->request.tail.value.store(s.request_tail);
          if (!s.event_ring.empty() && s.geometry.event_offset < s.segment_file &&
              s.event_ring.size() <= s.segment_file - s.geometry.event_offset)
            std::memcpy(base + s.geometry.event_offset, s.event_ring.data(), s.event_ring.size());
          munmap(m, s.segment_file);
        }
      }
      if (log >= 0 && !s.log_bytes.empty()) [[maybe_unused]]
        ssize_t w = pwrite(log, s.log_bytes.data(), s.log_bytes.size(), 0);
      if (s.send_segment && seg >= 0) fds.push_back(seg);
      if (s.send_log && log >= 0) fds.push_back(log);
      if (s.send_doorbell && db >= 0) fds.push_back(db);
      ipc::MsgHeader h{ipc::MsgType::Hello, sizeof(ipc::HelloReply)};
      append(out, &h, sizeof(h));
      append(out, &s.hello, sizeof(s.hello));
      send_packet(sock, out, fds);
      for (int fd : {seg, log, db})
        if (fd >= 0) close(fd);
      continue;
    }
    Script::Reply r;
    if (next_reply < s.replies.size()) {
      r = s.replies[next_reply++];
    } else {
      int32_t ok = 1;
      append(r.body, &ok, sizeof(ok));
      r.body.resize(req.type == ipc::MsgType::Join || req.type == ipc::MsgType::Leave ||
                            req.type == ipc::MsgType::Finalize
                        ? sizeof(ipc::StatusReply)
                        : 8);
    }
    for (uint32_t w = 0; w < r.wakes; ++w) {
      ipc::MsgHeader wake{ipc::MsgType::Wake, 0};
      std::vector<uint8_t> wb(sizeof(wake));
      std::memcpy(wb.data(), &wake, sizeof(wake));
      send_packet(sock, wb, {});
    }
    ipc::MsgHeader h{r.wrong_type ? ipc::MsgType::Status : req.type,
                     static_cast<uint32_t>(r.body.size() + r.length_delta)};
    append(out, &h, sizeof(h));
    append(out, r.body.data(), r.body.size());
    send_packet(sock, out, {});
  }
  close(sock);
}

uint64_t g_sink = 0;

void on_deliver(cpg_handle_t, const cpg_name* group, uint32_t nodeid, uint32_t pid, void* msg,
                size_t len) {
  FUZZ_CHECK(group != nullptr && group->length <= CPG_MAX_NAME_LENGTH);
  FUZZ_CHECK(len == 0 || msg != nullptr);
  const auto* b = static_cast<const uint8_t*>(msg);
  for (size_t i = 0; i < len; ++i) g_sink += b[i];
  g_sink += nodeid + pid;
}

void on_confchg(cpg_handle_t, const cpg_name* group, const cpg_address* members, size_t nm,
                const cpg_address* left, size_t nl, const cpg_address* joined, size_t nj) {
  FUZZ_CHECK(group->length <= CPG_MAX_NAME_LENGTH);
  for (size_t i = 0; i < group->length; ++i) g_sink += static_cast<uint8_t>(group->value[i]);
  for (size_t i = 0; i < nm; ++i) g_sink += members[i].nodeid + members[i].pid;
  for (size_t i = 0; i < nl; ++i) g_sink += left[i].nodeid + left[i].reason;
  for (size_t i = 0; i < nj; ++i) g_sink += joined[i].nodeid + joined[i].reason;
}

void on_totem(cpg_handle_t, cpg_ring_id ring, uint32_t n, const uint32_t* members) {
  g_sink += ring.seq;
  for (uint32_t i = 0; i < n; ++i) g_sink += members[i];
}

void client(Input& in) {
  cpg_model_v1_data_t model{};
  model.model = CPG_MODEL_V1;
  model.cpg_deliver_fn = on_deliver;
  model.cpg_confchg_fn = on_confchg;
  model.cpg_totem_confchg_fn = on_totem;
  model.flags = in.flag() ? CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF : 0;
  cpg_handle_t h = 0;
  if (cpg_model_initialize(&h, CPG_MODEL_V1, reinterpret_cast<cpg_model_data_t*>(&model),
                           nullptr) != CS_OK)
    return;
  cpg_name g{};
  g.length = 3;
  std::memcpy(g.value, "grp", 3);
  cpg_join(h, &g);
  cpg_dispatch(h, CS_DISPATCH_ALL);
  cpg_address members[8];
  int n = 8;
  cpg_membership_get(h, &g, members, &n);
  cpg_iteration_handle_t it = 0;
  if (cpg_iteration_initialize(h, CPG_ITERATION_ALL, nullptr, &it) == CS_OK) {
    cpg_iteration_description_t d;
    for (int i = 0; i < 64 && cpg_iteration_next(it, &d) == CS_OK; ++i) {
      FUZZ_CHECK(d.group.length <= CPG_MAX_NAME_LENGTH);
      g_sink += d.nodeid;
    }
    cpg_iteration_finalize(it);
  }
  uint32_t max_atomic = 0;
  cpg_max_atomic_msgsize_get(h, &max_atomic);
  if (max_atomic >= 64) {
    char msg[64] = "hello";
    iovec iov{msg, sizeof(msg)};
    cpg_mcast_joined(h, CPG_TYPE_AGREED, &iov, 1);
  }
  cpg_dispatch(h, CS_DISPATCH_ONE_NONBLOCKING);
  cpg_dispatch(h, CS_DISPATCH_ALL);
  cpg_leave(h, &g);
  cpg_finalize(h);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  signal(SIGPIPE, SIG_IGN);
  g_socket = "/tmp/rcpg-fuzz-cpg-" + std::to_string(getpid()) + ".sock";
  unlink(g_socket.c_str());
  g_listener = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strcpy(sa.sun_path, g_socket.c_str());
  if (bind(g_listener, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
      listen(g_listener, 4) != 0)
    std::abort();
  setenv(ipc::kSocketEnv, g_socket.c_str(), 1);
  atexit([] { unlink(g_socket.c_str()); });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  Script script = make_script(in);
  std::thread daemon(serve, std::cref(script));
  client(in);
  daemon.join();
  return 0;
}
