// Node membership for CPG clients (daemon/membership.h has the rules):
//  * a View entry: the processes of departed (or restarted) nodes leave every
//    group with NODEDOWN, one confchg per group, the same at every daemon;
//    then clients with a totem_confchg callback get the new ring;
//  * on a view that brings a node in, every daemon announces its local
//    members through the log; unknown ones are applied with NODEUP;
//  * the engine's state: without a quorum (or while the view changes) sends,
//    joins and leaves get CS_ERR_TRY_AGAIN, and on losing the quorum the
//    local clients see every remote member leave (NODEDOWN), as on
//    Corosync's minority side. Back in a view, the members are learned again.
#include <algorithm>
#include <cstring>

#include "daemon/server.h"

namespace rcpg::daemon {

using ordering::Delivery;
using ordering::EntryKind;
using ordering::Membership;
using ordering::SendResult;

bool Server::syncing(uint32_t node) const {
  if (node == cfg_.nodeid) return false;
  return syncing_all_ ||
         std::find(syncing_nodes_.begin(), syncing_nodes_.end(), node) != syncing_nodes_.end();
}

void Server::drop_remote(const std::function<bool(uint32_t)>& gone) {
  for (const Confchg& ev : groups_.drop_nodes(gone)) {
    counters_.nodedown_members += ev.left.size();
    send_confchg_to_group(ev);
  }
}

void Server::set_block(ipc::MembershipBlock b) {
  block_ = b;
  for (Client* c : active_)
    if (c->hello && c->header)
      c->header->membership.value.store(static_cast<uint64_t>(b), std::memory_order_release);
}

void Server::on_view(const Delivery& d) {
  std::vector<ordering::ViewMember> next;
  std::string why;
  if (!parse_view(d.data, d.len, next, why)) {
    log("ignoring " + why + " (epoch " + std::to_string(d.aux) + ")");
    return;
  }
  const uint32_t self = cfg_.nodeid;
  ViewDiff diff = diff_views(view_, next, d.fresh, self);
  ++counters_.views_applied;
  std::string line = "view " + std::to_string(d.aux) + ": members {" + format_view(next) +
                     "}, sequencer " + std::to_string(d.sender);
  if (d.fresh && !view_.empty()) line += ", a new history for this node (it was cut off)";
  auto list = [](const std::vector<uint32_t>& ids) {
    std::string s;
    for (uint32_t id : ids) s += (s.empty() ? "" : " ") + std::to_string(id);
    return s;
  };
  if (!diff.departed.empty()) line += ", left: " + list(diff.departed);
  if (!diff.added.empty()) line += ", joined: " + list(diff.added);
  log(line);

  // NODEDOWN first (Corosync delivers the CPG confchgs before the totem one).
  if (diff.drop_all_remote)
    drop_remote([self](uint32_t n) { return n != self; });
  else if (!diff.departed.empty())
    drop_remote([&](uint32_t n) {
      return std::find(diff.departed.begin(), diff.departed.end(), n) != diff.departed.end();
    });
  bool relearn = remote_dropped_;
  view_ = std::move(next);
  view_epoch_ = d.aux;
  view_sequencer_ = d.sender;
  for (Client* c : active_)
    if (c->hello && (c->model_flags & ipc::kWantsTotemConfchg)) send_totem(*c);

  // Whom we learn members from in this view (their leaves may precede
  // their announcements).
  syncing_all_ = diff.drop_all_remote || relearn;
  syncing_nodes_ = diff.added;
  if (diff.announce) {
    announce_pending_ = true;
    announce_groups_.clear();
  }
  // Back from a quorum loss without anyone new in the view: nobody else
  // announces, so ask them to.
  if (relearn && !diff.announce && !diff.drop_all_remote) sync_request_pending_ = true;
  remote_dropped_ = false;
}

void Server::on_sync(const Delivery& d) {
  if (d.sender == cfg_.nodeid) return;  // we know our own members
  if (d.aux == kJoinSyncRequest) {
    // Someone lost track of the members (it was without a quorum).
    announce_pending_ = true;
    announce_groups_.clear();
    return;
  }
  std::string why;
  std::string_view name;
  std::vector<uint32_t> pids;
  Confchg ev;
  if (d.aux != kJoinSync || !decode_sync(d.data, d.len, name, pids, why) ||
      !groups_.apply_sync(d.sender, d.group, name, pids, ev, why)) {
    if (why.empty()) why = "Join entry of unknown kind " + std::to_string(d.aux);
    ++counters_.bad_membership_entries;
    log("ignoring a sync announcement from node " + std::to_string(d.sender) + ": " + why);
    return;
  }
  if (ev.joined.empty()) return;  // known already: nothing changes here
  counters_.nodeup_members += ev.joined.size();
  send_confchg_to_group(ev);
}

bool Server::send_sync() {
  bool did = false;
  if (sync_request_pending_) {
    SendResult r =
        engine_->send(EntryKind::Join, ordering::Guarantee::Agreed, 0, 0, {}, kJoinSyncRequest);
    if (r != SendResult::Ok) return false;
    sync_request_pending_ = false;
    ++counters_.sync_requests;
    did = true;
  }
  if (!announce_pending_) return did;
  if (announce_groups_.empty()) {
    // Which local groups have members to announce (computed when the
    // announcing starts; their members are taken when each one is sent).
    for (Client* c : active_)
      if (c->hello && c->handle.phase == Phase::Member &&
          std::find(announce_groups_.begin(), announce_groups_.end(), c->handle.index) ==
              announce_groups_.end())
        announce_groups_.push_back(c->handle.index);
    if (announce_groups_.empty()) {
      announce_pending_ = false;
      return did;
    }
  }
  while (!announce_groups_.empty()) {
    uint32_t index = announce_groups_.back();
    // Members now, not when the view came: a member that has left since
    // (its Leave is ahead in our FIFO) is not announced, one whose Join has
    // been applied since is (everybody ignores it, having applied the Join).
    std::string name;
    std::vector<uint32_t> pids;
    for (Client* c : active_)
      if (c->hello && c->handle.phase == Phase::Member && c->handle.index == index) {
        name = c->handle.group;
        pids.push_back(c->handle.pid);
      }
    std::sort(pids.begin(), pids.end());
    size_t cap = std::max<size_t>(1, sync_capacity(max_fragment_, name.size()));
    size_t sent = 0;
    while (sent < pids.size()) {
      size_t n = std::min(cap, pids.size() - sent);
      std::vector<std::byte> payload = encode_sync(name, std::span(pids).subspan(sent, n));
      SendResult r =
          engine_->send(EntryKind::Join, ordering::Guarantee::Agreed, index, 0, payload, kJoinSync);
      if (r != SendResult::Ok) {
        // No room (or no quorum): retry this group from its start next round
        // (re-announcing pids is harmless: known members are ignored).
        if (r == SendResult::TooLarge) {
          log("internal: a sync announcement does not fit one entry");
          break;
        }
        return did;
      }
      ++counters_.sync_announcements;
      sent += n;
      did = true;
    }
    announce_groups_.pop_back();
  }
  announce_pending_ = false;
  return did;
}

void Server::watch_membership() {
  const ordering::ViewState& v = engine_->view();
  const bool had_view = view_epoch_ != 0;
  if (v.state != last_state_) {
    last_state_ = v.state;
    std::string line = std::string("membership: ") + ordering::to_string(v.state);
    if (!v.why.empty()) line += " (" + v.why + ")";
    switch (v.state) {
      case Membership::Normal:
        line += ", epoch " + std::to_string(v.epoch) + ", members {" + format_view(v.members) +
                "}: sends, joins and leaves go through";
        break;
      case Membership::NoQuorum:
        line += ": sends, joins and leaves get CS_ERR_TRY_AGAIN";
        break;
      case Membership::Changing:
        line += ": sends, joins and leaves get CS_ERR_TRY_AGAIN until the new view";
        break;
      case Membership::Forming:
        line += had_view ? ": cut off; waiting to be added to a view" : ": waiting for a view";
        break;
    }
    log(line);
    // Without a quorum this node delivers nothing more of the others: its
    // clients see them go, as on Corosync's minority side.
    bool cut_off = v.state == Membership::NoQuorum || (v.state == Membership::Forming && had_view);
    if (cut_off && !remote_dropped_ && had_view) {
      ++counters_.quorum_losses;
      remote_dropped_ = true;
      const uint32_t self = cfg_.nodeid;
      drop_remote([self](uint32_t n) { return n != self; });
    }
  }
  ipc::MembershipBlock b = ipc::MembershipBlock::Open;
  if (v.state == Membership::NoQuorum || (v.state == Membership::Forming && had_view))
    b = ipc::MembershipBlock::NoQuorum;
  else if (v.state == Membership::Changing)
    b = ipc::MembershipBlock::Changing;
  if (b != block_) set_block(b);
  // The quorum came back in the same view (no View entry follows): the
  // others still have our members, we must learn theirs again.
  if (remote_dropped_ && v.state == Membership::Normal && v.epoch == view_epoch_) {
    remote_dropped_ = false;
    syncing_all_ = true;
    sync_request_pending_ = true;
  }
}

}  // namespace rcpg::daemon
