// Handle table: maps 64-bit CPG handles to objects, lock-free on lookup.
//
// A handle is (key << 32) | index. The key is random and differs from the
// slot's previous key, so a stale or guessed handle is refused even when its
// slot is in use again. Each slot holds one atomic word (key, open bit,
// reference count); lookups take a reference with one CAS, close() clears
// the open bit, and whoever drops the last reference of a closed slot
// destroys the object and frees the slot. This lets cpg_finalize run inside
// a callback while cpg_dispatch still holds the handle: the object lives
// until dispatch lets go.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <vector>

namespace rcpg::cpg {

template <class T>
class HandleTable {
 public:
  static constexpr uint32_t kChunkSlots = 1024;
  static constexpr uint32_t kChunks = 64;  // at most 65536 live handles
  static constexpr uint32_t kCapacity = kChunkSlots * kChunks;

  HandleTable() : rng_(std::random_device{}()) {}
  HandleTable(const HandleTable&) = delete;
  HandleTable& operator=(const HandleTable&) = delete;
  // libcpg's own tables live for the whole process and are never destroyed;
  // this is for tables with a shorter life (tests). No Ref may remain.
  ~HandleTable() {
    for (auto& c : chunks_) {
      Slot* chunk = c.load(std::memory_order_acquire);
      if (chunk == nullptr) continue;
      for (uint32_t i = 0; i < kChunkSlots; ++i) delete chunk[i].obj;
      delete[] chunk;
    }
  }

  class Ref {
   public:
    Ref() = default;
    Ref(HandleTable* t, uint32_t idx, T* obj) : table_(t), idx_(idx), obj_(obj) {}
    Ref(Ref&& o) noexcept : table_(o.table_), idx_(o.idx_), obj_(o.obj_) { o.table_ = nullptr; }
    Ref& operator=(Ref&&) = delete;
    ~Ref() {
      if (table_ != nullptr) table_->release(idx_);
    }
    explicit operator bool() const { return table_ != nullptr; }
    T* operator->() const { return obj_; }
    T& operator*() const { return *obj_; }

   private:
    HandleTable* table_ = nullptr;
    uint32_t idx_ = 0;
    T* obj_ = nullptr;
  };

  // Takes ownership; returns 0 when the table is full (obj is then deleted).
  uint64_t insert(std::unique_ptr<T> obj) {
    std::lock_guard lock(alloc_mu_);
    uint32_t idx;
    if (!free_.empty()) {
      idx = free_.back();
      free_.pop_back();
    } else if (next_index_ < kCapacity) {
      idx = next_index_++;
      uint32_t c = idx / kChunkSlots;
      if (chunks_[c].load(std::memory_order_relaxed) == nullptr)
        chunks_[c].store(new Slot[kChunkSlots], std::memory_order_release);
    } else {
      return 0;
    }
    Slot& s = slot(idx);
    uint32_t old_key = static_cast<uint32_t>(s.word.load(std::memory_order_relaxed) >> 32);
    uint32_t key;
    do key = static_cast<uint32_t>(rng_());
    while (key == 0 || key == old_key || key == s.last_key);
    s.last_key = key;
    s.obj = obj.release();
    s.word.store((uint64_t{key} << 32) | kOpen, std::memory_order_release);
    return (uint64_t{key} << 32) | idx;
  }

  // A reference to the object if `handle` is open, else an empty Ref.
  Ref acquire(uint64_t handle) {
    Slot* s = find(handle);
    if (s == nullptr) return {};
    uint64_t w = s->word.load(std::memory_order_acquire);
    for (;;) {
      if ((w >> 32) != (handle >> 32) || (w & kOpen) == 0) return {};
      if (s->word.compare_exchange_weak(w, w + kRef, std::memory_order_acq_rel)) break;
    }
    return Ref(this, static_cast<uint32_t>(handle), s->obj);
  }

  // Closes `handle` (once: false if it was not open). The object is destroyed
  // when the last Ref goes, possibly right here.
  bool close(uint64_t handle) {
    Slot* s = find(handle);
    if (s == nullptr) return false;
    uint64_t w = s->word.load(std::memory_order_acquire);
    for (;;) {
      if ((w >> 32) != (handle >> 32) || (w & kOpen) == 0) return false;
      if (s->word.compare_exchange_weak(w, w & ~kOpen, std::memory_order_acq_rel)) break;
    }
    if ((w & kRefMask) == 0) destroy(static_cast<uint32_t>(handle));
    return true;
  }

 private:
  static constexpr uint64_t kOpen = 1;
  static constexpr uint64_t kRef = 2;
  static constexpr uint64_t kRefMask = 0xFFFFFFFEull;

  struct Slot {
    std::atomic<uint64_t> word{0};  // key:32 | refs:31 | open:1
    T* obj = nullptr;
    uint32_t last_key = 0;
  };

  Slot& slot(uint32_t idx) {
    return chunks_[idx / kChunkSlots].load(std::memory_order_acquire)[idx % kChunkSlots];
  }

  Slot* find(uint64_t handle) {
    uint32_t idx = static_cast<uint32_t>(handle);
    if (idx >= kCapacity || (handle >> 32) == 0) return nullptr;
    Slot* chunk = chunks_[idx / kChunkSlots].load(std::memory_order_acquire);
    return chunk == nullptr ? nullptr : &chunk[idx % kChunkSlots];
  }

  void release(uint32_t idx) {
    Slot& s = slot(idx);
    uint64_t w = s.word.fetch_sub(kRef, std::memory_order_acq_rel) - kRef;
    if ((w & kRefMask) == 0 && (w & kOpen) == 0) destroy(idx);
  }

  // Only the thread that saw (refs 0, closed) gets here, exactly once: a
  // closed slot takes no new references.
  void destroy(uint32_t idx) {
    Slot& s = slot(idx);
    delete s.obj;
    s.obj = nullptr;
    std::lock_guard lock(alloc_mu_);
    free_.push_back(idx);
  }

  std::atomic<Slot*> chunks_[kChunks] = {};
  std::mutex alloc_mu_;
  std::vector<uint32_t> free_;
  uint32_t next_index_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace rcpg::cpg
