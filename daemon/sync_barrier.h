// The merge point of a join-list sync.
//
// A view that brings nodes in (or starts this node's new history) joins two
// sides that know nothing of each other's groups. Each daemon announces its
// members through the log, but the announcements arrive one by one: a
// daemon that applied some of them and not others would hand its clients a
// different selection of the same stretch of the log than its peers do. So
// every daemon applies the other side's membership entries only at one
// point, the same everywhere: where the last member of the view has said,
// with a marker tagged with the view's epoch, that its announcements are
// all in the log. Until then:
//  * entries (announcements, joins, leaves) of the other side are held;
//  * Data of the other side is not delivered (its processes are not
//    members here yet, and this side's are not members there);
//  * a daemon that starts a new history (fresh) delivers no Data at all and
//    its clients get CS_ERR_TRY_AGAIN: to everyone else its processes join
//    only at the merge point.
// A view change before the merge point restarts it with the new view's
// members (held entries of departed or restarted nodes are dropped).
//
// Pure logic, no I/O (tests/daemon/membership_test.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "ordering/engine.h"

namespace rcpg::daemon {

// A membership entry waiting for the merge point (its own copy: the log
// slot is reused once delivery moves on).
struct HeldEntry {
  ordering::EntryKind kind = ordering::EntryKind::Join;
  uint32_t sender = 0, group = 0, pid = 0, aux = 0;
  std::vector<std::byte> data;
  // The entry as it was delivered (data pointing into this copy).
  ordering::Delivery delivery() const;
};

class SyncBarrier {
 public:
  // A View was applied. `added`/`departed` as diff_views() computed them;
  // `fresh`: this node starts a new history (everyone else is the other
  // side). True when a merge is pending afterwards: this daemon must
  // announce its members and then send its marker for `epoch`.
  bool on_view(uint32_t epoch, std::span<const ordering::ViewMember> members,
               std::span<const uint32_t> added, std::span<const uint32_t> departed, bool fresh,
               uint32_t self);
  // Entries of `sender` wait for the merge point.
  bool holds(uint32_t sender) const;
  // This node is on the side that is still learning everyone: no Data, no
  // sends until the merge point.
  bool learning() const { return pending_ && self_fresh_; }
  bool pending() const { return pending_; }
  uint32_t epoch() const { return epoch_; }
  void hold(const ordering::Delivery& d);
  // `sender`'s marker for `epoch`. True when it completes the merge: then
  // take the held entries with release() and apply them in order.
  bool marker(uint32_t sender, uint32_t epoch);
  std::vector<HeldEntry> release();
  size_t held() const { return held_.size(); }

 private:
  bool pending_ = false;
  bool self_fresh_ = false;
  uint32_t epoch_ = 0;
  std::vector<uint32_t> others_;   // nodes whose entries wait (sorted)
  std::vector<uint32_t> waiting_;  // members whose marker for epoch_ is missing
  std::vector<HeldEntry> held_;
};

// Payload of a marker (a Join entry with aux kJoinSyncDone): the epoch.
std::vector<std::byte> encode_marker(uint32_t epoch);
bool decode_marker(const std::byte* data, size_t len, uint32_t& epoch);

}  // namespace rcpg::daemon
