// The ordering engine under faults, in deterministic simulation (see
// sim_faults.h for what is injected and checked).
//
//   SimFaults.RandomSeeds  many seeds, each a random cluster, workload and
//                          fault schedule. Environment:
//     RCPG_SIM_FAULT_SEEDS=N       how many seeds (default 300; 100 under ASan)
//     RCPG_SIM_FAULT_FIRST_SEED=S  first seed (default 1)
//     RCPG_SIM_FAULT_SEED=S        replay exactly one seed
//     RCPG_SIM_TRACE=1             with RCPG_SIM_FAULT_SEED: print every action
//     RCPG_SIM_HISTORY_DIR=D       write the histories of a replayed or failing
//                                  seed to D/<seed>/ (for rcpg-check-history)
//     RCPG_SIM_THREADS=T           worker threads (default: hardware threads)
//     RCPG_SIM_SCALE=X             stretch every run X times (default 1)
//     RCPG_SIM_FAULT_LARGE=0       no fragmented messages in the workload
//     RCPG_SIM_FAULT_MAX_FAILURES=K  stop after K failing seeds (default 10; 0: never)
//   A failing seed prints the command that replays it.
//   The other tests are pinned scenarios.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "tests/ordering/sim_faults.h"

namespace rcpg::ordering::sim {
namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr uint64_t kDefaultSeeds = 100;
#else
constexpr uint64_t kDefaultSeeds = 300;
#endif

uint64_t env_u64(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  return std::strtoull(v, nullptr, 0);
}

bool large_messages() {
  return env_u64("RCPG_SIM_FAULT_LARGE", 1) != 0;
}

double sim_scale() {
  const char* v = std::getenv("RCPG_SIM_SCALE");
  return v && *v ? std::strtod(v, nullptr) : 1.0;
}

std::string self_path() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "sim_faults_test";
  buf[n] = 0;
  return buf;
}

std::string replay_command(uint64_t seed) {
  std::string scale;
  if (sim_scale() != 1.0)
    scale = "RCPG_SIM_SCALE=" + std::string(std::getenv("RCPG_SIM_SCALE")) + " ";
  if (!large_messages()) scale += "RCPG_SIM_FAULT_LARGE=0 ";
  return scale + "RCPG_SIM_FAULT_SEED=" + std::to_string(seed) + " RCPG_SIM_TRACE=1 " +
         self_path() + " --gtest_filter=SimFaults.RandomSeeds";
}

void keep_histories(uint64_t seed, const std::vector<checker::History>& hs) {
  const char* dir = std::getenv("RCPG_SIM_HISTORY_DIR");
  if (!dir || !*dir || hs.empty()) return;
  std::string d = std::string(dir) + "/" + std::to_string(seed);
  for (const checker::History& h : hs) {
    std::string path = d + "/" + h.name + ".hist";
    std::filesystem::create_directories(d);
    std::ofstream f(path);
    h.write(f);
  }
  std::printf("histories of seed %llu written to %s/\n", static_cast<unsigned long long>(seed),
              d.c_str());
}

void print_stats(const FaultStats& s, uint64_t seeds) {
  auto per = [&](uint64_t x) { return double(x) / double(seeds); };
  std::printf(
      "  totals: %llu crashes (%llu of the sequencer, %llu during a view change), %llu restarts,\n"
      "          %llu partitions, %llu link flaps, %llu stalled nodes, %llu fresh rejoins\n"
      "          %llu views (%llu failovers: a new sequencer), %llu installs, %llu suspicions,\n"
      "          %llu records re-sent, %llu duplicates dropped, %llu gap-fill bytes\n"
      "  per seed: %.0f actions, %.1f virtual ms, %.0f sends accepted, %.0f TryAgain,\n"
      "            %.0f deliveries (%.1f early), %.1f large msgs\n",
      (unsigned long long)s.crashes, (unsigned long long)s.sequencer_crashes,
      (unsigned long long)s.crashes_in_view_change, (unsigned long long)s.restarts,
      (unsigned long long)s.partitions, (unsigned long long)s.flaps, (unsigned long long)s.stalls,
      (unsigned long long)s.fresh_rejoins, (unsigned long long)s.views,
      (unsigned long long)s.failovers, (unsigned long long)s.views_installed,
      (unsigned long long)s.suspicions, (unsigned long long)s.resent_records,
      (unsigned long long)s.duplicates_dropped, (unsigned long long)s.gap_fill_bytes,
      per(s.actions), per(s.virtual_us) / 1000.0, per(s.send_ok), per(s.send_try_again),
      per(s.deliveries), per(s.early_deliveries), per(s.large_msgs));
}

TEST(SimFaults, RandomSeeds) {
  if (const char* one = std::getenv("RCPG_SIM_FAULT_SEED"); one && *one) {
    uint64_t seed = std::strtoull(one, nullptr, 0);
    bool trace = env_u64("RCPG_SIM_TRACE", 0) != 0;
    FaultSeedResult r = run_fault_seed(seed, trace, sim_scale(), true, large_messages());
    std::printf("seed %llu: %d nodes\n", static_cast<unsigned long long>(seed), r.nodes);
    print_stats(r.stats, 1);
    keep_histories(seed, r.histories);
    EXPECT_TRUE(r.ok) << "seed " << seed << " (" << r.nodes << " nodes): " << r.violation;
    return;
  }
  const uint64_t first = env_u64("RCPG_SIM_FAULT_FIRST_SEED", 1);
  const uint64_t count = env_u64("RCPG_SIM_FAULT_SEEDS", kDefaultSeeds);
  unsigned threads = static_cast<unsigned>(
      env_u64("RCPG_SIM_THREADS", std::max(1u, std::thread::hardware_concurrency())));
  threads = std::clamp(threads, 1u, 64u);

  std::atomic<uint64_t> next{0};
  std::atomic<bool> stop{false};
  std::mutex mu;
  FaultStats total;
  std::map<int, uint64_t> by_nodes;
  std::map<uint64_t, FaultSeedResult> failures;
  std::map<uint64_t, std::string> failed_lines;  // seed -> first line of the violation
  uint64_t failed = 0;
  const uint64_t max_failures = env_u64("RCPG_SIM_FAULT_MAX_FAILURES", 10);
  auto worker = [&] {
    FaultStats mine;
    std::map<int, uint64_t> mine_nodes;
    while (!stop.load(std::memory_order_relaxed)) {
      uint64_t k = next.fetch_add(1);
      if (k >= count) break;
      FaultSeedResult r = run_fault_seed(first + k, false, sim_scale(), false, large_messages());
      mine.add(r.stats);
      ++mine_nodes[r.nodes];
      if (!r.ok) {
        std::lock_guard lock(mu);
        ++failed;
        if (failed_lines.size() < 500)
          failed_lines[first + k] = r.violation.substr(0, r.violation.find('\n'));
        if (failures.size() < 10) failures.emplace(first + k, std::move(r));
        if (max_failures != 0 && failed >= max_failures) stop = true;
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
  std::printf("%llu fault seeds (from %llu) in %.2f s on %u threads: %.1f seeds/s\n",
              static_cast<unsigned long long>(ran), static_cast<unsigned long long>(first), secs,
              threads, double(ran) / secs);
  std::printf("  nodes:");
  for (auto [n, c] : by_nodes) std::printf(" %d:%llu", n, static_cast<unsigned long long>(c));
  std::printf("\n");
  if (ran) print_stats(total, ran);
  for (auto& [seed, line] : failed_lines)
    std::printf("  failing seed %llu: %s\n", (unsigned long long)seed, line.c_str());
  if (failed)
    std::printf("%llu failing seeds (the first %zu below)\n", (unsigned long long)failed,
                failures.size());
  for (auto& [seed, r] : failures) {
    ADD_FAILURE() << "seed " << seed << " (" << r.nodes << " nodes) failed: " << r.violation
                  << "\n  replay: " << replay_command(seed);
    keep_histories(seed, r.histories);
  }
  // Faults must really have happened (else this test proves nothing).
  if (ran >= 100) {
    EXPECT_GT(total.crashes, ran / 4);
    EXPECT_GT(total.sequencer_crashes, 0u);
    EXPECT_GT(total.partitions, 0u);
    EXPECT_GT(total.failovers, 0u);
    EXPECT_GT(total.fresh_rejoins, 0u);
  }
}

// The same seed twice: the same run, action for action.
TEST(SimFaults, SeedsReplayExactly) {
  for (uint64_t seed : {3u, 17u}) {
    FaultSeedResult a = run_fault_seed(seed, false, 0.5, true);
    FaultSeedResult b = run_fault_seed(seed, false, 0.5, true);
    EXPECT_EQ(a.ok, b.ok);
    EXPECT_EQ(a.stats.actions, b.stats.actions);
    EXPECT_EQ(a.stats.deliveries, b.stats.deliveries);
    EXPECT_EQ(a.stats.views, b.stats.views);
    ASSERT_EQ(a.histories.size(), b.histories.size());
    for (size_t i = 0; i < a.histories.size(); ++i) {
      std::ostringstream x, y;
      a.histories[i].write(x);
      b.histories[i].write(y);
      EXPECT_EQ(x.str(), y.str()) << "history " << a.histories[i].name;
    }
  }
}

// --- pinned scenarios ------------------------------------------------------

FaultOptions scenario_options(int nodes, uint64_t seed) {
  FaultOptions o;
  o.nodes = nodes;
  o.seed = seed;
  o.engine.log_bytes = 32 << 10;
  o.engine.inbound_bytes = 8 << 10;
  o.engine.max_fragment = 700;
  o.engine.heartbeat_interval_us = 300;
  o.engine.suspect_timeout_us = 1500;
  o.engine.form_timeout_us = 5000;
  o.trace = env_u64("RCPG_SIM_TRACE", 0) != 0;
  return o;
}

// A random mix of world steps, progress calls and sends from `senders`
// (alive ones) for `ticks` actions; stops early when `until` holds.
template <typename Until>
void drive(FaultCluster& c, Rng& rng, uint64_t ticks, const std::vector<size_t>& senders,
           Until until) {
  for (uint64_t t = 0; t < ticks && c.ok() && !until(); ++t) {
    double r = rng.unit();
    if (r < 0.5) {
      c.step_world();
    } else if (r < 0.65 && !senders.empty()) {
      size_t i = senders[rng.between(0, senders.size() - 1)];
      uint32_t len = rng.chance(0.1) ? static_cast<uint32_t>(rng.between(701, 3000))
                                     : static_cast<uint32_t>(rng.between(0, 300));
      c.send(i, {EntryKind::Data, static_cast<Guarantee>(rng.between(0, 3)), len});
    } else {
      c.progress(rng.between(0, c.size() - 1));
    }
  }
}
void drive(FaultCluster& c, Rng& rng, uint64_t ticks, const std::vector<size_t>& senders) {
  drive(c, rng, ticks, senders, [] { return false; });
}

bool all_normal_subset(FaultCluster& c, const std::vector<size_t>& which) {
  return std::all_of(which.begin(), which.end(), [&](size_t i) {
    return c.alive(i) && c.engine(i).view().state == Membership::Normal;
  });
}

bool all_normal(FaultCluster& c) {
  for (size_t i = 0; i < c.size(); ++i)
    if (c.alive(i) && c.engine(i).view().state != Membership::Normal) return false;
  return true;
}

// Load until every node is in one Normal view with all of them.
void settle_with_load(FaultCluster& c, Rng& rng, const std::vector<size_t>& senders) {
  drive(c, rng, 200000, senders,
        [&] { return all_normal(c) && c.engine(0).view().members.size() == c.size(); });
}

// The sequencer dies while every node streams messages: the survivors agree
// on a new sequencer and lose nothing they sent (the history check: every
// survivor delivers every survivor's accepted sends, in one order).
TEST(SimFaults, SequencerCrashMidStreamLosesNothingFromSurvivors) {
  FaultCluster c(scenario_options(4, 101));
  Rng rng(101);
  settle_with_load(c, rng, {0, 1, 2, 3});
  ASSERT_TRUE(c.ok()) << c.violation();
  ASSERT_EQ(c.engine(1).view().sequencer, 1u);
  ASSERT_EQ(c.engine(1).view().state, Membership::Normal) << c.describe();
  // Keep sending right up to the crash, so records are in flight.
  drive(c, rng, 200, {1, 2, 3});
  c.crash(0);
  drive(c, rng, 20000, {1, 2, 3});
  ASSERT_TRUE(c.converge(1'000'000)) << c.violation();
  c.check_histories();
  ASSERT_TRUE(c.ok()) << c.violation();
  for (size_t i = 1; i < 4; ++i) EXPECT_EQ(c.engine(i).view().sequencer, 2u);
  FaultStats s = c.stats();
  EXPECT_GE(s.failovers, 1u);
  EXPECT_EQ(s.sequencer_crashes, 1u);
  EXPECT_GT(s.send_ok, 500u);
  std::printf("  %llu records re-sent, %llu duplicates dropped, %llu views\n",
              (unsigned long long)s.resent_records, (unsigned long long)s.duplicates_dropped,
              (unsigned long long)s.views);
}

// The sequencer dies, and while the view change that replaces it runs, the
// node that would become the new sequencer dies too.
TEST(SimFaults, NewSequencerCrashesDuringTheViewChange) {
  FaultCluster c(scenario_options(5, 102));
  Rng rng(102);
  settle_with_load(c, rng, {0, 1, 2, 3, 4});
  ASSERT_TRUE(c.ok()) << c.violation();
  ASSERT_TRUE(all_normal(c)) << c.describe();
  c.crash(0);
  // Until the survivors are changing views (node 2 coordinates: lowest id).
  drive(c, rng, 50000, {1, 2, 3, 4},
        [&] { return c.engine(1).view().state == Membership::Changing; });
  ASSERT_EQ(c.engine(1).view().state, Membership::Changing) << c.describe();
  drive(c, rng, 30, {2, 3, 4});  // a little way into the change
  c.crash(1);
  drive(c, rng, 30000, {2, 3, 4});
  ASSERT_TRUE(c.converge(1'000'000)) << c.violation();
  c.check_histories();
  ASSERT_TRUE(c.ok()) << c.violation();
  for (size_t i = 2; i < 5; ++i) {
    EXPECT_EQ(c.engine(i).view().sequencer, 3u);
    EXPECT_EQ(c.engine(i).view().members.size(), 3u);
  }
  EXPECT_GE(c.stats().crashes_in_view_change, 1u);
}

// A minority cut off from the rest stops (no quorum: sends get TryAgain,
// nothing is delivered) while the majority goes on; when the link heals the
// minority comes back with a fresh history.
TEST(SimFaults, MinorityPartitionStopsAndRejoinsFresh) {
  FaultCluster c(scenario_options(5, 103));
  Rng rng(103);
  settle_with_load(c, rng, {0, 1, 2, 3, 4});
  ASSERT_TRUE(all_normal(c)) << c.describe();
  c.partition({3, 4});
  drive(c, rng, 50000, {0, 1, 2}, [&] {
    return c.engine(3).view().state == Membership::NoQuorum &&
           c.engine(4).view().state == Membership::NoQuorum &&
           c.engine(0).view().members.size() == 3 && all_normal_subset(c, {0, 1, 2});
  });
  ASSERT_EQ(c.engine(3).view().state, Membership::NoQuorum) << c.describe();
  EXPECT_NE(c.engine(3).view().why, "");
  EXPECT_EQ(c.send(3, {EntryKind::Data, Guarantee::Agreed, 10}), SendResult::TryAgain);
  const size_t before = c.histories()[3].events.size();
  drive(c, rng, 5000, {0, 1, 2});  // the majority goes on, the minority delivers nothing
  ASSERT_TRUE(c.ok()) << c.violation();
  EXPECT_EQ(c.histories()[3].events.size(), before);
  c.heal_all();
  ASSERT_TRUE(c.converge(1'000'000)) << c.violation();
  c.check_histories();
  ASSERT_TRUE(c.ok()) << c.violation();
  for (size_t i : {3, 4}) {
    const auto& ev = c.histories()[i].events;
    bool fresh = std::any_of(ev.begin(), ev.end(), [](const checker::Event& e) {
      return e.type == checker::Event::Type::Fresh;
    });
    EXPECT_TRUE(fresh) << c.histories()[i].name << " did not rejoin fresh";
  }
  EXPECT_EQ(c.engine(3).view().members.size(), 5u);
}

// The end-of-run check can fail: a survivor's history with one delivery
// removed, or two deliveries swapped, is caught.
TEST(SimFaults, HistoryCheckCatchesTamperedHistories) {
  FaultCluster c(scenario_options(3, 104));
  Rng rng(104);
  drive(c, rng, 5000, {0, 1, 2});
  ASSERT_TRUE(c.converge(1'000'000)) << c.violation();
  c.check_histories();
  ASSERT_TRUE(c.ok()) << c.violation();
  checker::CheckOptions o{true, true, 5};
  auto hs = c.histories();
  ASSERT_TRUE(checker::check_histories(hs, o).ok());
  auto& ev = hs[1].events;
  auto m = std::find_if(ev.begin() + ev.size() / 2, ev.end(), [](const checker::Event& e) {
    return e.type == checker::Event::Type::Deliver && e.order == checker::Order::Total;
  });
  ASSERT_NE(m, ev.end());
  auto swapped = hs;
  auto& sev = swapped[1].events;
  auto m2 =
      std::find_if(sev.begin() + (m - ev.begin()) + 1, sev.end(), [](const checker::Event& e) {
        return e.type == checker::Event::Type::Deliver && e.order == checker::Order::Total;
      });
  ASSERT_NE(m2, sev.end());
  std::swap(sev[m - ev.begin()].origin, m2->origin);
  std::swap(sev[m - ev.begin()].number, m2->number);
  EXPECT_FALSE(checker::check_histories(swapped, o).ok());
  ev.erase(m);
  checker::CheckResult r = checker::check_histories(hs, o);
  EXPECT_FALSE(r.ok());
}

}  // namespace
}  // namespace rcpg::ordering::sim
