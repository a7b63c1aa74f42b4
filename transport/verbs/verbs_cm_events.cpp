// rdma_cm events (addressing, handshake, disconnects) and device async events.
#include <algorithm>
#include <cerrno>
#include <cstring>

#include "transport/verbs/verbs_internal.h"

namespace rcpg::transport::verbs {
namespace {

constexpr int kRouteTimeoutMs = 5000;
constexpr int kRejConsumerDefined = 28;  // IB CM reject reason: the listener said no
constexpr int kRejInvalidServiceId = 8;  // IB CM reject reason: nobody listens on the port
constexpr size_t kRejectTextMax = 140;   // fits the IB CM REJ private data (148 bytes)

// Printable prefix of a reject's private data (our listener sends its reason).
std::string reject_text(std::span<const uint8_t> pdata) {
  std::string s;
  for (uint8_t b : pdata) {
    if (b == 0) break;
    if (b < 0x20 || b > 0x7e) return {};
    s.push_back(static_cast<char>(b));
  }
  return s;
}

NodeId claimed_node(std::span<const uint8_t> pdata) {
  Hello h;
  if (pdata.size() < sizeof(h)) return 0;
  std::memcpy(&h, pdata.data(), sizeof(h));
  return h.magic == kHelloMagic ? h.from : 0;
}

}  // namespace

void VerbsEndpoint::drain_cm_events() {
  rdma_cm_event* ev = nullptr;
  while (rdma_get_cm_event(channel_, &ev) == 0) {
    // Copy what is needed and ack at once: rdma_destroy_id() waits for acks.
    rdma_cm_event_type type = ev->event;
    rdma_cm_id* id = ev->id;
    int status = ev->status;
    rdma_conn_param param = ev->param.conn;
    std::array<uint8_t, 256> pdata{};
    size_t plen = 0;
    if (param.private_data && param.private_data_len) {
      plen = std::min<size_t>(param.private_data_len, pdata.size());
      std::memcpy(pdata.data(), param.private_data, plen);
    }
    param.private_data = nullptr;
    if (rdma_ack_cm_event(ev) != 0) log(sys_error("rdma_ack_cm_event"));
    on_cm_event(type, id, status, std::span<const uint8_t>(pdata.data(), plen), param);
  }
  if (errno != EAGAIN) log(sys_error("rdma_get_cm_event"));
}

void VerbsEndpoint::on_cm_event(rdma_cm_event_type type, rdma_cm_id* id, int status,
                                std::span<const uint8_t> pdata, const rdma_conn_param& param) {
  if (type == RDMA_CM_EVENT_CONNECT_REQUEST) {
    on_connect_request(id, pdata, param);
    return;
  }
  Conn* c = id == anchor_ ? nullptr : static_cast<Conn*>(id->context);
  if (type == RDMA_CM_EVENT_DEVICE_REMOVAL) {
    log("RDMA device " + dev_name_ + " was removed: every connection is lost");
    device_dead_ = true;
    for (auto& slot : conns_)
      if (slot) begin_close(slot.get(), "RDMA device removed");
    return;
  }
  if (!c) {
    if (type != RDMA_CM_EVENT_TIMEWAIT_EXIT)
      log(std::string("unexpected ") + rdma_event_str(type) + " on the listening id");
    return;
  }
  switch (type) {
    case RDMA_CM_EVENT_ADDR_RESOLVED:
      if (c->state != ConnState::Resolving) return;
      if (id->verbs != verbs_) {
        fail_conn(c, EventType::Unreachable,
                  "the route to " + c->remote + " uses device " +
                      (id->verbs ? ibv_get_device_name(id->verbs->device) : "?") +
                      ", this endpoint uses " + dev_name_ + " (set source_address)");
        return;
      }
      if (rdma_resolve_route(id, kRouteTimeoutMs) != 0)
        fail_conn(c, EventType::Unreachable, sys_error("rdma_resolve_route " + c->remote));
      return;
    case RDMA_CM_EVENT_ROUTE_RESOLVED:
      on_route_resolved(c);
      return;
    case RDMA_CM_EVENT_ESTABLISHED:
      on_established(c, pdata);
      return;
    case RDMA_CM_EVENT_REJECTED:
      on_rejected(c, status, pdata);
      return;
    case RDMA_CM_EVENT_ADDR_ERROR:
    case RDMA_CM_EVENT_ROUTE_ERROR:
    case RDMA_CM_EVENT_UNREACHABLE:
    case RDMA_CM_EVENT_CONNECT_ERROR: {
      std::string why = std::string(rdma_event_str(type)) +
                        (status < 0 ? std::string(": ") + std::strerror(-status)
                                    : " (status " + std::to_string(status) + ")");
      if (c->state == ConnState::Established || c->state == ConnState::Closing)
        begin_close(c, why);
      else
        fail_conn(c, EventType::Unreachable, why);
      return;
    }
    case RDMA_CM_EVENT_DISCONNECTED:
      begin_close(c, c->state == ConnState::Established ? "peer disconnected"
                                                        : "disconnected during setup");
      return;
    case RDMA_CM_EVENT_TIMEWAIT_EXIT:
      return;
    default:
      log(std::string("ignored ") + rdma_event_str(type) + " on the connection to " + c->remote);
      return;
  }
}

void VerbsEndpoint::on_connect_request(rdma_cm_id* child, std::span<const uint8_t> pdata,
                                       const rdma_conn_param& param) {
  std::string from = format_addr(rdma_get_peer_addr(child));
  auto refuse = [&](const std::string& reason, NodeId claimed) {
    log("rejected connection from " + from + ": " + reason);
    std::string text = reason.substr(0, kRejectTextMax);
    if (rdma_reject(child, text.data(), static_cast<uint8_t>(text.size())) != 0)
      log(sys_error("rdma_reject " + from));
    Event e;
    e.type = EventType::PeerRejected;
    e.peer = claimed;
    e.inbound = true;
    e.detail = from + ": " + reason;
    events_.push_back(std::move(e));
  };

  std::string why;
  std::optional<NodeId> peer =
      verify_request(cfg_.cluster_key, cfg_.node_id, cfg_.allowed_peers, pdata, why);
  if (peer && child->verbs != verbs_) {
    why = std::string("arrived on device ") +
          (child->verbs ? ibv_get_device_name(child->verbs->device) : "?") +
          ", this endpoint uses " + dev_name_;
    peer.reset();
  }
  Conn* c = peer ? alloc_conn(true, *peer) : nullptr;
  if (peer && !c) why = "too many connections";
  if (!c) {
    refuse(why, peer ? *peer : claimed_node(pdata));
    if (rdma_destroy_id(child) != 0) log(sys_error("rdma_destroy_id (rejected)"));
    return;
  }
  c->cm_id = child;
  child->context = c;
  c->remote = from;
  set_ack_timeout(child);
  if (!setup_qp(c, why)) {
    refuse("cannot accept: " + why, c->peer);
    destroy_conn(c);
    return;
  }
  Hello request;
  std::memcpy(&request, pdata.data(), sizeof(request));  // verify_request checked the size
  Hello reply = make_reply(cfg_.cluster_key, cfg_.node_id, request);
  rdma_conn_param p = conn_param();
  p.responder_resources = std::min(p.responder_resources, param.initiator_depth);
  p.initiator_depth = std::min(p.initiator_depth, param.responder_resources);
  p.private_data = &reply;
  p.private_data_len = sizeof(reply);
  if (rdma_accept(child, &p) != 0) {
    log(sys_error("rdma_accept " + from));
    destroy_conn(c);
    return;
  }
  c->state = ConnState::Accepting;
}

void VerbsEndpoint::on_route_resolved(Conn* c) {
  if (c->state != ConnState::Resolving) return;
  set_ack_timeout(c->cm_id);
  std::string why;
  if (!setup_qp(c, why)) {
    fail_conn(c, EventType::Unreachable, why);
    return;
  }
  c->request = make_request(cfg_.cluster_key, cfg_.node_id, c->peer);
  rdma_conn_param p = conn_param();
  p.private_data = &c->request;
  p.private_data_len = sizeof(c->request);
  if (rdma_connect(c->cm_id, &p) != 0) {
    fail_conn(c, EventType::Unreachable, sys_error("rdma_connect " + c->remote));
    return;
  }
  c->state = ConnState::Connecting;
}

void VerbsEndpoint::on_established(Conn* c, std::span<const uint8_t> pdata) {
  if (c->state == ConnState::Accepting) {
    announce_connected(c);
  } else if (c->state == ConnState::Connecting) {
    std::string why;
    if (!verify_reply(cfg_.cluster_key, c->request, pdata, why)) {
      fail_conn(c, EventType::Rejected, why);  // destroying the id disconnects
      return;
    }
    announce_connected(c);
  }
}

void VerbsEndpoint::on_rejected(Conn* c, int status, std::span<const uint8_t> pdata) {
  if (c->state != ConnState::Connecting) return;
  if (status == kRejConsumerDefined) {
    std::string reason = reject_text(pdata);
    fail_conn(c, EventType::Rejected,
              "rejected by " + c->remote + (reason.empty() ? "" : ": " + reason));
  } else if (status == kRejInvalidServiceId) {
    fail_conn(c, EventType::Unreachable, "nobody listens at " + c->remote);
  } else {
    fail_conn(
        c, EventType::Unreachable,
        "connection to " + c->remote + " refused (reject reason " + std::to_string(status) + ")");
  }
}

void VerbsEndpoint::on_async_event(const ibv_async_event& ev) {
  switch (ev.event_type) {
    case IBV_EVENT_COMM_EST:
    case IBV_EVENT_QP_FATAL:
    case IBV_EVENT_QP_REQ_ERR:
    case IBV_EVENT_QP_ACCESS_ERR:
    case IBV_EVENT_PATH_MIG_ERR: {
      // Only QPs of this endpoint: another endpoint may share the device.
      Conn* c = nullptr;
      for (auto& slot : conns_)
        if (slot && slot->qp == ev.element.qp) c = slot.get();
      if (!c) return;
      if (ev.event_type == IBV_EVENT_COMM_EST) {
        // Data arrived before the RTU: let rdma_cm complete the handshake.
        if (c->state == ConnState::Accepting && rdma_notify(c->cm_id, IBV_EVENT_COMM_EST) != 0)
          log(sys_error("rdma_notify(COMM_EST)"));
        return;
      }
      log("QP error on the connection to " + c->remote + ": " + ibv_event_type_str(ev.event_type));
      begin_close(c, ibv_event_type_str(ev.event_type));
      return;
    }
    case IBV_EVENT_CQ_ERR:
      if (ev.element.cq != cq_) return;
      log("completion queue overrun on " + dev_name_ + ": every connection is lost");
      for (auto& slot : conns_)
        if (slot) begin_close(slot.get(), "completion queue overrun");
      return;
    case IBV_EVENT_DEVICE_FATAL:
      log("fatal error on RDMA device " + dev_name_ + ": every connection is lost");
      device_dead_ = true;
      for (auto& slot : conns_)
        if (slot) begin_close(slot.get(), "RDMA device failed");
      return;
    case IBV_EVENT_PORT_ERR:
      log("RDMA device " + dev_name_ + " port " + std::to_string(ev.element.port_num) + " is down");
      return;
    default:
      return;
  }
}

}  // namespace rcpg::transport::verbs
