// Helpers shared by the fuzz targets: typed reads from the fuzzer's input
// (zeros once it is exhausted, so every input is a complete program) and an
// oracle check that aborts, which libFuzzer reports as a crash with the input.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>

namespace rcpg::fuzz {

class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  bool empty() const { return pos_ >= size_; }
  size_t remaining() const { return size_ - pos_; }

  template <class T>
  T take() {
    T v{};
    size_t n = std::min(sizeof(T), remaining());
    if (n) std::memcpy(&v, data_ + pos_, n);
    pos_ += n;
    return v;
  }
  uint8_t u8() { return take<uint8_t>(); }
  uint16_t u16() { return take<uint16_t>(); }
  uint32_t u32() { return take<uint32_t>(); }
  uint64_t u64() { return take<uint64_t>(); }
  bool flag() { return (u8() & 1) != 0; }
  // A value in [0, bound) from two bytes of input (bound 0 gives 0).
  uint32_t below(uint32_t bound) { return bound == 0 ? 0 : u16() % bound; }

  // Up to `n` bytes (fewer at the end of the input).
  std::span<const uint8_t> bytes(size_t n) {
    n = std::min(n, remaining());
    std::span<const uint8_t> s{data_ + pos_, n};
    pos_ += n;
    return s;
  }
  std::span<const uint8_t> rest() { return bytes(remaining()); }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

[[noreturn]] inline void oracle_failed(const char* what, const char* file, int line) {
  std::fprintf(stderr, "fuzz oracle violated: %s (%s:%d)\n", what, file, line);
  std::abort();
}

}  // namespace rcpg::fuzz

// An invariant of the code under test; a violation is a bug (reported as a crash).
#define FUZZ_CHECK(cond) ((cond) ? (void)0 : ::rcpg::fuzz::oracle_failed(#cond, __FILE__, __LINE__))
