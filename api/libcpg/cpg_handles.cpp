// Handle lifetime and per-handle properties: initialize, finalize, fd,
// context, local node id, message size, flow control.
#include <unistd.h>

#include <cstring>
#include <memory>

#include "api/libcpg/api_common.h"

namespace rcpg::cpg {

HandleTable<Connection>& connections() {
  // Never destroyed: handles may still be used by other threads (or atexit
  // handlers) while static destructors run.
  static auto* table = new HandleTable<Connection>;
  return *table;
}

HandleTable<Iteration>& iterations() {
  static auto* table = new HandleTable<Iteration>;
  return *table;
}

namespace {

cs_error_t initialize(cpg_handle_t* handle, const Callbacks& cb, void* context) {
  auto conn = std::make_unique<Connection>();
  cs_error_t st = conn->open(cb, context);
  if (st != CS_OK) return st;
  Connection* c = conn.get();
  cpg_handle_t h = connections().insert(std::move(conn));
  if (h == 0) return CS_ERR_NO_RESOURCES;
  c->handle = h;
  *handle = h;
  return CS_OK;
}

}  // namespace
}  // namespace rcpg::cpg

using namespace rcpg::cpg;

RCPG_EXPORT cs_error_t cpg_initialize(cpg_handle_t* handle, cpg_callbacks_t* callbacks) {
  if (handle == nullptr) return CS_ERR_INVALID_PARAM;
  Callbacks cb;
  if (callbacks != nullptr) {
    cb.deliver = callbacks->cpg_deliver_fn;
    cb.confchg = callbacks->cpg_confchg_fn;
  }
  return initialize(handle, cb, nullptr);
}

RCPG_EXPORT cs_error_t cpg_model_initialize(cpg_handle_t* handle, cpg_model_t model,
                                            cpg_model_data_t* model_data, void* context) {
  if (handle == nullptr || model != CPG_MODEL_V1) return CS_ERR_INVALID_PARAM;
  Callbacks cb;
  if (model_data != nullptr) {
    const auto* v1 = reinterpret_cast<const cpg_model_v1_data_t*>(model_data);
    if ((v1->flags & ~unsigned{CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF}) != 0)
      return CS_ERR_INVALID_PARAM;
    cb.deliver = v1->cpg_deliver_fn;
    cb.confchg = v1->cpg_confchg_fn;
    cb.totem = v1->cpg_totem_confchg_fn;
    cb.model_flags = v1->flags;
    // Corosync calls totem_confchg at every view change: ask the daemon for them.
    if (cb.totem != nullptr) cb.model_flags |= rcpg::ipc::kWantsTotemConfchg;
  }
  return initialize(handle, cb, context);
}

RCPG_EXPORT cs_error_t cpg_finalize(cpg_handle_t handle) {
  auto c = connections().acquire(handle);
  if (!c || !connections().close(handle)) return CS_ERR_BAD_HANDLE;
  c->finalized.store(true, std::memory_order_release);
  c->kick_local();  // a thread blocked in cpg_dispatch returns
  std::vector<uint8_t> reply;
  cs_error_t st =
      c->request(rcpg::ipc::MsgType::Finalize, nullptr, 0, reply, sizeof(rcpg::ipc::StatusReply));
  if (st != CS_OK) return st;
  rcpg::ipc::StatusReply r;
  std::memcpy(&r, reply.data(), sizeof(r));
  return static_cast<cs_error_t>(r.status);
  // The connection closes when the last reference (this one, or that of a
  // cpg_dispatch running the callback we may be called from) goes.
}

RCPG_EXPORT cs_error_t cpg_fd_get(cpg_handle_t handle, int* fd) {
  auto c = connections().acquire(handle);
  if (!c) return CS_ERR_BAD_HANDLE;
  if (fd == nullptr) return CS_ERR_INVALID_PARAM;
  *fd = c->epfd;
  return CS_OK;
}

RCPG_EXPORT cs_error_t cpg_max_atomic_msgsize_get(cpg_handle_t handle, uint32_t* size) {
  auto c = connections().acquire(handle);
  if (!c) return CS_ERR_BAD_HANDLE;
  if (size == nullptr) return CS_ERR_INVALID_PARAM;
  if (c->dead()) return CS_ERR_LIBRARY;
  *size = c->max_atomic;
  return CS_OK;
}

RCPG_EXPORT cs_error_t cpg_context_get(cpg_handle_t handle, void** context) {
  auto c = connections().acquire(handle);
  if (!c) return CS_ERR_BAD_HANDLE;
  if (context == nullptr) return CS_ERR_INVALID_PARAM;
  *context = c->context.load(std::memory_order_acquire);
  return CS_OK;
}

RCPG_EXPORT cs_error_t cpg_context_set(cpg_handle_t handle, void* context) {
  auto c = connections().acquire(handle);
  if (!c) return CS_ERR_BAD_HANDLE;
  c->context.store(context, std::memory_order_release);
  return CS_OK;
}

RCPG_EXPORT cs_error_t cpg_local_get(cpg_handle_t handle, unsigned int* local_nodeid) {
  auto c = connections().acquire(handle);
  if (!c) return CS_ERR_BAD_HANDLE;
  if (local_nodeid == nullptr) return CS_ERR_INVALID_PARAM;
  if (!c->check_alive()) return CS_ERR_LIBRARY;
  *local_nodeid = c->nodeid;
  return CS_OK;
}

RCPG_EXPORT cs_error_t cpg_flow_control_state_get(cpg_handle_t handle,
                                                  cpg_flow_control_state_t* flow_control_enabled) {
  auto c = connections().acquire(handle);
  if (!c) return CS_ERR_BAD_HANDLE;
  if (flow_control_enabled == nullptr) return CS_ERR_INVALID_PARAM;
  if (c->dead()) return CS_ERR_LIBRARY;
  *flow_control_enabled = c->hdr->flow_control.value.load(std::memory_order_acquire) != 0
                              ? CPG_FLOW_CONTROL_ENABLED
                              : CPG_FLOW_CONTROL_DISABLED;
  return CS_OK;
}
