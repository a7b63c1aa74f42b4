#include "daemon/segment_registrar.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>

namespace rcpg::daemon {

namespace {

// Starts `fn` on a thread that takes no signals: rcpgd receives them through
// a signalfd, which works only while every thread blocks them.
std::thread start_without_signals(std::function<void()> fn) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  std::thread t(std::move(fn));
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return t;
}

}  // namespace

SegmentRegistrar::SegmentRegistrar(transport::Endpoint& ep)
    : ep_(ep), thread_(start_without_signals([this] { run(); })) {}

SegmentRegistrar::~SegmentRegistrar() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  thread_.join();
  for (const Job& j : jobs_) close(j.fd);
}

bool SegmentRegistrar::submit(uint64_t tag, int fd, size_t bytes, std::string& why) {
  int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (own < 0) {
    why = std::string("cannot duplicate the segment's descriptor: ") + std::strerror(errno);
    return false;
  }
  {
    std::lock_guard lock(mu_);
    jobs_.push_back(Job{tag, own, bytes});
  }
  cv_.notify_one();
  return true;
}

void SegmentRegistrar::take(std::vector<Done>& out) {
  if (!have_done_.load(std::memory_order_acquire)) return;
  std::lock_guard lock(mu_);
  for (Done& d : done_) out.push_back(std::move(d));
  done_.clear();
  have_done_.store(false, std::memory_order_relaxed);
}

void SegmentRegistrar::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
    if (stop_) return;
    Job job = jobs_.front();
    jobs_.pop_front();
    lock.unlock();
    Done d;
    d.tag = job.tag;
    d.prepared = ep_.prepare_external(job.fd, job.bytes, d.why);
    close(job.fd);
    lock.lock();
    done_.push_back(std::move(d));
    have_done_.store(true, std::memory_order_release);
  }
}

}  // namespace rcpg::daemon
