#include "daemon/membership.h"

#include <algorithm>
#include <cstring>

#include "api/ipc/protocol.h"

namespace rcpg::daemon {
namespace {

constexpr size_t kSyncHeader = 8;

size_t pad4(size_t n) {
  return (n + 3) & ~size_t{3};
}

const ViewMember* find(std::span<const ViewMember> v, uint32_t id) {
  auto it = std::lower_bound(v.begin(), v.end(), id,
                             [](const ViewMember& m, uint32_t x) { return m.id < x; });
  return it != v.end() && it->id == id ? &*it : nullptr;
}

}  // namespace

bool parse_view(const std::byte* data, size_t len, std::vector<ViewMember>& out, std::string& why) {
  static_assert(sizeof(ViewMember) == 8);
  if (len == 0 || len % sizeof(ViewMember) != 0) {
    why = "a view of " + std::to_string(len) + " bytes (not a list of 8-byte members)";
    return false;
  }
  std::vector<ViewMember> v(len / sizeof(ViewMember));
  std::memcpy(v.data(), data, len);
  for (size_t i = 0; i < v.size(); ++i)
    if (v[i].id == 0 || (i > 0 && v[i].id <= v[i - 1].id)) {
      why = "a view whose node ids are not ascending and non-zero";
      return false;
    }
  out = std::move(v);
  return true;
}

ViewDiff diff_views(std::span<const ViewMember> prev, std::span<const ViewMember> next, bool fresh,
                    uint32_t self) {
  ViewDiff d;
  d.drop_all_remote = fresh;
  for (const ViewMember& p : prev) {
    if (p.id == self) continue;
    const ViewMember* n = find(next, p.id);
    if (fresh || !n || n->incarnation != p.incarnation) d.departed.push_back(p.id);
  }
  for (const ViewMember& n : next) {
    if (n.id == self) continue;
    const ViewMember* p = find(prev, n.id);
    if (fresh || !p || p->incarnation != n.incarnation) d.added.push_back(n.id);
  }
  d.announce = fresh || !d.added.empty();
  return d;
}

std::vector<std::byte> encode_sync(std::string_view name, std::span<const uint32_t> pids) {
  size_t at = kSyncHeader + pad4(name.size());
  std::vector<std::byte> out(at + pids.size() * 4);
  uint32_t head[2] = {static_cast<uint32_t>(name.size()), static_cast<uint32_t>(pids.size())};
  std::memcpy(out.data(), head, sizeof(head));
  if (!name.empty()) std::memcpy(out.data() + kSyncHeader, name.data(), name.size());
  if (!pids.empty()) std::memcpy(out.data() + at, pids.data(), pids.size() * 4);
  return out;
}

bool decode_sync(const std::byte* data, size_t len, std::string_view& name,
                 std::vector<uint32_t>& pids, std::string& why) {
  uint32_t head[2];
  if (len < kSyncHeader) {
    why = "sync announcement of " + std::to_string(len) + " bytes";
    return false;
  }
  std::memcpy(head, data, sizeof(head));
  if (head[0] > ipc::kMaxGroupName) {
    why = "sync announcement with a " + std::to_string(head[0]) + "-byte group name";
    return false;
  }
  size_t at = kSyncHeader + pad4(head[0]);
  if (at > len || (len - at) / 4 != head[1] || (len - at) % 4 != 0) {
    why = "sync announcement whose length (" + std::to_string(len) + ") does not match " +
          std::to_string(head[1]) + " members";
    return false;
  }
  name = std::string_view(reinterpret_cast<const char*>(data) + kSyncHeader, head[0]);
  pids.resize(head[1]);
  if (head[1]) std::memcpy(pids.data(), data + at, size_t{head[1]} * 4);
  return true;
}

size_t sync_capacity(size_t max_payload, size_t name_length) {
  size_t fixed = kSyncHeader + pad4(name_length);
  return max_payload > fixed ? (max_payload - fixed) / 4 : 0;
}

std::string format_view(std::span<const ViewMember> members) {
  std::string s;
  for (const ViewMember& m : members) {
    if (!s.empty()) s += ' ';
    s += std::to_string(m.id) + "/" + std::to_string(m.incarnation);
  }
  return s;
}

}  // namespace rcpg::daemon
