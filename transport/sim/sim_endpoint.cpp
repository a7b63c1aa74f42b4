#include "transport/sim/sim_endpoint.h"

#include <cstring>
#include <iostream>

#include "transport/sim/sim_actions.h"

namespace rcpg::transport {

SimEndpoint::SimEndpoint(SimWorld& world, const EndpointConfig& cfg) : world_(world), cfg_(cfg) {
  world_.attach(this);
}

SimEndpoint::~SimEndpoint() {
  world_.detach(this);
}

void SimEndpoint::log(const std::string& line) const {
  if (cfg_.log)
    cfg_.log(line);
  else
    std::cerr << "rcpg sim node " << cfg_.node_id << ": " << line << "\n";
}

Region* SimEndpoint::register_region(size_t bytes) {
  if (dead_) return nullptr;
  OwnedRegion owned;
  owned.bytes = std::make_unique<std::byte[]>(bytes == 0 ? 1 : bytes);
  std::memset(owned.bytes.get(), 0, bytes == 0 ? 1 : bytes);
  uint32_t id = next_region_++;
  owned.region.data = owned.bytes.get();
  owned.region.size = bytes;
  owned.region.id = id;
  owned.region.remote = RemoteRegion{id, bytes, id, 0};
  auto [it, ok] = regions_.emplace(id, std::move(owned));
  return &it->second.region;
}

Region* SimEndpoint::register_external(int fd, size_t bytes) {
  if (dead_) return nullptr;
  OwnedRegion owned;
  std::string why;
  if (!owned.shared.map(fd, bytes, why)) {
    log("register_external: " + why);
    return nullptr;
  }
  uint32_t id = next_region_++;
  owned.region.data = owned.shared.data();
  owned.region.size = bytes;
  owned.region.id = id;
  // Local use only: a key no remote operation will find.
  owned.region.remote = RemoteRegion{~uint64_t{0}, 0, ~uint32_t{0}, 0};
  auto [it, ok] = regions_.emplace(id, std::move(owned));
  return &it->second.region;
}

void SimEndpoint::deregister(Region* region) {
  if (region) regions_.erase(region->id);
}

Region* SimEndpoint::find_region(uint32_t id) {
  auto it = regions_.find(id);
  return it == regions_.end() ? nullptr : &it->second.region;
}

ConnId SimEndpoint::connect(std::string_view address, NodeId peer) {
  ConnId id = static_cast<ConnId>(conns_.size());
  conns_.push_back(Conn{});
  Conn& c = conns_.back();
  c.peer = peer;
  SimEndpoint* target = dead_ ? nullptr : world_.find_by_address(std::string(address));
  if (!target) {
    c.state = ConnState::Broken;
    push_event({EventType::Unreachable, id, peer, false,
                "no endpoint listens at '" + std::string(address) + "'"});
    return id;
  }
  c.peer_ep = target->serial_;
  c.channel = world_.open_channel(cfg_.node_id, target->node_id());
  c.request = make_request(cfg_.cluster_key, cfg_.node_id, peer);
  SimAction a;
  a.kind = SimAction::Kind::ConnectRequest;
  a.from = cfg_.node_id;
  a.to = target->node_id();
  a.from_ep = serial_;
  a.to_ep = target->serial_;
  a.from_conn = id;
  a.hello = c.request;
  world_.enqueue(c.channel, std::move(a));
  return id;
}

void SimEndpoint::disconnect(ConnId conn) {
  if (conn >= conns_.size() || conns_[conn].state == ConnState::Broken) return;
  world_.break_connection(serial_, conn, "closed by node " + std::to_string(cfg_.node_id));
}

std::optional<Event> SimEndpoint::next_event() {
  if (events_.empty()) return std::nullopt;
  Event ev = std::move(events_.front());
  events_.pop_front();
  return ev;
}

bool SimEndpoint::post_op(Op op, ConnId conn, const Region* local, size_t local_off,
                          const RemoteRegion& remote, uint64_t remote_off, size_t len, uint32_t imm,
                          uint64_t wr_id, bool signaled, std::span<const std::byte> payload) {
  if (dead_ || conn >= conns_.size()) return false;
  Conn& c = conns_[conn];
  if (c.state != ConnState::Connected) return false;
  if (c.outstanding >= cfg_.send_queue_depth) return false;
  if (local) {
    const Region* mine = find_region(local->id);
    if (!mine || mine->data != local->data || local_off > mine->size ||
        len > mine->size - local_off) {
      completions_.push_back({wr_id, conn, op, Status::LocalAccess, 0, 0, nullptr});
      return true;
    }
  }
  if (op == Op::Send && payload.size() > cfg_.max_send_bytes) {
    completions_.push_back({wr_id, conn, op, Status::TooLarge, 0, 0, nullptr});
    return true;
  }
  SimAction a;
  a.kind = SimAction::Kind::Op;
  a.op = op;
  a.from = cfg_.node_id;
  a.to = c.peer;
  a.from_ep = serial_;
  a.to_ep = c.peer_ep;
  a.from_conn = conn;
  a.to_conn = c.peer_conn;
  a.local_region = local ? local->id : 0;
  a.local_off = local_off;
  a.remote = remote;
  a.remote_off = remote_off;
  a.len = len;
  a.imm = imm;
  a.wr_id = wr_id;
  a.signaled = signaled;
  a.payload.assign(payload.begin(), payload.end());
  ++c.outstanding;
  world_.enqueue(c.channel, std::move(a));
  return true;
}

bool SimEndpoint::post_write(ConnId conn, const Region& local, size_t local_off,
                             const RemoteRegion& remote, uint64_t remote_off, size_t len,
                             uint64_t wr_id, bool signaled) {
  return post_op(Op::Write, conn, &local, local_off, remote, remote_off, len, 0, wr_id, signaled,
                 {});
}

bool SimEndpoint::post_write_imm(ConnId conn, const Region& local, size_t local_off,
                                 const RemoteRegion& remote, uint64_t remote_off, size_t len,
                                 uint32_t imm, uint64_t wr_id, bool signaled) {
  return post_op(Op::WriteImm, conn, &local, local_off, remote, remote_off, len, imm, wr_id,
                 signaled, {});
}

bool SimEndpoint::post_read(ConnId conn, const Region& local, size_t local_off,
                            const RemoteRegion& remote, uint64_t remote_off, size_t len,
                            uint64_t wr_id) {
  return post_op(Op::Read, conn, &local, local_off, remote, remote_off, len, 0, wr_id, true, {});
}

bool SimEndpoint::post_send(ConnId conn, std::span<const std::byte> bytes, uint64_t wr_id) {
  return post_op(Op::Send, conn, nullptr, 0, RemoteRegion{}, 0, bytes.size(), 0, wr_id, true,
                 bytes);
}

size_t SimEndpoint::poll(std::span<Completion> out) {
  recv_hold_.clear();
  size_t n = 0;
  while (n < out.size() && !completions_.empty()) {
    Completion c = completions_.front();
    completions_.pop_front();
    if (c.op == Op::Recv) {
      recv_hold_.push_back(std::move(recv_payloads_.front()));
      recv_payloads_.pop_front();
      c.data = recv_hold_.back().data();
    }
    out[n++] = c;
  }
  return n;
}

void SimEndpoint::wait(std::chrono::microseconds timeout) {
  // Logical time: let the world run until something arrives for us, bounded
  // so a test waiting on a peer that never answers still terminates.
  uint64_t budget = static_cast<uint64_t>(timeout.count()) + 1000;
  while (!has_work() && budget-- > 0 && world_.step()) {
  }
}

}  // namespace rcpg::transport
