// Notification ring of one shm connection direction: a single-producer,
// single-consumer ring of fixed-size slots in a shared memfd mapping.
//
// The consumer (the target of WRITE_WITH_IMM / SEND) allocates the ring and
// passes its memfd to the producer (the initiator). Each slot carries a
// sequence word that the producer stores last (absolute index + 1); the
// consumer polls the sequence word of its next slot directly, so a message
// costs one cache-line transfer and there is no shared tail index. The
// consumer publishes its head (slots freed) for the producer, which reads it
// only when its cached copy says the ring is full.
//
// The producer's sequence store is seq_cst: together with the seq_cst
// `sleeping` flag of the consumer's Doorbell it forms a Dekker pair, so a
// consumer that announced it is going to sleep either sees the slot or is
// woken (see shm_doorbell.h).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>

namespace rcpg::transport::shm {

inline constexpr size_t kCacheLine = 64;
inline constexpr uint64_t kRingMagic = 0x31474e5247504352;  // "RCPGRNG1"

enum class SlotKind : uint32_t {
  Imm = 1,   // WRITE_WITH_IMM landed: imm + len
  Send = 2,  // SEND: len bytes of payload follow the header
};

struct SlotHeader {
  std::atomic<uint64_t> seq;  // absolute index + 1 once published
  uint32_t kind;
  uint32_t imm;
  uint32_t len;
  uint32_t reserved[3];
};
static_assert(sizeof(SlotHeader) == 32);
static_assert(std::atomic<uint64_t>::is_always_lock_free);

struct RingHeader {
  uint64_t magic;
  uint32_t slots;        // number of slots (exactly recv_queue_depth)
  uint32_t stride;       // bytes per slot, a multiple of kCacheLine
  uint32_t payload_cap;  // largest SEND payload
  uint32_t reserved;
  alignas(kCacheLine) std::atomic<uint64_t> head;  // written by the consumer only
};
static_assert(sizeof(RingHeader) == 2 * kCacheLine);

// Shape of a ring, chosen by the consumer and checked by the producer.
struct RingGeometry {
  uint32_t slots = 0;
  uint32_t stride = 0;
  uint32_t payload_cap = 0;

  static RingGeometry make(uint32_t slots, uint32_t payload_cap) {
    RingGeometry g;
    g.slots = slots;
    g.payload_cap = payload_cap;
    size_t stride = (sizeof(SlotHeader) + payload_cap + kCacheLine - 1) / kCacheLine * kCacheLine;
    g.stride = static_cast<uint32_t>(stride);
    return g;
  }
  size_t bytes() const { return sizeof(RingHeader) + size_t{slots} * stride; }
  bool valid() const {
    return slots > 0 && stride % kCacheLine == 0 &&
           uint64_t{stride} >= sizeof(SlotHeader) + uint64_t{payload_cap};
  }
  bool operator==(const RingGeometry&) const = default;
};

// Writes a fresh header into zero-filled memory of at least g.bytes().
inline void ring_init(std::byte* base, const RingGeometry& g) {
  auto* h = new (base) RingHeader{};
  h->magic = kRingMagic;
  h->slots = g.slots;
  h->stride = g.stride;
  h->payload_cap = g.payload_cap;
  h->head.store(0, std::memory_order_relaxed);
}

// True when the header found in mapped memory describes geometry `g`.
inline bool ring_matches(const std::byte* base, const RingGeometry& g) {
  auto* h = reinterpret_cast<const RingHeader*>(base);
  return h->magic == kRingMagic && h->slots == g.slots && h->stride == g.stride &&
         h->payload_cap == g.payload_cap;
}

// Producer side. Uses only its own copy of the geometry, never the header's
// (which the peer could change under it).
class RingProducer {
 public:
  void attach(std::byte* base, const RingGeometry& g) {
    hdr_ = reinterpret_cast<RingHeader*>(base);
    slots_base_ = base + sizeof(RingHeader);
    g_ = g;
    next_ = cached_head_ = 0;
    pos_ = 0;
  }
  void detach() { *this = RingProducer{}; }
  bool attached() const { return hdr_ != nullptr; }
  uint32_t payload_cap() const { return g_.payload_cap; }

  // The slot to fill next, or nullptr when the consumer has not freed one.
  SlotHeader* reserve() {
    if (next_ - cached_head_ >= g_.slots) {
      cached_head_ = hdr_->head.load(std::memory_order_acquire);
      // A head ahead of next_ (corrupt peer) wraps to a huge value: stays full.
      if (next_ - cached_head_ >= g_.slots) return nullptr;
    }
    return slot(pos_);
  }
  static std::byte* payload(SlotHeader* s) { return reinterpret_cast<std::byte*>(s + 1); }

  // Makes the reserved slot visible, after everything written before it.
  void publish(SlotHeader* s) {
    ++next_;
    s->seq.store(next_, std::memory_order_seq_cst);
    pos_ = pos_ + 1 == g_.slots ? 0 : pos_ + 1;
  }

 private:
  SlotHeader* slot(uint32_t pos) const {
    return reinterpret_cast<SlotHeader*>(slots_base_ + size_t{pos} * g_.stride);
  }

  RingHeader* hdr_ = nullptr;
  std::byte* slots_base_ = nullptr;
  RingGeometry g_{};
  uint64_t next_ = 0;         // absolute index of the next slot to publish
  uint64_t cached_head_ = 0;  // last head read from the consumer
  uint32_t pos_ = 0;          // next_ % slots
};

// Consumer side. Slots handed out by peek()/consume() stay untouched by the
// producer until commit() publishes the new head.
class RingConsumer {
 public:
  void attach(std::byte* base, const RingGeometry& g) {
    hdr_ = reinterpret_cast<RingHeader*>(base);
    slots_base_ = base + sizeof(RingHeader);
    g_ = g;
    head_ = committed_ = 0;
    pos_ = 0;
  }
  void detach() { *this = RingConsumer{}; }
  bool attached() const { return hdr_ != nullptr; }
  uint32_t payload_cap() const { return g_.payload_cap; }

  // The next published slot, or nullptr.
  const SlotHeader* peek() const {
    const SlotHeader* s = slot(pos_);
    return s->seq.load(std::memory_order_acquire) == head_ + 1 ? s : nullptr;
  }
  // Same check as peek(), ordered after a seq_cst store (the sleeping flag).
  bool ready_seq_cst() const {
    return slot(pos_)->seq.load(std::memory_order_seq_cst) == head_ + 1;
  }
  static const std::byte* payload(const SlotHeader* s) {
    return reinterpret_cast<const std::byte*>(s + 1);
  }
  void consume() {
    ++head_;
    pos_ = pos_ + 1 == g_.slots ? 0 : pos_ + 1;
  }
  // Returns consumed slots to the producer.
  void commit() {
    if (committed_ != head_) {
      committed_ = head_;
      hdr_->head.store(head_, std::memory_order_release);
    }
  }

 private:
  const SlotHeader* slot(uint32_t pos) const {
    return reinterpret_cast<const SlotHeader*>(slots_base_ + size_t{pos} * g_.stride);
  }

  RingHeader* hdr_ = nullptr;
  std::byte* slots_base_ = nullptr;
  RingGeometry g_{};
  uint64_t head_ = 0;       // absolute index of the next slot to read
  uint64_t committed_ = 0;  // last head published
  uint32_t pos_ = 0;        // head_ % slots
};

}  // namespace rcpg::transport::shm
