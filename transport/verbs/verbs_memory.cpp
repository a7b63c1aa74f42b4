// User memory regions: placed allocation + one memory registration each.
//
// A Region is one MR (one rkey), so it cannot be registered in chunks; a
// region the device refuses to register fails with a log line. rxe accepts
// any size the process can pin (max_mr_size is 2^64-1); real RNICs limit it
// by max_mr_size and the memlock limit.
#include <cerrno>
#include <cstring>
#include <utility>

#include <unistd.h>

#include "transport/placement.h"
#include "transport/verbs/verbs_internal.h"

namespace rcpg::transport::verbs {

Region* VerbsEndpoint::register_region(size_t bytes) {
  if (bytes > dev_attr_.max_mr_size) {
    log("cannot register " + std::to_string(bytes) + " bytes: device " + dev_name_ +
        " allows at most " + std::to_string(dev_attr_.max_mr_size));
    return nullptr;
  }
  auto rec = std::make_unique<RegionRec>();
  rec->alloc_bytes = bytes;
  // memfd-backed so the daemon can hand a region (its log mirror) to local
  // clients for zero-copy receive; costs nothing on the data path.
  rec->mem = alloc_placed_shared(bytes, -1, rec->huge, rec->fd);
  if (!rec->mem) {
    log("cannot allocate " + std::to_string(bytes) +
        " bytes for a region: " + std::strerror(errno));
    return nullptr;
  }
  // A zero-length region still needs valid keys (zero-byte operations carry
  // them): register its page for local access only, so that any non-empty
  // remote access to it fails.
  size_t reg_bytes = bytes == 0 ? 1 : bytes;
  int access = bytes == 0
                   ? IBV_ACCESS_LOCAL_WRITE
                   : IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
  rec->mr = ibv_reg_mr(pd_, rec->mem, reg_bytes, access);
  if (!rec->mr) {
    log("ibv_reg_mr of " + std::to_string(bytes) + " bytes" + (rec->huge ? " (huge pages)" : "") +
        " failed: " + std::strerror(errno));
    free_placed(rec->mem, rec->alloc_bytes, rec->huge);
    close(rec->fd);
    return nullptr;
  }
  uint32_t id = take_region_id();
  Region& r = rec->region;
  r.data = static_cast<std::byte*>(rec->mem);
  r.size = bytes;
  r.id = id;
  r.remote.addr = reinterpret_cast<uintptr_t>(rec->mem);
  r.remote.length = bytes;
  r.remote.rkey = rec->mr->rkey;
  r.fd = rec->fd;
  regions_[id] = std::move(rec);
  return &regions_[id]->region;
}

namespace {

// A client's memfd mapped here and registered (local access only: this
// memory is a source of writes, never a target). ibv_reg_mr is thread-safe,
// and this touches nothing else of the endpoint.
class PreparedVerbsExternal final : public PreparedRegion {
 public:
  ~PreparedVerbsExternal() override {
    if (mr) ibv_dereg_mr(mr);
  }
  SharedMap map;
  size_t bytes = 0;
  ibv_mr* mr = nullptr;
};

}  // namespace

std::unique_ptr<PreparedRegion> VerbsEndpoint::prepare_external(int fd, size_t bytes,
                                                                std::string& why) {
  auto p = std::make_unique<PreparedVerbsExternal>();
  if (bytes == 0) {
    why = "empty region";
    return nullptr;
  }
  if (!p->map.map(fd, bytes, why)) return nullptr;
  p->bytes = bytes;
  p->mr = ibv_reg_mr(pd_, p->map.data(), bytes, IBV_ACCESS_LOCAL_WRITE);
  if (!p->mr) {
    why = "ibv_reg_mr of " + std::to_string(bytes) +
          " bytes of shared memory failed: " + std::strerror(errno);
    return nullptr;
  }
  return p;
}

Region* VerbsEndpoint::adopt_external(std::unique_ptr<PreparedRegion> prepared) {
  auto* p = dynamic_cast<PreparedVerbsExternal*>(prepared.get());
  if (!p) {
    log("adopt_external: not prepared by this endpoint");
    return nullptr;
  }
  auto rec = std::make_unique<RegionRec>();
  rec->external = std::move(p->map);
  rec->mr = std::exchange(p->mr, nullptr);
  uint32_t id = take_region_id();
  Region& r = rec->region;
  r.data = rec->external.data();
  r.size = p->bytes;
  r.id = id;
  r.remote = RemoteRegion{0, 0, 0, 0};
  regions_[id] = std::move(rec);
  return &regions_[id]->region;
}

Region* VerbsEndpoint::register_external(int fd, size_t bytes) {
  std::string why;
  auto p = prepare_external(fd, bytes, why);
  if (!p) {
    log("register_external: " + why);
    return nullptr;
  }
  return adopt_external(std::move(p));
}

uint32_t VerbsEndpoint::take_region_id() {
  if (!free_region_ids_.empty()) {
    uint32_t id = free_region_ids_.back();
    free_region_ids_.pop_back();
    return id;
  }
  regions_.emplace_back();
  return static_cast<uint32_t>(regions_.size() - 1);
}

void VerbsEndpoint::deregister(Region* region) {
  if (!region || region->id >= regions_.size()) return;
  auto& rec = regions_[region->id];
  if (!rec || &rec->region != region) {
    log("deregister: region " + std::to_string(region->id) + " is not registered here");
    return;
  }
  if (int rc = ibv_dereg_mr(rec->mr); rc != 0)
    log("ibv_dereg_mr(region " + std::to_string(region->id) + "): " + std::strerror(rc));
  if (rec->mem) free_placed(rec->mem, rec->alloc_bytes, rec->huge);
  if (rec->fd >= 0) close(rec->fd);
  free_region_ids_.push_back(region->id);
  rec.reset();
}

// Accepts a copy of a Region as well as the endpoint's own object.
bool VerbsEndpoint::check_local(const Region& local, size_t off, size_t len, uint32_t& lkey) const {
  if (local.id >= regions_.size()) return false;
  const RegionRec* rec = regions_[local.id].get();
  if (!rec || rec->region.data != local.data || rec->region.size != local.size) return false;
  if (off > local.size || len > local.size - off || len > UINT32_MAX) return false;
  lkey = rec->mr->lkey;
  return true;
}

}  // namespace rcpg::transport::verbs
