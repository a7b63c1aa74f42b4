// Shared memory for the shm fabric: a sealed memfd mapped MAP_SHARED.
//
// The creator seals the file against shrinking and growing before any peer
// sees it, and a receiver refuses a file without those seals, so a peer can
// never truncate memory under another process's memcpy (no SIGBUS).
#pragma once

#include <cstddef>
#include <string>

namespace rcpg::transport::shm {

class Mapping {
 public:
  Mapping() = default;
  ~Mapping() { reset(); }
  Mapping(Mapping&& other) noexcept { *this = static_cast<Mapping&&>(other); }
  Mapping& operator=(Mapping&& other) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  // Creates a zero-filled, sealed memfd of at least `bytes` (at least one
  // page) and maps it with its pages populated. With `try_huge` and
  // bytes >= 2 MiB it tries hugetlb pages first and falls back to normal
  // shmem (with transparent huge pages advised). Keeps the fd for sharing.
  bool create(const char* name, size_t bytes, bool try_huge, std::string& why);

  // Maps a memfd received from a peer; takes ownership of `fd` and closes it
  // once mapped. Refuses files smaller than `min_bytes` or not sealed.
  bool attach(int fd, size_t min_bytes, std::string& why);

  void reset();
  // Closes the fd but keeps the mapping (once it has been shared).
  void close_fd();

  std::byte* data() const { return data_; }
  size_t length() const { return len_; }
  int fd() const { return fd_; }
  bool huge() const { return huge_; }
  explicit operator bool() const { return data_ != nullptr; }

 private:
  std::byte* data_ = nullptr;
  size_t len_ = 0;
  int fd_ = -1;
  bool huge_ = false;
};

}  // namespace rcpg::transport::shm
