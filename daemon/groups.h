// CPG group membership, replicated through the log.
//
// Join and Leave are log entries like Data. Each names the sender's
// node-local group index (assigned on the first local join of a name, never
// reused) and carries the group name, so every daemon learns the mapping
// (sender node, local index) -> group before any Data using it arrives (one
// node's entries are FIFO in the log). Applying the same entries in the same
// order gives every daemon the same member lists, hence identical confchgs
// at every member.
//
// Node failures and rejoins (daemon/membership.h): a View entry without a
// node removes all its processes at once (NODEDOWN, drop_nodes: one confchg
// per group, the same at every daemon because every daemon applies it at the
// same point of the log). A node that joins a view learns the others'
// members, and they learn its, from sync announcements (Join entries marked
// kJoinSync, apply_sync): a daemon applies the members it did not know with
// NODEUP and ignores the rest.
//
// GroupTable is that replicated state: pure logic, no I/O.
// LocalRules holds one daemon's admission rules for its own clients (the
// CPG return codes measured on Corosync 3.1.7).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "api/ipc/protocol.h"

namespace rcpg::daemon {

// CPG reasons (cpg.h).
inline constexpr uint32_t kReasonUndefined = 0;
inline constexpr uint32_t kReasonJoin = 1;
inline constexpr uint32_t kReasonLeave = 2;
inline constexpr uint32_t kReasonNodeDown = 3;
inline constexpr uint32_t kReasonNodeUp = 4;
inline constexpr uint32_t kReasonProcDown = 5;

struct Group {
  std::string name;
  // Ordered by (nodeid, pid), reason UNDEFINED: what Corosync reports.
  std::vector<ipc::MemberEntry> members;
  // This daemon's clients that currently receive the group's events
  // (maintained by the server; client slots).
  std::vector<uint32_t> local;
  uint64_t delivered_msgs = 0;

  bool has(uint32_t nodeid, uint32_t pid) const;
};

// One membership change, as every member sees it: the group's members after
// it, who left (LEAVE, PROCDOWN, NODEDOWN) and who joined (JOIN, NODEUP),
// each list ordered by (nodeid, pid).
struct Confchg {
  Group* group = nullptr;
  std::vector<ipc::MemberEntry> left, joined;
  bool empty() const { return left.empty() && joined.empty(); }
};

class GroupTable {
 public:
  // Applies a Join entry. False + why when the entry is invalid (name too
  // long, index already bound to another name, member already present).
  bool apply_join(uint32_t sender, uint32_t index, uint32_t pid, std::string_view name,
                  Confchg& out, std::string& why);
  // Applies a Leave entry; reason is LEAVE or PROCDOWN.
  bool apply_leave(uint32_t sender, uint32_t index, uint32_t pid, uint32_t reason,
                   std::string_view name, Confchg& out, std::string& why);
  // Applies a sync announcement: `sender`'s processes `pids` are members of
  // `name` (its local `index`). Those not yet known join with NODEUP
  // (out.joined; empty when all were known). False + why when invalid.
  bool apply_sync(uint32_t sender, uint32_t index, std::string_view name,
                  std::span<const uint32_t> pids, Confchg& out, std::string& why);
  // Removes every process of the nodes `gone` says are gone, and forgets
  // their group indexes (a restarted daemon assigns them afresh): one
  // confchg per group that lost members (reason NODEDOWN), groups by name.
  std::vector<Confchg> drop_nodes(const std::function<bool(uint32_t nodeid)>& gone);
  // The group a Data entry of `sender` with its local `index` belongs to;
  // nullptr if no Join ever bound it.
  Group* route(uint32_t sender, uint32_t index) const {
    auto it = routes_.find(key(sender, index));
    return it == routes_.end() ? nullptr : it->second;
  }
  Group* find(std::string_view name) const;
  // Groups with at least one member, by name.
  std::vector<const Group*> active() const;
  size_t group_count() const { return groups_.size(); }

 private:
  static uint64_t key(uint32_t sender, uint32_t index) { return (uint64_t{sender} << 32) | index; }
  Group* bind(uint32_t sender, uint32_t index, std::string_view name, std::string& why);

  std::map<std::string, std::unique_ptr<Group>, std::less<>> groups_;
  std::unordered_map<uint64_t, Group*> routes_;
};

// Where one client handle is in its (single) group membership.
enum class Phase : uint8_t {
  None,     // never joined
  Joining,  // Join submitted, not yet applied
  Member,   // Join applied
  Leaving,  // Leave submitted, not yet applied
  Done,     // left (or left while joining); may never join again
};

struct Handle {
  Phase phase = Phase::None;
  uint32_t pid = 0;
  std::string group;   // the name it joined
  uint32_t index = 0;  // this node's index of that name
};

class LocalRules {
 public:
  // CS_OK or the CPG error for cpg_join on `h`.
  ipc::Status check_join(const Handle& h, std::string_view name) const;
  // Records a submitted join: assigns the node-local index, claims the pid.
  void joined(Handle& h, std::string_view name);
  ipc::Status check_leave(const Handle& h, std::string_view name) const;
  // Records a submitted Leave (voluntary or PROCDOWN); frees the pid for the group.
  void leaving(Handle& h);
  // The handle's connection ended. True when a PROCDOWN Leave must be
  // submitted for it (it was joining or a member): call leaving() when it is.
  bool gone(Handle& h);
  // Index of `name` on this node (assigning the next one on first use).
  uint32_t index_for(std::string_view name);

 private:
  std::map<std::string, uint32_t, std::less<>> index_;
  uint32_t next_index_ = 1;
  // (group, pid) pairs of handles that are joining, members or leaving-not-
  // yet-submitted: Corosync refuses a second handle of one process in a group.
  std::map<std::pair<std::string, uint32_t>, int, std::less<>> claimed_;
};

// "members[2]={(1,10,UNDEFINED),(2,20,UNDEFINED)} left[0]={} joined[1]={(2,20,JOIN)}"
// (the reference transcripts' notation; used by tests and the status report).
std::string format_confchg(const Confchg& c);
const char* reason_name(uint32_t reason);

}  // namespace rcpg::daemon
