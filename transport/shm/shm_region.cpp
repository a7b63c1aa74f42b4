// shm fabric: registered memory. Our regions are sealed memfds that every
// connected peer maps; the peers' regions are mapped here as they arrive.
#include <fcntl.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "transport/shm/shm_endpoint_impl.h"

namespace rcpg::transport::shm {

std::optional<uint32_t> RegionIds::allocate() {
  uint32_t slot;
  if (!free_.empty()) {
    slot = free_.back();
    free_.pop_back();
  } else {
    if (gen_.size() >= kSlotMask) return std::nullopt;  // the slot has 16 bits
    slot = static_cast<uint32_t>(gen_.size());
    gen_.push_back(1);
  }
  return (uint32_t{gen_[slot]} << kSlotBits) | slot;
}

void RegionIds::release(uint32_t id) {
  uint32_t s = slot(id);
  if (++gen_[s] == 0) gen_[s] = 1;
  free_.push_back(s);
}

Region* ShmEndpoint::register_region(size_t bytes) {
  std::optional<uint32_t> id = region_ids_.allocate();
  if (!id) {
    log("rcpg shm: register_region: too many regions");
    return nullptr;
  }
  auto r = std::make_unique<LocalRegion>();
  std::string why;
  if (!r->map.create("rcpg-region", bytes, true, why)) {
    region_ids_.release(*id);
    log("rcpg shm: register_region(" + std::to_string(bytes) + "): " + why);
    return nullptr;
  }
  r->pub.data = r->map.data();
  r->pub.size = bytes;
  r->pub.id = *id;
  r->pub.remote = RemoteRegion{reinterpret_cast<uint64_t>(r->map.data()), bytes, *id, 0};
  r->pub.fd = r->map.fd();
  uint32_t s = RegionIds::slot(*id);
  if (regions_.size() <= s) regions_.resize(s + 1);
  regions_[s] = std::move(r);
  const LocalRegion& reg = *regions_[s];

  // Every peer that has our snapshot gets the region now, before this call
  // returns, hence before its rkey can reach the peer by any later message.
  for_each_conn([&](Conn& c) {
    if (!c.sent_snapshot || c.sock < 0) return;
    OutMsg m;
    if (region_message(reg, m, why)) {
      send_ctrl(c, std::move(m));
    } else if (c.handshaking()) {
      fail_setup(c, c.inbound ? std::nullopt : std::optional(EventType::Unreachable), why);
    } else {
      break_conn(c, "cannot share a new region: " + why);
    }
  });
  return &regions_[s]->pub;
}

Region* ShmEndpoint::register_external(int fd, size_t bytes) {
  std::optional<uint32_t> id = region_ids_.allocate();
  if (!id) {
    log("rcpg shm: register_external: too many regions");
    return nullptr;
  }
  auto r = std::make_unique<LocalRegion>();
  std::string why;
  int own = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (own < 0 || !r->map.attach(own, bytes, why)) {
    region_ids_.release(*id);
    log("rcpg shm: register_external: " + (own < 0 ? std::string(std::strerror(errno)) : why));
    return nullptr;
  }
  r->local_only = true;
  r->pub.data = r->map.data();
  r->pub.size = bytes;
  r->pub.id = *id;
  r->pub.remote = RemoteRegion{~uint64_t{0}, 0, ~uint32_t{0}, 0};
  uint32_t s = RegionIds::slot(*id);
  if (regions_.size() <= s) regions_.resize(s + 1);
  regions_[s] = std::move(r);
  return &regions_[s]->pub;
}

void ShmEndpoint::deregister(Region* region) {
  if (!region) return;
  LocalRegion* lr = find_local(*region);
  if (!lr || &lr->pub != region) return;
  uint32_t id = region->id;
  if (lr->local_only) {
    region_ids_.release(id);
    regions_[RegionIds::slot(id)].reset();
    return;
  }
  MsgHeader h;
  h.type = MsgType::Deregister;
  h.key = id;
  for_each_conn([&](Conn& c) {
    if (!c.sent_snapshot || c.sock < 0) return;
    OutMsg m;
    std::string why;
    if (OutMsg::make(h, {}, {}, m, why)) send_ctrl(c, std::move(m));
  });
  // Peers keep their mapping until they read the message; the memory goes
  // when the last mapping does.
  regions_[RegionIds::slot(id)].reset();
  region_ids_.release(id);
}

LocalRegion* ShmEndpoint::find_local(const Region& r) const {
  uint32_t s = RegionIds::slot(r.id);
  if (s >= regions_.size()) return nullptr;
  LocalRegion* lr = regions_[s].get();
  return lr && lr->pub.id == r.id && lr->pub.data == r.data ? lr : nullptr;
}

bool ShmEndpoint::region_message(const LocalRegion& r, OutMsg& out, std::string& why) const {
  MsgHeader h;
  h.type = MsgType::Region;
  h.key = r.pub.id;
  h.size = r.pub.size;
  h.base = r.pub.remote.addr;
  const int fd = r.map.fd();
  return OutMsg::make(h, {}, std::span(&fd, 1), out, why);
}

bool ShmEndpoint::on_region(Conn& c, InMsg& m) {
  std::string why = "region message without its memory";
  PeerRegion pr;
  pr.rkey = m.h.key;
  pr.base = m.h.base;
  pr.size = m.h.size;
  if (m.nfds == 1 && pr.map.attach(m.take_fd(0), pr.size, why)) {
    uint32_t s = RegionIds::slot(pr.rkey);
    if (c.regions.size() <= s) c.regions.resize(s + 1);
    c.regions[s] = std::move(pr);
    return true;
  }
  // The peer believes we can reach this region: we cannot, so we are done.
  why = "cannot map region " + std::to_string(m.h.key) + " of node " + std::to_string(c.peer) +
        ": " + why;
  if (c.handshaking()) {
    fail_setup(c, c.inbound ? std::nullopt : std::optional(EventType::Unreachable), why);
  } else {
    break_conn(c, why);
  }
  return false;
}

void ShmEndpoint::on_deregister(Conn& c, const InMsg& m) {
  uint32_t s = RegionIds::slot(m.h.key);
  if (s < c.regions.size() && c.regions[s].rkey == m.h.key) c.regions[s] = PeerRegion{};
}

const PeerRegion* ShmEndpoint::find_peer_region(Conn& c, uint32_t rkey) {
  uint32_t s = RegionIds::slot(rkey);
  if (s < c.regions.size() && c.regions[s].rkey == rkey && c.regions[s].map) return &c.regions[s];
  // Unknown: the peer may have registered it a moment ago, in which case its
  // Region message is already queued on the socket. Read what is there.
  if (c.sock < 0) return nullptr;
  on_readable(c);
  if (c.state != ConnState::Established) return nullptr;
  if (s < c.regions.size() && c.regions[s].rkey == rkey && c.regions[s].map) return &c.regions[s];
  return nullptr;
}

}  // namespace rcpg::transport::shm
