// Group membership: join, leave, membership_get and the iteration calls.
#include <cstring>
#include <memory>

#include "api/libcpg/api_common.h"

namespace ipc = rcpg::ipc;
using namespace rcpg::cpg;

namespace {

static_assert(sizeof(ipc::GroupName) == sizeof(cpg_name));
static_assert(sizeof(ipc::MemberEntry) == sizeof(cpg_address));
static_assert(sizeof(ipc::IterationEntry) == sizeof(cpg_iteration_description_t));

ipc::GroupRequest group_request(const cpg_name& g) {
  ipc::GroupRequest r;
  r.group.length = g.length;
  std::memcpy(r.group.value, g.value, g.length);
  return r;
}

// Join and Leave: a GroupRequest answered by a StatusReply.
cs_error_t group_call(Connection& c, ipc::MsgType type, const cpg_name& g) {
  ipc::GroupRequest req = group_request(g);
  std::vector<uint8_t> reply;
  cs_error_t st = c.request(type, &req, sizeof(req), reply, sizeof(ipc::StatusReply));
  if (st != CS_OK) return st;
  ipc::StatusReply r;
  std::memcpy(&r, reply.data(), sizeof(r));
  return static_cast<cs_error_t>(r.status);
}

bool same_group(const cpg_name& a, const cpg_name& b) {
  return a.length == b.length && std::memcmp(a.value, b.value, a.length) == 0;
}

}  // namespace

RCPG_EXPORT cs_error_t cpg_join(cpg_handle_t handle, const struct cpg_name* group) {
  auto c = connections().acquire(handle);
  if (!c) return CS_ERR_BAD_HANDLE;
  if (group == nullptr) return CS_ERR_INVALID_PARAM;
  if (group->length > CPG_MAX_NAME_LENGTH) return CS_ERR_NAME_TOO_LONG;
  if (c->dead()) return CS_ERR_LIBRARY;
  if (c->joined.load(std::memory_order_acquire)) return CS_ERR_EXIST;
  cs_error_t st = group_call(*c, ipc::MsgType::Join, *group);
  if (st == CS_OK) {
    {
      std::lock_guard lock(c->group_mu);
      c->group = cpg_name{};
      c->group.length = group->length;
      std::memcpy(c->group.value, group->value, group->length);
    }
    c->group_gen.fetch_add(1, std::memory_order_release);
    c->joined.store(true, std::memory_order_release);
  }
  return st;
}

RCPG_EXPORT cs_error_t cpg_leave(cpg_handle_t handle, const struct cpg_name* group) {
  auto c = connections().acquire(handle);
  if (!c) return CS_ERR_BAD_HANDLE;
  if (group == nullptr) return CS_ERR_INVALID_PARAM;
  if (group->length > CPG_MAX_NAME_LENGTH) return CS_ERR_NAME_TOO_LONG;
  cs_error_t st = group_call(*c, ipc::MsgType::Leave, *group);
  if (st == CS_OK) {
    std::lock_guard lock(c->group_mu);
    if (same_group(c->group, *group)) c->joined.store(false, std::memory_order_release);
  }
  return st;
}

RCPG_EXPORT cs_error_t cpg_membership_get(cpg_handle_t handle, struct cpg_name* groupName,
                                          struct cpg_address* member_list,
                                          int* member_list_entries) {
  auto c = connections().acquire(handle);
  if (!c) return CS_ERR_BAD_HANDLE;
  if (groupName == nullptr || member_list == nullptr || member_list_entries == nullptr ||
      *member_list_entries < 0)
    return CS_ERR_INVALID_PARAM;
  if (groupName->length > CPG_MAX_NAME_LENGTH) return CS_ERR_NAME_TOO_LONG;
  ipc::GroupRequest req = group_request(*groupName);
  std::vector<uint8_t> reply;
  cs_error_t st =
      c->request(ipc::MsgType::MembershipGet, &req, sizeof(req), reply, sizeof(ipc::MembersReply));
  if (st != CS_OK) return st;
  ipc::MembersReply r;
  std::memcpy(&r, reply.data(), sizeof(r));
  if (r.status != ipc::Status::Ok) return static_cast<cs_error_t>(r.status);
  if (reply.size() != sizeof(r) + uint64_t{r.count} * sizeof(ipc::MemberEntry)) {
    c->mark_dead();
    return CS_ERR_LIBRARY;
  }
  if (r.count > static_cast<uint32_t>(*member_list_entries)) {
    *member_list_entries = static_cast<int>(r.count);
    return CS_ERR_NO_SPACE;
  }
  if (r.count != 0)
    std::memcpy(member_list, reply.data() + sizeof(r), r.count * sizeof(ipc::MemberEntry));
  *member_list_entries = static_cast<int>(r.count);
  return CS_OK;
}

RCPG_EXPORT cs_error_t cpg_iteration_initialize(cpg_handle_t handle,
                                                cpg_iteration_type_t iteration_type,
                                                const struct cpg_name* group,
                                                cpg_iteration_handle_t* cpg_iteration_handle) {
  auto c = connections().acquire(handle);
  if (!c) return CS_ERR_BAD_HANDLE;
  if (cpg_iteration_handle == nullptr) return CS_ERR_INVALID_PARAM;
  if (iteration_type != CPG_ITERATION_NAME_ONLY && iteration_type != CPG_ITERATION_ONE_GROUP &&
      iteration_type != CPG_ITERATION_ALL)
    return CS_ERR_INVALID_PARAM;
  ipc::IterateRequest req;
  req.type = static_cast<ipc::IterationType>(iteration_type);
  if (iteration_type == CPG_ITERATION_ONE_GROUP) {
    if (group == nullptr) return CS_ERR_INVALID_PARAM;
    if (group->length > CPG_MAX_NAME_LENGTH) return CS_ERR_NAME_TOO_LONG;
    req.group = group_request(*group).group;
  }
  std::vector<uint8_t> reply;
  cs_error_t st =
      c->request(ipc::MsgType::Iterate, &req, sizeof(req), reply, sizeof(ipc::IterateReply));
  if (st != CS_OK) return st;
  ipc::IterateReply r;
  std::memcpy(&r, reply.data(), sizeof(r));
  if (r.status != ipc::Status::Ok) return static_cast<cs_error_t>(r.status);
  if (reply.size() != sizeof(r) + uint64_t{r.count} * sizeof(ipc::IterationEntry)) {
    c->mark_dead();
    return CS_ERR_LIBRARY;
  }
  auto it = std::make_unique<Iteration>();
  it->entries.resize(r.count);
  if (r.count != 0)
    std::memcpy(it->entries.data(), reply.data() + sizeof(r),
                r.count * sizeof(ipc::IterationEntry));
  for (auto& e : it->entries) {
    if (e.group.length > CPG_MAX_NAME_LENGTH) {
      c->mark_dead();
      return CS_ERR_LIBRARY;
    }
  }
  cpg_iteration_handle_t ih = iterations().insert(std::move(it));
  if (ih == 0) return CS_ERR_NO_RESOURCES;
  *cpg_iteration_handle = ih;
  return CS_OK;
}

RCPG_EXPORT cs_error_t cpg_iteration_next(cpg_iteration_handle_t handle,
                                          struct cpg_iteration_description_t* description) {
  auto it = iterations().acquire(handle);
  if (!it) return CS_ERR_BAD_HANDLE;
  if (description == nullptr) return CS_ERR_INVALID_PARAM;
  std::lock_guard lock(it->mu);
  if (it->next == it->entries.size()) return CS_ERR_NO_SECTIONS;
  *description = it->entries[it->next++];
  return CS_OK;
}

RCPG_EXPORT cs_error_t cpg_iteration_finalize(cpg_iteration_handle_t handle) {
  return iterations().close(handle) ? CS_OK : CS_ERR_BAD_HANDLE;
}
