#include "transport/fabric.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace rcpg::transport {
namespace {

// What the default prepare_external keeps: the memory, not yet mapped.
class DeferredExternal final : public PreparedRegion {
 public:
  DeferredExternal(int fd, size_t bytes) : fd_(fd), bytes_(bytes) {}
  ~DeferredExternal() override { close(fd_); }
  DeferredExternal(const DeferredExternal&) = delete;
  DeferredExternal& operator=(const DeferredExternal&) = delete;
  int fd() const { return fd_; }
  size_t bytes() const { return bytes_; }

 private:
  int fd_;
  size_t bytes_;
};

}  // namespace

std::unique_ptr<PreparedRegion> Endpoint::prepare_external(int fd, size_t bytes, std::string& why) {
  int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (own < 0) {
    why = std::string("cannot duplicate the memory's descriptor: ") + std::strerror(errno);
    return nullptr;
  }
  return std::make_unique<DeferredExternal>(own, bytes);
}

Region* Endpoint::adopt_external(std::unique_ptr<PreparedRegion> prepared) {
  auto* d = dynamic_cast<DeferredExternal*>(prepared.get());
  return d ? register_external(d->fd(), d->bytes()) : nullptr;
}

const char* to_string(Op op) {
  switch (op) {
    case Op::Write:
      return "write";
    case Op::WriteImm:
      return "write_imm";
    case Op::Read:
      return "read";
    case Op::Send:
      return "send";
    case Op::Recv:
      return "recv";
    case Op::RecvImm:
      return "recv_imm";
  }
  return "?";
}

const char* to_string(Status status) {
  switch (status) {
    case Status::Ok:
      return "ok";
    case Status::RemoteAccess:
      return "remote access error";
    case Status::LocalAccess:
      return "local access error";
    case Status::Flushed:
      return "flushed";
    case Status::TooLarge:
      return "too large";
  }
  return "?";
}

const char* to_string(EventType type) {
  switch (type) {
    case EventType::Connected:
      return "connected";
    case EventType::Rejected:
      return "rejected";
    case EventType::Unreachable:
      return "unreachable";
    case EventType::Disconnected:
      return "disconnected";
    case EventType::PeerRejected:
      return "peer rejected";
  }
  return "?";
}

}  // namespace rcpg::transport
