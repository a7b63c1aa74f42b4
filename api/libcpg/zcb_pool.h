// First-fit allocator over the segment's zero-copy pool (cpg_zcb_alloc).
//
// Offsets only: the bookkeeping lives here, not in the pool, because the
// daemon may write into the headroom in front of each buffer (see
// ipc::kZcbHeadroom) and a client must not be able to corrupt it anyway.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>

namespace rcpg::cpg {

class ZcbPool {
 public:
  static constexpr uint64_t kAlign = 64;

  ZcbPool() = default;
  // `bytes` of pool starting at `base_offset` within the segment.
  void reset(uint64_t base_offset, uint64_t bytes);

  // Offset (from the segment start) of a payload of `size` bytes with
  // `headroom` free bytes in front of it; nullopt when no block is big enough.
  std::optional<uint64_t> alloc(uint64_t size, uint64_t headroom);
  // false when `payload_offset` is not a live allocation.
  bool free(uint64_t payload_offset);
  // Usable bytes of the live allocation at `payload_offset`, or nullopt.
  std::optional<uint64_t> size_of(uint64_t payload_offset) const;

  uint64_t free_bytes() const;

 private:
  struct Used {
    uint64_t block;  // block start
    uint64_t span;   // block length
    uint64_t size;   // requested size
  };
  mutable std::mutex mu_;
  uint64_t base_ = 0;
  std::map<uint64_t, uint64_t> free_;  // block start -> length, coalesced
  std::map<uint64_t, Used> used_;      // payload offset -> block
};

}  // namespace rcpg::cpg
