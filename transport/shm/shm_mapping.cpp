#include "transport/shm/shm_mapping.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "transport/shm/shm_errors.h"

namespace rcpg::transport::shm {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;
constexpr unsigned kSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;

size_t round_up(size_t v, size_t to) {
  return (v + to - 1) / to * to;
}

// One attempt; returns false with `why` set and nothing left open.
bool create_once(const char* name, size_t len, bool huge, int& fd_out, std::byte*& data_out,
                 std::string& why) {
  unsigned flags = MFD_CLOEXEC | MFD_ALLOW_SEALING | (huge ? MFD_HUGETLB : 0u);
  int fd = ::memfd_create(name, flags);
  if (fd < 0) {
    why = errno_text("memfd_create");
    return false;
  }
  if (::ftruncate(fd, static_cast<off_t>(len)) != 0) {
    why = errno_text("ftruncate");
    ::close(fd);
    return false;
  }
  if (::fcntl(fd, F_ADD_SEALS, kSeals) != 0) {
    why = errno_text("memfd seals");
    ::close(fd);
    return false;
  }
  // hugetlb reserves its pages here, so a pool without free huge pages fails
  // now rather than with SIGBUS later.
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (p == MAP_FAILED) {
    why = errno_text("mmap");
    ::close(fd);
    return false;
  }
  fd_out = fd;
  data_out = static_cast<std::byte*>(p);
  return true;
}

}  // namespace

Mapping& Mapping::operator=(Mapping&& other) noexcept {
  if (this != &other) {
    reset();
    data_ = other.data_;
    len_ = other.len_;
    fd_ = other.fd_;
    huge_ = other.huge_;
    other.data_ = nullptr;
    other.len_ = 0;
    other.fd_ = -1;
    other.huge_ = false;
  }
  return *this;
}

bool Mapping::create(const char* name, size_t bytes, bool try_huge, std::string& why) {
  reset();
  long page = ::sysconf(_SC_PAGESIZE);
  long pages = ::sysconf(_SC_PHYS_PAGES);
  // The pages are populated up front (as registration pins them on verbs):
  // more than the machine has would summon the OOM killer, not an error.
  if (page > 0 && pages > 0 && bytes / static_cast<size_t>(page) >= static_cast<size_t>(pages)) {
    why = std::to_string(bytes) + " bytes is more than this machine's memory";
    return false;
  }
  size_t len = round_up(bytes == 0 ? 1 : bytes, static_cast<size_t>(page > 0 ? page : 4096));
  if (try_huge && bytes >= kHugePage) {
    std::string ignored;
    size_t hlen = round_up(bytes, kHugePage);
    if (create_once(name, hlen, true, fd_, data_, ignored)) {
      len_ = hlen;
      huge_ = true;
      return true;
    }
  }
  if (!create_once(name, len, false, fd_, data_, why)) return false;
  len_ = len;
  if (bytes >= kHugePage) ::madvise(data_, len_, MADV_HUGEPAGE);  // best effort
  return true;
}

bool Mapping::attach(int fd, size_t min_bytes, std::string& why) {
  reset();
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    why = errno_text("fstat on received memfd");
    ::close(fd);
    return false;
  }
  int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0 || (static_cast<unsigned>(seals) & (F_SEAL_SHRINK | F_SEAL_GROW)) !=
                       (F_SEAL_SHRINK | F_SEAL_GROW)) {
    why = "received memory is not a sealed memfd";
    ::close(fd);
    return false;
  }
  if (st.st_size < 0 || static_cast<uint64_t>(st.st_size) < min_bytes || st.st_size == 0) {
    why = "received memfd is smaller than announced";
    ::close(fd);
    return false;
  }
  size_t len = static_cast<size_t>(st.st_size);
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) {
    why = errno_text("mmap of received memfd");
    return false;
  }
  data_ = static_cast<std::byte*>(p);
  len_ = len;
  return true;
}

void Mapping::reset() {
  if (data_) ::munmap(data_, len_);
  close_fd();
  data_ = nullptr;
  len_ = 0;
  huge_ = false;
}

void Mapping::close_fd() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

}  // namespace rcpg::transport::shm
