// How the conformance suite reaches a fabric: the endpoint under test lives
// in the test process; its peer (a PeerAgent) lives in a forked process on
// another host for shm and verbs, or in the same SimWorld for sim.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "transport/fabric.h"

namespace rcpg::test {

class Harness {
 public:
  virtual ~Harness() = default;
  // Non-empty when this fabric cannot run here (the test is skipped).
  virtual std::string unavailable() const { return {}; }
  // An endpoint of the fabric under test, in this process, on host 0.
  virtual std::unique_ptr<transport::Endpoint> make_endpoint(transport::EndpointConfig cfg) = 0;
  // Starts a peer agent on host 1 with `cfg` (the harness picks its listen
  // address) and returns the address to connect() to; empty on failure.
  virtual std::string start_peer(transport::EndpointConfig cfg) = 0;
  virtual void kill_peer() = 0;
  // Lets time pass for `ep` (and the peer, when it is in-process).
  virtual void progress(transport::Endpoint& ep) = 0;
  // An address where nobody listens.
  virtual std::string unused_address() = 0;
  // How long a test may wait for one expected outcome.
  virtual std::chrono::milliseconds patience() const { return std::chrono::seconds(30); }

  // Calls progress() until `done` returns true or patience() runs out.
  bool wait_for(transport::Endpoint& ep, const std::function<bool()>& done);
};

std::unique_ptr<Harness> make_harness(const std::string& fabric, uint64_t seed);

}  // namespace rcpg::test
