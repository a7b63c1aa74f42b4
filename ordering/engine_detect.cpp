// Failure detection: a zero-length RDMA write with an immediate to every
// introduced peer each heartbeat interval; any completion from a peer counts
// as a sign of life. A peer silent for suspect_timeout, or whose connection
// breaks, is suspected: we disconnect it (so it can no longer write into our
// memory, and it notices) and the membership protocol takes over. The higher
// node id re-connects; a peer that re-introduces itself is trusted again.
#include <algorithm>
#include <bit>
#include <chrono>

#include "ordering/engine.h"
#include "ordering/engine_peer.h"

namespace rcpg::ordering {

using namespace rcpg::transport;

uint64_t Engine::clock_now() const {
  if (cfg_.clock) return cfg_.clock();
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

size_t Engine::quorum() const {
  if (cfg_.two_node && peers_.size() == 2) return 1;
  return peers_.size() / 2 + 1;
}

uint64_t Engine::reach_mask() const {
  uint64_t m = 0;
  for (const Peer& p : peers_)
    if (p.self || (p.introduced && !p.suspected)) m |= uint64_t{1} << p.slot;
  return m;
}

namespace {
constexpr uint64_t kGapWindowUs = 2'000'000;
}

void Engine::heard(Peer& p) {
  // Only silences of an introduced peer count (not the time it was away).
  uint64_t gap = p.introduced && !p.suspected ? now_ - p.last_heard_us : 0;
  if (now_ - p.gap_window_at > kGapWindowUs) {
    p.gap_prev = p.gap_cur;
    p.gap_cur = 0;
    p.gap_window_at = now_;
  }
  p.gap_cur = std::max(p.gap_cur, gap);
  p.last_heard_us = now_;
}

uint64_t Engine::suspect_after(const Peer& p) const {
  uint64_t adaptive = 3 * std::max(p.gap_cur, p.gap_prev);
  uint64_t floor = cfg_.suspect_timeout_us;
  return std::clamp<uint64_t>(adaptive, floor,
                              std::max<uint64_t>(floor, cfg_.suspect_timeout_max_us));
}

size_t Engine::reachable() const {
  return static_cast<size_t>(std::popcount(reach_mask()));
}

// One attempt at a time per peer: resolving an unreachable address can take
// seconds, and piling attempts up exhausts the fabric's resources. An
// attempt that has not ended in time is abandoned and retried: after 1 s
// (10 suspect timeouts if longer) at first, then doubling up to 5 s (4
// adaptive maxima if longer), so that a peer behind a link that comes back
// is reached about a second later, while a slow fabric still connects.
uint64_t Engine::connect_patience_min() const {
  return std::max<uint64_t>(1'000'000, 10 * uint64_t{cfg_.suspect_timeout_us});
}

void Engine::connect_peer(Peer& p) {
  const uint64_t most = std::max<uint64_t>(
      std::max<uint64_t>(5'000'000, 4 * uint64_t{cfg_.suspect_timeout_max_us}),
      connect_patience_min());
  if (p.connecting) {  // the last attempt hung: the next one gets longer
    ep_.disconnect(p.conn);
    p.connect_patience_us = std::min(p.connect_patience_us * 2, most);
  }
  p.connect_patience_us = std::clamp(p.connect_patience_us, connect_patience_min(), most);
  p.conn = ep_.connect(p.address, p.id);
  p.connecting = true;
  if (conn_to_slot_.size() <= p.conn) conn_to_slot_.resize(p.conn + 1, SIZE_MAX);
  conn_to_slot_[p.conn] = p.slot;
  p.reconnect_at_us = now_ + p.connect_patience_us;
}

void Engine::suspect(Peer& p, const std::string& why) {
  if (p.self || p.suspected) return;
  bool mattered = p.introduced || p.in_view;
  p.suspected = true;
  if (p.in_view) p.lost = true;
  if (mattered) {
    ++counters_.suspicions;
    if (first_suspect_us_ == 0 && p.in_view) first_suspect_us_ = now_;
    log_fn_("suspect node " + std::to_string(p.id) + ": " + why);
  }
  if (p.conn != kNoConn && p.connected) ep_.disconnect(p.conn);
  p.connected = p.introduced = false;
  p.reconnect_at_us = now_ + std::max<uint64_t>(cfg_.suspect_timeout_us, 1000);
}

void Engine::wedge(const std::string& why) {
  if (!wedged_) {
    wedged_ = true;
    if (first_suspect_us_ == 0 && have_view_) first_suspect_us_ = now_;
  }
  if (view_.state != Membership::NoQuorum && have_view_) view_.state = Membership::Changing;
  view_.why = why;
}

void Engine::tick() {
  for (Peer& p : peers_) {
    if (p.self) continue;
    if (p.introduced && !p.suspected) {
      if (now_ - p.last_heard_us > suspect_after(p)) {
        suspect(p, "silent for " + std::to_string((now_ - p.last_heard_us) / 1000) + " ms");
        continue;
      }
      if (now_ - p.last_beat_us >= cfg_.heartbeat_interval_us &&
          ep_.post_write_imm(p.conn, *ack_src_, 0, p.hello.ctrl, 0, 0,
                             make_imm(ImmType::Heartbeat, 0), 0, false))
        p.last_beat_us = now_;
    } else if (!p.connected && p.id < cfg_.self && now_ >= p.reconnect_at_us) {
      connect_peer(p);
    }
  }
  size_t reach = static_cast<size_t>(std::popcount(reach_mask()));
  if (have_view_ && reach < quorum()) {
    std::string why = "no quorum: reaching " + std::to_string(reach) + " of " +
                      std::to_string(peers_.size()) + " configured nodes, " +
                      std::to_string(quorum()) + " needed";
    wedge(why);
    view_.state = Membership::NoQuorum;
  } else if (view_.state == Membership::NoQuorum) {
    view_.state = have_view_ ? Membership::Changing : Membership::Forming;
  }
  std::string line = std::string(to_string(view_.state)) + ": " + view_.why;
  // Quorum loss is worth a line each time its reason changes.
  if (view_.state == Membership::NoQuorum && line != last_state_line_) log_fn_(line);
  last_state_line_ = view_.state == Membership::NoQuorum ? line : std::string();
}

}  // namespace rcpg::ordering
