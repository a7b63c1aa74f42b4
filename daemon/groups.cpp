#include "daemon/groups.h"

#include <algorithm>

namespace rcpg::daemon {
namespace {

bool member_less(const ipc::MemberEntry& a, const ipc::MemberEntry& b) {
  return a.nodeid != b.nodeid ? a.nodeid < b.nodeid : a.pid < b.pid;
}

}  // namespace

bool Group::has(uint32_t nodeid, uint32_t pid) const {
  ipc::MemberEntry m{nodeid, pid, kReasonUndefined};
  auto it = std::lower_bound(members.begin(), members.end(), m, member_less);
  return it != members.end() && it->nodeid == nodeid && it->pid == pid;
}

Group* GroupTable::find(std::string_view name) const {
  auto it = groups_.find(name);
  return it == groups_.end() ? nullptr : it->second.get();
}

std::vector<const Group*> GroupTable::active() const {
  std::vector<const Group*> out;
  for (const auto& [name, g] : groups_)
    if (!g->members.empty()) out.push_back(g.get());
  return out;
}

Group* GroupTable::bind(uint32_t sender, uint32_t index, std::string_view name, std::string& why) {
  if (name.size() > ipc::kMaxGroupName) {
    why = "group name of " + std::to_string(name.size()) + " bytes";
    return nullptr;
  }
  auto r = routes_.find(key(sender, index));
  if (r != routes_.end()) {
    if (r->second->name != name) {
      why = "node " + std::to_string(sender) + " reused group index " + std::to_string(index) +
            " for another name";
      return nullptr;
    }
    return r->second;
  }
  Group* g = find(name);
  if (!g) {
    auto owned = std::make_unique<Group>();
    owned->name = std::string(name);
    g = owned.get();
    groups_.emplace(owned->name, std::move(owned));
  }
  routes_.emplace(key(sender, index), g);
  return g;
}

bool GroupTable::apply_join(uint32_t sender, uint32_t index, uint32_t pid, std::string_view name,
                            Confchg& out, std::string& why) {
  Group* g = bind(sender, index, name, why);
  if (!g) return false;
  ipc::MemberEntry m{sender, pid, kReasonUndefined};
  auto it = std::lower_bound(g->members.begin(), g->members.end(), m, member_less);
  if (it != g->members.end() && it->nodeid == sender && it->pid == pid) {
    why = "(" + std::to_string(sender) + "," + std::to_string(pid) + ") joined '" + g->name +
          "' twice";
    return false;
  }
  g->members.insert(it, m);
  out.group = g;
  out.left.clear();
  out.joined.assign(1, {sender, pid, kReasonJoin});
  return true;
}

bool GroupTable::apply_leave(uint32_t sender, uint32_t index, uint32_t pid, uint32_t reason,
                             std::string_view name, Confchg& out, std::string& why) {
  Group* g = route(sender, index);
  if (!g || g->name != name) {
    why = "leave of an unknown group index " + std::to_string(index) + " from node " +
          std::to_string(sender);
    return false;
  }
  if (reason != kReasonLeave && reason != kReasonProcDown) {
    why = "leave with reason " + std::to_string(reason);
    return false;
  }
  ipc::MemberEntry m{sender, pid, kReasonUndefined};
  auto it = std::lower_bound(g->members.begin(), g->members.end(), m, member_less);
  if (it == g->members.end() || it->nodeid != sender || it->pid != pid) {
    why = "(" + std::to_string(sender) + "," + std::to_string(pid) + ") left '" + g->name +
          "' without being a member";
    return false;
  }
  g->members.erase(it);
  out.group = g;
  out.left.assign(1, {sender, pid, reason});
  out.joined.clear();
  return true;
}

bool GroupTable::apply_sync(uint32_t sender, uint32_t index, std::string_view name,
                            std::span<const uint32_t> pids, Confchg& out, std::string& why) {
  Group* g = bind(sender, index, name, why);
  if (!g) return false;
  out.group = g;
  out.left.clear();
  out.joined.clear();
  for (uint32_t pid : pids) {
    ipc::MemberEntry m{sender, pid, kReasonUndefined};
    auto it = std::lower_bound(g->members.begin(), g->members.end(), m, member_less);
    if (it != g->members.end() && it->nodeid == sender && it->pid == pid) continue;
    g->members.insert(it, m);
    out.joined.push_back({sender, pid, kReasonNodeUp});
  }
  // (A pid listed twice is found the second time: added once.)
  std::sort(out.joined.begin(), out.joined.end(), member_less);
  return true;
}

std::vector<Confchg> GroupTable::drop_nodes(const std::function<bool(uint32_t)>& gone) {
  std::vector<Confchg> out;
  for (auto& [name, g] : groups_) {
    Confchg c;
    auto keep = std::stable_partition(g->members.begin(), g->members.end(),
                                      [&](const ipc::MemberEntry& m) { return !gone(m.nodeid); });
    for (auto it = keep; it != g->members.end(); ++it)
      c.left.push_back({it->nodeid, it->pid, kReasonNodeDown});
    g->members.erase(keep, g->members.end());
    if (c.left.empty()) continue;
    c.group = g.get();
    out.push_back(std::move(c));
  }
  std::erase_if(routes_, [&](const auto& r) { return gone(static_cast<uint32_t>(r.first >> 32)); });
  return out;
}

// ---------------------------------------------------------------- local rules

ipc::Status LocalRules::check_join(const Handle& h, std::string_view name) const {
  if (name.size() > ipc::kMaxGroupName) return ipc::Status::NameTooLong;
  // One group per handle, for the handle's whole life (Corosync: EXIST).
  if (h.phase != Phase::None) return ipc::Status::Exist;
  if (claimed_.count(std::make_pair(std::string(name), h.pid))) return ipc::Status::Exist;
  return ipc::Status::Ok;
}

uint32_t LocalRules::index_for(std::string_view name) {
  auto it = index_.find(name);
  if (it != index_.end()) return it->second;
  uint32_t idx = next_index_++;
  index_.emplace(std::string(name), idx);
  return idx;
}

void LocalRules::joined(Handle& h, std::string_view name) {
  h.phase = Phase::Joining;
  h.group = std::string(name);
  h.index = index_for(name);
  ++claimed_[std::make_pair(h.group, h.pid)];
}

ipc::Status LocalRules::check_leave(const Handle& h, std::string_view name) const {
  if (name.size() > ipc::kMaxGroupName) return ipc::Status::NameTooLong;
  if ((h.phase != Phase::Joining && h.phase != Phase::Member) || h.group != name)
    return ipc::Status::NotExist;
  return ipc::Status::Ok;
}

void LocalRules::leaving(Handle& h) {
  h.phase = Phase::Leaving;
  auto it = claimed_.find(std::make_pair(h.group, h.pid));
  if (it != claimed_.end() && --it->second == 0) claimed_.erase(it);
}

bool LocalRules::gone(Handle& h) {
  // The pid stays claimed until the PROCDOWN Leave is submitted (leaving()),
  // so a new handle of the same process cannot join ahead of it.
  bool needs_leave = h.phase == Phase::Joining || h.phase == Phase::Member;
  if (!needs_leave) h.phase = Phase::Done;
  return needs_leave;
}

// ---------------------------------------------------------------- formatting

const char* reason_name(uint32_t reason) {
  switch (reason) {
    case kReasonUndefined:
      return "UNDEFINED";
    case kReasonJoin:
      return "JOIN";
    case kReasonLeave:
      return "LEAVE";
    case kReasonNodeDown:
      return "NODEDOWN";
    case kReasonNodeUp:
      return "NODEUP";
    case kReasonProcDown:
      return "PROCDOWN";
  }
  return "?";
}

namespace {
std::string format_list(const char* what, const ipc::MemberEntry* m, size_t n) {
  std::string s = std::string(what) + "[" + std::to_string(n) + "]={";
  for (size_t i = 0; i < n; ++i) {
    if (i) s += ",";
    s += "(" + std::to_string(m[i].nodeid) + "," + std::to_string(m[i].pid) + "," +
         reason_name(m[i].reason) + ")";
  }
  return s + "}";
}
}  // namespace

std::string format_confchg(const Confchg& c) {
  const auto& mem = c.group->members;
  return format_list("members", mem.data(), mem.size()) + " " +
         format_list("left", c.left.data(), c.left.size()) + " " +
         format_list("joined", c.joined.data(), c.joined.size());
}

}  // namespace rcpg::daemon
