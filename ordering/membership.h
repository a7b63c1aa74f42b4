// The membership protocol's wire format: two-sided control messages on the
// engines' full mesh of connections (docs/FAILURES.md). Every message starts
// with a 32-bit type; receivers check the exact size for the type.
//
// A view change for epoch E is one Paxos instance among the configured
// nodes: a coordinator with ballot b sends Prepare(E, b); nodes promise and
// wedge (freeze what they have received of the old log) and answer State;
// with a quorum of States the coordinator picks the value (a view: members,
// sequencer, the cut and who holds it) - the highest value already accepted
// for E if there is one - and sends Propose; a quorum of Accepted makes it
// chosen and Commit installs it. Installing = fetching the missing part of
// the log up to the cut by RDMA READ, delivering it, and re-sending one's
// own records that missed the cut to the new sequencer (Resume).
#pragma once

#include <compare>
#include <cstdint>

#include "ordering/engine.h"

namespace rcpg::ordering {

inline constexpr size_t kMaxNodes = 64;  // slots fit a 64-bit mask

enum class CtrlType : uint32_t {
  Hello = 0x4F4C4548,  // "HELO"
  Prepare = 0x50455250,
  State = 0x54415453,
  Propose = 0x504F5250,
  Accepted = 0x54504341,
  Commit = 0x4D4D4F43,
  Resume = 0x554D5352,
};

struct Ballot {
  uint64_t n = 0;
  uint32_t coord = 0;
  uint32_t pad = 0;
  auto operator<=>(const Ballot&) const = default;
};

struct ValueMember {
  uint32_t id = 0;
  uint32_t incarnation = 0;
  uint32_t continuing = 0;  // 1: keeps its log (was in the previous view); 0: starts at the cut
  uint32_t from_epoch = 0;  // continuing: the view it continues from
  uint64_t consumed = 0;    // log space it still needs from here on (the sequencer's limit)
  uint64_t received = 0;    // what it already holds (the sequencer's SAFE watermark)
};

// A view as decided: the value of one Paxos instance.
struct ViewValue {
  uint32_t epoch = 0;
  uint32_t sequencer = 0;
  uint32_t holder = 0;  // a continuing member that holds the log up to `cut`
  uint32_t count = 0;
  uint64_t cut = 0;       // log position where the new view's entries begin
  uint64_t cut_gseq = 0;  // gseq of the new view's View entry
  ValueMember members[kMaxNodes];
  // Per configured slot, members or not: the highest sseq of that node's
  // records in the lineage's log up to the cut, and the incarnation it
  // belongs to. The sequencer drops re-sent records at or below it; a node
  // that starts afresh takes them all over, so that it knows what the
  // lineage holds of a sender that is away now and comes back later, when
  // this node may hold the log or sequence.
  uint64_t lineage_hwm[kMaxNodes] = {};
  uint32_t lineage_inc[kMaxNodes] = {};
  // What the lineage holds of member `m`'s records (0: none of this incarnation).
  uint64_t sseq_hwm(size_t slot, const ValueMember& m) const {
    return lineage_inc[slot] == m.incarnation ? lineage_hwm[slot] : 0;
  }
};

struct PrepareMsg {
  CtrlType type = CtrlType::Prepare;
  uint32_t epoch = 0;
  Ballot ballot;
};

struct StateMsg {
  CtrlType type = CtrlType::State;
  uint32_t epoch = 0;  // of the Prepare answered
  Ballot ballot;
  uint32_t view_epoch = 0;  // the sender's installed view (0: none)
  uint32_t incarnation = 0;
  uint64_t received = 0;
  uint64_t consumed = 0;
  uint64_t next_gseq = 0;  // gseq following the last entry before `received`
  uint64_t reach = 0;      // slots it is connected to and does not suspect (itself included)
  // 0: this incarnation never installed a view while others had one: it may
  // have forgotten promises of an earlier incarnation, so it does not count
  // towards a quorum.
  uint32_t reliable = 0;
  // Newest epoch whose value it learned, also one it was left out of.
  uint32_t decided_epoch = 0;
  // Per slot: highest sseq of that sender in our log up to `received`, and
  // the incarnation it belongs to.
  uint64_t sseq_hwm[kMaxNodes] = {};
  uint32_t hwm_incarnation[kMaxNodes] = {};
  uint32_t has_accepted = 0;
  uint32_t has_view = 0;  // view_epoch == epoch: `value` is the installed view
  // The Prepare was refused: `accepted_ballot` is the ballot promised
  // instead (a coordinator with a lower id retries above it at once).
  uint32_t refused = 0;
  uint32_t pad = 0;
  Ballot accepted_ballot;
  ViewValue value;  // accepted (has_accepted) or installed (has_view) value
};

struct ProposeMsg {
  CtrlType type = CtrlType::Propose;
  uint32_t epoch = 0;
  Ballot ballot;
  ViewValue value;
};

struct AcceptedMsg {
  CtrlType type = CtrlType::Accepted;
  uint32_t epoch = 0;
  Ballot ballot;
};

struct CommitMsg {
  CtrlType type = CtrlType::Commit;
  uint32_t epoch = 0;
  ViewValue value;
};

// A member's first message to the sequencer of a new view: its records are
// (re-)sent from this inbound ring position on.
struct ResumeMsg {
  CtrlType type = CtrlType::Resume;
  uint32_t epoch = 0;
  uint64_t position = 0;
};

}  // namespace rcpg::ordering
