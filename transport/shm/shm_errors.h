// Error text for the shm fabric's control path.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>

namespace rcpg::transport::shm {

// "what: strerror(errno)", for log lines and `why` strings.
inline std::string errno_text(std::string_view what) {
  return std::string(what) + ": " + std::strerror(errno);
}

}  // namespace rcpg::transport::shm
