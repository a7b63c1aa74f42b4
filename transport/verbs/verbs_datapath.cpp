// Data path: posting work requests and turning CQEs into Completions.
// No allocation, no locks and no system calls of our own here (the provider's
// doorbell aside); control work is batched behind a time check.
#include <arpa/inet.h>

#include <cstring>

#include "transport/verbs/verbs_internal.h"

namespace rcpg::transport::verbs {
namespace {

constexpr uint32_t kControlEvery = 64;  // poll() calls between control-progress time checks

}  // namespace

Conn* VerbsEndpoint::usable(ConnId id) const {
  Conn* c = find(id);
  return c && c->state == ConnState::Established ? c : nullptr;
}

bool VerbsEndpoint::has_room(const Conn* c) const {
  return c->head - c->tail < c->sq_depth && cq_send_outstanding_ + cq_reserved_ < cq_budget_;
}

void VerbsEndpoint::synth(uint64_t wr_id, ConnId conn, Op op, Status status, uint32_t len) {
  Completion comp;
  comp.wr_id = wr_id;
  comp.conn = conn;
  comp.op = op;
  comp.status = status;
  comp.len = len;
  pending_.push_back(comp);  // capacity reserved; grows only if never polled
}

bool VerbsEndpoint::submit(Conn* c, ibv_send_wr& wr, const SendEntry& entry) {
  uint32_t pos = c->head;
  bool sig = entry.user_signaled || c->unsignaled_run + 1 >= c->signal_every;
  if (sig) wr.send_flags |= IBV_SEND_SIGNALED;
  wr.wr_id = make_wr_id(false, c->slot, c->gen, pos);
  ibv_send_wr* bad = nullptr;
  if (int rc = ibv_post_send(c->qp, &wr, &bad); rc != 0) {
    log(std::string("ibv_post_send on the connection to ") + c->remote + ": " + std::strerror(rc));
    return false;
  }
  c->unsignaled_run = sig ? 0 : c->unsignaled_run + 1;
  c->ring[pos & c->ring_mask] = entry;
  c->head = pos + 1;
  ++cq_send_outstanding_;
  return true;
}

void VerbsEndpoint::retire_until(Conn* c, uint32_t end) {
  if (end == c->tail) return;
  c->stage_tail = c->ring[(end - 1) & c->ring_mask].stage_end;
  cq_send_outstanding_ -= end - c->tail;
  c->tail = end;
}

bool VerbsEndpoint::post_rdma(ConnId conn, ibv_wr_opcode opcode, Op op, const Region& local,
                              size_t local_off, const RemoteRegion& remote, uint64_t remote_off,
                              size_t len, uint32_t imm, uint64_t wr_id, bool signaled) {
  Conn* c = usable(conn);
  if (!c || !has_room(c)) return false;
  uint32_t lkey = 0;
  if (!check_local(local, local_off, len, lkey)) {
    synth(wr_id, conn, op, Status::LocalAccess, static_cast<uint32_t>(len));
    return true;
  }
  ibv_sge sge;
  sge.addr = reinterpret_cast<uintptr_t>(local.data + local_off);
  sge.length = static_cast<uint32_t>(len);
  sge.lkey = lkey;
  ibv_send_wr wr{};
  wr.opcode = opcode;
  wr.sg_list = &sge;
  wr.num_sge = len ? 1 : 0;
  wr.wr.rdma.remote_addr = remote.addr + remote_off;
  wr.wr.rdma.rkey = remote.rkey;
  if (opcode == IBV_WR_RDMA_WRITE_WITH_IMM) wr.imm_data = htonl(imm);
  if (opcode != IBV_WR_RDMA_READ && len && len <= max_inline_) wr.send_flags = IBV_SEND_INLINE;
  SendEntry e;
  e.user_wr_id = wr_id;
  e.len = static_cast<uint32_t>(len);
  e.stage_end = c->stage_head;
  e.op = op;
  e.user_signaled = signaled;
  return submit(c, wr, e);
}

bool VerbsEndpoint::post_write(ConnId conn, const Region& local, size_t local_off,
                               const RemoteRegion& remote, uint64_t remote_off, size_t len,
                               uint64_t wr_id, bool signaled) {
  return post_rdma(conn, IBV_WR_RDMA_WRITE, Op::Write, local, local_off, remote, remote_off, len, 0,
                   wr_id, signaled);
}

bool VerbsEndpoint::post_write_imm(ConnId conn, const Region& local, size_t local_off,
                                   const RemoteRegion& remote, uint64_t remote_off, size_t len,
                                   uint32_t imm, uint64_t wr_id, bool signaled) {
  return post_rdma(conn, IBV_WR_RDMA_WRITE_WITH_IMM, Op::WriteImm, local, local_off, remote,
                   remote_off, len, imm, wr_id, signaled);
}

bool VerbsEndpoint::post_read(ConnId conn, const Region& local, size_t local_off,
                              const RemoteRegion& remote, uint64_t remote_off, size_t len,
                              uint64_t wr_id) {
  return post_rdma(conn, IBV_WR_RDMA_READ, Op::Read, local, local_off, remote, remote_off, len, 0,
                   wr_id, true);
}

bool VerbsEndpoint::post_send(ConnId conn, std::span<const std::byte> bytes, uint64_t wr_id) {
  Conn* c = usable(conn);
  if (!c || !has_room(c)) return false;
  size_t len = bytes.size();
  if (len > cfg_.max_send_bytes) {
    synth(wr_id, conn, Op::Send, Status::TooLarge, static_cast<uint32_t>(len));
    return true;
  }
  ibv_sge sge{};
  ibv_send_wr wr{};
  wr.opcode = IBV_WR_SEND;
  wr.sg_list = &sge;
  wr.num_sge = len ? 1 : 0;
  sge.length = static_cast<uint32_t>(len);
  uint32_t stage_head = c->stage_head;
  if (len && len <= max_inline_) {
    sge.addr = reinterpret_cast<uintptr_t>(bytes.data());
    wr.send_flags = IBV_SEND_INLINE;
  } else if (len) {
    if (stage_head - c->stage_tail >= c->stage_slots) return false;
    std::byte* dst = c->buf + size_t{c->slot_bytes} * (c->rq_depth + stage_head % c->stage_slots);
    std::memcpy(dst, bytes.data(), len);
    sge.addr = reinterpret_cast<uintptr_t>(dst);
    sge.lkey = c->buf_mr->lkey;
    ++stage_head;
  }
  SendEntry e;
  e.user_wr_id = wr_id;
  e.len = static_cast<uint32_t>(len);
  e.stage_end = stage_head;
  e.op = Op::Send;
  e.user_signaled = true;
  if (!submit(c, wr, e)) return false;
  c->stage_head = stage_head;
  return true;
}

// ---- completions --------------------------------------------------------------

size_t VerbsEndpoint::poll(std::span<Completion> out) {
  // Recv data handed out by the previous poll() is released now.
  if (!dirty_.empty()) repost_receives();
  if (closing_) reap_closing();

  size_t n = 0;
  while (n < out.size() && pending_head_ < pending_.size()) out[n++] = pending_[pending_head_++];
  if (pending_head_ == pending_.size() && pending_head_) {
    pending_.clear();
    pending_head_ = 0;
  }
  if (deferred_ready_) release_deferred(out, n);
  while (n < out.size() && stash_pos_ < stash_n_) handle_wc(stash_[stash_pos_++], out, n);
  if (stash_pos_ == stash_n_) stash_pos_ = stash_n_ = 0;

  while (n < out.size()) {
    int want = static_cast<int>(std::min(out.size() - n, wcs_.size()));
    int got = ibv_poll_cq(cq_, want, wcs_.data());
    if (got < 0) {
      log("ibv_poll_cq failed");
      break;
    }
    for (int i = 0; i < got; ++i) handle_wc(wcs_[i], out, n);
    if (got < want) {
      ++cq_drains_;
      break;
    }
  }

  if (fd_mode_) arm_for_fd_mode(out, n);
  if (kicked_) unkick_if_idle();
  if (++poll_calls_ >= kControlEvery) {
    poll_calls_ = 0;
    if (Clock::now() - last_control_ >= kControlInterval) progress_control();
  }
  return n;
}

void VerbsEndpoint::handle_wc(const ibv_wc& wc, std::span<Completion> out, size_t& n) {
  uint32_t slot = wr_slot(wc.wr_id);
  Conn* c = slot < conns_.size() ? conns_[slot].get() : nullptr;
  if (!c || c->gen != wr_gen(wc.wr_id)) return;  // left behind by a destroyed QP
  if (wr_is_recv(wc.wr_id))
    handle_recv_wc(c, wc, out, n);
  else
    handle_send_wc(c, wc, out, n);
}

void VerbsEndpoint::handle_send_wc(Conn* c, const ibv_wc& wc, std::span<Completion> out,
                                   size_t& n) {
  uint32_t pos = wr_index(wc.wr_id);
  if (pos - c->tail >= c->head - c->tail) return;  // already retired
  // RC completes in order: everything before `pos` succeeded.
  retire_until(c, pos);
  SendEntry e = c->ring[pos & c->ring_mask];
  retire_until(c, pos + 1);
  Status status = map_status(wc.status);
  if (status == Status::Ok && !e.user_signaled) return;  // internal signal only
  Completion& comp = out[n++];
  comp = Completion{};
  comp.wr_id = e.user_wr_id;
  comp.conn = c->id;
  comp.op = e.op;
  comp.status = status;
  comp.len = e.len;
  if (status != Status::Ok && c->state != ConnState::Closing) {
    if (status != Status::Flushed || wc.status != IBV_WC_WR_FLUSH_ERR)
      log(std::string(to_string(e.op)) + " on the connection to " + c->remote +
          " failed: " + ibv_wc_status_str(wc.status));
    begin_close(c, std::string(to_string(e.op)) + " failed: " + ibv_wc_status_str(wc.status));
  }
}

// Receive CQEs held back until the user learnt about their connection, in
// CQ order; those of connections destroyed meanwhile are dropped.
void VerbsEndpoint::release_deferred(std::span<Completion> out, size_t& n) {
  size_t keep = 0;
  for (const ibv_wc& wc : deferred_) {
    uint32_t slot = wr_slot(wc.wr_id);
    Conn* c = slot < conns_.size() ? conns_[slot].get() : nullptr;
    if (!c || c->gen != wr_gen(wc.wr_id)) continue;
    if (c->user_knows && n < out.size()) {
      --c->deferred;
      handle_recv_wc(c, wc, out, n, true);
    } else {
      deferred_[keep++] = wc;
    }
  }
  deferred_.resize(keep);
  deferred_ready_ = false;
  for (const ibv_wc& wc : deferred_) {
    Conn* c = conns_[wr_slot(wc.wr_id)].get();
    if (c && c->user_knows) deferred_ready_ = true;
  }
}

void VerbsEndpoint::handle_recv_wc(Conn* c, const ibv_wc& wc, std::span<Completion> out, size_t& n,
                                   bool released) {
  uint32_t idx = wr_index(wc.wr_id);
  if (wc.status != IBV_WC_SUCCESS) {
    if (wc.status == IBV_WC_WR_FLUSH_ERR || c->state == ConnState::Closing) return;
    Completion& comp = out[n++];
    comp = Completion{};
    comp.conn = c->id;
    comp.op = Op::Recv;
    comp.status = map_status(wc.status);
    log(std::string("receive on the connection to ") + c->remote +
        " failed: " + ibv_wc_status_str(wc.status));
    begin_close(c, std::string("receive failed: ") + ibv_wc_status_str(wc.status));
    return;
  }
  if (c->state == ConnState::Accepting) {
    // The initiator is established (it only sends once it verified our
    // reply); its RTU is still on the way.
    announce_connected(c);
  }
  if (!released && (!c->user_knows || c->deferred)) {
    // Not yet announced, or the Connected event is still queued: hold the
    // CQE (and its receive slot) until next_event() has returned it.
    deferred_.push_back(wc);  // reserved; grows only with many new connections
    ++c->deferred;
    return;
  }
  if (c->state != ConnState::Closing) {
    c->repost.push_back(idx);  // capacity rq_depth: never allocates
    if (!c->dirty) {
      c->dirty = true;
      dirty_.push_back(c->id);  // capacity >= connections: never allocates
    }
  }
  Completion& comp = out[n++];
  comp = Completion{};
  comp.conn = c->id;
  comp.len = wc.byte_len;
  if (wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
    comp.op = Op::RecvImm;
    comp.imm = ntohl(wc.imm_data);
  } else {
    comp.op = Op::Recv;
    comp.data = c->buf + size_t{idx} * c->slot_bytes;
    if (wc.wc_flags & IBV_WC_WITH_IMM) comp.imm = ntohl(wc.imm_data);
  }
}

}  // namespace rcpg::transport::verbs
