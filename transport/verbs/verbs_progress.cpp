// Control progress (cm events, async events, completion-channel events),
// next_event(), wait() and the wake-up eventfd behind wait_fd().
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "transport/verbs/verbs_internal.h"

namespace rcpg::transport::verbs {
namespace {

constexpr unsigned kCqAckBatch = 64;

}  // namespace

// One epoll_wait(0) tells which control fds have work; only those are read.
void VerbsEndpoint::progress_control() {
  last_control_ = Clock::now();
  std::array<epoll_event, 4> evs;
  int n = epoll_wait(epoll_fd_, evs.data(), static_cast<int>(evs.size()), 0);
  for (int i = 0; i < n; ++i) handle_ready(evs[i].data.u32);
}

void VerbsEndpoint::handle_ready(uint32_t tag) {
  switch (tag) {
    case kTagCm:
      drain_cm_events();
      break;
    case kTagComp:
      drain_comp_channel();
      break;
    case kTagAsync:
      drain_async_events();
      break;
    default:
      break;  // kick: cleared by unkick_if_idle()
  }
}

void VerbsEndpoint::drain_comp_channel() {
  ibv_cq* cq = nullptr;
  void* ctx = nullptr;
  while (ibv_get_cq_event(comp_ch_, &cq, &ctx) == 0) {
    cq_armed_ = false;
    if (++cq_unacked_ >= kCqAckBatch) {
      ibv_ack_cq_events(cq_, cq_unacked_);
      cq_unacked_ = 0;
    }
  }
  if (errno != EAGAIN) log(sys_error("ibv_get_cq_event"));
}

// The owner blocks on wait_fd() after polls that return nothing. The CQ must
// then be armed, and a completion-channel event already consumed by polling
// must be read, or the epoll fd stays readable and the owner never sleeps.
// Both cost system calls, so they happen when the endpoint turns idle (the
// first empty poll after work) and every so many empty polls, not per poll.
void VerbsEndpoint::arm_for_fd_mode(std::span<Completion> out, size_t& n) {
  constexpr uint32_t kRearmEvery = 64;
  if (n > 0) {
    fd_mode_busy_ = true;
    return;
  }
  if (!fd_mode_busy_ && cq_armed_ && ++fd_mode_empty_ < kRearmEvery) return;
  fd_mode_busy_ = false;
  fd_mode_empty_ = 0;
  drain_comp_channel();
  if (!cq_armed_) {
    if (int rc = ibv_req_notify_cq(cq_, 0); rc != 0) {
      log(std::string("ibv_req_notify_cq: ") + std::strerror(rc));
      return;
    }
    cq_armed_ = true;
  }
  // Completions that arrived before arming raise no event: take them now.
  int want = static_cast<int>(std::min(out.size(), wcs_.size()));
  int got = want > 0 ? ibv_poll_cq(cq_, want, wcs_.data()) : 0;
  for (int i = 0; i < got; ++i) handle_wc(wcs_[i], out, n);
  if (n > 0) fd_mode_busy_ = true;
}

void VerbsEndpoint::drain_async_events() {
  ibv_async_event ev;
  while (ibv_get_async_event(verbs_, &ev) == 0) {
    ibv_async_event copy = ev;
    ibv_ack_async_event(&ev);  // before acting: destroying a QP waits for it
    on_async_event(copy);
  }
}

void VerbsEndpoint::kick() {
  if (kicked_) return;
  uint64_t one = 1;
  if (write(kick_fd_, &one, sizeof(one)) == sizeof(one)) kicked_ = true;
}

void VerbsEndpoint::unkick_if_idle() {
  if (!kicked_ || !events_.empty() || pending_head_ < pending_.size() || stash_pos_ < stash_n_ ||
      deferred_ready_)
    return;
  uint64_t v;
  if (read(kick_fd_, &v, sizeof(v)) < 0 && errno != EAGAIN) log(sys_error("read(eventfd)"));
  kicked_ = false;
}

std::optional<Event> VerbsEndpoint::next_event() {
  if (events_.empty() && Clock::now() - last_control_ >= kControlInterval) progress_control();
  if (events_.empty()) {
    unkick_if_idle();
    return std::nullopt;
  }
  Event e = std::move(events_.front());
  events_.pop_front();
  if (e.type == EventType::Connected) {
    if (Conn* c = find(e.conn)) {
      c->user_knows = true;
      if (c->deferred) deferred_ready_ = true;
    }
  }
  return e;
}

void VerbsEndpoint::wait(std::chrono::microseconds timeout) {
  progress_control();
  if (!events_.empty() || pending_head_ < pending_.size() || stash_pos_ < stash_n_ ||
      deferred_ready_) {
    kick();
    return;
  }
  if (!cq_armed_) {
    if (int rc = ibv_req_notify_cq(cq_, 0); rc != 0)
      log(std::string("ibv_req_notify_cq: ") + std::strerror(rc));
    else
      cq_armed_ = true;
  }
  // Completions that arrived before arming raise no event: look once more.
  int got = ibv_poll_cq(cq_, static_cast<int>(stash_.size()), stash_.data());
  if (got > 0) {
    stash_n_ = got;
    stash_pos_ = 0;
    kick();
    return;
  }
  if (got < 0) log("ibv_poll_cq failed in wait()");
  if (timeout.count() <= 0) return;
  int ms = static_cast<int>(std::min<int64_t>((timeout.count() + 999) / 1000, 1 << 30));
  std::array<epoll_event, 4> evs;
  int n = epoll_wait(epoll_fd_, evs.data(), static_cast<int>(evs.size()), ms);
  if (n < 0 && errno != EINTR) log(sys_error("epoll_wait"));
  last_control_ = Clock::now();
  for (int i = 0; i < n; ++i) handle_ready(evs[i].data.u32);
}

}  // namespace rcpg::transport::verbs
