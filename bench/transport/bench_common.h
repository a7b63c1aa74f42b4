// Shared pieces of the transport benchmarks: the endpoint factory and small
// statistics helpers.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "transport/factory.h"

namespace rcpg::bench {

// Endpoint of fabric `fabric` ("shm" or "verbs"); nullptr and `why` when that
// fabric is not built or the endpoint cannot be created.
using transport::make_endpoint;

struct Summary {
  size_t count = 0;
  double min = 0, p50 = 0, p99 = 0, p999 = 0, max = 0, mean = 0, stdev = 0;
};

// Nearest-rank percentiles over `v` (sorted in place).
inline Summary summarize(std::vector<double>& v) {
  Summary s;
  s.count = v.size();
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  auto rank = [&](double p) {
    size_t idx = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size())));
    idx = idx == 0 ? 0 : idx - 1;
    return v[std::min(idx, v.size() - 1)];
  };
  s.min = v.front();
  s.max = v.back();
  // The median as perftest computes it (mean of the two middle values for even n).
  size_t n = v.size();
  s.p50 = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  s.p99 = rank(0.99);
  s.p999 = rank(0.999);
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / static_cast<double>(n);
  double var = 0;
  for (double x : v) var += (x - s.mean) * (x - s.mean);
  s.stdev = std::sqrt(var / static_cast<double>(n));
  return s;
}

}  // namespace rcpg::bench
