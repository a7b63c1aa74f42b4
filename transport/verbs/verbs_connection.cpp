// Connection lifecycle: connect/disconnect, QP and receive-pool setup,
// closing (flush) and destruction.
#include <algorithm>
#include <cerrno>
#include <cstring>

#include "transport/placement.h"
#include "transport/verbs/verbs_internal.h"

namespace rcpg::transport::verbs {
namespace {

constexpr int kResolveTimeoutMs = 5000;  // generous: soft-RoCE under emulation is slow
constexpr auto kFlushTimeout = std::chrono::seconds(5);
constexpr uint32_t kMaxStageSlots = 32;
// CQ entries always left to send WRs when reserving receives for a new QP.
constexpr uint32_t kCqSendMinimum = 2048;
// max_inline_data values tried on the first QP, largest first.
constexpr int kInlineCandidates[] = {1024, 512, 256, 128, 64, 0};

uint32_t round_pow2(uint32_t v) {
  uint32_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

}  // namespace

Conn* VerbsEndpoint::alloc_conn(bool inbound, NodeId peer) {
  uint32_t slot;
  if (!free_slots_.empty()) {
    slot = free_slots_.back();
    free_slots_.pop_back();
  } else {
    if (conns_.size() >= kMaxSlots) return nullptr;
    slot = static_cast<uint32_t>(conns_.size());
    conns_.emplace_back();
    slot_gen_.push_back(1);
  }
  auto c = std::make_unique<Conn>();
  c->slot = slot;
  c->gen = slot_gen_[slot];
  c->id = make_conn_id(slot, c->gen);
  c->inbound = inbound;
  c->peer = peer;
  conns_[slot] = std::move(c);
  if (dirty_.capacity() < conns_.size()) dirty_.reserve(conns_.size() * 2);
  return conns_[slot].get();
}

Conn* VerbsEndpoint::find(ConnId id) const {
  uint32_t slot = conn_slot(id);
  if (slot >= conns_.size()) return nullptr;
  Conn* c = conns_[slot].get();
  return c && c->id == id ? c : nullptr;
}

void VerbsEndpoint::set_ack_timeout(rdma_cm_id* id) {
  uint8_t timeout = cfg_.qp_timeout;
  if (rdma_set_option(id, RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT, &timeout, sizeof(timeout)) !=
      0)
    log(sys_error("rdma_set_option(ACK_TIMEOUT=" + std::to_string(timeout) + ")") +
        " (using the rdma_cm default)");
}

rdma_conn_param VerbsEndpoint::conn_param() const {
  rdma_conn_param p{};
  p.responder_resources = max_rd_atomic_;
  p.initiator_depth = max_rd_atomic_;
  p.retry_count = std::min<uint8_t>(cfg_.qp_retry_count, 7);
  p.rnr_retry_count = 7;  // infinite: a slow receiver is not an error
  return p;
}

// QP, receive slots, staging slots, initial receives.
bool VerbsEndpoint::setup_qp(Conn* c, std::string& why) {
  uint32_t max_wr = static_cast<uint32_t>(dev_attr_.max_qp_wr);
  c->sq_depth = std::clamp<uint32_t>(cfg_.send_queue_depth, 1, max_wr);
  c->rq_depth = std::clamp<uint32_t>(cfg_.recv_queue_depth, 1, max_wr);
  if (cq_reserved_ + c->rq_depth + kCqSendMinimum > cq_budget_) {
    why = "completion queue full (" + std::to_string(cq_reserved_ / c->rq_depth) +
          " connections already)";
    return false;
  }
  c->slot_bytes = std::max<uint32_t>(64, (cfg_.max_send_bytes + 63) / 64 * 64);
  c->stage_slots = std::min(c->sq_depth, kMaxStageSlots);
  c->buf_bytes = size_t{c->slot_bytes} * (c->rq_depth + c->stage_slots);
  c->buf = static_cast<std::byte*>(alloc_placed(c->buf_bytes, -1, c->buf_huge));
  if (!c->buf) {
    why = "cannot allocate " + std::to_string(c->buf_bytes) + " bytes of receive buffers";
    return false;
  }
  c->buf_mr = ibv_reg_mr(pd_, c->buf, c->buf_bytes, IBV_ACCESS_LOCAL_WRITE);
  if (!c->buf_mr) {
    why = sys_error("ibv_reg_mr(receive buffers, " + std::to_string(c->buf_bytes) + " bytes)");
    return false;
  }
  if (!create_qp(c, why)) return false;

  uint32_t ring = round_pow2(c->sq_depth);
  c->ring.assign(ring, SendEntry{});
  c->ring_mask = ring - 1;
  c->signal_every = std::max<uint32_t>(1, c->sq_depth / 2);

  c->recv_sges.resize(c->rq_depth);
  c->recv_wrs.resize(c->rq_depth);
  c->repost.reserve(c->rq_depth);
  for (uint32_t i = 0; i < c->rq_depth; ++i) {
    c->recv_sges[i].addr = reinterpret_cast<uintptr_t>(c->buf + size_t{i} * c->slot_bytes);
    c->recv_sges[i].length = c->slot_bytes;
    c->recv_sges[i].lkey = c->buf_mr->lkey;
    c->recv_wrs[i] = ibv_recv_wr{};
    c->recv_wrs[i].wr_id = make_wr_id(true, c->slot, c->gen, i);
    c->recv_wrs[i].sg_list = &c->recv_sges[i];
    c->recv_wrs[i].num_sge = 1;
    c->recv_wrs[i].next = i + 1 < c->rq_depth ? &c->recv_wrs[i + 1] : nullptr;
  }
  ibv_recv_wr* bad = nullptr;
  if (int rc = ibv_post_recv(c->qp, c->recv_wrs.data(), &bad); rc != 0) {
    why = std::string("ibv_post_recv (initial receives): ") + std::strerror(rc);
    return false;
  }
  cq_reserved_ += c->rq_depth;
  c->cq_reserved = true;
  return true;
}

bool VerbsEndpoint::create_qp(Conn* c, std::string& why) {
  ibv_qp_init_attr attr{};
  attr.qp_context = c;
  attr.send_cq = cq_;
  attr.recv_cq = cq_;
  attr.qp_type = IBV_QPT_RC;
  attr.sq_sig_all = 0;
  attr.cap.max_send_wr = c->sq_depth;
  attr.cap.max_recv_wr = c->rq_depth;
  attr.cap.max_send_sge = 1;
  attr.cap.max_recv_sge = 1;
  for (int candidate : kInlineCandidates) {
    if (inline_request_ >= 0 && candidate != inline_request_) continue;
    attr.cap.max_inline_data = static_cast<uint32_t>(candidate);
    ibv_qp_init_attr tried = attr;
    if (rdma_create_qp(c->cm_id, pd_, &tried) == 0) {
      c->qp = c->cm_id->qp;
      if (inline_request_ < 0) {
        inline_request_ = candidate;
        max_inline_ = tried.cap.max_inline_data;
        log("device " + dev_name_ + ": max_inline_data " + std::to_string(max_inline_) + ", CQ " +
            std::to_string(cq_size_) + " entries");
      }
      return true;
    }
    if (inline_request_ >= 0 || candidate == 0) break;
  }
  why = sys_error("rdma_create_qp(send " + std::to_string(c->sq_depth) + ", recv " +
                  std::to_string(c->rq_depth) + ")");
  return false;
}

ConnId VerbsEndpoint::connect(std::string_view address, NodeId peer) {
  Conn* c = alloc_conn(false, peer);
  if (!c) {
    log("connect to " + std::string(address) + ": too many connections");
    return kNoConn;
  }
  c->remote = std::string(address);
  ConnId id = c->id;
  sockaddr_in dst{};
  std::string why;
  if (device_dead_) {
    fail_conn(c, EventType::Unreachable, "RDMA device " + dev_name_ + " is gone");
    return id;
  }
  if (!parse_ipv4(address, true, dst, why)) {
    fail_conn(c, EventType::Unreachable, why);
    return id;
  }
  if (rdma_create_id(channel_, &c->cm_id, c, RDMA_PS_TCP) != 0) {
    c->cm_id = nullptr;
    fail_conn(c, EventType::Unreachable, sys_error("rdma_create_id"));
    return id;
  }
  sockaddr* src = has_src_ ? reinterpret_cast<sockaddr*>(&src_addr_) : nullptr;
  if (rdma_resolve_addr(c->cm_id, src, reinterpret_cast<sockaddr*>(&dst), kResolveTimeoutMs) != 0) {
    fail_conn(c, EventType::Unreachable, sys_error("rdma_resolve_addr " + c->remote));
    return id;
  }
  c->state = ConnState::Resolving;
  return id;
}

void VerbsEndpoint::disconnect(ConnId conn) {
  Conn* c = find(conn);
  if (!c) return;
  switch (c->state) {
    case ConnState::Established:
      begin_close(c, "closed locally");
      break;
    case ConnState::Closing:
      break;
    case ConnState::Accepting:  // never announced to the user: quietly
      destroy_conn(c);
      break;
    default:
      fail_conn(c, EventType::Unreachable, "connect abandoned locally");
      break;
  }
}

void VerbsEndpoint::announce_connected(Conn* c) {
  c->state = ConnState::Established;
  c->announced = true;
  push_event(EventType::Connected, c,
             std::string(c->inbound ? "accepted node " : "connected to node ") +
                 std::to_string(c->peer) + " (" + c->remote + ")");
}

// A connection that never became usable: report and free at once.
void VerbsEndpoint::fail_conn(Conn* c, EventType type, const std::string& detail) {
  if (!c->inbound) push_event(type, c, detail);
  log((c->inbound ? "inbound connection from " : "connection to ") + c->remote + " (node " +
      std::to_string(c->peer) + "): " + detail);
  destroy_conn(c);
}

// An established connection ends: QP to error so every outstanding WR
// flushes; freed by reap_closing() once the send queue is empty.
void VerbsEndpoint::begin_close(Conn* c, const std::string& why) {
  if (c->state == ConnState::Closing) return;
  if (c->state != ConnState::Established) {
    fail_conn(c, EventType::Unreachable, why);
    return;
  }
  if (rdma_disconnect(c->cm_id) != 0 && errno != EINVAL)
    log(sys_error("rdma_disconnect " + c->remote));
  ibv_qp_attr attr{};
  attr.qp_state = IBV_QPS_ERR;
  if (int rc = ibv_modify_qp(c->qp, &attr, IBV_QP_STATE); rc != 0)
    log(std::string("ibv_modify_qp(ERR): ") + std::strerror(rc));
  c->state = ConnState::Closing;
  c->flush_deadline = Clock::now() + kFlushTimeout;
  c->close_epoch = cq_drains_;
  ++closing_;
  if (c->announced)
    push_event(EventType::Disconnected, c,
               "node " + std::to_string(c->peer) + " (" + c->remote + "): " + why);
}

void VerbsEndpoint::destroy_conn(Conn* c) {
  if (c->state == ConnState::Closing) --closing_;
  if (c->qp) rdma_destroy_qp(c->cm_id);
  c->qp = nullptr;
  if (c->cm_id && rdma_destroy_id(c->cm_id) != 0) log(sys_error("rdma_destroy_id"));
  c->cm_id = nullptr;
  if (c->buf_mr) {
    if (int rc = ibv_dereg_mr(c->buf_mr); rc != 0)
      log(std::string("ibv_dereg_mr(receive buffers): ") + std::strerror(rc));
  }
  c->buf_mr = nullptr;
  free_placed(c->buf, c->buf_bytes, c->buf_huge);
  c->buf = nullptr;
  if (c->cq_reserved) cq_reserved_ -= c->rq_depth;
  cq_send_outstanding_ -= c->head - c->tail;
  uint32_t slot = c->slot;
  slot_gen_[slot] = static_cast<uint16_t>(c->gen + 1);
  conns_[slot].reset();
  free_slots_.push_back(slot);
}

// Frees closing connections whose send queue has flushed. A connection whose
// flush does not arrive in time gets Flushed completions synthesized.
void VerbsEndpoint::reap_closing() {
  Clock::time_point now = Clock::now();
  for (auto& slot : conns_) {
    Conn* c = slot.get();
    if (!c || c->state != ConnState::Closing || cq_drains_ == c->close_epoch) continue;
    if (c->head != c->tail) {
      if (now < c->flush_deadline) continue;
      log("connection to node " + std::to_string(c->peer) + ": " +
          std::to_string(c->head - c->tail) + " work requests never flushed; reporting them");
      for (uint32_t p = c->tail; p != c->head; ++p) {
        const SendEntry& e = c->ring[p & c->ring_mask];
        synth(e.user_wr_id, c->id, e.op, Status::Flushed, e.len);
      }
      retire_until(c, c->head);
    }
    destroy_conn(c);
  }
}

void VerbsEndpoint::repost_receives() {
  for (ConnId id : dirty_) {
    Conn* c = find(id);
    if (!c) continue;
    c->dirty = false;
    size_t n = c->repost.size();
    if (n == 0 || c->state == ConnState::Closing) {
      c->repost.clear();
      continue;
    }
    for (size_t k = 0; k < n; ++k)
      c->recv_wrs[c->repost[k]].next = k + 1 < n ? &c->recv_wrs[c->repost[k + 1]] : nullptr;
    ibv_recv_wr* bad = nullptr;
    if (int rc = ibv_post_recv(c->qp, &c->recv_wrs[c->repost[0]], &bad); rc != 0)
      log(std::string("ibv_post_recv (repost): ") + std::strerror(rc));
    c->repost.clear();
  }
  dirty_.clear();
}

}  // namespace rcpg::transport::verbs
