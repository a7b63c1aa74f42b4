// Node membership for CPG clients (daemon/membership.h has the rules):
//  * a View entry: the processes of departed (or restarted) nodes leave every
//    group with NODEDOWN, one confchg per group, the same at every daemon;
//    then clients with a totem_confchg callback get the new ring;
//  * at every view every daemon announces its local members through the
//    log and then sends a marker; where a view brings a node in (or starts
//    a member's new history) the other side's membership entries are
//    applied together where the last marker lands (daemon/sync_barrier.h),
//    with NODEUP for the members learned;
//  * the engine's state: without a quorum (or while the view changes) sends,
//    joins and leaves get CS_ERR_TRY_AGAIN. Membership changes only with an
//    agreed view: a node that lost the quorum keeps showing the last view
//    (it may well continue in the next one); once it learns it was excluded
//    its clients see every remote member leave (NODEDOWN), as on Corosync's
//    minority side, and learn them again when it is taken back.
#include <algorithm>
#include <cstring>

#include "daemon/server.h"

namespace rcpg::daemon {

using ordering::Delivery;
using ordering::EntryKind;
using ordering::Membership;
using ordering::SendResult;

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
  view_ = std::move(next);
  view_epoch_ = d.aux;
  view_sequencer_ = d.sender;
  // Every daemon announces and sends its marker at every view: a member
  // may start a new history in a view that, to the others, only continues
  // (the engine marks it fresh when no member carrying the log on went
  // through its previous view), and it learns everyone from these.
  barrier_.on_view(d.aux, view_, diff.added, diff.departed, d.fresh, self);
  announce_pending_ = true;
  announce_groups_.clear();
  marker_epoch_ = d.aux;
  // Before the clients hear of the view: a process on the learning side
  // must not send until it is a member everywhere.
  if (barrier_.learning()) set_block(ipc::MembershipBlock::Changing);
  remote_dropped_ = false;
  for (Client* c : active_)
    if (c->hello && (c->model_flags & ipc::kWantsTotemConfchg)) send_totem(*c);
}

void Server::merge_held() {
  std::vector<HeldEntry> held = barrier_.release();
  if (held.empty()) return;
  log("join-list sync of view " + std::to_string(view_epoch_) + " complete: applying " +
      std::to_string(held.size()) + " membership entries of the other side");
  applying_held_ = true;
  for (const HeldEntry& e : held) on_membership(e.delivery());
  applying_held_ = false;
}

void Server::on_sync(const Delivery& d) {
  if (d.aux == kJoinSyncDone) {
    uint32_t epoch = 0;
    if (!decode_marker(d.data, d.len, epoch)) {
      ++counters_.bad_membership_entries;
      log("ignoring a sync marker of " + std::to_string(d.len) + " bytes from node " +
          std::to_string(d.sender));
      return;
    }
    if (barrier_.marker(d.sender, epoch)) merge_held();
    return;
  }
  if (d.sender == cfg_.nodeid) return;  // we know our own members
  if (barrier_.holds(d.sender)) return barrier_.hold(d);
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
  if (!announce_pending_) return send_marker() || did;
  if (announce_groups_.empty()) {
    // Which local groups have members to announce (computed when the
    // announcing starts; their members are taken when each one is sent).
    for (Client* c : active_)
      if (c->hello && c->handle.phase == Phase::Member &&
          std::find(announce_groups_.begin(), announce_groups_.end(), c->handle.index) ==
              announce_groups_.end())
        announce_groups_.push_back(c->handle.index);
    if (announce_groups_.empty()) announce_pending_ = false;
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
  return send_marker() || did;
}

bool Server::send_marker() {
  // After the announcements (one node's entries stay in order in the log);
  // a marker of an older view counts for nothing.
  if (marker_epoch_ == 0 || announce_pending_) return false;
  if (marker_epoch_ != view_epoch_) {  // a newer view asks for its own
    marker_epoch_ = 0;
    return false;
  }
  std::vector<std::byte> payload = encode_marker(marker_epoch_);
  if (engine_->send(EntryKind::Join, ordering::Guarantee::Agreed, 0, 0, payload, kJoinSyncDone) !=
      SendResult::Ok)
    return false;
  marker_epoch_ = 0;
  ++counters_.sync_markers;
  return true;
}

void Server::keep_epoch() {
  uint32_t e = engine_->decided_epoch();
  if (e <= epoch_tried_) return;
  epoch_tried_ = e;
  std::string why;
  if (!epochs_.save(e, why))
    log("cannot keep view epoch " + std::to_string(e) + " across restarts: " + why +
        " (a restart while the last node of this view is cut off may then reuse view numbers)");
}

void Server::watch_membership() {
  keep_epoch();
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
    // Excluded from a view: this node's history ends here, its clients see
    // the others go (it will be taken back fresh). Merely without a quorum
    // it may still continue in the next view: nothing changes until then.
    if (v.state == Membership::NoQuorum) ++counters_.quorum_losses;
    if (v.state == Membership::Forming && had_view && !remote_dropped_) {
      ++counters_.exclusions;
      remote_dropped_ = true;
      const uint32_t self = cfg_.nodeid;
      drop_remote([self](uint32_t n) { return n != self; });
    }
  }
  ipc::MembershipBlock b = ipc::MembershipBlock::Open;
  if (v.state == Membership::NoQuorum || (v.state == Membership::Forming && had_view))
    b = ipc::MembershipBlock::NoQuorum;
  else if (v.state == Membership::Changing || barrier_.learning())
    b = ipc::MembershipBlock::Changing;
  if (b != block_) set_block(b);
}

}  // namespace rcpg::daemon
