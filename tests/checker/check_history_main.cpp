// rcpg-check-history: checks a set of history files (format and invariants:
// tests/checker/history_checker.h) against each other.
//   exit 0  every invariant holds
//   exit 1  violations (printed one per line, naming files and lines)
//   exit 2  usage error, unreadable or malformed input
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "tests/checker/history_checker.h"

namespace {

void usage(FILE* to) {
  std::fprintf(to,
               "usage: rcpg-check-history [--quiesced] [--whole-views] [--max N] FILE...\n"
               "  Checks the histories in FILE... (one per file) against each other:\n"
               "  views, duplicates, FIFO, total order, virtual synchrony, no loss.\n"
               "  --quiesced     every history without X ended with nothing in flight\n"
               "                 (final views equal; every survivor got every survivor's sends)\n"
               "  --whole-views  fresh histories start at the beginning of their view\n"
               "  --max N        report at most N violations (default 20)\n"
               "  Exit: 0 all invariants hold, 1 violations, 2 bad usage or input.\n"
               "  Format and invariants: tests/checker/history_checker.h\n");
}

}  // namespace

int main(int argc, char** argv) {
  using namespace rcpg::checker;
  CheckOptions opt;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quiesced") {
      opt.quiesced_end = true;
    } else if (a == "--whole-views") {
      opt.whole_views = true;
    } else if (a == "--max") {
      char* end = nullptr;
      unsigned long n = i + 1 < argc ? std::strtoul(argv[i + 1], &end, 10) : 0;
      if (i + 1 >= argc || !end || *end || n == 0) {
        std::fprintf(stderr, "rcpg-check-history: --max needs a positive number\n");
        return 2;
      }
      opt.max_violations = n;
      ++i;
    } else if (a == "-h" || a == "--help") {
      usage(stdout);
      return 0;
    } else if (a == "--") {
      for (++i; i < argc; ++i) files.emplace_back(argv[i]);
    } else if (a.size() > 1 && a[0] == '-') {
      std::fprintf(stderr, "rcpg-check-history: unknown option '%s'\n", a.c_str());
      usage(stderr);
      return 2;
    } else {
      files.push_back(a);
    }
  }
  if (files.empty()) {
    usage(stderr);
    return 2;
  }
  std::vector<History> histories(files.size());
  for (size_t i = 0; i < files.size(); ++i) {
    std::string error;
    if (!read_history_file(files[i], histories[i], error)) {
      std::fprintf(stderr, "rcpg-check-history: %s\n", error.c_str());
      return 2;
    }
  }
  CheckResult r = check_histories(histories, opt);
  if (!r.input_error.empty()) {
    std::fprintf(stderr, "rcpg-check-history: %s\n", r.input_error.c_str());
    return 2;
  }
  for (const std::string& v : r.violations) std::printf("%s\n", v.c_str());
  std::printf("%s: %zu histories, %zu views, %zu deliveries, %zu sends, %zu violation%s\n",
              r.ok() ? "ok" : "FAILED", r.stats.histories, r.stats.views, r.stats.deliveries,
              r.stats.sends, r.violations.size(), r.violations.size() == 1 ? "" : "s");
  return r.ok() ? 0 : 1;
}
