#include "transport/fabric.h"

namespace rcpg::transport {

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
