// Control requests on a client's socket (api/ipc/protocol.h): Hello, Join,
// Leave, MembershipGet, Iterate, Status, Finalize.
#include <sys/socket.h>

#include <cstring>

#include "daemon/server.h"
#include "daemon/status_request.h"

namespace rcpg::daemon {

using ordering::EntryKind;
using ordering::Guarantee;
using ordering::SendResult;

namespace {
std::string_view name_of(const ipc::GroupName& g) {
  return {g.value, g.length};
}
}  // namespace

void Server::violation(Client& c, const std::string& what) {
  ++counters_.protocol_violations;
  log("client pid " + std::to_string(c.pid) + ": " + what + "; disconnecting it");
  c.broken = true;
  hangup(c);
}

void Server::reply(Client& c, ipc::MsgType type, const void* body, size_t len, const int* fds,
                   size_t nfds) {
  if (c.fd < 0) return;
  tx_buf_.resize(sizeof(ipc::MsgHeader) + len);
  ipc::MsgHeader h{type, static_cast<uint32_t>(len)};
  std::memcpy(tx_buf_.data(), &h, sizeof(h));
  if (len) std::memcpy(tx_buf_.data() + sizeof(h), body, len);
  iovec iov{tx_buf_.data(), tx_buf_.size()};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(8) char cbuf[CMSG_SPACE(sizeof(int) * 3)];
  if (nfds) {
    mh.msg_control = cbuf;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsghdr* cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    std::memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
  }
  if (sendmsg(c.fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) != static_cast<ssize_t>(tx_buf_.size())) {
    // Replies are never queued: a client that does not read them is broken.
    violation(c, std::string("cannot send a reply: ") + std::strerror(errno));
  }
}

void Server::reply_status(Client& c, ipc::MsgType type, ipc::Status s) {
  ipc::StatusReply r{s, 0};
  reply(c, type, &r, sizeof(r));
}

void Server::handle_request(Client& c, const std::byte* msg, size_t len) {
  ipc::MsgHeader h;
  if (len < sizeof(h)) return violation(c, "control message shorter than its header");
  std::memcpy(&h, msg, sizeof(h));
  const std::byte* body = msg + sizeof(h);
  size_t blen = len - sizeof(h);
  if (h.length != blen) return violation(c, "control message length does not match its header");
  if (c.deferred != ipc::MsgType::Wake)
    return violation(c, "new request while the previous one is unanswered");
  auto group_body = [&](ipc::GroupName& g) {
    if (blen != sizeof(ipc::GroupRequest)) {
      violation(c, "group request of " + std::to_string(blen) + " bytes");
      return false;
    }
    std::memcpy(&g, body, sizeof(g));
    return true;
  };
  ipc::GroupName g;
  switch (h.type) {
    case ipc::MsgType::Hello:
      return on_hello(c, body, blen);
    case ipc::MsgType::Join:
    case ipc::MsgType::Leave:
    case ipc::MsgType::Finalize:
      if (!c.hello) return violation(c, "request before Hello");
      if (h.type == ipc::MsgType::Finalize) {
        if (blen != 0) return violation(c, "Finalize with a body");
      } else if (!group_body(g)) {
        return;
      }
      // Messages the client published before this request go first.
      c.deferred = h.type;
      c.deferred_group = g;
      process_requests(c, SIZE_MAX);
      return run_deferred(c);
    case ipc::MsgType::MembershipGet:
      if (!group_body(g)) return;
      return on_membership_get(c, g);
    case ipc::MsgType::Iterate:
      return on_iterate(c, body, blen);
    case ipc::MsgType::Status: {
      StatusRequest sr;
      if (blen != 0 && blen != sizeof(sr)) return violation(c, "malformed Status request");
      if (blen) std::memcpy(&sr, body, sizeof(sr));
      std::string text = status_report(sr.what, (sr.flags & kStatusJson) != 0);
      size_t cap = ipc::kMaxControlBytes - sizeof(ipc::MsgHeader);
      if (text.size() > cap) {
        const char* tail = "\n... (truncated)\n";
        text.resize(cap - std::strlen(tail));
        text += tail;
      }
      return reply(c, ipc::MsgType::Status, text.data(), text.size());
    }
    default:
      return violation(c, "unknown request type " + std::to_string(static_cast<uint32_t>(h.type)));
  }
}

void Server::run_deferred(Client& c) {
  if (c.closing || c.broken) return;
  // Without a quorum the published messages may wait indefinitely: a join
  // or leave behind them is refused now (nothing happened, the caller may
  // retry) instead of blocking its caller until the quorum is back.
  if (blocked() && (c.deferred == ipc::MsgType::Join || c.deferred == ipc::MsgType::Leave)) {
    ipc::MsgType t = c.deferred;
    c.deferred = ipc::MsgType::Wake;
    ++counters_.try_again_no_quorum;
    return reply_status(c, t, ipc::Status::TryAgain);
  }
  // Wait while the ring holds records or a large message is half sent.
  if (c.requests.used() != 0 || c.chunk.active || c.zcb.active) return;
  const char* why = nullptr;
  ipc::RecordHeader h;
  const std::byte* body;
  if (c.requests.peek(h, body, why) != RequestRingReader::Result::Empty) return;
  ipc::MsgType t = c.deferred;
  c.deferred = ipc::MsgType::Wake;
  switch (t) {
    case ipc::MsgType::Join:
      return on_join(c, c.deferred_group);
    case ipc::MsgType::Leave:
      return on_leave(c, c.deferred_group);
    case ipc::MsgType::Finalize:
      return on_finalize(c);
    default:
      return;
  }
}

void Server::on_hello(Client& c, const std::byte* body, size_t len) {
  if (c.hello || c.hello_pending) return violation(c, "second Hello");
  ipc::HelloRequest req;
  if (len != sizeof(req)) return violation(c, "Hello of " + std::to_string(len) + " bytes");
  std::memcpy(&req, body, sizeof(req));
  ipc::HelloReply rep;
  rep.nodeid = cfg_.nodeid;
  if (req.magic != ipc::kMagic || req.version != ipc::kVersion) {
    log("client pid " + std::to_string(c.pid) + " speaks protocol version " +
        std::to_string(req.version) + " (magic " + std::to_string(req.magic) + "); this is " +
        std::to_string(ipc::kVersion));
    rep.status = ipc::Status::Library;
    reply(c, ipc::MsgType::Hello, &rep, sizeof(rep));
    if (!c.closing) hangup(c);
    return;
  }
  std::string why;
  if (!c.create_segment(geo_, why)) {
    log("client pid " + std::to_string(c.pid) + ": " + why);
    rep.status = ipc::Status::NoResources;
    return reply(c, ipc::MsgType::Hello, &rep, sizeof(rep));
  }
  c.model_flags = req.model_flags;
  // The reply waits for the registration (off the loop), so that the
  // client's zero-copy sends are zero-copy from the first one.
  c.hello_pending = true;
  if (!register_segment(c)) finish_hello(c);
}

void Server::finish_hello(Client& c) {
  c.hello_pending = false;
  c.hello = true;
  c.header->membership.value.store(static_cast<uint64_t>(block_), std::memory_order_release);
  ipc::HelloReply rep;
  rep.nodeid = cfg_.nodeid;
  rep.segment_bytes = c.seg_bytes;
  rep.log_bytes = log_ro_fd_ >= 0 ? log_size_ : 0;
  rep.max_atomic_msg = static_cast<uint32_t>(max_fragment_);
  rep.max_msg_bytes = static_cast<uint32_t>(kMaxMessageBytes);
  rep.ring_id_seq = view_epoch_;
  rep.ring_id_nodeid = view_sequencer_;
  int fds[3];
  size_t n = 0;
  fds[n++] = c.seg_fd;
  if (log_ro_fd_ >= 0) fds[n++] = log_ro_fd_;
  fds[n++] = doorbell_fd_;
  reply(c, ipc::MsgType::Hello, &rep, sizeof(rep), fds, n);
}

void Server::on_join(Client& c, const ipc::GroupName& g) {
  if (g.length > ipc::kMaxGroupName)
    return reply_status(c, ipc::MsgType::Join, ipc::Status::NameTooLong);
  std::string_view name = name_of(g);
  ipc::Status s = rules_.check_join(c.handle, name);
  if (s != ipc::Status::Ok) return reply_status(c, ipc::MsgType::Join, s);
  if (blocked()) {  // no quorum, or the view is changing (Corosync: TRY_AGAIN)
    ++counters_.try_again_no_quorum;
    return reply_status(c, ipc::MsgType::Join, ipc::Status::TryAgain);
  }
  uint32_t idx = rules_.index_for(name);
  SendResult r = engine_->send(EntryKind::Join, Guarantee::Agreed, idx, c.handle.pid,
                               std::as_bytes(std::span(name.data(), name.size())));
  if (r != SendResult::Ok)
    return reply_status(c, ipc::MsgType::Join,
                        r == SendResult::TooLarge ? ipc::Status::Library : ipc::Status::TryAgain);
  rules_.joined(c.handle, name);
  pending_ops_.push_back({c.serial, EntryKind::Join, c.handle.pid, idx});
  ++counters_.joins;
  reply_status(c, ipc::MsgType::Join, ipc::Status::Ok);
}

bool Server::submit_leave(uint64_t serial, Handle& h, uint32_t reason) {
  SendResult r = engine_->send(EntryKind::Leave, Guarantee::Agreed, h.index, h.pid,
                               std::as_bytes(std::span(h.group.data(), h.group.size())), reason);
  if (r != SendResult::Ok) return false;
  rules_.leaving(h);
  pending_ops_.push_back({serial, EntryKind::Leave, h.pid, h.index});
  return true;
}

bool Server::retry_deferred_leaves() {
  bool did = false;
  while (!deferred_leaves_.empty()) {
    DeferredLeave& d = deferred_leaves_.front();
    if (!submit_leave(d.serial, d.handle, kReasonProcDown)) break;
    deferred_leaves_.erase(deferred_leaves_.begin());
    did = true;
  }
  return did;
}

void Server::on_leave(Client& c, const ipc::GroupName& g) {
  if (g.length > ipc::kMaxGroupName)
    return reply_status(c, ipc::MsgType::Leave, ipc::Status::NameTooLong);
  ipc::Status s = rules_.check_leave(c.handle, name_of(g));
  if (s != ipc::Status::Ok) return reply_status(c, ipc::MsgType::Leave, s);
  if (blocked()) {
    ++counters_.try_again_no_quorum;
    return reply_status(c, ipc::MsgType::Leave, ipc::Status::TryAgain);
  }
  if (!submit_leave(c.serial, c.handle, kReasonLeave))
    return reply_status(c, ipc::MsgType::Leave, ipc::Status::TryAgain);
  ++counters_.leaves;
  reply_status(c, ipc::MsgType::Leave, ipc::Status::Ok);
}

void Server::procdown(Client& c) {
  if (!rules_.gone(c.handle)) return;
  ++counters_.procdowns;
  Handle h = c.handle;  // the Leave may wait for engine credit after c is gone
  c.handle.phase = Phase::Done;
  if (!submit_leave(c.serial, h, kReasonProcDown)) deferred_leaves_.push_back({c.serial, h});
}

void Server::on_finalize(Client& c) {
  // Finalize without a leave: the others see PROCDOWN, as with Corosync.
  procdown(c);
  reply_status(c, ipc::MsgType::Finalize, ipc::Status::Ok);
  c.broken = true;  // nothing more is read from its ring
  hangup(c);
}

void Server::on_membership_get(Client& c, const ipc::GroupName& g) {
  ipc::MembersReply rep;
  if (g.length > ipc::kMaxGroupName) {
    rep.status = ipc::Status::NameTooLong;
    return reply(c, ipc::MsgType::MembershipGet, &rep, sizeof(rep));
  }
  const Group* grp = groups_.find(name_of(g));
  size_t n = grp ? grp->members.size() : 0;
  size_t cap =
      (ipc::kMaxControlBytes - sizeof(ipc::MsgHeader) - sizeof(rep)) / sizeof(ipc::MemberEntry);
  if (n > cap) {
    rep.status = ipc::Status::NoResources;
    return reply(c, ipc::MsgType::MembershipGet, &rep, sizeof(rep));
  }
  std::vector<std::byte> out(sizeof(rep) + n * sizeof(ipc::MemberEntry));
  rep.count = static_cast<uint32_t>(n);
  std::memcpy(out.data(), &rep, sizeof(rep));
  if (n) std::memcpy(out.data() + sizeof(rep), grp->members.data(), n * sizeof(ipc::MemberEntry));
  reply(c, ipc::MsgType::MembershipGet, out.data(), out.size());
}

void Server::on_iterate(Client& c, const std::byte* body, size_t len) {
  ipc::IterateRequest req;
  if (len != sizeof(req))
    return violation(c, "Iterate request of " + std::to_string(len) + " bytes");
  std::memcpy(&req, body, sizeof(req));
  ipc::IterateReply rep;
  std::vector<ipc::IterationEntry> entries;
  auto add = [&](const Group& g, uint32_t nodeid, uint32_t pid) {
    ipc::IterationEntry e{};
    e.group.length = static_cast<uint32_t>(g.name.size());
    std::memcpy(e.group.value, g.name.data(), g.name.size());
    e.nodeid = nodeid;
    e.pid = pid;
    entries.push_back(e);
  };
  switch (req.type) {
    case ipc::IterationType::NameOnly:
      for (const Group* g : groups_.active()) add(*g, 0, 0);
      break;
    case ipc::IterationType::OneGroup:
      if (req.group.length > ipc::kMaxGroupName) {
        rep.status = ipc::Status::NameTooLong;
      } else if (const Group* g = groups_.find(name_of(req.group))) {
        for (const auto& m : g->members) add(*g, m.nodeid, m.pid);
      }
      break;
    case ipc::IterationType::All:
      for (const Group* g : groups_.active())
        for (const auto& m : g->members) add(*g, m.nodeid, m.pid);
      break;
    default:
      rep.status = ipc::Status::InvalidParam;
  }
  size_t cap =
      (ipc::kMaxControlBytes - sizeof(ipc::MsgHeader) - sizeof(rep)) / sizeof(ipc::IterationEntry);
  if (entries.size() > cap) {
    rep.status = ipc::Status::NoResources;
    entries.clear();
  }
  if (rep.status != ipc::Status::Ok) entries.clear();
  rep.count = static_cast<uint32_t>(entries.size());
  std::vector<std::byte> out(sizeof(rep) + entries.size() * sizeof(ipc::IterationEntry));
  std::memcpy(out.data(), &rep, sizeof(rep));
  if (!entries.empty())
    std::memcpy(out.data() + sizeof(rep), entries.data(),
                entries.size() * sizeof(ipc::IterationEntry));
  reply(c, ipc::MsgType::Iterate, out.data(), out.size());
}

}  // namespace rcpg::daemon
