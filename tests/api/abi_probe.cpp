// Compiled twice: once against rcpg's <corosync/cpg.h> (ABI_PROBE_FN =
// abi_probe_rcpg) and once against the distribution's (abi_probe_system).
// Each lists sizes, alignments, offsets, enumerator and macro values and the
// mangled types of every prototype; abi_test.cpp compares the two lists.
#include <corosync/cpg.h>

#include <cinttypes>  // the CS_PRI_* macros need it, as in Corosync
#include <cstddef>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

using AbiFacts = std::vector<std::pair<std::string, std::string>>;

#define FACT(expr) facts.emplace_back(#expr, std::to_string(expr))
#define TEXT(expr) facts.emplace_back(#expr, std::string(expr))
#define LAYOUT(T)  \
  FACT(sizeof(T)); \
  FACT(alignof(T))
#define FIELD(T, f)     \
  FACT(offsetof(T, f)); \
  FACT(sizeof(T::f));   \
  facts.emplace_back("type " #T "::" #f, typeid(decltype(T::f)).name())
#define TYPE(T) facts.emplace_back("type " #T, typeid(T).name())
#define PROTO(fn) facts.emplace_back("proto " #fn, typeid(decltype(&fn)).name())

void ABI_PROBE_FN(AbiFacts& facts) {
  LAYOUT(cpg_address);
  FIELD(cpg_address, nodeid);
  FIELD(cpg_address, pid);
  FIELD(cpg_address, reason);
  LAYOUT(cpg_name);
  FIELD(cpg_name, length);
  FIELD(cpg_name, value);
  LAYOUT(cpg_iteration_description_t);
  FIELD(cpg_iteration_description_t, group);
  FIELD(cpg_iteration_description_t, nodeid);
  FIELD(cpg_iteration_description_t, pid);
  LAYOUT(cpg_ring_id);
  FIELD(cpg_ring_id, nodeid);
  FIELD(cpg_ring_id, seq);
  LAYOUT(cpg_callbacks_t);
  FIELD(cpg_callbacks_t, cpg_deliver_fn);
  FIELD(cpg_callbacks_t, cpg_confchg_fn);
  LAYOUT(cpg_model_data_t);
  FIELD(cpg_model_data_t, model);
  LAYOUT(cpg_model_v1_data_t);
  FIELD(cpg_model_v1_data_t, model);
  FIELD(cpg_model_v1_data_t, cpg_deliver_fn);
  FIELD(cpg_model_v1_data_t, cpg_confchg_fn);
  FIELD(cpg_model_v1_data_t, cpg_totem_confchg_fn);
  FIELD(cpg_model_v1_data_t, flags);
  LAYOUT(cs_name_t);
  FIELD(cs_name_t, length);
  FIELD(cs_name_t, value);
  LAYOUT(cs_version_t);
  FIELD(cs_version_t, releaseCode);
  FIELD(cs_version_t, majorVersion);
  FIELD(cs_version_t, minorVersion);

  LAYOUT(cpg_handle_t);
  LAYOUT(cpg_iteration_handle_t);
  LAYOUT(cs_time_t);
  TYPE(cpg_handle_t);
  TYPE(cpg_iteration_handle_t);
  TYPE(cs_time_t);
  TYPE(cpg_deliver_fn_t);
  TYPE(cpg_confchg_fn_t);
  TYPE(cpg_totem_confchg_fn_t);

  LAYOUT(cpg_guarantee_t);
  FACT(CPG_TYPE_UNORDERED);
  FACT(CPG_TYPE_FIFO);
  FACT(CPG_TYPE_AGREED);
  FACT(CPG_TYPE_SAFE);
  LAYOUT(cpg_flow_control_state_t);
  FACT(CPG_FLOW_CONTROL_DISABLED);
  FACT(CPG_FLOW_CONTROL_ENABLED);
  LAYOUT(cpg_reason_t);
  FACT(CPG_REASON_UNDEFINED);
  FACT(CPG_REASON_JOIN);
  FACT(CPG_REASON_LEAVE);
  FACT(CPG_REASON_NODEDOWN);
  FACT(CPG_REASON_NODEUP);
  FACT(CPG_REASON_PROCDOWN);
  LAYOUT(cpg_iteration_type_t);
  FACT(CPG_ITERATION_NAME_ONLY);
  FACT(CPG_ITERATION_ONE_GROUP);
  FACT(CPG_ITERATION_ALL);
  LAYOUT(cpg_model_t);
  FACT(CPG_MODEL_V1);
  FACT(CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF);
  FACT(CPG_MAX_NAME_LENGTH);
  FACT(CPG_MEMBERS_MAX);

  LAYOUT(cs_dispatch_flags_t);
  FACT(CS_DISPATCH_ONE);
  FACT(CS_DISPATCH_ALL);
  FACT(CS_DISPATCH_BLOCKING);
  FACT(CS_DISPATCH_ONE_NONBLOCKING);
  LAYOUT(cs_error_t);
  FACT(CS_OK);
  FACT(CS_ERR_LIBRARY);
  FACT(CS_ERR_VERSION);
  FACT(CS_ERR_INIT);
  FACT(CS_ERR_TIMEOUT);
  FACT(CS_ERR_TRY_AGAIN);
  FACT(CS_ERR_INVALID_PARAM);
  FACT(CS_ERR_NO_MEMORY);
  FACT(CS_ERR_BAD_HANDLE);
  FACT(CS_ERR_BUSY);
  FACT(CS_ERR_ACCESS);
  FACT(CS_ERR_NOT_EXIST);
  FACT(CS_ERR_NAME_TOO_LONG);
  FACT(CS_ERR_EXIST);
  FACT(CS_ERR_NO_SPACE);
  FACT(CS_ERR_INTERRUPT);
  FACT(CS_ERR_NAME_NOT_FOUND);
  FACT(CS_ERR_NO_RESOURCES);
  FACT(CS_ERR_NOT_SUPPORTED);
  FACT(CS_ERR_BAD_OPERATION);
  FACT(CS_ERR_FAILED_OPERATION);
  FACT(CS_ERR_MESSAGE_ERROR);
  FACT(CS_ERR_QUEUE_FULL);
  FACT(CS_ERR_QUEUE_NOT_AVAILABLE);
  FACT(CS_ERR_BAD_FLAGS);
  FACT(CS_ERR_TOO_BIG);
  FACT(CS_ERR_NO_SECTIONS);
  FACT(CS_ERR_CONTEXT_NOT_FOUND);
  FACT(CS_ERR_TOO_MANY_GROUPS);
  FACT(CS_ERR_SECURITY);
  FACT(CS_FALSE);
  FACT(CS_TRUE);
  FACT(CS_MAX_NAME_LENGTH);
  FACT(CS_TIME_END);
  FACT(CS_TRACK_CURRENT);
  FACT(CS_TRACK_CHANGES);
  FACT(CS_TRACK_CHANGES_ONLY);
  FACT(CS_IPC_TIMEOUT_MS);
  FACT(CS_TIME_MS_IN_SEC);
  FACT(CS_TIME_US_IN_SEC);
  FACT(CS_TIME_NS_IN_SEC);
  FACT(CS_TIME_US_IN_MSEC);
  FACT(CS_TIME_NS_IN_MSEC);
  FACT(CS_TIME_NS_IN_USEC);
  FACT(CS_MAX(3, 4));
  TEXT(CS_PRI_NODE_ID);
  TEXT(CS_PRI_NODE_ID_PADDED);
  TEXT(CS_PRI_RING_ID_SEQ);
  TEXT(CS_PRI_RING_ID);
  PROTO(cs_timestamp_get);

  PROTO(cpg_initialize);
  PROTO(cpg_model_initialize);
  PROTO(cpg_finalize);
  PROTO(cpg_fd_get);
  PROTO(cpg_max_atomic_msgsize_get);
  PROTO(cpg_context_get);
  PROTO(cpg_context_set);
  PROTO(cpg_dispatch);
  PROTO(cpg_join);
  PROTO(cpg_leave);
  PROTO(cpg_mcast_joined);
  PROTO(cpg_membership_get);
  PROTO(cpg_local_get);
  PROTO(cpg_flow_control_state_get);
  PROTO(cpg_zcb_alloc);
  PROTO(cpg_zcb_free);
  PROTO(cpg_zcb_mcast_joined);
  PROTO(cpg_iteration_initialize);
  PROTO(cpg_iteration_next);
  PROTO(cpg_iteration_finalize);
}
