// hwloc-based placement: pin the polling thread to a core close to the RDMA
// device (or any core) and allocate registered memory on that core's NUMA
// node, so the NIC and the poller touch local memory.
#pragma once

#include <cstddef>
#include <string>

namespace rcpg::transport {

struct Placement {
  int core = -1;       // logical core the thread was bound to, -1 if not bound
  int numa_node = -1;  // NUMA node of that core, -1 if unknown
  std::string detail;  // what was done, for logs
};

// Binds the calling thread to one core. `rdma_device` (e.g. "rxe0", "mlx5_0")
// selects the cores nearest to that device's PCI location when hwloc knows it;
// `preferred_core` >= 0 forces a core. Never fails hard: returns core = -1 and
// an explanation when binding is not possible.
Placement pin_current_thread(const std::string& rdma_device, int preferred_core = -1);

// Allocates `bytes` page-aligned, trying 2 MiB huge pages first, then normal
// pages bound to `numa_node` when >= 0. Returns nullptr on failure. Free with
// free_placed(). `huge` reports whether huge pages were used.
void* alloc_placed(size_t bytes, int numa_node, bool& huge);
void free_placed(void* p, size_t bytes, bool huge);

// Like alloc_placed, but the memory is a memfd mapped MAP_SHARED, so other
// local processes can map the same pages (`fd` receives the file; the caller
// owns it and closes it after free_placed).
void* alloc_placed_shared(size_t bytes, int numa_node, bool& huge, int& fd);

// A read-write MAP_SHARED mapping of a memfd some other process created.
class SharedMap {
 public:
  SharedMap() = default;
  ~SharedMap();
  SharedMap(SharedMap&& o) noexcept : data_(o.data_), len_(o.len_) { o.data_ = nullptr; }
  SharedMap& operator=(SharedMap&& o) noexcept;
  SharedMap(const SharedMap&) = delete;
  SharedMap& operator=(const SharedMap&) = delete;

  // Maps `fd` (not taken) if it is a memfd of >= min_bytes sealed against
  // shrinking and growing; false + why otherwise.
  bool map(int fd, size_t min_bytes, std::string& why);
  std::byte* data() const { return data_; }
  size_t length() const { return len_; }

 private:
  std::byte* data_ = nullptr;
  size_t len_ = 0;
};

}  // namespace rcpg::transport
