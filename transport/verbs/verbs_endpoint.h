// The verbs fabric: RC queue pairs over rdma_cm + libibverbs (an RNIC, or
// soft-RoCE). See verbs_internal.h for how it is built.
//
// Addressing: listen_address is "IPv4:PORT"; connect() takes "IPv4:PORT".
// One endpoint uses exactly one RDMA device: the one that owns the listen IP,
// else the one that owns source_address, else device_hint, else the first
// device. Outgoing connections are bound to source_address (or the listen IP)
// and fail with Unreachable if the route to the peer leaves by another device.
//
// Events and completions (beyond what fabric.h promises):
//  * poll() returns no receive completion of a connection before
//    next_event() has returned that connection's Connected event (they are
//    held back, so a caller that handles events first never sees data on an
//    unknown ConnId).
//  * A reject by the listener (bad key, unknown node) is Rejected; a port
//    where nobody listens is Unreachable, like an address error or timeout.
//  * disconnect() of an established connection raises Disconnected; of a
//    connection still being set up, Unreachable ("connect abandoned locally").
//  * post_*() also return false when the shared CQ has no room for more
//    outstanding work requests (back-pressure, as for a full send queue).
//
// wait_fd(): an epoll fd (completion channel, cm event channel, async events
// and an internal wake-up eventfd). Before blocking on it, call wait() with a
// zero timeout: that arms the CQ notification, and makes the fd readable at
// once if completions arrived in between. After it becomes readable, call
// poll() and next_event().
#pragma once

#include <memory>
#include <string>

#include "transport/fabric.h"

namespace rcpg::transport {

// Returns nullptr and sets `why` (one line: no RDMA device, cannot bind the
// address, ...) on failure.
std::unique_ptr<Endpoint> make_verbs_endpoint(const EndpointConfig& cfg, std::string& why);

}  // namespace rcpg::transport
