// Unit tests of libcpg's internal pieces that need no daemon: the handle
// table, the request/event ring code, the zero-copy pool and reassembly.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

#include "api/ipc/protocol.h"
#include "api/libcpg/handle_table.h"
#include "api/libcpg/reassembly.h"
#include "api/libcpg/spsc_ring.h"
#include "api/libcpg/zcb_pool.h"

namespace ipc = rcpg::ipc;
using namespace rcpg::cpg;

namespace {

struct Tracked {
  static inline std::atomic<int> live{0};
  int value;
  explicit Tracked(int v) : value(v) { ++live; }
  ~Tracked() { --live; }
};

TEST(HandleTable, HandlesAreNotReusedAndStaleOnesFail) {
  HandleTable<Tracked> t;
  uint64_t a = t.insert(std::make_unique<Tracked>(1));
  ASSERT_NE(a, 0u);
  EXPECT_NE(a >> 32, 0u);
  EXPECT_EQ(t.acquire(a)->value, 1);
  EXPECT_TRUE(t.close(a));
  EXPECT_FALSE(t.close(a));
  EXPECT_FALSE(t.acquire(a));
  uint64_t b = t.insert(std::make_unique<Tracked>(2));
  EXPECT_EQ(static_cast<uint32_t>(b), static_cast<uint32_t>(a));  // slot reused
  EXPECT_NE(b, a);                                                // handle not
  EXPECT_FALSE(t.acquire(a));
  EXPECT_FALSE(t.acquire(0));
  EXPECT_FALSE(t.acquire(0xdeadbeefcafef00dull));
  EXPECT_TRUE(t.close(b));
  EXPECT_EQ(Tracked::live.load(), 0);
}

TEST(HandleTable, ObjectOutlivesCloseWhileReferenced) {
  HandleTable<Tracked> t;
  uint64_t h = t.insert(std::make_unique<Tracked>(7));
  {
    auto ref = t.acquire(h);
    ASSERT_TRUE(ref);
    EXPECT_TRUE(t.close(h));  // e.g. cpg_finalize from inside a callback
    EXPECT_EQ(Tracked::live.load(), 1);
    EXPECT_EQ(ref->value, 7);
    EXPECT_FALSE(t.acquire(h));
  }
  EXPECT_EQ(Tracked::live.load(), 0);
}

TEST(HandleTable, ConcurrentAcquireAndClose) {
  HandleTable<Tracked> t;
  for (int round = 0; round < 200; ++round) {
    uint64_t h = t.insert(std::make_unique<Tracked>(round));
    std::atomic<bool> stop{false};
    std::atomic<int> closes{0};
    std::vector<std::thread> th;
    for (int i = 0; i < 3; ++i)
      th.emplace_back([&] {
        while (!stop.load()) {
          if (auto r = t.acquire(h)) {
            EXPECT_EQ(r->value, round);
          }
          if (t.close(h)) ++closes;
        }
      });
    std::this_thread::sleep_for(std::chrono::microseconds(50));
    stop = true;
    for (auto& x : th) x.join();
    t.close(h);
    EXPECT_LE(closes.load(), 1);
    EXPECT_EQ(Tracked::live.load(), 0);
  }
}

TEST(HandleTable, ManyHandlesDistinct) {
  HandleTable<Tracked> t;
  std::set<uint64_t> seen;
  std::vector<uint64_t> open;
  for (int i = 0; i < 3000; ++i) {
    uint64_t h = t.insert(std::make_unique<Tracked>(i));
    ASSERT_TRUE(seen.insert(h).second);
    open.push_back(h);
    if (i % 3 == 0) {
      EXPECT_TRUE(t.close(open.front()));
      open.erase(open.begin());
    }
  }
  for (uint64_t h : open) EXPECT_TRUE(t.close(h));
  EXPECT_EQ(Tracked::live.load(), 0);
}

// A ring in plain memory, as in the segment.
struct TestRing {
  explicit TestRing(uint64_t bytes) : mem(bytes) {}
  ipc::RingControl ctl;
  std::vector<uint8_t> mem;
  RingProducer producer() { return RingProducer(&ctl, mem.data(), mem.size()); }
  RingConsumer consumer() { return RingConsumer(&ctl, mem.data(), mem.size()); }
};

TEST(SpscRing, WrapsWithPadAndRefusesWhenFull) {
  TestRing r(256);
  auto p = r.producer();
  auto c = r.consumer();
  // 3 records of 72 bytes (8 header + 64 body) = 216; the 4th does not fit.
  for (int i = 0; i < 3; ++i) {
    uint8_t* b = p.reserve(ipc::RecordType::Mcast, 64);
    ASSERT_NE(b, nullptr);
    std::memset(b, 'a' + i, 64);
  }
  EXPECT_EQ(p.reserve(ipc::RecordType::Mcast, 64), nullptr);
  EXPECT_FALSE(p.publish());
  RingRecord rec;
  ASSERT_EQ(c.peek(rec), ReadResult::Record);
  EXPECT_EQ(rec.length, 64u);
  EXPECT_EQ(rec.body[0], 'a');
  c.consume();
  // 40 bytes left at the end: the next 72-byte record needs a Pad first and
  // the space at the front freed by the consumer.
  uint8_t* b = p.reserve(ipc::RecordType::Mcast, 64);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b, r.mem.data() + 8);  // at the start, after its header
  std::memset(b, 'd', 64);
  p.publish();
  for (char want : {'b', 'c', 'd'}) {
    ASSERT_EQ(c.peek(rec), ReadResult::Record);
    EXPECT_EQ(rec.body[0], want);
    c.consume();
  }
  EXPECT_EQ(c.peek(rec), ReadResult::Empty);
  EXPECT_EQ(p.reserve(ipc::RecordType::Mcast, 256), nullptr);  // larger than the ring
}

TEST(SpscRing, AbandonDropsUnpublished) {
  TestRing r(4096);
  auto p = r.producer();
  auto c = r.consumer();
  ASSERT_NE(p.reserve(ipc::RecordType::Mcast, 10), nullptr);
  p.abandon();
  RingRecord rec;
  EXPECT_EQ(c.peek(rec), ReadResult::Empty);
  EXPECT_EQ(r.ctl.head.value.load(), 0u);
}

TEST(SpscRing, PublishReportsSleepingConsumerOnce) {
  TestRing r(4096);
  auto p = r.producer();
  auto c = r.consumer();
  EXPECT_TRUE(c.sleep_and_recheck());
  ASSERT_NE(p.reserve(ipc::RecordType::Mcast, 8), nullptr);
  EXPECT_TRUE(p.publish());
  ASSERT_NE(p.reserve(ipc::RecordType::Mcast, 8), nullptr);
  EXPECT_FALSE(p.publish());  // the flag was taken by the first wake-up
  EXPECT_FALSE(c.sleep_and_recheck());
}

TEST(SpscRing, CorruptHeadOrLengthDetected) {
  TestRing r(4096);
  auto c = r.consumer();
  RingRecord rec;
  r.ctl.head.value.store(8192);
  EXPECT_EQ(c.peek(rec), ReadResult::Corrupt);
  ipc::RecordHeader h{ipc::RecordType::Deliver, 5000};
  std::memcpy(r.mem.data(), &h, sizeof(h));
  r.ctl.head.value.store(64);
  EXPECT_EQ(c.peek(rec), ReadResult::Corrupt);
}

TEST(SpscRing, TwoThreadsInOrder) {
  TestRing r(1 << 12);
  auto p = r.producer();
  auto c = r.consumer();
  constexpr uint64_t kCount = 200000;
  std::thread prod([&] {
    for (uint64_t i = 0; i < kCount;) {
      uint64_t len = 8 + (i % 13) * 8;
      uint8_t* b = p.reserve(ipc::RecordType::Mcast, len);
      if (b == nullptr) {
        std::this_thread::yield();
        continue;
      }
      std::memcpy(b, &i, sizeof(i));
      p.publish();
      ++i;
    }
  });
  uint64_t next = 0;
  while (next < kCount) {
    RingRecord rec;
    auto res = c.peek(rec);
    ASSERT_NE(res, ReadResult::Corrupt);
    if (res == ReadResult::Empty) continue;
    uint64_t v;
    std::memcpy(&v, rec.body, sizeof(v));
    ASSERT_EQ(v, next);
    ASSERT_EQ(rec.length, 8 + (next % 13) * 8);
    c.consume();
    ++next;
  }
  prod.join();
}

TEST(ZcbPool, FirstFitHeadroomAlignmentAndCoalescing) {
  ZcbPool pool;
  pool.reset(1000, 64 * 100);  // unaligned start: rounded up
  uint64_t total = pool.free_bytes();
  auto a = pool.alloc(100, ipc::kZcbHeadroom);
  auto b = pool.alloc(1, ipc::kZcbHeadroom);
  auto z = pool.alloc(0, ipc::kZcbHeadroom);
  ASSERT_TRUE(a && b && z);
  EXPECT_EQ(*a % 64, 0u);
  EXPECT_GE(*a, 1000u + ipc::kZcbHeadroom);
  EXPECT_GE(*b, *a + 100 + ipc::kZcbHeadroom);
  EXPECT_EQ(pool.size_of(*a), 100u);
  EXPECT_FALSE(pool.size_of(*a + 64));
  EXPECT_FALSE(pool.alloc(total, ipc::kZcbHeadroom));  // no room for headroom + total
  EXPECT_FALSE(pool.free(*a + 1));
  EXPECT_TRUE(pool.free(*b));
  EXPECT_FALSE(pool.free(*b));
  EXPECT_TRUE(pool.free(*a));
  EXPECT_TRUE(pool.free(*z));
  EXPECT_EQ(pool.free_bytes(), total);
  auto whole = pool.alloc(total - ipc::kZcbHeadroom, ipc::kZcbHeadroom);  // coalesced again
  EXPECT_TRUE(whole);
  EXPECT_FALSE(pool.alloc(1, ipc::kZcbHeadroom));
  EXPECT_FALSE(pool.alloc(~uint64_t{0}, ipc::kZcbHeadroom));
}

TEST(Reassembly, InterleavedSendersAndErrors) {
  Reassembly r;
  const char* a = "hello, world";
  const char* b = "0123456789";
  EXPECT_EQ(r.add(1, 10, ipc::kChunkFirst, 12, a, 5), PartResult::Pending);
  EXPECT_EQ(r.add(2, 20, ipc::kChunkFirst, 10, b, 4), PartResult::Pending);
  EXPECT_EQ(r.add(1, 10, 0, 12, a + 5, 2), PartResult::Pending);
  EXPECT_EQ(r.add(2, 20, ipc::kChunkLast, 10, b + 4, 6), PartResult::Complete);
  EXPECT_EQ(std::string(static_cast<char*>(r.message()), r.message_bytes()), "0123456789");
  r.release_complete();
  EXPECT_EQ(r.add(1, 10, ipc::kChunkLast, 12, a + 7, 5), PartResult::Complete);
  EXPECT_EQ(std::string(static_cast<char*>(r.message()), r.message_bytes()), "hello, world");
  r.release_complete();
  EXPECT_EQ(r.in_progress(), 0u);
  // Parts of a message that began before we joined are skipped, never
  // delivered (nothing is allocated for them).
  EXPECT_EQ(r.add(3, 30, ipc::kChunkMiddle, 10, b, 4), PartResult::Pending);
  EXPECT_EQ(r.add(3, 30, ipc::kChunkLast, 10, b + 4, 6), PartResult::Pending);
  EXPECT_EQ(r.in_progress(), 0u);
  // Overruns and short totals are refused.
  EXPECT_EQ(r.add(3, 30, ipc::kChunkFirst, 4, b, 5), PartResult::Malformed);
  EXPECT_EQ(r.add(3, 30, ipc::kChunkFirst, 10, b, 4), PartResult::Pending);
  EXPECT_EQ(r.add(3, 30, ipc::kChunkLast, 10, b, 4), PartResult::Malformed);
  // A sender that leaves mid-message: its buffer goes.
  r.forget(3, 30);
  EXPECT_EQ(r.in_progress(), 0u);
}

// A node that leaves the view mid-message (killed, cut off): the unfinished
// messages of all its senders go, those of other nodes stay; a restarted
// process of the same (node, pid) then starts cleanly.
TEST(Reassembly, NodeOutsideTheNewViewLosesItsUnfinishedMessages) {
  Reassembly r;
  const char* a = "abcdefgh";
  EXPECT_EQ(r.add(1, 10, ipc::kChunkFirst, 8, a, 2), PartResult::Pending);
  EXPECT_EQ(r.add(2, 20, ipc::kChunkFirst, 8, a, 2), PartResult::Pending);
  EXPECT_EQ(r.add(2, 21, ipc::kChunkFirst, 8, a, 2), PartResult::Pending);
  EXPECT_EQ(r.add(3, 30, ipc::kChunkFirst, 8, a, 2), PartResult::Pending);
  const uint32_t view[] = {3, 1};
  r.forget_nodes_except(view, 2);
  EXPECT_EQ(r.in_progress(), 2u);
  EXPECT_EQ(r.add(2, 20, ipc::kChunkFirst, 8, a, 8 - 6), PartResult::Pending);  // no stale buffer
  EXPECT_EQ(r.add(2, 20, ipc::kChunkLast, 8, a + 2, 6), PartResult::Complete);
  r.release_complete();
  EXPECT_EQ(r.add(1, 10, ipc::kChunkLast, 8, a + 2, 6), PartResult::Complete);
  EXPECT_EQ(std::string(static_cast<char*>(r.message()), r.message_bytes()), "abcdefgh");
  r.release_complete();
  r.forget_nodes_except(nullptr, 0);  // a view without any of them
  EXPECT_EQ(r.in_progress(), 0u);
}

}  // namespace
