#include "api_test_util.h"

#include <signal.h>
#include <sys/wait.h>

#include <cstdlib>
#include <sstream>
#include <thread>

namespace rcpg::test {

RcpgdProcess& shared_daemon() {
  static RcpgdProcess d;
  return d;
}

std::string unique_group(const std::string& tag) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "g";
  name += tag + "." + std::to_string(::getpid());
  if (name.size() > CPG_MAX_NAME_LENGTH) name = name.substr(name.size() - CPG_MAX_NAME_LENGTH);
  return name;
}

std::string Event::describe() const {
  std::ostringstream o;
  auto list = [&](const std::vector<Member>& v) {
    o << "{";
    for (auto& m : v) o << "(" << m.nodeid << "," << m.pid << "," << m.reason << ")";
    o << "}";
  };
  switch (kind) {
    case Deliver:
      o << "DELIVER " << group << " from=(" << nodeid << "," << pid << ") len=" << data.size();
      break;
    case Confchg:
      o << "CONFCHG " << group << " members=";
      list(members);
      o << " left=";
      list(left);
      o << " joined=";
      list(joined);
      break;
    case Totem:
      o << "TOTEM seq=" << ring_seq << " n=" << totem_members.size();
      break;
  }
  return o.str();
}

namespace {

Recorder* recorder_of(cpg_handle_t h) {
  void* ctx = nullptr;
  if (cpg_context_get(h, &ctx) != CS_OK) return nullptr;
  return static_cast<Recorder*>(ctx);
}

void record(cpg_handle_t h, Event e) {
  Recorder* r = recorder_of(h);
  if (r == nullptr) return;
  r->events.push_back(std::move(e));
  if (r->on_event) r->on_event(r->events.back());
}

std::vector<Member> members(const cpg_address* a, size_t n) {
  std::vector<Member> v;
  for (size_t i = 0; i < n; ++i) v.push_back({a[i].nodeid, a[i].pid, a[i].reason});
  return v;
}

void on_deliver(cpg_handle_t h, const cpg_name* g, uint32_t nodeid, uint32_t pid, void* msg,
                size_t len) {
  Event e{Event::Deliver};
  e.group.assign(g->value, g->length);
  e.nodeid = nodeid;
  e.pid = pid;
  if (len != 0) e.data.assign(static_cast<const char*>(msg), len);
  record(h, std::move(e));
}

void on_confchg(cpg_handle_t h, const cpg_name* g, const cpg_address* m, size_t mn,
                const cpg_address* l, size_t ln, const cpg_address* j, size_t jn) {
  Event e{Event::Confchg};
  e.group.assign(g->value, g->length);
  e.members = members(m, mn);
  e.left = members(l, ln);
  e.joined = members(j, jn);
  record(h, std::move(e));
}

void on_totem(cpg_handle_t h, cpg_ring_id id, uint32_t n, const uint32_t* list) {
  Event e{Event::Totem};
  e.ring_seq = id.seq;
  e.totem_members.assign(list, list + n);
  record(h, std::move(e));
}

}  // namespace

cpg_model_v1_data_t Recorder::model(unsigned flags) {
  cpg_model_v1_data_t m{};
  m.model = CPG_MODEL_V1;
  m.cpg_deliver_fn = on_deliver;
  m.cpg_confchg_fn = on_confchg;
  m.cpg_totem_confchg_fn = on_totem;
  m.flags = flags;
  return m;
}

cpg_callbacks_t Recorder::callbacks() {
  return cpg_callbacks_t{on_deliver, on_confchg};
}

size_t Recorder::count(Event::Kind k) const {
  size_t n = 0;
  for (auto& e : events) n += e.kind == k;
  return n;
}

Client::Client(unsigned model_flags) {
  auto m = Recorder::model(model_flags);
  init_status =
      cpg_model_initialize(&h, CPG_MODEL_V1, reinterpret_cast<cpg_model_data_t*>(&m), &rec);
  EXPECT_EQ(init_status, CS_OK);
}

Client::~Client() {
  if (init_status == CS_OK && h != 0) cpg_finalize(h);
}

cs_error_t Client::join(const std::string& g) {
  cpg_name n = group_name(g);
  return cpg_join(h, &n);
}

bool Client::dispatch_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int fd = -1;
  cpg_fd_get(h, &fd);
  for (;;) {
    cs_error_t st = cpg_dispatch(h, CS_DISPATCH_ALL);
    if (st != CS_OK) {
      ADD_FAILURE() << "cpg_dispatch returned " << st;
      return false;
    }
    if (pred()) return true;
    auto left = deadline - std::chrono::steady_clock::now();
    if (left <= std::chrono::milliseconds(0)) return false;
    fd_readable(
        fd, static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(left).count()));
  }
}

cs_error_t Client::send(const std::string& s, cpg_guarantee_t g) {
  iovec iov{const_cast<char*>(s.data()), s.size()};
  return cpg_mcast_joined(h, g, &iov, 1);
}

cs_error_t Client::send_retry(const void* data, size_t len, cpg_guarantee_t g) {
  iovec iov{const_cast<void*>(data), len};
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (;;) {
    cs_error_t st = cpg_mcast_joined(h, g, &iov, 1);
    if (st != CS_ERR_TRY_AGAIN || std::chrono::steady_clock::now() > deadline) return st;
    cs_error_t d = cpg_dispatch(h, CS_DISPATCH_ALL);
    if (d != CS_OK) return d;
    std::this_thread::yield();
  }
}

bool fd_readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN) != 0;
}

namespace {

bool read_full(int fd, void* p, size_t n) {
  auto* b = static_cast<char*>(p);
  while (n != 0) {
    ssize_t r = ::read(fd, b, n);
    if (r <= 0) return false;
    b += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

bool write_full(int fd, const void* p, size_t n) {
  return ::write(fd, p, n) == static_cast<ssize_t>(n);
}

[[noreturn]] void peer_main(const std::string& group, int cmd, int reply) {
  cpg_handle_t h;
  int32_t st = cpg_initialize(&h, nullptr);
  cpg_name g = group_name(group);
  if (st == CS_OK) st = cpg_join(h, &g);
  write_full(reply, &st, sizeof(st));
  if (st != CS_OK) std::_Exit(1);
  int fd = -1;
  cpg_fd_get(h, &fd);
  for (;;) {
    pollfd p[2] = {{cmd, POLLIN, 0}, {fd, POLLIN, 0}};
    ::poll(p, 2, -1);
    if (p[1].revents != 0) cpg_dispatch(h, CS_DISPATCH_ALL);
    if (p[0].revents == 0) continue;
    char op;
    uint32_t len;
    if (!read_full(cmd, &op, 1) || !read_full(cmd, &len, sizeof(len))) std::_Exit(0);
    std::string arg(len, '\0');
    if (len != 0 && !read_full(cmd, arg.data(), len)) std::_Exit(0);
    if (op == 's') {
      iovec iov{arg.data(), arg.size()};
      do st = cpg_mcast_joined(h, CPG_TYPE_AGREED, &iov, 1);
      while (st == CS_ERR_TRY_AGAIN && cpg_dispatch(h, CS_DISPATCH_ALL) == CS_OK);
    } else if (op == 'f') {
      st = cpg_finalize(h);
    } else {
      std::_Exit(0);
    }
    write_full(reply, &st, sizeof(st));
  }
}

}  // namespace

Peer::Peer(const std::string& group) {
  int c[2], r[2];
  if (::pipe(c) != 0 || ::pipe(r) != 0) return;
  pid_ = ::fork();
  if (pid_ == 0) {
    ::close(c[1]);
    ::close(r[0]);
    peer_main(group, c[0], r[1]);
  }
  ::close(c[0]);
  ::close(r[1]);
  cmd_ = c[1];
  reply_ = r[0];
  int32_t st = CS_ERR_LIBRARY;
  if (pid_ > 0 && read_full(reply_, &st, sizeof(st))) join_status_ = static_cast<cs_error_t>(st);
}

Peer::~Peer() {
  if (cmd_ >= 0) ::close(cmd_);
  if (reply_ >= 0) ::close(reply_);
  if (pid_ > 0) ::waitpid(pid_, nullptr, 0);
}

cs_error_t Peer::command(char op, const std::string& arg) {
  uint32_t len = static_cast<uint32_t>(arg.size());
  int32_t st = CS_ERR_LIBRARY;
  if (!write_full(cmd_, &op, 1) || !write_full(cmd_, &len, sizeof(len)) ||
      !write_full(cmd_, arg.data(), arg.size()) || !read_full(reply_, &st, sizeof(st)))
    return CS_ERR_LIBRARY;
  return static_cast<cs_error_t>(st);
}

cs_error_t Peer::send(const std::string& msg) {
  return command('s', msg);
}

cs_error_t Peer::finalize() {
  return command('f', "");
}

void Peer::kill() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
}

}  // namespace rcpg::test
