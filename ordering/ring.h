// Byte rings addressed by 64-bit monotonically increasing positions; the
// offset of position p is p % size. Used for the senders' inbound rings and
// for the replicated log, which share one record layout (log_format.h).
#pragma once

#include <cstring>

#include "ordering/log_format.h"

namespace rcpg::ordering {

// Appends records at `tail`, never past `limit` (the oldest position still
// needed by a reader, plus the ring size).
struct RingWriter {
  std::byte* base = nullptr;
  size_t size = 0;
  uint64_t tail = 0;

  // Space the next record of `payload` bytes takes, including any wrap skip.
  size_t cost(size_t payload) const {
    size_t need = record_bytes(payload);
    size_t off = tail % size;
    return size - off < need ? (size - off) + need : need;
  }

  // Reserves a record; returns its header (payload follows) or nullptr if it
  // would pass `limit`. The caller fills the header and payload.
  EntryHeader* reserve(size_t payload, uint64_t limit) {
    size_t need = record_bytes(payload);
    if (need > size || tail + cost(payload) > limit) return nullptr;
    size_t off = tail % size;
    if (size - off < need) {
      if (size - off >= sizeof(EntryHeader)) {
        EntryHeader pad;
        pad.kind = EntryKind::Pad;
        pad.length = static_cast<uint32_t>(size - off - sizeof(EntryHeader));
        std::memcpy(base + off, &pad, sizeof(pad));
      }
      tail += size - off;
      off = 0;
    }
    auto* h = reinterpret_cast<EntryHeader*>(base + off);
    tail += need;
    return h;
  }
};

// Walks records in [pos, end). Returns nullptr at `end`; skips wrap padding.
struct RingReader {
  const std::byte* base = nullptr;
  size_t size = 0;

  const EntryHeader* next(uint64_t& pos, uint64_t end) const {
    while (pos < end) {
      size_t off = pos % size;
      if (size - off < sizeof(EntryHeader)) {
        pos += size - off;
        continue;
      }
      auto* h = reinterpret_cast<const EntryHeader*>(base + off);
      if (h->kind == EntryKind::Pad) {
        pos += size - off;
        continue;
      }
      return h;
    }
    return nullptr;
  }
};

}  // namespace rcpg::ordering
