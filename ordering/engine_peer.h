// Per-node state the engine keeps about every configured node (itself
// included): its connection, its advertised regions, and the positions the
// protocol tracks for it. Internal to the engine's .cpp files.
#pragma once

#include "ordering/engine.h"

namespace rcpg::ordering {

// The introduction each node sends on every new connection (post_send).
struct HelloMsg {
  uint32_t magic = 0x4F4C4548;  // "HELO" (CtrlType::Hello)
  uint32_t node = 0;
  uint32_t incarnation = 0;
  uint32_t epoch = 0;  // its installed view (0: none)
  uint64_t log_bytes = 0;
  uint64_t inbound_bytes = 0;
  transport::RemoteRegion log{};      // its log mirror
  transport::RemoteRegion inbound{};  // its inbound rings (slot order)
  transport::RemoteRegion ctrl{};     // its ack slots (slot order)
};

struct AckSlot {
  uint64_t received = 0;
  uint64_t delivered = 0;
};

struct Engine::Peer {
  NodeId id = 0;
  std::string address;
  size_t slot = 0;
  bool self = false;
  transport::ConnId conn = transport::kNoConn;
  bool connected = false;
  bool introduced = false;  // its HelloMsg arrived
  HelloMsg hello{};
  // failure detection
  uint32_t incarnation = 0;  // from its hello
  uint32_t epoch = 0;        // newest view epoch we know it has
  bool suspected = false;    // until it reconnects and introduces itself again
  uint64_t last_heard_us = 0;
  // longest silence from it in the current and the previous window
  uint64_t gap_cur = 0, gap_prev = 0, gap_window_at = 0;
  uint64_t last_beat_us = 0;     // our last heartbeat to it
  uint64_t reconnect_at_us = 0;  // we connect to lower ids: next attempt
  bool connecting = false;       // an attempt of ours is under way
  // How long the next attempt may take before it is abandoned: short at
  // first (after a healed link the stuck attempt is replaced soon), doubling
  // while attempts keep hanging, back to short once one connects.
  uint64_t connect_patience_us = 0;
  bool in_view = false;          // member of the installed view (this incarnation)
  // Suspected since the view was installed. Writes to it may have been
  // dropped with the old connection, and a stale sequencer would write its
  // old log into a mirror that moved on: neither side goes on with this
  // view's ring positions, even once it is back on a new connection (the
  // view changes, and the new one resets them).
  bool lost = false;
  // Highest sseq of its records in the log as far as we have passed it in
  // order (receiver-side de-duplication after a rejoin), and as sequenced
  // by us (the sequencer's de-duplication of re-sent records).
  uint64_t delivered_sseq = 0;
  uint64_t sequenced_sseq = 0;
  uint32_t sseq_incarnation = 0;  // incarnation the two above belong to
  bool resumed = false;           // sequencer: its Resume for this view arrived
  // A Resume for a view we have not installed yet (it installed first).
  uint32_t early_resume_epoch = 0;
  uint64_t early_resume_pos = 0;
  uint64_t early_inbound_end = 0;  // what it wrote after that Resume
  bool reannounce = false;         // sequencer: repeat the log announcement (after its Resume)
  // sequencer's view of this node as a sender
  uint64_t inbound_end = 0;   // bytes it has written into our inbound ring
  uint64_t inbound_read = 0;  // bytes we have sequenced
  uint64_t credit_sent = 0;
  // Its fragment stream as sequenced so far (reassembly mode): bytes of the
  // open message still to come; -1 = no message open.
  int64_t frag_left = -1;
  // sequencer's view of this node as a member
  uint64_t repl_posted = 0;  // log bytes written to its mirror
  uint64_t stable_sent = 0;
  AckSlot acked{};
};

}  // namespace rcpg::ordering
