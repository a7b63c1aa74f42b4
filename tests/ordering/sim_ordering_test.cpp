// The ordering engine in deterministic simulation (see sim_cluster.h for the
// invariants checked after every action).
//
//   SimOrdering.RandomSeeds  many seeds, each a random cluster (2..7 nodes,
//                            small rings) and workload. Environment:
//     RCPG_SIM_SEEDS=N         how many seeds (default 10000; 1000 under ASan)
//     RCPG_SIM_FIRST_SEED=S    first seed (default 1)
//     RCPG_SIM_SEED=S          replay exactly one seed
//     RCPG_SIM_TRACE=1         with RCPG_SIM_SEED: print every action
//     RCPG_SIM_THREADS=T       worker threads (default: hardware threads)
//     RCPG_SIM_SCALE=X         stretch every run X times (exploration; default 1)
//   A failing seed prints the one command that replays it.
//   The other tests are targeted scenarios (RCPG_SIM_TRACE=1 traces them too).
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "tests/ordering/sim_cluster.h"

namespace rcpg::ordering::sim {
namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr uint64_t kDefaultSeeds = 1000;
#else
constexpr uint64_t kDefaultSeeds = 10000;
#endif

uint64_t env_u64(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  return std::strtoull(v, nullptr, 0);
}

std::string self_path() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "sim_ordering_test";
  buf[n] = 0;
  return buf;
}

double sim_scale() {
  const char* v = std::getenv("RCPG_SIM_SCALE");
  return v && *v ? std::strtod(v, nullptr) : 1.0;
}

// One shell command that replays `seed` (prefix RCPG_SIM_TRACE=1 for a trace).
std::string replay_command(uint64_t seed) {
  std::string scale;
  if (sim_scale() != 1.0)
    scale = "RCPG_SIM_SCALE=" + std::string(std::getenv("RCPG_SIM_SCALE")) + " ";
  return scale + "RCPG_SIM_SEED=" + std::to_string(seed) + " " + self_path() +
         " --gtest_filter=SimOrdering.RandomSeeds";
}

void print_stats(const ClusterStats& s, uint64_t seeds) {
  std::printf(
      "  per seed: %.0f actions, %.0f world steps, %.0f progress calls, %.0f sends accepted,\n"
      "            %.0f TryAgain, %.0f deliveries (%.0f SAFE, %.1f early), %.1f large msgs,\n"
      "            %.1f log wraps,\n"
      "            %.1f credit stalls, %.1f log stalls, %.1f sends from delivery callbacks\n",
      double(s.actions) / seeds, double(s.world_steps) / seeds, double(s.progress_calls) / seeds,
      double(s.send_ok) / seeds, double(s.send_try_again) / seeds, double(s.deliveries) / seeds,
      double(s.safe_deliveries) / seeds, double(s.early_deliveries) / seeds,
      double(s.large_msgs) / seeds, double(s.log_wraps) / seeds, double(s.credit_stalls) / seeds,
      double(s.log_stalls) / seeds, double(s.replies) / seeds);
}

TEST(SimOrdering, RandomSeeds) {
  if (const char* one = std::getenv("RCPG_SIM_SEED"); one && *one) {
    uint64_t seed = std::strtoull(one, nullptr, 0);
    bool trace = env_u64("RCPG_SIM_TRACE", 0) != 0;
    SeedResult r = run_random_seed(seed, trace, sim_scale());
    std::printf("seed %llu: %d nodes, %llu actions, %llu sends accepted, %llu deliveries\n",
                static_cast<unsigned long long>(seed), r.nodes,
                static_cast<unsigned long long>(r.stats.actions),
                static_cast<unsigned long long>(r.stats.send_ok),
                static_cast<unsigned long long>(r.stats.deliveries));
    EXPECT_TRUE(r.ok) << "seed " << seed << " (" << r.nodes << " nodes): " << r.violation;
    return;
  }
  const uint64_t first = env_u64("RCPG_SIM_FIRST_SEED", 1);
  const uint64_t count = env_u64("RCPG_SIM_SEEDS", kDefaultSeeds);
  unsigned threads = static_cast<unsigned>(
      env_u64("RCPG_SIM_THREADS", std::max(1u, std::thread::hardware_concurrency())));
  threads = std::clamp(threads, 1u, 64u);

  std::atomic<uint64_t> next{0};
  std::atomic<bool> stop{false};
  std::mutex mu;
  ClusterStats total;
  std::map<int, uint64_t> by_nodes;
  std::map<uint64_t, SeedResult> failures;  // by seed
  auto worker = [&] {
    ClusterStats mine;
    std::map<int, uint64_t> mine_nodes;
    while (!stop.load(std::memory_order_relaxed)) {
      uint64_t k = next.fetch_add(1);
      if (k >= count) break;
      SeedResult r = run_random_seed(first + k, false, sim_scale());
      mine.add(r.stats);
      ++mine_nodes[r.nodes];
      if (!r.ok) {
        std::lock_guard lock(mu);
        failures.emplace(first + k, r);
        if (failures.size() >= 5) stop = true;
      }
    }
    std::lock_guard lock(mu);
    total.add(mine);
    for (auto [n, c] : mine_nodes) by_nodes[n] += c;
  };
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) pool.emplace_back(worker);
  for (auto& t : pool) t.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  uint64_t ran = 0;
  for (auto [n, c] : by_nodes) ran += c;

  std::printf("%llu seeds (from %llu) in %.2f s on %u threads: %.0f seeds/s\n",
              static_cast<unsigned long long>(ran), static_cast<unsigned long long>(first), secs,
              threads, ran / secs);
  std::printf("  nodes:");
  for (auto [n, c] : by_nodes) std::printf(" %d:%llu", n, static_cast<unsigned long long>(c));
  std::printf("\n");
  if (ran) print_stats(total, ran);
  for (auto& [seed, r] : failures)
    ADD_FAILURE() << "seed " << seed << " (" << r.nodes << " nodes) failed: " << r.violation
                  << "\n  replay: " << replay_command(seed);
  if (!failures.empty())
    std::printf(
        "\nreplay the first failing seed with (RCPG_SIM_TRACE=1 in front traces it):\n  %s\n",
        replay_command(failures.begin()->first).c_str());
}

// --- the checker itself must be able to fail --------------------------------

ClusterOptions small_options(int nodes, uint64_t seed) {
  ClusterOptions o;
  o.nodes = nodes;
  o.seed = seed;
  o.engine.log_bytes = 16 << 10;
  o.engine.inbound_bytes = 4 << 10;
  o.engine.max_fragment = 512;
  o.record = true;
  o.trace = env_u64("RCPG_SIM_TRACE", 0) != 0;
  return o;
}

Delivery as_delivery(const SentMsg& m, NodeId sender, const std::vector<std::byte>& payload,
                     uint64_t gseq, uint64_t position) {
  Delivery d;
  d.kind = m.spec.kind;
  d.guarantee = m.spec.guarantee;
  d.sender = sender;
  d.pid = m.spec.pid;
  d.group = m.spec.group;
  d.gseq = gseq;
  d.sseq = m.sseq;
  d.data = payload.data();
  d.len = payload.size();
  d.position = position;
  return d;
}

TEST(SimOrdering, CheckerCatchesDuplicate) {
  SimCluster c(small_options(3, 11));
  ASSERT_TRUE(c.connect_all());
  ASSERT_EQ(c.send(1, {EntryKind::Data, Guarantee::Agreed, 100}), SendResult::Ok);
  ASSERT_TRUE(c.quiesce());
  c.check_no_loss();
  ASSERT_TRUE(c.ok()) << c.violation();
  const Delivered& last = c.delivered(2).back();
  auto payload = SimCluster::make_payload(c.sent(1)[0].spec, 2, 0);
  c.inject_delivery(2, as_delivery(c.sent(1)[0], 2, payload, last.gseq + 1, last.position + 200));
  EXPECT_FALSE(c.ok());
  EXPECT_NE(c.violation().find("duplicate"), std::string::npos) << c.violation();
}

TEST(SimOrdering, CheckerCatchesReorder) {
  SimCluster c(small_options(3, 12));
  ASSERT_TRUE(c.connect_all());
  ASSERT_EQ(c.send(1, {EntryKind::Data, Guarantee::Agreed, 10}), SendResult::Ok);
  ASSERT_EQ(c.send(1, {EntryKind::Data, Guarantee::Agreed, 20}), SendResult::Ok);
  for (int r = 0; r < 20; ++r) {  // nodes 1 and 2 deliver both, node 3 nothing yet
    c.run_world(SIZE_MAX);
    c.progress(0);
    c.progress(1);
  }
  ASSERT_TRUE(c.ok()) << c.violation();
  ASSERT_EQ(c.delivered(0).size(), 3u);
  ASSERT_EQ(c.delivered(2).size(), 1u);
  // Node 3 "delivers" node 2's second message first.
  const Delivered& second = c.delivered(0)[2];
  auto payload = SimCluster::make_payload(c.sent(1)[1].spec, 2, 1);
  c.inject_delivery(2, as_delivery(c.sent(1)[1], 2, payload, second.gseq, second.position));
  EXPECT_FALSE(c.ok());
  EXPECT_NE(c.violation().find("total order"), std::string::npos) << c.violation();
}

TEST(SimOrdering, CheckerCatchesFifoGap) {
  SimCluster c(small_options(3, 15));
  ASSERT_TRUE(c.connect_all());
  ASSERT_EQ(c.send(1, {EntryKind::Data, Guarantee::Fifo, 10}), SendResult::Ok);
  ASSERT_EQ(c.send(1, {EntryKind::Data, Guarantee::Fifo, 20}), SendResult::Ok);
  ASSERT_TRUE(c.quiesce()) << c.violation();
  ASSERT_EQ(c.send(1, {EntryKind::Data, Guarantee::Fifo, 30}), SendResult::Ok);
  ASSERT_EQ(c.send(1, {EntryKind::Data, Guarantee::Fifo, 40}), SendResult::Ok);
  // Node 3 delivers node 2's message #3 where #2 is due.
  const Delivered& last = c.delivered(2).back();
  auto payload = SimCluster::make_payload(c.sent(1)[3].spec, 2, 3);
  c.inject_delivery(2, as_delivery(c.sent(1)[3], 2, payload, last.gseq + 2, last.position + 128));
  EXPECT_FALSE(c.ok());
  EXPECT_NE(c.violation().find("FIFO"), std::string::npos) << c.violation();
}

TEST(SimOrdering, CheckerCatchesCorruption) {
  SimCluster c(small_options(3, 13));
  ASSERT_TRUE(c.connect_all());
  ASSERT_EQ(c.send(1, {EntryKind::Data, Guarantee::Agreed, 64}), SendResult::Ok);
  c.progress(1);  // node 2 writes it to the sequencer
  c.run_world(SIZE_MAX);
  c.progress(0);  // the sequencer sequences and delivers it
  ASSERT_EQ(c.delivered(0).size(), 2u);
  const Delivered& real = c.delivered(0)[1];
  auto payload = SimCluster::make_payload(c.sent(1)[0].spec, 2, 0);
  payload[17] ^= std::byte{1};
  c.inject_delivery(2, as_delivery(c.sent(1)[0], 2, payload, real.gseq, real.position));
  EXPECT_FALSE(c.ok());
  EXPECT_NE(c.violation().find("corrupt"), std::string::npos) << c.violation();
}

TEST(SimOrdering, CheckerCatchesLoss) {
  SimCluster c(small_options(3, 16));
  ASSERT_TRUE(c.connect_all());
  ASSERT_TRUE(c.quiesce()) << c.violation();
  c.check_no_loss();
  ASSERT_TRUE(c.ok()) << c.violation();
  ASSERT_EQ(c.send(2, {EntryKind::Data, Guarantee::Agreed, 64}), SendResult::Ok);
  c.check_no_loss();  // not delivered yet: counts as lost
  EXPECT_FALSE(c.ok());
  EXPECT_NE(c.violation().find("loss"), std::string::npos) << c.violation();
}

TEST(SimOrdering, CheckerCatchesEarlySafe) {
  SimCluster c(small_options(3, 14));
  ASSERT_TRUE(c.connect_all());
  ASSERT_EQ(c.send(1, {EntryKind::Data, Guarantee::Safe, 100}), SendResult::Ok);
  for (int r = 0; r < 10; ++r) {  // node 3 does not progress: it receives nothing
    c.run_world(SIZE_MAX);
    c.progress(0);
    c.progress(1);
  }
  ASSERT_TRUE(c.ok()) << c.violation();
  ASSERT_EQ(c.delivered(0).size(), 1u);  // only the View: the SAFE message waits
  ASSERT_LT(c.engine(2).received_position(), c.engine(0).log_tail());
  // Pretend the sequencer delivered it now, while node 3 has not received it.
  const Delivered& view = c.delivered(0).back();
  auto payload = SimCluster::make_payload(c.sent(1)[0].spec, 2, 0);
  c.inject_delivery(0,
                    as_delivery(c.sent(1)[0], 2, payload, view.gseq + 1, c.engine(0).log_tail()));
  EXPECT_FALSE(c.ok());
  EXPECT_NE(c.violation().find("SAFE"), std::string::npos) << c.violation();
}

// --- targeted scenarios -------------------------------------------------------

// UNORDERED and FIFO messages do not wait behind a SAFE entry that waits for
// a slow member; AGREED ones, and FIFO ones whose sender has an earlier
// entry held, do. Everything arrives once the member catches up.
TEST(SimOrdering, UnorderedAndFifoOvertakeAWaitingSafe) {
  SimCluster c(small_options(3, 16));
  ASSERT_TRUE(c.connect_all());
  ASSERT_EQ(c.send(1, {EntryKind::Data, Guarantee::Safe, 100}), SendResult::Ok);
  ASSERT_EQ(c.send(1, {EntryKind::Data, Guarantee::Fifo, 11}), SendResult::Ok);  // held: FIFO
  c.progress(1);  // to the sequencer, which logs them first
  c.run_world(SIZE_MAX);
  c.progress(0);
  ASSERT_EQ(c.send(0, {EntryKind::Data, Guarantee::Fifo, 10}), SendResult::Ok);       // early
  ASSERT_EQ(c.send(0, {EntryKind::Data, Guarantee::Agreed, 12}), SendResult::Ok);     // held
  ASSERT_EQ(c.send(0, {EntryKind::Data, Guarantee::Fifo, 13}), SendResult::Ok);       // held: FIFO
  ASSERT_EQ(c.send(0, {EntryKind::Data, Guarantee::Unordered, 14}), SendResult::Ok);  // early
  for (int r = 0; r < 20; ++r) {  // node 3 does not progress: nothing becomes stable
    c.run_world(SIZE_MAX);
    c.progress(0);
    c.progress(1);
  }
  ASSERT_TRUE(c.ok()) << c.violation();
  for (size_t i : {0u, 1u}) {
    ASSERT_EQ(c.delivered(i).size(), 3u)
        << "node " << i + 1;  // the View, then FIFO 10 and UNORDERED 14
    EXPECT_EQ(c.delivered(i)[1].len, 10u);
    EXPECT_EQ(c.delivered(i)[2].len, 14u);
    EXPECT_EQ(c.engine(i).counters().early_deliveries, 2u);
  }
  ASSERT_TRUE(c.quiesce()) << c.violation();
  c.check_no_loss();
  ASSERT_TRUE(c.ok()) << c.violation();
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(c.delivered_count(i), 7u);  // view + 6
}

// Senders that outrun the sequencer get TryAgain, never lose what was accepted.
TEST(SimOrdering, BackPressure) {
  ClusterOptions o = small_options(3, 21);
  SimCluster c(o);
  ASSERT_TRUE(c.connect_all());
  // Without progress, a sender fills exactly its inbound ring, then TryAgain.
  const size_t fit = o.engine.inbound_bytes / record_bytes(200);
  for (size_t i = 0; i < 3; ++i) {
    size_t accepted = 0;
    while (c.send(i, {EntryKind::Data, Guarantee::Agreed, 200}) == SendResult::Ok) ++accepted;
    EXPECT_EQ(accepted, fit) << "node " << i + 1;
  }
  // Sustained overload with a lagging member: every node tries to send every
  // round; node 3 progresses only every 8th round, so the log fills as well.
  std::mt19937_64 rng(21);
  uint64_t try_again = 0, ok = 0;
  for (int round = 0; round < 3000 && c.ok(); ++round) {
    for (size_t i = 0; i < 3; ++i) {
      uint32_t len = static_cast<uint32_t>(rng() % 700);
      auto g = static_cast<Guarantee>(rng() % 4);
      SendResult r = c.send(i, {EntryKind::Data, g, len});
      (r == SendResult::Ok ? ok : try_again) += 1;
    }
    for (size_t s = rng() % 30; s > 0 && c.ok(); --s) c.step_world();
    c.progress(0);
    c.progress(1);
    if (round % 8 == 0) c.progress(2);
  }
  ASSERT_TRUE(c.quiesce()) << c.violation();
  c.check_no_loss();
  ASSERT_TRUE(c.ok()) << c.violation();
  EXPECT_GT(ok, 1000u);
  EXPECT_GT(try_again, 1000u);
  EXPECT_GT(c.engine(0).counters().log_stalls, 0u);
  for (size_t i = 0; i < 3; ++i) EXPECT_GT(c.engine(i).counters().credit_stalls, 0u);
  EXPECT_GT(c.engine(0).log_tail(), 20 * o.engine.log_bytes);  // wrapped many times
}

// Fragmented messages of 1 MiB and more arrive whole while small messages of
// other senders are sequenced between their fragments.
TEST(SimOrdering, LargeMessagesInterleaveWithSmallOnes) {
  ClusterOptions o = small_options(4, 31);
  o.engine.log_bytes = 64 << 10;
  o.engine.inbound_bytes = 16 << 10;
  o.engine.max_fragment = 4 << 10;
  SimCluster c(o);
  ASSERT_TRUE(c.connect_all());
  const std::vector<MsgSpec> big = {{EntryKind::Data, Guarantee::Agreed, (1u << 20) + 12345},
                                    {EntryKind::Data, Guarantee::Safe, 1u << 20},
                                    {EntryKind::Data, Guarantee::Fifo, (3u << 19) + 7}};
  std::mt19937_64 rng(31);
  size_t next_big = 0;
  bool refused_while_streaming = false;
  for (int round = 0; round < 200000 && c.ok(); ++round) {
    if (c.engine(3).large_send_pending()) {
      if (!refused_while_streaming) {  // one message at a time per sender
        ASSERT_EQ(c.send(3, {EntryKind::Data, Guarantee::Agreed, 10}), SendResult::TryAgain);
        refused_while_streaming = true;
      }
    } else if (next_big < big.size()) {
      if (c.send(3, big[next_big]) == SendResult::Ok) ++next_big;
    } else {
      break;
    }
    for (size_t i = 0; i < 3; ++i)
      if (rng() % 3 == 0)
        c.send(i, {EntryKind::Data, static_cast<Guarantee>(rng() % 4),
                   static_cast<uint32_t>(rng() % 300)});
    for (size_t s = rng() % 40; s > 0 && c.ok(); --s) c.step_world();
    for (size_t i = 0; i < 4; ++i) c.progress(i);
  }
  ASSERT_TRUE(c.quiesce()) << c.violation();
  c.check_no_loss();
  ASSERT_TRUE(c.ok()) << c.violation();
  EXPECT_TRUE(refused_while_streaming);
  ASSERT_EQ(c.sent(3).size(), big.size());

  // Which gseqs were fragments (never delivered on their own)? Only node 4
  // sends large messages, so the fragments before each of its big deliveries
  // are the missing gseqs just below it.
  for (size_t node = 0; node < 4; ++node) {
    const auto& got = c.delivered(node);
    std::set<uint64_t> seen;
    for (const Delivered& d : got) seen.insert(d.gseq);
    std::vector<uint64_t> missing;
    for (uint64_t g = 1; g <= got.back().gseq; ++g)
      if (!seen.count(g)) missing.push_back(g);
    size_t big_seen = 0;
    for (const Delivered& d : got) {
      if (d.sender != 4) continue;
      ++big_seen;
      size_t frags = (d.len + o.engine.max_fragment - 1) / o.engine.max_fragment;
      auto it = std::lower_bound(missing.begin(), missing.end(), d.gseq);
      ASSERT_GE(size_t(it - missing.begin()), frags - 1);
      uint64_t first_frag = *(it - (frags - 1));
      size_t between = std::count_if(got.begin(), got.end(), [&](const Delivered& x) {
        return x.sender != 4 && x.gseq > first_frag && x.gseq < d.gseq;
      });
      EXPECT_GT(between, 0u) << "node " << node + 1 << ": nothing interleaved with a " << d.len
                             << "-byte message";
      missing.erase(it - (frags - 1), it);
    }
    EXPECT_EQ(big_seen, big.size());
    EXPECT_GE(c.engine(node).counters().reassembled, big.size());
  }
}

// A member that progresses rarely throttles the log (the sequencer waits for
// it), but nothing is overrun (checked after every action) or lost.
class SlowNode : public ::testing::TestWithParam<size_t> {};

TEST_P(SlowNode, NoLossNoOverrun) {
  const size_t slow = GetParam();
  ClusterOptions o = small_options(5, 41 + slow);
  SimCluster c(o);
  ASSERT_TRUE(c.connect_all());
  std::mt19937_64 rng(41 + slow);
  uint64_t max_lag = 0;
  for (int round = 0; round < 4000 && c.ok(); ++round) {
    for (size_t i = 0; i < 5; ++i)
      if (rng() % 2 == 0) {
        uint32_t len = rng() % 16 == 0 ? 512 + rng() % 2000 : rng() % 400;
        c.send(i, {EntryKind::Data, static_cast<Guarantee>(rng() % 4), len});
      }
    for (size_t s = rng() % 30; s > 0 && c.ok(); --s) c.step_world();
    for (size_t i = 0; i < 5; ++i)
      if (i != slow || round % 50 == 0) c.progress(i);
    max_lag = std::max(max_lag, c.engine(0).log_tail() - c.engine(slow).delivered_position());
  }
  ASSERT_TRUE(c.quiesce()) << c.violation();
  c.check_no_loss();
  ASSERT_TRUE(c.ok()) << c.violation();
  EXPECT_LE(max_lag, o.engine.log_bytes);
  EXPECT_GT(c.engine(0).log_tail(), 10 * o.engine.log_bytes);
  if (slow == 0) {
    // A slow sequencer drains inbound rings rarely: every sender stalls.
    for (size_t i = 0; i < 5; ++i) EXPECT_GT(c.engine(i).counters().credit_stalls, 0u);
  } else {
    // A slow member holds the log back: the sequencer waits for it.
    EXPECT_GT(max_lag, o.engine.log_bytes / 2) << "the slow node never lagged much";
    EXPECT_GT(c.engine(0).counters().log_stalls, 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(SimOrdering, SlowNode, ::testing::Values(size_t{0}, size_t{2}),
                         [](const auto& info) { return info.param == 0 ? "Sequencer" : "Member"; });

// Floods of empty messages: the sequencer takes at most a bounded number of
// records per sender per round and a member delivers a bounded number per
// progress() call; the rest must follow in later rounds.
TEST(SimOrdering, ManyTinyMessages) {
  ClusterOptions o = small_options(3, 71);
  o.engine.log_bytes = 512 << 10;
  o.engine.inbound_bytes = 64 << 10;
  o.engine.max_fragment = 1024;
  o.record = false;
  SimCluster c(o);
  ASSERT_TRUE(c.connect_all());
  const size_t before = c.delivered_count(2);
  for (size_t i = 0; i < 3; ++i) {
    size_t n = 0;
    while (c.send(i, {EntryKind::Data, static_cast<Guarantee>(n % 3), 0}) == SendResult::Ok) ++n;
    EXPECT_EQ(n, o.engine.inbound_bytes / record_bytes(0));
  }
  c.progress(1);
  c.progress(2);
  for (int r = 0; r < 6; ++r) {  // the sequencer alone: several bounded rounds
    c.run_world(SIZE_MAX);
    c.progress(0);
  }
  c.run_world(SIZE_MAX);
  c.progress(2);  // node 3 now holds far more than one round delivers
  const size_t total = 3 * (o.engine.inbound_bytes / record_bytes(0));
  EXPECT_GT(c.delivered_count(2) - before, 0u);
  EXPECT_LT(c.delivered_count(2) - before, total);
  ASSERT_TRUE(c.quiesce()) << c.violation();
  c.check_no_loss();
  ASSERT_TRUE(c.ok()) << c.violation();
  EXPECT_EQ(c.delivered_count(2) - before, total);
}

// Immediates carry positions in 28 bits of 8-byte units, i.e. modulo 2 GiB:
// run the log, the inbound ring and the credits past that point, with one
// SAFE message before and one after more than 2 GiB of AGREED traffic (the
// stability watermark is published only while a SAFE entry waits).
TEST(SimOrdering, PositionsPastTheImmediateWrap) {
  ClusterOptions o = small_options(2, 81);
  o.engine.log_bytes = 64 << 10;
  o.engine.inbound_bytes = 16 << 10;
  o.engine.max_fragment = (8 << 10) - sizeof(EntryHeader);
  o.record = false;
  o.sampled_payload_check = true;  // 2 GiB of payload
  SimCluster c(o);
  ASSERT_TRUE(c.connect_all());
  ASSERT_EQ(c.send(0, {EntryKind::Data, Guarantee::Safe, 100}), SendResult::Ok);
  ASSERT_TRUE(c.quiesce()) << c.violation();
  const uint64_t target = (uint64_t{1} << 31) + (4 << 20);
  for (uint64_t r = 0; c.engine(1).staging_tail() < target && c.ok(); ++r) {
    if (!c.engine(1).large_send_pending())
      c.send(1, {EntryKind::Data, Guarantee::Agreed, 1u << 20});
    if (r % 16 == 0) c.send(0, {EntryKind::Data, Guarantee::Fifo, 100});
    c.run_world(SIZE_MAX);
    c.progress(1);
    c.run_world(SIZE_MAX);
    c.progress(0);
  }
  ASSERT_TRUE(c.quiesce()) << c.violation();
  ASSERT_EQ(c.send(0, {EntryKind::Data, Guarantee::Safe, 100}), SendResult::Ok);
  ASSERT_EQ(c.send(1, {EntryKind::Data, Guarantee::Safe, 100}), SendResult::Ok);
  ASSERT_TRUE(c.quiesce()) << c.violation();
  c.check_no_loss();
  ASSERT_TRUE(c.ok()) << c.violation();
  EXPECT_GT(c.engine(1).staging_tail(), uint64_t{1} << 31);
  EXPECT_GT(c.engine(1).delivered_position(), uint64_t{1} << 31);
}

// A cluster of one: the sequencer is the only member (every guarantee,
// fragmentation, wrap-around of both rings).
TEST(SimOrdering, SingleNode) {
  SimCluster c(small_options(1, 91));
  ASSERT_TRUE(c.connect_all());
  std::mt19937_64 rng(91);
  for (int round = 0; round < 2000 && c.ok(); ++round) {
    uint32_t len = rng() % 8 == 0 ? 513 + rng() % 3000 : rng() % 300;
    c.send(0, {EntryKind::Data, static_cast<Guarantee>(rng() % 4), len});
    if (rng() % 3 == 0) c.progress(0);
  }
  ASSERT_TRUE(c.quiesce()) << c.violation();
  c.check_no_loss();
  ASSERT_TRUE(c.ok()) << c.violation();
  EXPECT_GT(c.engine(0).log_tail(), 10 * c.config().log_bytes);
}

// Node ids need not be 1..n, and every node may list the cluster in its own
// order: the lowest id sequences, slots agree everywhere.
TEST(SimOrdering, SparseIdsShuffledConfig) {
  ClusterOptions o = small_options(4, 92);
  o.ids = {7, 19, 300, 4096};
  o.shuffle_config = true;
  SimCluster c(o);
  ASSERT_TRUE(c.connect_all());
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(c.engine(i).sequencer(), 7u);
  std::mt19937_64 rng(92);
  for (int round = 0; round < 1000 && c.ok(); ++round) {
    c.send(rng() % 4, {EntryKind::Data, static_cast<Guarantee>(rng() % 4),
                       static_cast<uint32_t>(rng() % 1500)});
    for (size_t s = rng() % 10; s > 0; --s) c.step_world();
    c.progress(rng() % 4);
  }
  ASSERT_TRUE(c.quiesce()) << c.violation();
  c.check_no_loss();
  ASSERT_TRUE(c.ok()) << c.violation();
}

// The sequencer takes inbound credit for its own records as it sequences
// them, so far more of them than fit its inbound ring can wait behind a SAFE
// entry. When they are delivered at last, with sends made from the delivery
// callbacks (ClusterOptions::reply_chance), its staging ring must still not
// pass what it has sequenced (regression: credit taken from the log through a
// reused staging_marks_ slot did).
TEST(SimOrdering, SequencerDeliveryBacklogKeepsItsCredit) {
  ClusterOptions o = small_options(2, 93);
  o.engine.log_bytes = 64 << 10;
  o.engine.inbound_bytes = 4 << 10;  // 103 staging marks
  o.reply_chance = 1.0;
  o.reply_max_len = 64;
  SimCluster c(o);
  ASSERT_TRUE(c.connect_all());
  // Node 2 does not progress: nothing becomes stable, the sequencer's
  // delivery stops at its SAFE message while it sequences 300 more.
  ASSERT_EQ(c.send(0, {EntryKind::Data, Guarantee::Safe, 8}), SendResult::Ok);
  for (int i = 0; i < 300 && c.ok(); ++i) {
    ASSERT_EQ(c.send(0, {EntryKind::Data, Guarantee::Agreed, 24}), SendResult::Ok);
    c.progress(0);
    c.run_world(SIZE_MAX);
  }
  ASSERT_EQ(c.delivered(0).size(), 1u);  // the View only
  ASSERT_TRUE(c.quiesce()) << c.violation();
  c.check_no_loss();
  ASSERT_TRUE(c.ok()) << c.violation();
}

// A SAFE message is delivered nowhere while one member has not received it,
// even though AGREED messages before it are delivered.
TEST(SimOrdering, SafeWaitsForEveryMember) {
  SimCluster c(small_options(3, 51));
  ASSERT_TRUE(c.connect_all());
  c.world().set_delay(1, 3, 1'000'000);  // hold back everything between 1 and 3
  const uint64_t held_from = c.world().now();
  ASSERT_EQ(c.send(1, {EntryKind::Data, Guarantee::Agreed, 100}), SendResult::Ok);
  ASSERT_EQ(c.send(1, {EntryKind::Data, Guarantee::Safe, 300}), SendResult::Ok);
  // The world jumps its clock once only held-back actions are left, and runs
  // them next: stop there. Progressing every node before each step keeps
  // the world busy until nodes 1 and 2 have nothing left to say to each other.
  for (int r = 0; r < 5000 && c.ok(); ++r) {
    c.progress_all();
    c.step_world();
    if (c.world().now() > held_from + 500'000) break;
  }
  ASSERT_GT(c.world().now(), held_from + 500'000) << "nodes 1 and 2 never went quiet";
  ASSERT_TRUE(c.ok()) << c.violation();
  const uint64_t tail = c.engine(0).log_tail();
  EXPECT_EQ(c.engine(1).received_position(), tail);  // node 2 holds both messages
  EXPECT_LT(c.engine(2).received_position(), tail);  // node 3 holds neither
  for (size_t n : {0, 1}) {
    ASSERT_EQ(c.delivered(n).size(), 2u) << "node " << n + 1;  // View + AGREED
    EXPECT_EQ(c.delivered(n)[1].guarantee, Guarantee::Agreed);
  }
  EXPECT_EQ(c.delivered(2).size(), 1u);  // only the View

  c.world().set_delay(1, 3, 0);
  ASSERT_TRUE(c.quiesce()) << c.violation();
  c.check_no_loss();
  ASSERT_TRUE(c.ok()) << c.violation();
  for (size_t n = 0; n < 3; ++n) {
    ASSERT_EQ(c.delivered(n).size(), 3u);
    EXPECT_EQ(c.delivered(n)[2].guarantee, Guarantee::Safe);
  }
}

}  // namespace
}  // namespace rcpg::ordering::sim
