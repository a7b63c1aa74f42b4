// Both ends of an ipc::RingControl byte ring (see api/ipc/protocol.h): the
// client produces request records and consumes event records. One producer
// and one consumer per ring; callers serialise their own side.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "api/ipc/protocol.h"

namespace rcpg::cpg {

class RingProducer {
 public:
  RingProducer() = default;
  RingProducer(ipc::RingControl* ctl, uint8_t* base, uint64_t bytes)
      : ctl_(ctl), base_(base), size_(bytes), head_(ctl->head.value.load()), pending_(head_) {}

  uint64_t size() const { return size_; }

  // Room for a record whose body is `body` bytes, contiguous and not yet
  // published; nullptr when the consumer has not freed enough. The returned
  // pointer is at the body; the header is filled in.
  uint8_t* reserve(ipc::RecordType type, uint64_t body) {
    uint64_t need = ipc::ipc_align(sizeof(ipc::RecordHeader) + body);
    if (need > size_) return nullptr;
    uint64_t off = pending_ & (size_ - 1);
    uint64_t to_end = size_ - off;
    uint64_t pad = need > to_end ? to_end : 0;
    uint64_t tail = ctl_->tail.value.load(std::memory_order_acquire);
    if (pending_ + pad + need - tail > size_) return nullptr;
    if (pad != 0) {
      write_header(off, ipc::RecordType::Pad, pad - sizeof(ipc::RecordHeader));
      pending_ += pad;
      off = 0;
    }
    write_header(off, type, body);
    pending_ += need;
    return base_ + off + sizeof(ipc::RecordHeader);
  }

  // Makes everything reserved since the last publish visible; true when the
  // consumer was asleep (the caller then rings its doorbell).
  bool publish() {
    head_ = pending_;
    // seq_cst store then seq_cst load of `sleeping`: the Dekker pair of the
    // protocol (the consumer sets sleeping, then re-reads head).
    ctl_->head.value.store(head_, std::memory_order_seq_cst);
    return ctl_->sleeping.value.load(std::memory_order_seq_cst) != 0 &&
           ctl_->sleeping.value.exchange(0, std::memory_order_acq_rel) != 0;
  }

  // Drops reservations not yet published.
  void abandon() { pending_ = head_; }

  bool empty() const { return ctl_->tail.value.load(std::memory_order_acquire) == head_; }

 private:
  void write_header(uint64_t off, ipc::RecordType type, uint64_t body) {
    ipc::RecordHeader h{type, static_cast<uint32_t>(body)};
    std::memcpy(base_ + off, &h, sizeof(h));
  }

  ipc::RingControl* ctl_ = nullptr;
  uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  uint64_t head_ = 0;     // published
  uint64_t pending_ = 0;  // reserved
};

// One record as seen by the consumer; `body` points into the ring.
struct RingRecord {
  ipc::RecordType type;
  const uint8_t* body;
  uint32_t length;
};

enum class ReadResult { Record, Empty, Corrupt };

class RingConsumer {
 public:
  RingConsumer() = default;
  RingConsumer(ipc::RingControl* ctl, uint8_t* base, uint64_t bytes)
      : ctl_(ctl), base_(base), size_(bytes), tail_(ctl->tail.value.load()) {}

  // The next non-Pad record, without consuming it. Pad records are skipped
  // (and freed) here. Corrupt: the producer wrote something impossible.
  ReadResult peek(RingRecord& out) {
    for (;;) {
      uint64_t head = ctl_->head.value.load(std::memory_order_acquire);
      if (head == tail_) return ReadResult::Empty;
      if (head - tail_ > size_ || head - tail_ < sizeof(ipc::RecordHeader))
        return ReadResult::Corrupt;
      uint64_t off = tail_ & (size_ - 1);
      ipc::RecordHeader h;
      std::memcpy(&h, base_ + off, sizeof(h));
      uint64_t span = ipc::ipc_align(sizeof(h) + uint64_t{h.length});
      if (span > size_ - off || span > head - tail_) return ReadResult::Corrupt;
      if (h.type == ipc::RecordType::Pad) {
        tail_ += span;
        ctl_->tail.value.store(tail_, std::memory_order_release);
        continue;
      }
      out = {h.type, base_ + off + sizeof(h), h.length};
      next_ = tail_ + span;
      return ReadResult::Record;
    }
  }

  // Frees the record returned by the last peek().
  void consume() {
    tail_ = next_;
    ctl_->tail.value.store(tail_, std::memory_order_release);
  }

  bool empty() const { return ctl_->head.value.load(std::memory_order_acquire) == tail_; }

  // Consumer about to block: announce it, then re-check (true = still empty).
  bool sleep_and_recheck() {
    ctl_->sleeping.value.store(1, std::memory_order_seq_cst);
    return ctl_->head.value.load(std::memory_order_seq_cst) == tail_;
  }

 private:
  ipc::RingControl* ctl_ = nullptr;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  uint64_t tail_ = 0;
  uint64_t next_ = 0;
};

}  // namespace rcpg::cpg
