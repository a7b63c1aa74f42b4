// Doorbell of one shm endpoint: a page of shared memory that every connected
// peer maps, plus the endpoint's eventfd (which peers hold a copy of).
//
// A consumer about to block stores sleeping = 1 (seq_cst) and re-checks its
// rings; a producer publishes a slot (seq_cst store) and then loads
// `sleeping`. Either the consumer sees the slot or the producer sees the flag
// (Dekker), so no wake-up is lost. The producer that swaps the flag back to 0
// writes the eventfd: one wake-up syscall per sleep, none while the consumer
// is awake and spinning.
#pragma once

#include <unistd.h>

#include <atomic>
#include <cstdint>

#include "transport/shm/shm_ring.h"

namespace rcpg::transport::shm {

inline constexpr uint64_t kDoorbellMagic = 0x31424452'47504352;  // "RCPGRDB1"

struct Doorbell {
  uint64_t magic;
  alignas(kCacheLine) std::atomic<uint32_t> sleeping;  // owner blocks in wait()
  // Set by a peer after it sent a control message on the setup socket, so
  // the owner looks at its sockets at once instead of at the next interval.
  alignas(kCacheLine) std::atomic<uint32_t> ctrl_hint;
};
static_assert(std::atomic<uint32_t>::is_always_lock_free);

// Producer side, after publishing a slot in the owner's ring.
inline void ring_doorbell(Doorbell* db, int efd) {
  if (db->sleeping.load(std::memory_order_seq_cst) != 0 &&
      db->sleeping.exchange(0, std::memory_order_acq_rel) != 0) {
    uint64_t one = 1;
    // EAGAIN (counter saturated) still leaves the eventfd readable.
    [[maybe_unused]] ssize_t r = ::write(efd, &one, sizeof(one));
  }
}

}  // namespace rcpg::transport::shm
