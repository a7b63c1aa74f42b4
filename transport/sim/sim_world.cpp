#include "transport/sim/sim_world.h"

#include <algorithm>
#include <cstring>

#include "transport/sim/sim_endpoint.h"

namespace rcpg::transport {
namespace {

std::pair<NodeId, NodeId> ordered(NodeId a, NodeId b) {
  return a < b ? std::pair{a, b} : std::pair{b, a};
}

std::span<const uint8_t> bytes_of(const Hello& h) {
  return {reinterpret_cast<const uint8_t*>(&h), sizeof(h)};
}

}  // namespace

SimWorld::SimWorld(uint64_t seed) : rng_(seed) {}

SimWorld::~SimWorld() {
  for (SimEndpoint* ep : endpoints_) ep->dead_ = true;
}

std::unique_ptr<Endpoint> SimWorld::create_endpoint(const EndpointConfig& cfg) {
  return std::make_unique<SimEndpoint>(*this, cfg);
}

void SimWorld::attach(SimEndpoint* ep) {
  ep->serial_ = next_serial_++;
  endpoints_.push_back(ep);
}

void SimWorld::detach(SimEndpoint* ep) {
  if (!ep->dead_) kill_endpoint(ep);
  endpoints_.erase(std::remove(endpoints_.begin(), endpoints_.end(), ep), endpoints_.end());
}

SimEndpoint* SimWorld::find_by_address(const std::string& address) const {
  if (address.empty()) return nullptr;
  for (SimEndpoint* ep : endpoints_)
    if (!ep->dead_ && ep->cfg_.listen_address == address) return ep;
  return nullptr;
}

SimEndpoint* SimWorld::find_by_serial(uint64_t serial) const {
  for (SimEndpoint* ep : endpoints_)
    if (ep->serial_ == serial) return ep;
  return nullptr;
}

uint32_t SimWorld::delay_between(NodeId a, NodeId b) const {
  auto it = delays_.find(ordered(a, b));
  return it == delays_.end() ? 0 : it->second;
}

uint64_t SimWorld::open_channel(NodeId from, NodeId to) {
  uint64_t id = next_channel_++;
  channels_[id] = SimChannel{from, to, {}};
  return id;
}

void SimWorld::enqueue(uint64_t channel, SimAction action) {
  auto it = channels_.find(channel);
  if (it == channels_.end()) return;
  auto& q = it->second.queue;
  action.ready_at = now_ + 1 + delay_between(action.from, action.to);
  if (!q.empty()) action.ready_at = std::max(action.ready_at, q.back().ready_at);
  q.push_back(std::move(action));
}

bool SimWorld::idle() const {
  return std::all_of(channels_.begin(), channels_.end(),
                     [](const auto& kv) { return kv.second.queue.empty(); });
}

bool SimWorld::step() {
  std::vector<uint64_t> ready;
  uint64_t earliest = UINT64_MAX;
  for (auto& [id, ch] : channels_) {
    if (ch.queue.empty()) continue;
    uint64_t t = ch.queue.front().ready_at;
    if (t <= now_) ready.push_back(id);
    earliest = std::min(earliest, t);
  }
  if (ready.empty()) {
    if (earliest == UINT64_MAX) return false;
    now_ = earliest;  // everything in flight is delayed: jump ahead
    return true;
  }
  uint64_t pick = ready[std::uniform_int_distribution<size_t>(0, ready.size() - 1)(rng_)];
  auto& q = channels_[pick].queue;
  SimAction action = std::move(q.front());
  q.pop_front();
  ++now_;
  ++executed_;
  bool drop_channel = action.kind == SimAction::Kind::ConnectReply && !action.accepted;
  execute(action);
  if (drop_channel) channels_.erase(pick);
  return true;
}

size_t SimWorld::run(size_t max_steps) {
  size_t n = 0;
  while (n < max_steps && step()) ++n;
  return n;
}

void SimWorld::execute(SimAction& a) {
  switch (a.kind) {
    case SimAction::Kind::ConnectRequest:
      execute_connect_request(a);
      break;
    case SimAction::Kind::ConnectReply:
      execute_connect_reply(a);
      break;
    case SimAction::Kind::Op:
      execute_op(a);
      break;
  }
}

void SimWorld::execute_connect_request(SimAction& a) {
  SimEndpoint* init = find_by_serial(a.from_ep);
  if (!init || init->dead_ || a.from_conn >= init->conns_.size()) return;
  auto& ic = init->conns_[a.from_conn];
  if (ic.state != SimEndpoint::ConnState::Connecting) return;
  SimEndpoint* target = find_by_serial(a.to_ep);
  if (!target || target->dead_ || is_cut(a.from, a.to)) {
    channels_.erase(ic.channel);
    ic.state = SimEndpoint::ConnState::Broken;
    init->push_event({EventType::Unreachable, a.from_conn, ic.peer, false,
                      "node " + std::to_string(a.to) + " did not answer"});
    return;
  }
  std::string why;
  auto peer = verify_request(target->cfg_.cluster_key, target->cfg_.node_id,
                             target->cfg_.allowed_peers, bytes_of(a.hello), why);
  SimAction reply;
  reply.kind = SimAction::Kind::ConnectReply;
  reply.from = a.to;
  reply.to = a.from;
  reply.from_ep = a.to_ep;
  reply.to_ep = a.from_ep;
  reply.to_conn = a.from_conn;
  uint64_t back = open_channel(a.to, a.from);
  if (!peer) {
    target->log("rejected connection: " + why);
    target->push_event({EventType::PeerRejected, kNoConn, a.hello.from, true, why});
    reply.accepted = false;
    reply.reason = "rejected by node " + std::to_string(target->cfg_.node_id);
    enqueue(back, std::move(reply));
    return;
  }
  ConnId tc = static_cast<ConnId>(target->conns_.size());
  SimEndpoint::Conn conn;
  conn.state = SimEndpoint::ConnState::Connected;
  conn.peer = *peer;
  conn.peer_ep = a.from_ep;
  conn.peer_conn = a.from_conn;
  conn.channel = back;
  conn.inbound = true;
  target->conns_.push_back(conn);
  target->push_event({EventType::Connected, tc, *peer, true, "accepted"});
  reply.accepted = true;
  reply.from_conn = tc;
  reply.hello = make_reply(target->cfg_.cluster_key, target->cfg_.node_id, a.hello);
  enqueue(back, std::move(reply));
}

void SimWorld::execute_connect_reply(SimAction& a) {
  SimEndpoint* init = find_by_serial(a.to_ep);
  if (!init || init->dead_ || a.to_conn >= init->conns_.size()) {
    if (a.accepted) break_connection(a.from_ep, a.from_conn, "initiator went away");
    return;
  }
  auto& ic = init->conns_[a.to_conn];
  if (ic.state != SimEndpoint::ConnState::Connecting) {
    if (a.accepted) break_connection(a.from_ep, a.from_conn, "initiator gave up");
    return;
  }
  if (!a.accepted) {
    channels_.erase(ic.channel);
    ic.state = SimEndpoint::ConnState::Broken;
    init->push_event({EventType::Rejected, a.to_conn, ic.peer, false, a.reason});
    return;
  }
  std::string why;
  if (!verify_reply(init->cfg_.cluster_key, ic.request, bytes_of(a.hello), why)) {
    ic.state = SimEndpoint::ConnState::Broken;
    channels_.erase(ic.channel);
    break_connection(a.from_ep, a.from_conn, why);
    init->log("connection to node " + std::to_string(ic.peer) + " refused: " + why);
    init->push_event({EventType::Rejected, a.to_conn, ic.peer, false, why});
    return;
  }
  ic.peer_conn = a.from_conn;
  ic.state = SimEndpoint::ConnState::Connected;
  init->push_event({EventType::Connected, a.to_conn, ic.peer, false, "connected"});
}

void SimWorld::execute_op(SimAction& a) {
  SimEndpoint* init = find_by_serial(a.from_ep);
  if (!init || init->dead_ || a.from_conn >= init->conns_.size()) return;
  auto& ic = init->conns_[a.from_conn];
  if (ic.outstanding > 0) --ic.outstanding;
  auto complete = [&](Status st, uint32_t len) {
    if (st != Status::Ok || a.signaled)
      init->completions_.push_back({a.wr_id, a.from_conn, a.op, st, 0, len, nullptr});
  };
  SimEndpoint* target = find_by_serial(a.to_ep);
  if (ic.state != SimEndpoint::ConnState::Connected || !target || target->dead_) {
    complete(Status::Flushed, 0);
    return;
  }
  if (a.op == Op::Send) {
    target->recv_payloads_.push_back(std::move(a.payload));
    target->completions_.push_back(
        {0, a.to_conn, Op::Recv, Status::Ok, 0, static_cast<uint32_t>(a.len), nullptr});
    complete(Status::Ok, static_cast<uint32_t>(a.len));
    return;
  }
  Region* remote = target->find_region(a.remote.rkey);
  if (!remote || a.remote_off > remote->size || a.len > remote->size - a.remote_off) {
    complete(Status::RemoteAccess, 0);
    break_connection(a.from_ep, a.from_conn, "remote access error");
    return;
  }
  Region* local = init->find_region(a.local_region);
  if (!local || a.local_off > local->size || a.len > local->size - a.local_off) {
    complete(Status::LocalAccess, 0);
    break_connection(a.from_ep, a.from_conn, "local access error");
    return;
  }
  if (a.len > 0) {
    if (a.op == Op::Read)
      std::memcpy(local->data + a.local_off, remote->data + a.remote_off, a.len);
    else
      std::memcpy(remote->data + a.remote_off, local->data + a.local_off, a.len);
  }
  if (a.op == Op::WriteImm)
    target->completions_.push_back(
        {0, a.to_conn, Op::RecvImm, Status::Ok, a.imm, static_cast<uint32_t>(a.len), nullptr});
  complete(Status::Ok, static_cast<uint32_t>(a.len));
}

void SimWorld::flush_channel(uint64_t channel) {
  auto it = channels_.find(channel);
  if (it == channels_.end()) return;
  std::deque<SimAction> q = std::move(it->second.queue);
  channels_.erase(it);
  for (SimAction& a : q) {
    if (a.kind != SimAction::Kind::Op) continue;
    SimEndpoint* init = find_by_serial(a.from_ep);
    if (!init || a.from_conn >= init->conns_.size()) continue;
    auto& c = init->conns_[a.from_conn];
    if (c.outstanding > 0) --c.outstanding;
    init->completions_.push_back({a.wr_id, a.from_conn, a.op, Status::Flushed, 0, 0, nullptr});
  }
}

void SimWorld::break_connection(uint64_t ep_serial, ConnId conn, const std::string& reason) {
  SimEndpoint* ep = find_by_serial(ep_serial);
  if (!ep || conn >= ep->conns_.size()) return;
  auto& c = ep->conns_[conn];
  if (c.state == SimEndpoint::ConnState::Broken) return;
  bool was_connecting = c.state == SimEndpoint::ConnState::Connecting;
  c.state = SimEndpoint::ConnState::Broken;
  flush_channel(c.channel);
  ep->push_event({was_connecting ? EventType::Unreachable : EventType::Disconnected, conn, c.peer,
                  c.inbound, reason});
  SimEndpoint* peer = find_by_serial(c.peer_ep);
  if (!peer || c.peer_conn == kNoConn || c.peer_conn >= peer->conns_.size()) return;
  auto& pc = peer->conns_[c.peer_conn];
  if (pc.state == SimEndpoint::ConnState::Broken) return;
  pc.state = SimEndpoint::ConnState::Broken;
  flush_channel(pc.channel);
  peer->push_event({EventType::Disconnected, c.peer_conn, pc.peer, pc.inbound, reason});
}

void SimWorld::kill_endpoint(SimEndpoint* ep) {
  for (ConnId i = 0; i < ep->conns_.size(); ++i)
    break_connection(ep->serial_, i, "node " + std::to_string(ep->cfg_.node_id) + " died");
  ep->dead_ = true;
}

void SimWorld::kill(NodeId node) {
  for (SimEndpoint* ep : endpoints_)
    if (!ep->dead_ && ep->cfg_.node_id == node) kill_endpoint(ep);
}

void SimWorld::cut(NodeId a, NodeId b) {
  cuts_.insert(ordered(a, b));
  for (SimEndpoint* ep : endpoints_) {
    NodeId self = ep->cfg_.node_id;
    if (self != a && self != b) continue;
    NodeId other = self == a ? b : a;
    for (ConnId i = 0; i < ep->conns_.size(); ++i)
      if (ep->conns_[i].peer == other)
        break_connection(ep->serial_, i, "link to node " + std::to_string(other) + " cut");
  }
}

void SimWorld::heal(NodeId a, NodeId b) {
  cuts_.erase(ordered(a, b));
}

bool SimWorld::is_cut(NodeId a, NodeId b) const {
  return cuts_.count(ordered(a, b)) > 0;
}

void SimWorld::set_delay(NodeId a, NodeId b, uint32_t steps) {
  if (steps == 0)
    delays_.erase(ordered(a, b));
  else
    delays_[ordered(a, b)] = steps;
}

}  // namespace rcpg::transport
