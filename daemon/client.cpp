#include "daemon/client.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>

namespace rcpg::daemon {
namespace {
constexpr size_t kHeaderBytes = 4096;  // SegmentHeader, rounded to a page
static_assert(sizeof(ipc::SegmentHeader) <= kHeaderBytes);
}  // namespace

bool Client::create_segment(const SegmentGeometry& geo, std::string& why) {
  size_t pool = (geo.pool_bytes + 4095) & ~size_t{4095};
  seg_bytes = kHeaderBytes + geo.request_bytes + geo.event_bytes + pool;
  seg_fd = memfd_create("rcpg-client", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (seg_fd < 0) {
    why = std::string("memfd_create: ") + std::strerror(errno);
    return false;
  }
  if (ftruncate(seg_fd, static_cast<off_t>(seg_bytes)) != 0) {
    why = std::string("ftruncate of the client segment: ") + std::strerror(errno);
    release_segment();
    return false;
  }
  // The client must not shrink the file under our mapping (SIGBUS here).
  if (fcntl(seg_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    why = std::string("sealing the client segment: ") + std::strerror(errno);
    release_segment();
    return false;
  }
  void* p = mmap(nullptr, seg_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, seg_fd, 0);
  if (p == MAP_FAILED) {
    why = std::string("mmap of the client segment: ") + std::strerror(errno);
    release_segment();
    return false;
  }
  seg = static_cast<std::byte*>(p);
  header = new (seg) ipc::SegmentHeader();
  header->segment_bytes = seg_bytes;
  header->request_offset = kHeaderBytes;
  header->request_bytes = geo.request_bytes;
  header->event_offset = kHeaderBytes + geo.request_bytes;
  header->event_bytes = geo.event_bytes;
  header->pool_offset = header->event_offset + geo.event_bytes;
  header->pool_bytes = pool;
  pool_offset = header->pool_offset;
  pool_bytes = pool;
  requests.init(&header->request, seg + header->request_offset, geo.request_bytes);
  events.init(&header->event, seg + header->event_offset, geo.event_bytes);
  return true;
}

void Client::release_segment() {
  if (seg) munmap(seg, seg_bytes);
  if (seg_fd >= 0) close(seg_fd);
  seg = nullptr;
  header = nullptr;
  seg_fd = -1;
}

uint64_t Client::refresh_released() {
  if (!header) return released;
  uint64_t r = header->released.value.load(std::memory_order_acquire);
  if (r > last_log_position) r = last_log_position;
  if (r > released) released = r;
  return released;
}

}  // namespace rcpg::daemon
