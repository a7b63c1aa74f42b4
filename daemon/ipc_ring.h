// The daemon's side of the per-client rings in the shared segment
// (api/ipc/protocol.h). The client can write anything anywhere in the
// segment, so the daemon keeps its own copy of every index it owns, reads
// the client's index once per look, and treats an impossible value as a
// protocol violation (the caller disconnects the client).
//
// Records never straddle the ring end: the producer fills the rest of the
// ring with a Pad record whose length covers it. A record of at most half
// the ring always fits in an empty ring, whatever the offset.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "api/ipc/protocol.h"

namespace rcpg::daemon {

inline size_t ring_record_bytes(size_t body) {
  return sizeof(ipc::RecordHeader) + ipc::ipc_align(body);
}

// Daemon -> client (event ring).
class EventRingWriter {
 public:
  void init(ipc::RingControl* ctl, std::byte* base, size_t size) {
    ctl_ = ctl;
    base_ = base;
    size_ = size;
    head_ = tail_ = 0;
    ctl_->head.value.store(0, std::memory_order_relaxed);
    ctl_->tail.value.store(0, std::memory_order_relaxed);
    ctl_->sleeping.value.store(0, std::memory_order_relaxed);
  }

  // Reads the consumer's tail; false if it is impossible (moved backwards or
  // past what was published).
  bool refresh() {
    uint64_t t = ctl_->tail.value.load(std::memory_order_acquire);
    if (t < tail_ || t > head_) return false;
    tail_ = t;
    return true;
  }
  size_t free_bytes() const { return size_ - static_cast<size_t>(head_ - tail_); }
  // Room for a record with `body` bytes, counting a possible wrap Pad.
  bool fits(size_t body) const {
    size_t need = ring_record_bytes(body);
    size_t off = head_ & (size_ - 1);
    size_t to_end = size_ - off;
    if (need > to_end) need += to_end;
    return need <= free_bytes();
  }
  // Space for the body of a record; nullptr when it does not fit (call
  // fits() first to avoid that). Publish with commit().
  std::byte* reserve(ipc::RecordType type, size_t body) {
    if (!fits(body)) return nullptr;
    size_t off = head_ & (size_ - 1);
    size_t to_end = size_ - off;
    if (ring_record_bytes(body) > to_end) {
      ipc::RecordHeader pad{ipc::RecordType::Pad,
                            static_cast<uint32_t>(to_end - sizeof(ipc::RecordHeader))};
      std::memcpy(base_ + off, &pad, sizeof(pad));
      head_ += to_end;
      off = 0;
    }
    ipc::RecordHeader h{type, static_cast<uint32_t>(body)};
    std::memcpy(base_ + off, &h, sizeof(h));
    pending_ = ring_record_bytes(body);
    return base_ + off + sizeof(h);
  }
  void commit() {
    head_ += pending_;
    pending_ = 0;
    ctl_->head.value.store(head_, std::memory_order_release);
  }
  // After publishing: true if the consumer was asleep (the flag is cleared,
  // the caller sends the wake-up).
  bool take_sleeper() {
    // The head store above is a release; Dekker needs store->load order.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (ctl_->sleeping.value.load(std::memory_order_seq_cst) == 0) return false;
    return ctl_->sleeping.value.exchange(0, std::memory_order_seq_cst) != 0;
  }
  bool empty() const { return head_ == tail_; }
  uint64_t head() const { return head_; }
  size_t size() const { return size_; }

 private:
  ipc::RingControl* ctl_ = nullptr;
  std::byte* base_ = nullptr;
  size_t size_ = 0;
  uint64_t head_ = 0, tail_ = 0;
  size_t pending_ = 0;
};

// Client -> daemon (request ring).
class RequestRingReader {
 public:
  enum class Result { Empty, Record, Bad };

  void init(ipc::RingControl* ctl, std::byte* base, size_t size) {
    ctl_ = ctl;
    base_ = base;
    size_ = size;
    head_ = tail_ = 0;
    frozen_ = false;
    ctl_->head.value.store(0, std::memory_order_relaxed);
    ctl_->tail.value.store(0, std::memory_order_relaxed);
    ctl_->sleeping.value.store(0, std::memory_order_relaxed);
  }

  // The next record (header copied out, body pointer into the ring), Pad
  // records skipped. `why` names the violation on Bad.
  Result peek(ipc::RecordHeader& h, const std::byte*& body, const char*& why) {
    for (;;) {
      if (tail_ == head_ && !load_head(why)) return Result::Bad;
      if (tail_ == head_) return Result::Empty;
      size_t off = tail_ & (size_ - 1);
      size_t avail = static_cast<size_t>(head_ - tail_);
      size_t to_end = size_ - off;
      std::memcpy(&h, base_ + off, sizeof(h));
      if (h.type == ipc::RecordType::Pad) {
        if (h.length != to_end - sizeof(h) || to_end > avail) {
          why = "pad record does not reach the end of the request ring";
          return Result::Bad;
        }
        consume_bytes(to_end);
        continue;
      }
      size_t bytes = ring_record_bytes(h.length);
      if (h.length > size_ || bytes > to_end || bytes > avail) {
        why = "request record overruns the ring";
        return Result::Bad;
      }
      body = base_ + off + sizeof(h);
      pending_ = bytes;
      return Result::Record;
    }
  }
  // Frees the record returned by the last peek().
  void consume() {
    consume_bytes(pending_);
    pending_ = 0;
  }
  // Bytes published and not yet consumed (as of the last look at head).
  size_t used() const { return static_cast<size_t>(head_ - tail_); }
  size_t size() const { return size_; }
  ipc::RingControl& control() { return *ctl_; }
  // Stops following the producer: what is published now is all there is
  // (the client is gone; a segment it still maps must not feed us forever).
  void freeze() {
    const char* why;
    load_head(why);  // an impossible head keeps the last good one
    frozen_ = true;
  }
  // A cheap look (no validation) for the pre-sleep re-check.
  bool maybe_nonempty() const { return ctl_->head.value.load(std::memory_order_seq_cst) != tail_; }

 private:
  bool load_head(const char*& why) {
    if (frozen_) return true;
    uint64_t h = ctl_->head.value.load(std::memory_order_acquire);
    if (h < head_ || h - tail_ > size_ || (h & 7) != 0) {
      why = "request ring head moved backwards or past the ring";
      return false;
    }
    head_ = h;
    return true;
  }
  void consume_bytes(size_t n) {
    tail_ += n;
    ctl_->tail.value.store(tail_, std::memory_order_release);
  }

  ipc::RingControl* ctl_ = nullptr;
  std::byte* base_ = nullptr;
  size_t size_ = 0;
  uint64_t head_ = 0, tail_ = 0;
  size_t pending_ = 0;
  bool frozen_ = false;
};

}  // namespace rcpg::daemon
