// Rebuilds messages that the daemon delivers in parts (kChunkFirst ...
// kChunkLast) because they are larger than one event record. One buffer per
// sender (nodeid, pid): a sender's parts arrive in order, and parts of
// different senders may interleave.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

namespace rcpg::cpg {

enum class PartResult {
  Pending,    // more parts to come
  Complete,   // the whole message is in message()
  NoMemory,   // the buffer could not be allocated; nothing was consumed
  Malformed,  // parts out of order or sizes inconsistent
};

class Reassembly {
 public:
  Reassembly() = default;
  Reassembly(const Reassembly&) = delete;
  Reassembly& operator=(const Reassembly&) = delete;
  ~Reassembly();

  PartResult add(uint32_t nodeid, uint32_t pid, uint32_t flags, uint64_t total, const void* data,
                 uint64_t bytes);

  // After Complete: the message, valid until release_complete().
  void* message() const { return done_.data; }
  uint64_t message_bytes() const { return done_.total; }
  void release_complete();
  // After Complete: the message's malloc'd buffer, now the caller's to free.
  void* take_complete() {
    void* p = done_.data;
    done_ = Buffer{};
    return p;
  }

  size_t in_progress() const { return parts_.size(); }
  // The sender left the group: its unfinished message will never complete.
  void forget(uint32_t nodeid, uint32_t pid);
  // A new view without some nodes (totem confchg): their senders' unfinished
  // messages will never complete either. `nodes` need not be sorted.
  void forget_nodes_except(const uint32_t* nodes, size_t count);

 private:
  struct Buffer {
    uint32_t nodeid = 0, pid = 0;
    uint64_t total = 0, filled = 0;
    uint8_t* data = nullptr;
  };
  std::vector<Buffer> parts_;
  Buffer done_;
};

}  // namespace rcpg::cpg
