#include "daemon/sync_barrier.h"

#include <algorithm>
#include <cstring>

namespace rcpg::daemon {
namespace {

bool contains(std::span<const uint32_t> ids, uint32_t id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

}  // namespace

bool SyncBarrier::on_view(uint32_t epoch, std::span<const ordering::ViewMember> members,
                          std::span<const uint32_t> added, std::span<const uint32_t> departed,
                          bool fresh, uint32_t self) {
  auto in_view = [&](uint32_t id) {
    return std::any_of(members.begin(), members.end(),
                       [id](const ordering::ViewMember& m) { return m.id == id; });
  };
  if (fresh) {
    // What this node held belongs to the history it was cut off from.
    held_.clear();
    others_.clear();
    for (const ordering::ViewMember& m : members)
      if (m.id != self) others_.push_back(m.id);
    self_fresh_ = !others_.empty();
  } else {
    if (!pending_) {
      others_.clear();
      self_fresh_ = false;
    }
    // A departed or restarted node's entries speak for processes that are gone.
    std::erase_if(held_, [&](const HeldEntry& e) {
      return !in_view(e.sender) || contains(departed, e.sender);
    });
    std::erase_if(others_, [&](uint32_t id) { return !in_view(id); });
    for (uint32_t id : added)
      if (id != self && !contains(others_, id)) others_.push_back(id);
    std::sort(others_.begin(), others_.end());
  }
  epoch_ = epoch;
  waiting_.clear();
  pending_ = !others_.empty();
  if (!pending_) {
    // Everyone on the other side left before the merge point.
    self_fresh_ = false;
    held_.clear();
    return false;
  }
  for (const ordering::ViewMember& m : members) waiting_.push_back(m.id);
  return true;
}

bool SyncBarrier::holds(uint32_t sender) const {
  return pending_ && contains(others_, sender);
}

void SyncBarrier::hold(const ordering::Delivery& d) {
  HeldEntry e;
  e.kind = d.kind;
  e.sender = d.sender;
  e.group = d.group;
  e.pid = d.pid;
  e.aux = d.aux;
  e.data.assign(d.data, d.data + d.len);
  held_.push_back(std::move(e));
}

bool SyncBarrier::marker(uint32_t sender, uint32_t epoch) {
  if (!pending_ || epoch != epoch_) return false;
  std::erase(waiting_, sender);
  if (!waiting_.empty()) return false;
  pending_ = false;
  self_fresh_ = false;
  others_.clear();
  return true;
}

ordering::Delivery HeldEntry::delivery() const {
  ordering::Delivery d;
  d.kind = kind;
  d.sender = sender;
  d.group = group;
  d.pid = pid;
  d.aux = aux;
  d.data = data.data();
  d.len = data.size();
  return d;
}

std::vector<HeldEntry> SyncBarrier::release() {
  std::vector<HeldEntry> out;
  out.swap(held_);
  return out;
}

std::vector<std::byte> encode_marker(uint32_t epoch) {
  std::vector<std::byte> b(sizeof epoch);
  std::memcpy(b.data(), &epoch, sizeof epoch);
  return b;
}

bool decode_marker(const std::byte* data, size_t len, uint32_t& epoch) {
  if (len != sizeof epoch) return false;
  std::memcpy(&epoch, data, sizeof epoch);
  return true;
}

}  // namespace rcpg::daemon
