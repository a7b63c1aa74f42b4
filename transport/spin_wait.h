// Spin-then-block idling for progress loops: spin on poll() for a short budget
// (latency), then block in Endpoint::wait() (so idle nodes burn no CPU on a
// 2-core machine). Call idle() once per loop iteration that found no work and
// busy() when it found some.
#pragma once

#include <chrono>
#include <cstdint>

#include <sched.h>

#include "transport/fabric.h"

namespace rcpg::transport {

class SpinWait {
 public:
  explicit SpinWait(uint32_t spin_iterations = 20000,
                    std::chrono::microseconds block_timeout = std::chrono::milliseconds(10))
      : spin_limit_(spin_iterations), block_timeout_(block_timeout) {}

  void busy() { spins_ = 0; }
  // Spin with sched_yield() instead of a pause instruction (oversubscribed cores).
  void set_yield(bool yield) { yield_ = yield; }

  // Returns true when it blocked (the caller may want to count that).
  bool idle(Endpoint& ep) {
    if (++spins_ < spin_limit_) {
      // Yielding while spinning lets another poller sharing this core run:
      // on a 2-core machine a 3-node cluster would otherwise wait for whole
      // scheduler time slices.
      if (yield_)
        sched_yield();
      else
        cpu_relax();
      return false;
    }
    ep.wait(block_timeout_);
    spins_ = 0;
    return true;
  }

  static void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }

 private:
  uint32_t spins_ = 0;
  bool yield_ = false;
  uint32_t spin_limit_;
  std::chrono::microseconds block_timeout_;
};

}  // namespace rcpg::transport
