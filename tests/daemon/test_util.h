// Helpers shared by the rcpgd process tests.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "ipc_test_client.h"

namespace rcpg::test {

// Payload bytes that are a pure function of (a, b, n); the first 8 bytes
// carry a and b so a receiver can tell which message it got.
inline std::vector<std::byte> pattern(uint32_t a, uint32_t b, size_t n) {
  std::vector<std::byte> v(n);
  uint32_t x = a * 2654435761u + b * 40503u + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    v[i] = static_cast<std::byte>(x);
  }
  if (n >= 8) {
    std::memcpy(v.data(), &a, 4);
    std::memcpy(v.data() + 4, &b, 4);
  }
  return v;
}

// Forks a child running `body`; its return value is the exit status.
inline pid_t spawn(const std::function<int()>& body) {
  fflush(nullptr);
  pid_t p = fork();
  if (p == 0) _exit(body());
  return p;
}

inline int wait_exit(pid_t p) {
  int st = 0;
  waitpid(p, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

inline std::optional<TestEvent> next_of(
    IpcTestClient& c, ipc::RecordType t,
    std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto e = c.next_event(std::chrono::milliseconds(100));
    if (e && e->type == t) return e;
  }
  return std::nullopt;
}

inline std::string member(uint32_t node, pid_t pid, const char* reason) {
  return "(" + std::to_string(node) + "," + std::to_string(pid) + "," + reason + ")";
}

// The number after "key": in a Status JSON report (keys are unique there
// except per-client rows, which come last); nullopt if absent.
inline std::optional<uint64_t> json_number(const std::string& json, const std::string& key) {
  auto at = json.find("\"" + key + "\":");
  if (at == std::string::npos) return std::nullopt;
  return std::strtoull(json.c_str() + at + key.size() + 3, nullptr, 10);
}

}  // namespace rcpg::test
