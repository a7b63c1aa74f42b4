/* rcpg: Closed Process Group API, ABI-compatible with Corosync's cpg.h.
 *
 * Written for rcpg. Names, enumerator values, struct layouts and prototypes
 * are those of Corosync 3.x, so a program built against either header runs
 * on either libcpg.so.4. Where Corosync crashes, hangs or silently drops a
 * message, rcpg returns an error instead; those cases are noted below.
 *
 * Threads: every function may be called from any thread. Calls on one handle
 * are serialised where they share state (control requests, sending,
 * dispatching); callbacks run on the thread that called cpg_dispatch. */
#ifndef COROSYNC_CPG_H_DEFINED
#define COROSYNC_CPG_H_DEFINED

#include <corosync/corotypes.h>
#include <netinet/in.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint64_t cpg_handle_t;
typedef uint64_t cpg_iteration_handle_t;

/* Delivery guarantee of a message. rcpg implements all four: UNORDERED and
 * FIFO may overtake AGREED traffic of other senders; AGREED is total order;
 * SAFE is total order, delivered once every member holds the message. */
typedef enum { CPG_TYPE_UNORDERED, CPG_TYPE_FIFO, CPG_TYPE_AGREED, CPG_TYPE_SAFE } cpg_guarantee_t;

typedef enum { CPG_FLOW_CONTROL_DISABLED, CPG_FLOW_CONTROL_ENABLED } cpg_flow_control_state_t;

/* Why a member appears in a confchg's joined or left list. */
typedef enum {
  CPG_REASON_UNDEFINED = 0,
  CPG_REASON_JOIN = 1,
  CPG_REASON_LEAVE = 2,
  CPG_REASON_NODEDOWN = 3,
  CPG_REASON_NODEUP = 4,
  CPG_REASON_PROCDOWN = 5
} cpg_reason_t;

typedef enum {
  CPG_ITERATION_NAME_ONLY = 1,
  CPG_ITERATION_ONE_GROUP = 2,
  CPG_ITERATION_ALL = 3,
} cpg_iteration_type_t;

typedef enum {
  CPG_MODEL_V1 = 1,
} cpg_model_t;

struct cpg_address {
  uint32_t nodeid;
  uint32_t pid;
  uint32_t reason; /* cpg_reason_t */
};

#define CPG_MAX_NAME_LENGTH 128
/* A group name: `length` bytes of `value`, not NUL-terminated. */
struct cpg_name {
  uint32_t length;
  char value[CPG_MAX_NAME_LENGTH];
};

#define CPG_MEMBERS_MAX 128

struct cpg_iteration_description_t {
  struct cpg_name group;
  uint32_t nodeid;
  uint32_t pid;
};

struct cpg_ring_id {
  uint32_t nodeid;
  uint64_t seq;
};

/* A message of `msg_len` bytes from (nodeid, pid). `msg` is valid until the
 * callback returns. rcpg hands out a pointer into its read-only mapping of
 * the replicated log when it can (zero-copy receive): a program that converts
 * the message in place must copy it first, or run with RCPG_WRITABLE_DELIVERY=1
 * (the library then copies every message into a private buffer). */
typedef void (*cpg_deliver_fn_t)(cpg_handle_t handle, const struct cpg_name* group_name,
                                 uint32_t nodeid, uint32_t pid, void* msg, size_t msg_len);

/* The group's membership after a change, and who joined or left. */
typedef void (*cpg_confchg_fn_t)(cpg_handle_t handle, const struct cpg_name* group_name,
                                 const struct cpg_address* member_list, size_t member_list_entries,
                                 const struct cpg_address* left_list, size_t left_list_entries,
                                 const struct cpg_address* joined_list, size_t joined_list_entries);

/* The cluster view (node ids) changed; model V1 only. */
typedef void (*cpg_totem_confchg_fn_t)(cpg_handle_t handle, struct cpg_ring_id ring_id,
                                       uint32_t member_list_entries, const uint32_t* member_list);

typedef struct {
  cpg_deliver_fn_t cpg_deliver_fn;
  cpg_confchg_fn_t cpg_confchg_fn;
} cpg_callbacks_t;

typedef struct {
  cpg_model_t model;
} cpg_model_data_t;

/* Model V1 flag: deliver the current cluster view to the totem callback
 * right after cpg_join. */
#define CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF 0x01

typedef struct {
  cpg_model_t model;
  cpg_deliver_fn_t cpg_deliver_fn;
  cpg_confchg_fn_t cpg_confchg_fn;
  cpg_totem_confchg_fn_t cpg_totem_confchg_fn;
  unsigned int flags;
} cpg_model_v1_data_t;

/* Connect to the local rcpgd ($RCPG_SOCKET, default /run/rcpg/rcpgd.sock).
 * `callbacks` may be NULL (events are then consumed without a call).
 * NULL handle: CS_ERR_INVALID_PARAM. No daemon: CS_ERR_LIBRARY. */
cs_error_t cpg_initialize(cpg_handle_t* handle, cpg_callbacks_t* callbacks);

/* As cpg_initialize, with a model (only CPG_MODEL_V1; `model_data` points to
 * a cpg_model_v1_data_t or is NULL) and a context pointer for
 * cpg_context_get. Unknown model or flag: CS_ERR_INVALID_PARAM. */
cs_error_t cpg_model_initialize(cpg_handle_t* handle, cpg_model_t model,
                                cpg_model_data_t* model_data, void* context);

/* Close the handle; a joined group is left (others see CPG_REASON_PROCDOWN).
 * May be called from inside a callback of the same handle. Afterwards every
 * call with the handle returns CS_ERR_BAD_HANDLE. If the daemon is gone the
 * handle is released all the same and CS_ERR_LIBRARY is returned. */
cs_error_t cpg_finalize(cpg_handle_t handle);

/* A descriptor to poll: readable when cpg_dispatch has work (events, or the
 * daemon is gone, in which case cpg_dispatch returns CS_ERR_LIBRARY). In rcpg
 * this is an epoll descriptor; do not read from or close it. */
cs_error_t cpg_fd_get(cpg_handle_t handle, int* fd);

/* The largest message the cluster sends without fragmenting (rcpgd's value).
 * Larger messages, up to 1 GiB, are accepted and fragmented. */
cs_error_t cpg_max_atomic_msgsize_get(cpg_handle_t handle, uint32_t* size);

cs_error_t cpg_context_get(cpg_handle_t handle, void** context);
cs_error_t cpg_context_set(cpg_handle_t handle, void* context);

/* Run callbacks for pending events.
 *  CS_DISPATCH_ONE: wait for one event and handle it.
 *  CS_DISPATCH_ONE_NONBLOCKING: handle one event, CS_ERR_TRY_AGAIN if none.
 *  CS_DISPATCH_ALL: handle every pending event, then return CS_OK.
 *  CS_DISPATCH_BLOCKING: handle events until the handle is finalized or the
 *  daemon goes away.
 * Any other value: CS_ERR_INVALID_PARAM (Corosync blocks forever). */
cs_error_t cpg_dispatch(cpg_handle_t handle, cs_dispatch_flags_t dispatch_types);

/* Join a group (one per handle). Name longer than CPG_MAX_NAME_LENGTH:
 * CS_ERR_NAME_TOO_LONG; already joined: CS_ERR_EXIST. */
cs_error_t cpg_join(cpg_handle_t handle, const struct cpg_name* group);

/* Leave the joined group. Not joined: CS_ERR_NOT_EXIST. */
cs_error_t cpg_leave(cpg_handle_t handle, const struct cpg_name* group);

/* Send the concatenation of `iov_len` buffers to the joined group. Any
 * number of iovecs; up to 1 GiB (CS_ERR_TOO_BIG above). Back-pressure:
 * CS_ERR_TRY_AGAIN (nothing was sent). Not joined: CS_ERR_NOT_EXIST (Corosync
 * drops the message silently). A message larger than the request ring is
 * streamed: once its first part is queued the call blocks until all is. */
cs_error_t cpg_mcast_joined(cpg_handle_t handle, cpg_guarantee_t guarantee,
                            const struct iovec* iovec, unsigned int iov_len);

/* Members of any group. `*member_list_entries` gives the capacity of
 * `member_list` and receives the member count. If the capacity is too small
 * nothing is written, `*member_list_entries` is set to the count needed and
 * CS_ERR_NO_SPACE is returned (Corosync writes past the array). */
cs_error_t cpg_membership_get(cpg_handle_t handle, struct cpg_name* groupName,
                              struct cpg_address* member_list, int* member_list_entries);

cs_error_t cpg_local_get(cpg_handle_t handle, unsigned int* local_nodeid);

/* CPG_FLOW_CONTROL_ENABLED while the daemon asks this client to slow down. */
cs_error_t cpg_flow_control_state_get(cpg_handle_t handle,
                                      cpg_flow_control_state_t* flow_control_enabled);

/* A buffer in memory shared with (and registered by) the daemon, for
 * cpg_zcb_mcast_joined. Pool exhausted: CS_ERR_NO_MEMORY. */
cs_error_t cpg_zcb_alloc(cpg_handle_t handle, size_t size, void** buffer);

/* Return a buffer from cpg_zcb_alloc. Unknown pointer: CS_ERR_INVALID_PARAM. */
cs_error_t cpg_zcb_free(cpg_handle_t handle, void* buffer);

/* Send `msg_len` bytes of a cpg_zcb_alloc buffer (`msg` is the pointer
 * cpg_zcb_alloc returned). Returns once the daemon has taken the message;
 * the buffer may then be reused or freed. */
cs_error_t cpg_zcb_mcast_joined(cpg_handle_t handle, cpg_guarantee_t guarantee, void* msg,
                                size_t msg_len);

/* Snapshot of groups and members, walked with cpg_iteration_next (which
 * returns CS_ERR_NO_SECTIONS at the end). CPG_ITERATION_ONE_GROUP needs
 * `group`; NAME_ONLY reports each group once with nodeid = pid = 0. */
cs_error_t cpg_iteration_initialize(cpg_handle_t handle, cpg_iteration_type_t iteration_type,
                                    const struct cpg_name* group,
                                    cpg_iteration_handle_t* cpg_iteration_handle);

cs_error_t cpg_iteration_next(cpg_iteration_handle_t handle,
                              struct cpg_iteration_description_t* description);

cs_error_t cpg_iteration_finalize(cpg_iteration_handle_t handle);

#ifdef __cplusplus
}
#endif

#endif /* COROSYNC_CPG_H_DEFINED */
