#include "api/libcpg/zcb_pool.h"

#include <iterator>

namespace rcpg::cpg {

namespace {
uint64_t align_up(uint64_t n, uint64_t a) {
  return (n + a - 1) & ~(a - 1);
}
}  // namespace

void ZcbPool::reset(uint64_t base_offset, uint64_t bytes) {
  std::lock_guard lock(mu_);
  free_.clear();
  used_.clear();
  uint64_t start = align_up(base_offset, kAlign);
  uint64_t end = (base_offset + bytes) & ~(kAlign - 1);
  base_ = start;
  if (end > start) free_[start] = end - start;
}

std::optional<uint64_t> ZcbPool::alloc(uint64_t size, uint64_t headroom) {
  headroom = align_up(headroom, kAlign);
  // Sizes near 2^64 would wrap in the sums below; no pool is that large.
  if (size > (uint64_t{1} << 62)) return std::nullopt;
  uint64_t span = headroom + align_up(size == 0 ? 1 : size, kAlign);
  std::lock_guard lock(mu_);
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < span) continue;
    uint64_t block = it->first;
    uint64_t rest = it->second - span;
    free_.erase(it);
    if (rest != 0) free_[block + span] = rest;
    uint64_t payload = block + headroom;
    used_[payload] = Used{block, span, size};
    return payload;
  }
  return std::nullopt;
}

bool ZcbPool::free(uint64_t payload_offset) {
  std::lock_guard lock(mu_);
  auto u = used_.find(payload_offset);
  if (u == used_.end()) return false;
  uint64_t start = u->second.block;
  uint64_t len = u->second.span;
  used_.erase(u);
  auto next = free_.lower_bound(start);
  if (next != free_.end() && start + len == next->first) {
    len += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == start) {
      prev->second += len;
      return true;
    }
  }
  free_[start] = len;
  return true;
}

std::optional<uint64_t> ZcbPool::size_of(uint64_t payload_offset) const {
  std::lock_guard lock(mu_);
  auto u = used_.find(payload_offset);
  if (u == used_.end()) return std::nullopt;
  return u->second.size;
}

uint64_t ZcbPool::free_bytes() const {
  std::lock_guard lock(mu_);
  uint64_t n = 0;
  for (auto& [off, len] : free_) n += len;
  return n;
}

}  // namespace rcpg::cpg
