// Node membership as CPG sees it: what a View entry changes for the groups,
// and the join-list sync that tells a node joining a view who is in which
// group (Corosync's cpg sync does the same after every totem change).
//
// Every daemon applies the same View entry at the same point of the log, so
// the NODEDOWN confchgs it derives are identical at every member of the new
// view. A node that comes into a view (started, restarted with a new
// incarnation, or back from a partition with `fresh`) knows nothing of the
// others' groups and they nothing of its: on such a view every daemon
// announces its local members through the log (Join entries with aux
// kJoinSync, one per group); a daemon applies the members it did not know
// with NODEUP and ignores the others.
//
// Pure logic, no I/O (unit-tested in tests/daemon/membership_test.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ordering/engine.h"

namespace rcpg::daemon {

using ordering::ViewMember;

// The aux field of a Join entry.
inline constexpr uint32_t kJoinRegular = 0;      // a process joins (cpg_join): pid, name
inline constexpr uint32_t kJoinSync = 1;         // announcement: encode_sync() payload
inline constexpr uint32_t kJoinSyncDone = 2;     // "my announcements are in": encode_marker()

// The payload of a View delivery: ViewMember[n], ascending non-zero ids.
// False + why when it is not that.
bool parse_view(const std::byte* data, size_t len, std::vector<ViewMember>& out, std::string& why);

struct ViewDiff {
  // Nodes of the previous view whose processes leave with NODEDOWN: not in
  // the new view, or there with another incarnation (restarted).
  std::vector<uint32_t> departed;
  // Nodes of the new view that were not in the previous one, or come back
  // with another incarnation.
  std::vector<uint32_t> added;
  // fresh: this node starts a new history; all it knew of other nodes is void.
  bool drop_all_remote = false;
  // Announce the local members through the log (someone new must learn them).
  bool announce = false;
};

// `prev` is empty before the first view. `self` never departs or is added
// by this comparison (a restarted self is a new process with an empty past).
ViewDiff diff_views(std::span<const ViewMember> prev, std::span<const ViewMember> next, bool fresh,
                    uint32_t self);

// Sync announcement payload: {u32 name_length, u32 count}, the name, zero
// padding to 4 bytes, then u32 pid[count] (ascending).
std::vector<std::byte> encode_sync(std::string_view name, std::span<const uint32_t> pids);
bool decode_sync(const std::byte* data, size_t len, std::string_view& name,
                 std::vector<uint32_t>& pids, std::string& why);
// How many pids one announcement of a `name_length`-byte name may carry when
// an entry holds at most `max_payload` bytes (0 when not even one fits).
size_t sync_capacity(size_t max_payload, size_t name_length);

// "1/7 2/9 3/4" (id/incarnation), for logs and rcpg-tool.
std::string format_view(std::span<const ViewMember> members);

}  // namespace rcpg::daemon
