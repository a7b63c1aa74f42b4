// Google Benchmark micro-benchmarks of the ordering hot paths: appending a
// record to a ring (send / sequencer append), walking records (delivery),
// decoding an immediate (credit and position updates), and the whole
// send -> sequence -> replicate -> deliver pipeline of a 2-node cluster on
// the shm fabric in one thread.
#include <benchmark/benchmark.h>

#include <cstring>
#include <memory>
#include <vector>

#include "ordering/engine.h"
#include "ordering/ring.h"
#include "transport/factory.h"

using namespace rcpg::ordering;
using namespace rcpg::transport;

static void BM_RingAppend(benchmark::State& state) {
  size_t payload = size_t(state.range(0));
  std::vector<std::byte> ring(1 << 20), msg(payload);
  RingWriter w{ring.data(), ring.size(), 0};
  for (auto _ : state) {
    EntryHeader* h = w.reserve(payload, w.tail + ring.size());  // reader keeps up
    h->length = uint32_t(payload);
    h->kind = EntryKind::Data;
    std::memcpy(h + 1, msg.data(), payload);
    benchmark::DoNotOptimize(h);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(int64_t(state.iterations() * payload));
}
BENCHMARK(BM_RingAppend)->Arg(64)->Arg(1024)->Arg(16384);

static void BM_RingWalk(benchmark::State& state) {
  size_t payload = size_t(state.range(0));
  std::vector<std::byte> ring(1 << 20);
  RingWriter w{ring.data(), ring.size(), 0};
  while (EntryHeader* h = w.reserve(payload, ring.size())) {
    h->length = uint32_t(payload);
    h->kind = EntryKind::Data;
  }
  RingReader r{ring.data(), ring.size()};
  uint64_t pos = 0, sum = 0, n = 0;
  for (auto _ : state) {
    const EntryHeader* h = r.next(pos, w.tail);
    if (!h) {
      pos = 0;
      continue;
    }
    sum += h->length;
    pos += record_bytes(h->length);
    ++n;
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(int64_t(n));
}
BENCHMARK(BM_RingWalk)->Arg(64)->Arg(1024);

static void BM_ImmDecode(benchmark::State& state) {
  uint64_t base = 1'000'000'000, pos = base;
  for (auto _ : state) {
    pos += 72;
    uint64_t back = imm_pos(make_imm(ImmType::Credit, pos), base);
    benchmark::DoNotOptimize(back);
    base = back;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ImmDecode);

// Two engines on shm endpoints in this thread; each iteration sends a batch
// from the non-sequencer and progresses both until both delivered it.
static void BM_TwoNodePipelineShm(benchmark::State& state) {
  size_t payload = size_t(state.range(0));
  const int kBatch = 64;
  std::string base = "@rcpg-bm-" + std::to_string(getpid()) + "-";
  std::vector<std::unique_ptr<Endpoint>> eps;
  std::vector<std::unique_ptr<Engine>> engines;
  uint64_t delivered[2] = {0, 0};
  for (int i = 1; i <= 2; ++i) {
    EndpointConfig ec;
    ec.node_id = NodeId(i);
    ec.listen_address = base + std::to_string(i);
    std::string why;
    eps.push_back(make_endpoint("shm", ec, why));
    if (!eps.back()) {
      state.SkipWithError(why.c_str());
      return;
    }
    EngineConfig cfg;
    cfg.self = NodeId(i);
    cfg.nodes = {{1, base + "1"}, {2, base + "2"}};
    uint64_t* count = &delivered[i - 1];
    engines.push_back(std::make_unique<Engine>(*eps.back(), cfg, [count](const Delivery& d) {
      if (d.kind == EntryKind::Data) ++*count;
    }));
    if (!engines.back()->start(why)) {
      state.SkipWithError(why.c_str());
      return;
    }
  }
  auto pump = [&] {
    for (auto& e : engines) e->progress();
  };
  for (int i = 0; i < 100000 && !(engines[0]->all_connected() && engines[1]->all_connected()); ++i)
    pump();
  std::vector<std::byte> msg(payload);
  uint64_t target = 0;
  for (auto _ : state) {
    for (int i = 0; i < kBatch; ++i)
      while (engines[1]->send(EntryKind::Data, Guarantee::Agreed, 1, 0, msg) != SendResult::Ok)
        pump();
    target += kBatch;
    while (delivered[0] < target || delivered[1] < target) pump();
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * kBatch);
  state.SetBytesProcessed(int64_t(state.iterations()) * kBatch * int64_t(payload));
}
BENCHMARK(BM_TwoNodePipelineShm)->Arg(64)->Arg(1024)->Arg(16384);

BENCHMARK_MAIN();
