// Endpoint creation: setup of the fixed resources and the one teardown ladder.
#include "transport/verbs/verbs_endpoint.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "transport/verbs/verbs_internal.h"

namespace rcpg::transport {

std::unique_ptr<Endpoint> make_verbs_endpoint(const EndpointConfig& cfg, std::string& why) {
  auto ep = std::make_unique<verbs::VerbsEndpoint>(cfg);
  if (!ep->init(why)) return nullptr;
  return ep;
}

}  // namespace rcpg::transport

namespace rcpg::transport::verbs {
namespace {

constexpr int kListenBacklog = 1024;
constexpr uint32_t kCqTarget = 65536;  // CQEs wanted; clamped to the device's max_cqe

bool set_nonblock(int fd, const char* what, std::string& why) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    why = sys_error(std::string("cannot make the ") + what + " non-blocking");
    return false;
  }
  return true;
}

}  // namespace

VerbsEndpoint::VerbsEndpoint(const EndpointConfig& cfg) : cfg_(cfg) {}

VerbsEndpoint::~VerbsEndpoint() {
  teardown();
}

bool VerbsEndpoint::init(std::string& why) {
  pending_.reserve(1024);
  deferred_.reserve(1024);
  dirty_.reserve(256);
  if (!init_device(why) || !init_cq(why) || !init_fds(why)) {
    teardown();
    return false;
  }
  last_control_ = Clock::now();
  return true;
}

// Steps 1-3: event channel, anchor id (fixes the device), protection domain.
bool VerbsEndpoint::init_device(std::string& why) {
  sockaddr_in listen_addr{};
  if (!cfg_.listen_address.empty() && !parse_ipv4(cfg_.listen_address, true, listen_addr, why))
    return false;
  if (!cfg_.source_address.empty()) {
    if (!parse_ipv4(cfg_.source_address, false, src_addr_, why)) return false;
    has_src_ = true;
  } else if (!cfg_.listen_address.empty() && listen_addr.sin_addr.s_addr != INADDR_ANY) {
    src_addr_ = listen_addr;
    src_addr_.sin_port = 0;
    has_src_ = true;
  }

  channel_ = rdma_create_event_channel();
  if (!channel_) {
    why = sys_error("rdma_create_event_channel") + " (no RDMA support: rdma_ucm not loaded?)";
    return false;
  }
  if (!set_nonblock(channel_->fd, "rdma_cm event channel", why)) return false;

  if (!cfg_.listen_address.empty() || has_src_) {
    if (rdma_create_id(channel_, &anchor_, nullptr, RDMA_PS_TCP) != 0) {
      anchor_ = nullptr;
      why = sys_error("rdma_create_id");
      return false;
    }
    sockaddr_in bind_addr = cfg_.listen_address.empty() ? src_addr_ : listen_addr;
    if (rdma_bind_addr(anchor_, reinterpret_cast<sockaddr*>(&bind_addr)) != 0) {
      why = sys_error("cannot bind " + format_addr(reinterpret_cast<sockaddr*>(&bind_addr))) +
            (errno == ENODEV ? " (no RDMA device has this address)" : "");
      return false;
    }
    if (!cfg_.listen_address.empty()) {
      if (rdma_listen(anchor_, kListenBacklog) != 0) {
        why = sys_error("rdma_listen on " + cfg_.listen_address);
        return false;
      }
      listening_ = true;
    }
    verbs_ = anchor_->verbs;
    // Listening on one address but connecting from another: both must be on
    // the same device (a Region has one rkey).
    if (verbs_ && listening_ && !cfg_.source_address.empty()) {
      rdma_cm_id* probe = nullptr;
      if (rdma_create_id(channel_, &probe, nullptr, RDMA_PS_TCP) != 0) {
        why = sys_error("rdma_create_id");
        return false;
      }
      bool bound = rdma_bind_addr(probe, reinterpret_cast<sockaddr*>(&src_addr_)) == 0;
      std::string bind_err = bound ? "" : sys_error("cannot bind source " + cfg_.source_address);
      bool same = bound && probe->verbs == verbs_;
      if (rdma_destroy_id(probe) != 0) log(sys_error("rdma_destroy_id (source probe)"));
      if (!bound) {
        why = bind_err;
        return false;
      }
      if (!same) {
        why = "source address " + cfg_.source_address + " and listen address " +
              cfg_.listen_address + " are on different RDMA devices";
        return false;
      }
    }
  }
  if (!verbs_) {
    // Not bound to a device address (no address, or listening on 0.0.0.0):
    // take the hinted device, else the first one.
    int n = 0;
    device_list_ = rdma_get_devices(&n);
    if (!device_list_ || n <= 0) {
      why = "no RDMA device found";
      return false;
    }
    for (int i = 0; i < n && !verbs_; ++i)
      if (cfg_.device_hint.empty() ||
          cfg_.device_hint == ibv_get_device_name(device_list_[i]->device))
        verbs_ = device_list_[i];
    if (!verbs_) {
      why = "RDMA device " + cfg_.device_hint + " not found";
      return false;
    }
  }
  dev_name_ = ibv_get_device_name(verbs_->device);
  if (!cfg_.device_hint.empty() && cfg_.device_hint != dev_name_) {
    why = "address is on RDMA device " + dev_name_ + ", configuration expects " + cfg_.device_hint;
    return false;
  }
  if (ibv_query_device(verbs_, &dev_attr_) != 0) {
    why = sys_error("ibv_query_device " + dev_name_);
    return false;
  }
  max_rd_atomic_ = static_cast<uint8_t>(
      std::clamp(std::min(dev_attr_.max_qp_rd_atom, dev_attr_.max_qp_init_rd_atom), 1, 16));

  pd_ = ibv_alloc_pd(verbs_);
  if (!pd_) {
    why = sys_error("ibv_alloc_pd on " + dev_name_);
    return false;
  }
  return true;
}

// Steps 4-5: completion channel and the shared CQ.
bool VerbsEndpoint::init_cq(std::string& why) {
  comp_ch_ = ibv_create_comp_channel(verbs_);
  if (!comp_ch_) {
    why = sys_error("ibv_create_comp_channel on " + dev_name_);
    return false;
  }
  if (!set_nonblock(comp_ch_->fd, "completion channel", why)) return false;
  int cqe = std::min<int>(dev_attr_.max_cqe, kCqTarget);
  cq_ = ibv_create_cq(verbs_, cqe, nullptr, comp_ch_, 0);
  if (!cq_) {
    why = sys_error("ibv_create_cq(" + std::to_string(cqe) + ") on " + dev_name_);
    return false;
  }
  cq_size_ = static_cast<uint32_t>(cq_->cqe);
  // Slack for CQEs a destroyed QP may leave behind until the next poll().
  cq_budget_ = cq_size_ - std::min<uint32_t>(cq_size_ / 4, 4096);
  return true;
}

// Steps 6-7: wake-up eventfd and the epoll set behind wait_fd().
bool VerbsEndpoint::init_fds(std::string& why) {
  // The device's async event fd belongs to librdmacm's shared context; it is
  // read non-blocking here (another endpoint on the same device may read it too).
  if (!set_nonblock(verbs_->async_fd, "device async event fd", why)) return false;
  kick_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (kick_fd_ < 0) {
    why = sys_error("eventfd");
    return false;
  }
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) {
    why = sys_error("epoll_create1");
    return false;
  }
  const std::pair<int, uint32_t> fds[] = {{channel_->fd, kTagCm},
                                          {comp_ch_->fd, kTagComp},
                                          {verbs_->async_fd, kTagAsync},
                                          {kick_fd_, kTagKick}};
  for (auto [fd, tag] : fds) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = tag;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      why = sys_error("epoll_ctl");
      return false;
    }
  }
  return true;
}

// The one unwind ladder: dynamic objects newest first, then the fixed
// resources in exact reverse order of init(). Safe on a partial init().
void VerbsEndpoint::teardown() {
  for (size_t i = conns_.size(); i-- > 0;) {
    Conn* c = conns_[i].get();
    if (!c) continue;
    if (c->state == ConnState::Established && rdma_disconnect(c->cm_id) != 0)
      log(sys_error("rdma_disconnect (teardown)"));
    destroy_conn(c);
  }
  for (size_t i = regions_.size(); i-- > 0;)
    if (regions_[i]) deregister(&regions_[i]->region);

  if (epoll_fd_ >= 0 && close(epoll_fd_) != 0) log(sys_error("close(epoll)"));
  epoll_fd_ = -1;
  if (kick_fd_ >= 0 && close(kick_fd_) != 0) log(sys_error("close(eventfd)"));
  kick_fd_ = -1;
  if (cq_) {
    if (cq_unacked_) ibv_ack_cq_events(cq_, cq_unacked_);
    cq_unacked_ = 0;
    if (int rc = ibv_destroy_cq(cq_); rc != 0)
      log(std::string("ibv_destroy_cq: ") + std::strerror(rc));
    cq_ = nullptr;
  }
  if (comp_ch_ && ibv_destroy_comp_channel(comp_ch_) != 0)
    log(sys_error("ibv_destroy_comp_channel"));
  comp_ch_ = nullptr;
  if (pd_) {
    if (int rc = ibv_dealloc_pd(pd_); rc != 0)
      log(std::string("ibv_dealloc_pd: ") + std::strerror(rc));
    pd_ = nullptr;
  }
  if (device_list_) rdma_free_devices(device_list_);
  device_list_ = nullptr;
  verbs_ = nullptr;
  if (anchor_ && rdma_destroy_id(anchor_) != 0) log(sys_error("rdma_destroy_id (anchor)"));
  anchor_ = nullptr;
  if (channel_) rdma_destroy_event_channel(channel_);
  channel_ = nullptr;
}

}  // namespace rcpg::transport::verbs
