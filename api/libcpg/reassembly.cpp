#include "api/libcpg/reassembly.h"

#include <cstring>

#include "api/ipc/protocol.h"

namespace rcpg::cpg {

Reassembly::~Reassembly() {
  for (auto& b : parts_) std::free(b.data);
  std::free(done_.data);
}

void Reassembly::forget(uint32_t nodeid, uint32_t pid) {
  for (auto it = parts_.begin(); it != parts_.end(); ++it)
    if (it->nodeid == nodeid && it->pid == pid) {
      std::free(it->data);
      parts_.erase(it);
      return;
    }
}

void Reassembly::forget_nodes_except(const uint32_t* nodes, size_t count) {
  for (auto it = parts_.begin(); it != parts_.end();) {
    bool kept = false;
    for (size_t i = 0; i < count && !kept; ++i) kept = nodes[i] == it->nodeid;
    if (kept) {
      ++it;
    } else {
      std::free(it->data);
      it = parts_.erase(it);
    }
  }
}

void Reassembly::release_complete() {
  std::free(done_.data);
  done_ = Buffer{};
}

PartResult Reassembly::add(uint32_t nodeid, uint32_t pid, uint32_t flags, uint64_t total,
                           const void* data, uint64_t bytes) {
  auto it = parts_.begin();
  while (it != parts_.end() && !(it->nodeid == nodeid && it->pid == pid)) ++it;
  if ((flags & ipc::kChunkFirst) != 0) {
    if (it != parts_.end() || bytes > total) return PartResult::Malformed;
    // malloc(0) may return NULL; a chunked message is never empty anyway.
    auto* buf = static_cast<uint8_t*>(std::malloc(total == 0 ? 1 : total));
    if (buf == nullptr) return PartResult::NoMemory;
    parts_.push_back(Buffer{nodeid, pid, total, 0, buf});
    it = parts_.end() - 1;
  } else if (it == parts_.end()) {
    // Its first part was ordered before this handle joined: the message is
    // not ours (it goes to those who were members when it began).
    return PartResult::Pending;
  } else if (total != it->total) {
    return PartResult::Malformed;
  }
  if (bytes > it->total - it->filled) return PartResult::Malformed;
  if (bytes != 0) std::memcpy(it->data + it->filled, data, bytes);
  it->filled += bytes;
  if ((flags & ipc::kChunkLast) == 0) return PartResult::Pending;
  if (it->filled != it->total) return PartResult::Malformed;
  std::free(done_.data);
  done_ = *it;
  parts_.erase(it);
  return PartResult::Complete;
}

}  // namespace rcpg::cpg
