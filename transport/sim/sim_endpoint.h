// One endpoint of the simulated fabric. Posting only queues an action in the
// SimWorld; the world executes it later (SimWorld::step), so every
// interleaving across connections is possible and fixed by the seed.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <vector>

#include "transport/auth.h"
#include "transport/fabric.h"
#include "transport/placement.h"
#include "transport/sim/sim_world.h"

namespace rcpg::transport {

class SimEndpoint final : public Endpoint {
 public:
  SimEndpoint(SimWorld& world, const EndpointConfig& cfg);
  ~SimEndpoint() override;

  NodeId node_id() const override { return cfg_.node_id; }
  Region* register_region(size_t bytes) override;
  Region* register_external(int fd, size_t bytes) override;
  void deregister(Region* region) override;
  ConnId connect(std::string_view address, NodeId peer) override;
  void disconnect(ConnId conn) override;
  std::optional<Event> next_event() override;
  bool post_write(ConnId conn, const Region& local, size_t local_off, const RemoteRegion& remote,
                  uint64_t remote_off, size_t len, uint64_t wr_id, bool signaled) override;
  bool post_write_imm(ConnId conn, const Region& local, size_t local_off,
                      const RemoteRegion& remote, uint64_t remote_off, size_t len, uint32_t imm,
                      uint64_t wr_id, bool signaled) override;
  bool post_read(ConnId conn, const Region& local, size_t local_off, const RemoteRegion& remote,
                 uint64_t remote_off, size_t len, uint64_t wr_id) override;
  bool post_send(ConnId conn, std::span<const std::byte> bytes, uint64_t wr_id) override;
  size_t poll(std::span<Completion> out) override;
  void wait(std::chrono::microseconds timeout) override;
  int wait_fd() const override { return -1; }

  bool has_work() const { return !completions_.empty() || !events_.empty(); }

 private:
  friend class SimWorld;

  enum class ConnState { Connecting, Connected, Broken };
  struct Conn {
    ConnState state = ConnState::Connecting;
    NodeId peer = 0;
    uint64_t peer_ep = 0;
    ConnId peer_conn = kNoConn;
    uint64_t channel = 0;  // this -> peer
    uint32_t outstanding = 0;
    bool inbound = false;
    Hello request{};  // what we sent (initiator) to check the reply against
  };
  struct OwnedRegion {
    std::unique_ptr<std::byte[]> bytes;
    SharedMap shared;  // register_external
    Region region;
  };

  bool post_op(Op op, ConnId conn, const Region* local, size_t local_off,
               const RemoteRegion& remote, uint64_t remote_off, size_t len, uint32_t imm,
               uint64_t wr_id, bool signaled, std::span<const std::byte> payload);
  Region* find_region(uint32_t id);
  void log(const std::string& line) const;
  void push_event(Event ev) { events_.push_back(std::move(ev)); }

  SimWorld& world_;
  EndpointConfig cfg_;
  uint64_t serial_ = 0;
  bool dead_ = false;
  uint32_t next_region_ = 1;
  std::map<uint32_t, OwnedRegion> regions_;
  std::vector<Conn> conns_;
  std::deque<Completion> completions_;
  std::deque<Event> events_;
  std::deque<std::vector<std::byte>> recv_payloads_;  // arrived, not yet polled
  std::vector<std::vector<std::byte>> recv_hold_;     // handed out by the last poll
};

}  // namespace rcpg::transport
