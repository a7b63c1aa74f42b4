// Helpers for the per-function libcpg tests. Everything here uses only the
// cpg.h API, so the tests compile against rcpg's header and against the
// distribution's alike.
#pragma once

#include <corosync/cpg.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/uio.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "rcpgd_process.h"

namespace rcpg::test {

// The daemon all tests of the binary share (started by main()).
RcpgdProcess& shared_daemon();

inline cpg_name group_name(const std::string& s) {
  cpg_name g{};
  g.length = static_cast<uint32_t>(s.size());
  std::memcpy(g.value, s.data(), s.size());
  return g;
}

// A group name unique to the running test (and process).
std::string unique_group(const std::string& tag = "");

struct Member {
  uint32_t nodeid, pid, reason;
  bool operator==(const Member&) const = default;
};

struct Event {
  enum Kind { Deliver, Confchg, Totem } kind;
  std::string group;
  uint32_t nodeid = 0, pid = 0;
  std::string data;  // Deliver
  std::vector<Member> members, left, joined;
  uint64_t ring_seq = 0;
  std::vector<uint32_t> totem_members;
  std::string describe() const;
};

// Records the callbacks of one handle (found through the handle's context).
class Recorder {
 public:
  std::vector<Event> events;
  std::function<void(const Event&)> on_event;  // optional, runs inside the callback
  static cpg_model_v1_data_t model(unsigned flags = 0);
  static cpg_callbacks_t callbacks();
  size_t count(Event::Kind k) const;
};

// An initialized (model V1) handle with a Recorder as context.
class Client {
 public:
  explicit Client(unsigned model_flags = 0);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  cpg_handle_t h = 0;
  Recorder rec;
  cs_error_t init_status = CS_ERR_LIBRARY;

  cs_error_t join(const std::string& g);
  // Dispatches (ALL) until `pred` holds or `timeout` passes.
  bool dispatch_until(const std::function<bool()>& pred,
                      std::chrono::milliseconds timeout = std::chrono::seconds(10));
  bool wait_events(size_t n, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    return dispatch_until([&] { return rec.events.size() >= n; }, timeout);
  }
  cs_error_t send(const std::string& s, cpg_guarantee_t g = CPG_TYPE_AGREED);
  // Sends, retrying CS_ERR_TRY_AGAIN (dispatching meanwhile).
  cs_error_t send_retry(const void* data, size_t len, cpg_guarantee_t g = CPG_TYPE_AGREED);
  void forget() { h = 0; }  // already finalized by the test
};

bool fd_readable(int fd, int timeout_ms);

// Another member in another process (a process is one CPG member: a second
// handle of the same process cannot join the same group). The child joins
// `group`, dispatches whatever arrives, and runs the parent's commands.
class Peer {
 public:
  explicit Peer(const std::string& group);
  ~Peer();  // the child exits (finalizing its handle)
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;

  pid_t pid() const { return pid_; }
  cs_error_t join_status() const { return join_status_; }
  cs_error_t send(const std::string& msg);
  cs_error_t finalize();
  void kill();  // SIGKILL, no goodbye

 private:
  cs_error_t command(char op, const std::string& arg);
  pid_t pid_ = -1;
  int cmd_ = -1, reply_ = -1;
  cs_error_t join_status_ = CS_ERR_LIBRARY;
};

}  // namespace rcpg::test

#define ASSERT_CS_OK(expr) ASSERT_EQ((expr), CS_OK)
#define EXPECT_CS_OK(expr) EXPECT_EQ((expr), CS_OK)
