// Body of a Status control request (api/ipc/protocol.h MsgType::Status),
// shared by rcpgd and rcpg-tool. An empty body means {All, text}. The reply
// is a Status message whose body is the report text (UTF-8, no NUL).
#pragma once

#include <cstdint>

namespace rcpg::daemon {

enum class StatusWhat : uint32_t {
  All = 0,       // node, view, groups and members, counters, clients
  Groups = 1,    // groups and their members (corosync-cpgtool's default view)
  Counters = 2,  // daemon and engine counters
};
inline constexpr uint32_t kStatusJson = 1;

struct StatusRequest {
  StatusWhat what = StatusWhat::All;
  uint32_t flags = 0;
};

}  // namespace rcpg::daemon
