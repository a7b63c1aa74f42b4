// The byte layout shared by senders' inbound rings and the replicated log.
// A record is an EntryHeader followed by its payload, padded to 8 bytes; a
// record never straddles the end of a ring (the writer skips to the start,
// leaving a Pad record, or nothing when less than a header is left).
#pragma once

#include <cstddef>
#include <cstdint>

namespace rcpg::ordering {

enum class EntryKind : uint8_t { Data = 1, Join = 2, Leave = 3, View = 4, Pad = 5 };

// CPG's guarantees, with CPG's numeric values.
enum class Guarantee : uint8_t { Unordered = 0, Fifo = 1, Agreed = 2, Safe = 3 };

inline constexpr uint16_t kFragment = 1;  // part of a fragmented message
inline constexpr uint16_t kFragFirst = 2;
inline constexpr uint16_t kFragLast = 4;

struct EntryHeader {
  uint64_t gseq = 0;    // global sequence number; 0 until the sequencer stamps it
  uint64_t sseq = 0;    // per-sender-node sequence number (FIFO, de-duplication)
  uint32_t length = 0;  // payload bytes
  uint32_t sender = 0;  // node id
  uint32_t pid = 0;     // sending process (CPG member id)
  uint32_t group = 0;   // group id (Data) or 0
  EntryKind kind = EntryKind::Data;
  Guarantee guarantee = Guarantee::Agreed;
  uint16_t flags = 0;  // kFragment | kFragFirst | kFragLast
  uint32_t aux = 0;    // FragFirst: whole message length; View: epoch
};
static_assert(sizeof(EntryHeader) == 40);

inline constexpr size_t kAlign = 8;
inline constexpr size_t align_up(size_t n) {
  return (n + kAlign - 1) & ~(kAlign - 1);
}
inline constexpr size_t record_bytes(size_t payload) {
  return align_up(sizeof(EntryHeader) + payload);
}

// Immediate values: 4 bits of type, 28 bits of a position in 8-byte units
// (mod 2^28). Rings are limited to 1 GiB so a position is recovered exactly
// from any lower bound within 2 GiB of it.
// Credit (3) is reserved: senders get credit back through the log itself.
enum class ImmType : uint32_t {
  Log = 1,
  Inbound = 2,
  Credit = 3,
  Stable = 4,
  Ack = 5,
  Heartbeat = 6
};
inline constexpr size_t kMaxRingBytes = size_t{1} << 30;
// The largest message (a fragment's `aux`); CPG promises at least 1 GiB.
inline constexpr uint64_t kMaxMessageBytes = uint64_t{1} << 30;

// Flags a record may carry: none, or kFragment with kFragFirst/kFragLast.
inline bool valid_fragment_flags(uint16_t flags) {
  return flags == 0 ||
         ((flags & ~(kFragment | kFragFirst | kFragLast)) == 0 && (flags & kFragment));
}

inline uint32_t make_imm(ImmType t, uint64_t pos) {
  return (static_cast<uint32_t>(t) << 28) | static_cast<uint32_t>((pos / kAlign) & 0x0fffffff);
}
inline ImmType imm_type(uint32_t imm) {
  return static_cast<ImmType>(imm >> 28);
}
// Full position from the 28-bit value, given a lower bound `base` <= pos.
inline uint64_t imm_pos(uint32_t imm, uint64_t base) {
  uint64_t units = imm & 0x0fffffff;
  uint64_t base_units = base / kAlign;
  uint64_t delta = (units - base_units) & 0x0fffffff;
  return (base_units + delta) * kAlign;
}

}  // namespace rcpg::ordering
