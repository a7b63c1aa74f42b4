// A minimal client of rcpgd written against api/ipc/protocol.h only, for
// daemon tests that need to speak the protocol directly (including writing
// garbage on purpose). Real applications use libcpg.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "api/ipc/protocol.h"

namespace rcpg::test {

struct TestEvent {
  ipc::RecordType type = ipc::RecordType::Pad;
  // Deliver (chunked messages are reassembled):
  uint32_t nodeid = 0, pid = 0;
  std::vector<std::byte> data;
  bool by_reference = false;
  // Confchg:
  std::string group;
  std::vector<ipc::MemberEntry> members, left, joined;
  // TotemConfchg:
  uint64_t ring_seq = 0;
  uint32_t ring_nodeid = 0;
  std::vector<uint32_t> nodes;

  // "CONFCHG members[..]={...} left[..]={...} joined[..]={...}",
  // "DELIVER (n,p) len=N sum=X" or "TOTEM ring=(n,s) members[..]={...}".
  std::string describe() const;
};

class IpcTestClient {
 public:
  IpcTestClient() = default;
  ~IpcTestClient();
  IpcTestClient(const IpcTestClient&) = delete;
  IpcTestClient& operator=(const IpcTestClient&) = delete;

  bool connect(const std::string& socket_path, std::string& why);
  // model_flags: cpg_model_v1_data_t::flags (by default, ask for the
  // TotemConfchg after a join).
  bool hello(std::string& why, uint32_t model_flags = ipc::kDeliverInitialTotemConf);
  // Join/Leave/MembershipGet/Finalize: the daemon's status (Library when the
  // connection failed).
  ipc::Status join(const std::string& group);
  ipc::Status leave(const std::string& group);
  ipc::Status finalize();
  ipc::Status membership(const std::string& group, std::vector<ipc::MemberEntry>& out);
  std::string status_text(uint32_t what = 0, uint32_t flags = 0);

  // Multicast through the request ring: one Mcast record, or McastChunk
  // records above max_atomic_msg. Waits (up to timeout) for ring space.
  bool mcast(uint32_t guarantee, const std::vector<std::byte>& payload,
             std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Zero-copy: copies `payload` into the pool at `pool_off` and sends a
  // ZcbMcast; returns the daemon's zcb_status once the ticket completes.
  // TryAgain (engine full) is retried, as an application would, until
  // `timeout`; try_agains() counts them.
  ipc::Status zcb_mcast(uint32_t guarantee, const std::vector<std::byte>& payload,
                        uint64_t pool_off = 0,
                        std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Publishes a ZcbMcast without waiting for its ticket (nonzero; 0 if the
  // ring stayed full).
  uint64_t zcb_post(uint32_t guarantee, const std::vector<std::byte>& payload,
                    uint64_t pool_off = 0);
  uint64_t try_agains() const { return try_agains_; }
  // Writes raw bytes as one request record (for garbage tests).
  bool write_raw(ipc::RecordType type, const void* body, uint32_t length);

  // Next event (deliveries of chunked messages reassembled), sleeping on the
  // socket when the ring is empty. nullopt on timeout or daemon gone.
  std::optional<TestEvent> next_event(std::chrono::milliseconds timeout);
  // True once the daemon closed the connection.
  bool daemon_gone() const { return gone_; }
  // Messages whose first parts arrived and whose last has not.
  size_t partial_messages() const { return partial_.size(); }

  uint32_t nodeid() const { return reply_.nodeid; }
  const ipc::HelloReply& hello_reply() const { return reply_; }
  ipc::SegmentHeader* header() const { return hdr_; }
  int fd() const { return fd_; }

 private:
  bool request(ipc::MsgType type, const void* body, size_t len, std::vector<std::byte>& reply,
               int* fds = nullptr, size_t* nfds = nullptr);
  std::byte* reserve(ipc::RecordType type, uint32_t body, std::chrono::milliseconds timeout);
  void publish();
  bool drain_socket(int timeout_ms);
  // One complete event from the ring, without blocking.
  bool read_one(TestEvent& out);
  // Moves every ready event into backlog_ (and releases its log space).
  void pump();

  int fd_ = -1;
  int doorbell_ = -1;
  bool gone_ = false;
  ipc::HelloReply reply_{};
  std::byte* seg_ = nullptr;
  size_t seg_bytes_ = 0;
  const std::byte* log_ = nullptr;
  size_t log_bytes_ = 0;
  ipc::SegmentHeader* hdr_ = nullptr;
  uint64_t req_head_ = 0, req_pending_ = 0, ev_tail_ = 0;
  uint64_t ticket_ = 0;
  uint64_t try_agains_ = 0;
  // Reassembly of chunked deliveries, per (nodeid << 32 | pid).
  std::map<uint64_t, TestEvent> partial_;
  std::deque<TestEvent> backlog_;
};

}  // namespace rcpg::test
