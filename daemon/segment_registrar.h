// Registers client segments for zero-copy sends on a thread of its own.
//
// Pinning a client's segment for the NIC (ibv_reg_mr of tens of MiB of
// fresh memory) took the event loop away for 100-500 ms per connecting
// client under emulation: long enough for the peers to miss our heartbeats
// and suspect this node. The slow part (Endpoint::prepare_external) runs
// here; the loop adopts finished registrations between rounds. Until then
// the client's zero-copy sends are copied into the engine, as when the
// fabric cannot register at all.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "transport/fabric.h"

namespace rcpg::daemon {

class SegmentRegistrar {
 public:
  struct Done {
    uint64_t tag = 0;                                     // the client's, as given to submit()
    std::unique_ptr<transport::PreparedRegion> prepared;  // null: failed
    std::string why;
  };

  explicit SegmentRegistrar(transport::Endpoint& ep);
  // Waits for the registration in progress; the others are dropped.
  ~SegmentRegistrar();
  SegmentRegistrar(const SegmentRegistrar&) = delete;
  SegmentRegistrar& operator=(const SegmentRegistrar&) = delete;

  // Queues `bytes` of the memfd `fd` (duplicated here: the caller may close
  // its own) for client `tag`. False with `why` when it cannot be queued.
  bool submit(uint64_t tag, int fd, size_t bytes, std::string& why);
  // Moves finished registrations into `out`; one atomic load when none.
  void take(std::vector<Done>& out);

 private:
  struct Job {
    uint64_t tag;
    int fd;
    size_t bytes;
  };
  void run();

  transport::Endpoint& ep_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  std::vector<Done> done_;
  bool stop_ = false;
  std::atomic<bool> have_done_{false};
  std::thread thread_;  // last: starts once everything above exists
};

}  // namespace rcpg::daemon
