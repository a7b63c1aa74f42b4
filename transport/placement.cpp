#include "transport/placement.h"

#include <fcntl.h>
#include <hwloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace rcpg::transport {
namespace {

size_t round_up(size_t v, size_t to) {
  return (v + to - 1) / to * to;
}

// Cores local to the device's PCI function, or the whole machine.
hwloc_const_cpuset_t device_cpuset(hwloc_topology_t topo, const std::string& dev) {
  if (!dev.empty()) {
    for (hwloc_obj_t os = hwloc_get_next_osdev(topo, nullptr); os;
         os = hwloc_get_next_osdev(topo, os)) {
      if (os->name && dev == os->name) {
        hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(topo, os);
        if (anc && anc->cpuset) return anc->cpuset;
      }
    }
  }
  return hwloc_topology_get_allowed_cpuset(topo);
}

}  // namespace

Placement pin_current_thread(const std::string& rdma_device, int preferred_core) {
  Placement out;
  hwloc_topology_t topo;
  if (hwloc_topology_init(&topo) != 0) {
    out.detail = "hwloc_topology_init failed";
    return out;
  }
  hwloc_topology_set_io_types_filter(topo, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
  if (hwloc_topology_load(topo) != 0) {
    hwloc_topology_destroy(topo);
    out.detail = "hwloc_topology_load failed";
    return out;
  }
  hwloc_bitmap_t set = hwloc_bitmap_alloc();
  if (preferred_core >= 0) {
    hwloc_bitmap_only(set, static_cast<unsigned>(preferred_core));
  } else {
    hwloc_bitmap_copy(set, device_cpuset(topo, rdma_device));
    // The last core of the local set: core 0 usually takes interrupts.
    int last = hwloc_bitmap_last(set);
    if (last >= 0) hwloc_bitmap_only(set, static_cast<unsigned>(last));
  }
  int core = hwloc_bitmap_first(set);
  if (core >= 0 && hwloc_set_cpubind(topo, set, HWLOC_CPUBIND_THREAD) == 0) {
    out.core = core;
    hwloc_obj_t pu = hwloc_get_pu_obj_by_os_index(topo, static_cast<unsigned>(core));
    hwloc_obj_t numa = nullptr;
    if (pu) {
      hwloc_bitmap_t nodes = hwloc_bitmap_alloc();
      hwloc_cpuset_to_nodeset(topo, pu->cpuset, nodes);
      int n = hwloc_bitmap_first(nodes);
      if (n >= 0) numa = hwloc_get_numanode_obj_by_os_index(topo, static_cast<unsigned>(n));
      hwloc_bitmap_free(nodes);
    }
    out.numa_node = numa ? static_cast<int>(numa->os_index) : -1;
    out.detail = "bound to core " + std::to_string(core) +
                 (rdma_device.empty() ? std::string() : " near " + rdma_device);
  } else {
    out.detail = std::string("could not bind thread: ") + std::strerror(errno);
  }
  hwloc_bitmap_free(set);
  hwloc_topology_destroy(topo);
  return out;
}

namespace {

void bind_to_node(void* p, size_t len, int numa_node) {
  if (numa_node < 0) return;
  hwloc_topology_t topo;
  if (hwloc_topology_init(&topo) == 0 && hwloc_topology_load(topo) == 0) {
    hwloc_bitmap_t nodes = hwloc_bitmap_alloc();
    hwloc_bitmap_only(nodes, static_cast<unsigned>(numa_node));
    hwloc_set_area_membind(topo, p, len, nodes, HWLOC_MEMBIND_BIND, HWLOC_MEMBIND_BYNODESET);
    hwloc_bitmap_free(nodes);
    hwloc_topology_destroy(topo);
  }
}

}  // namespace

void* alloc_placed(size_t bytes, int numa_node, bool& huge) {
  constexpr size_t kHuge = size_t{2} << 20;
  huge = false;
  if (bytes >= kHuge) {
    void* p = mmap(nullptr, round_up(bytes, kHuge), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
    if (p != MAP_FAILED) {
      huge = true;
      return p;
    }
  }
  size_t len = round_up(bytes == 0 ? 1 : bytes, 4096);
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  bind_to_node(p, len, numa_node);
  return p;
}

void* alloc_placed_shared(size_t bytes, int numa_node, bool& huge, int& fd) {
  constexpr size_t kHuge = size_t{2} << 20;
  huge = false;
  fd = -1;
  if (bytes >= kHuge) {
    int f = memfd_create("rcpg-region", MFD_CLOEXEC | MFD_HUGETLB);
    size_t len = round_up(bytes, kHuge);
    if (f >= 0 && ftruncate(f, static_cast<off_t>(len)) == 0) {
      void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, f, 0);
      if (p != MAP_FAILED) {
        huge = true;
        fd = f;
        return p;
      }
    }
    if (f >= 0) close(f);
  }
  size_t len = round_up(bytes == 0 ? 1 : bytes, 4096);
  int f = memfd_create("rcpg-region", MFD_CLOEXEC);
  if (f < 0) return nullptr;
  if (ftruncate(f, static_cast<off_t>(len)) != 0) {
    close(f);
    return nullptr;
  }
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
  if (p == MAP_FAILED) {
    close(f);
    return nullptr;
  }
  bind_to_node(p, len, numa_node);
  fd = f;
  return p;
}

SharedMap::~SharedMap() {
  if (data_) munmap(data_, len_);
}

SharedMap& SharedMap::operator=(SharedMap&& o) noexcept {
  if (this != &o) {
    if (data_) munmap(data_, len_);
    data_ = o.data_;
    len_ = o.len_;
    o.data_ = nullptr;
    o.len_ = 0;
  }
  return *this;
}

bool SharedMap::map(int fd, size_t min_bytes, std::string& why) {
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    why = std::string("fstat of shared memory: ") + std::strerror(errno);
    return false;
  }
  int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0 || (static_cast<unsigned>(seals) & (F_SEAL_SHRINK | F_SEAL_GROW)) !=
                       (F_SEAL_SHRINK | F_SEAL_GROW)) {
    why = "shared memory is not a memfd sealed against shrinking and growing";
    return false;
  }
  if (st.st_size <= 0 || static_cast<uint64_t>(st.st_size) < min_bytes) {
    why = "shared memory is smaller than " + std::to_string(min_bytes) + " bytes";
    return false;
  }
  size_t len = static_cast<size_t>(st.st_size);
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    why = std::string("mmap of shared memory: ") + std::strerror(errno);
    return false;
  }
  if (data_) munmap(data_, len_);
  data_ = static_cast<std::byte*>(p);
  len_ = len;
  return true;
}

void free_placed(void* p, size_t bytes, bool huge) {
  if (!p) return;
  size_t len = huge ? round_up(bytes, size_t{2} << 20) : round_up(bytes == 0 ? 1 : bytes, 4096);
  munmap(p, len);
}

}  // namespace rcpg::transport
