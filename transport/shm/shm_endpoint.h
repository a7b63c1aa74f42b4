// The shm fabric: the Fabric semantics of fabric.h between processes on one
// host, through shared memory.
//
//  * listen_address / connect() address: a Unix SOCK_SEQPACKET socket path,
//    or "@name" for the abstract namespace (no file, nothing to clean up).
//    A stale socket file left by a dead endpoint is replaced; a live one is
//    reported as in use.
//  * The initiator's CPU executes WRITE / WRITE_WITH_IMM / READ inside
//    post_*(), memcpy'ing straight into or out of the peer's region (a
//    sealed memfd that both processes map), so the operation is complete when
//    post_*() returns; its completion is queued for poll().
//  * WRITE_WITH_IMM and SEND notify the target through a shared-memory ring
//    per connection direction (recv_queue_depth slots). A full ring is
//    back-pressure: post_*() returns false and nothing is overwritten.
//  * Recv data handed out by poll() points into that ring and stays valid
//    until the next poll().
//  * register_region() hands the new region to every connected peer before
//    it returns, so a peer can use the rkey as soon as any later message
//    carries it to it. deregister() takes effect at a peer when that peer
//    next looks at its control messages (next_event(), wait()); until then a
//    write of its lands in memory that nobody uses any more.
//  * Zero-length operations touch no memory and, as on RDMA hardware, do not
//    validate the remote key.
//  * Operations never remain outstanding (they execute inside post_*()), so
//    a connection that ends has nothing to flush; posts on it return false.
//    A Disconnected event is raised for peer death / disconnect, a local
//    disconnect() and a RemoteAccess error alike; disconnect() of an
//    outbound connection still being set up raises Unreachable. Messages the
//    peer published before the end are still delivered by poll(); then the
//    connection is gone (disconnect() on it is a no-op). Ids are dense and
//    never reused.
//  * wait() blocks on an eventfd that peers write only while this endpoint
//    sleeps. wait_fd() is an epoll fd holding that eventfd and the sockets;
//    once it has been asked for, an empty poll() re-arms the doorbell so the
//    fd becomes readable when work arrives.
//  * A process must not fork() while it has an endpoint: the child would hold
//    copies of its sockets, and peers would not notice the parent's death.
#pragma once

#include <memory>
#include <string>

#include "transport/fabric.h"

namespace rcpg::transport {

// nullptr + `why` (a one-line reason) on failure.
std::unique_ptr<Endpoint> make_shm_endpoint(const EndpointConfig& cfg, std::string& why);

}  // namespace rcpg::transport
