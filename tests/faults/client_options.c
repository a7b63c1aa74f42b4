/* client_options: fault_client's command line. */
#include "client_options.h"

#include <corosync/cpg.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die_usage(const char* fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die_usage(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("fault_client: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputs(" (try --help)\n", stderr);
  va_end(ap);
  exit(EXIT_USAGE);
}

static void usage(void) {
  puts(
      "usage: fault_client --name NAME --history FILE [options]\n"
      "  --name NAME        written as the history's first line (H NAME)\n"
      "  --history FILE     history file (created or truncated)\n"
      "  --times FILE       membership timestamps (default FILE.times)\n"
      "  --group NAME       CPG group (default rcpg-faults)\n"
      "  --rate N           messages per second, 0 = as fast as the API takes them (default 100)\n"
      "  --size BYTES       payload size, 64..1048576 (default 64)\n"
      "  --guarantee G      agreed|safe|fifo|unordered|mix (default mix)\n"
      "  --duration S       stop sending after S seconds (default: at SIGTERM/SIGINT)\n"
      "  --count N          stop sending after N messages\n"
      "  --window N         at most N own messages sent and not yet delivered back\n"
      "                     (default 0: no limit; bounds the backlog at --rate 0)\n"
      "  --drain S          after stopping, wait up to S s for own messages (default 10)\n"
      "  --reconnect S      when the daemon goes away, keep reconnecting for up to S s and\n"
      "                     start a fresh history (F); default: exit 3\n"
      "exit: 0 clean, 1 API failure, 2 usage, 3 daemon gone, 4 bad message, 5 drain timeout");
}

static double parse_num(const char* opt, const char* s, double lo, double hi) {
  char* end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || v < lo || v > hi)
    die_usage("%s needs a number in [%g, %g], not '%s'", opt, lo, hi, s);
  return v;
}

void parse_opts(int argc, char** argv, struct opts* o) {
  static const struct option longs[] = {
      {"name", required_argument, 0, 'n'},
      {"history", required_argument, 0, 'o'},
      {"times", required_argument, 0, 't'},
      {"group", required_argument, 0, 'g'},
      {"rate", required_argument, 0, 'r'},
      {"size", required_argument, 0, 's'},
      {"guarantee", required_argument, 0, 'G'},
      {"duration", required_argument, 0, 'd'},
      {"count", required_argument, 0, 'c'},
      {"drain", required_argument, 0, 'D'},
      {"reconnect", required_argument, 0, 'R'},
      {"window", required_argument, 0, 'w'},
      {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0},
  };
  *o = (struct opts){
      .group = "rcpg-faults", .rate = 100, .size = 64, .guarantee = -1, .drain_s = 10};
  int ch;
  while ((ch = getopt_long(argc, argv, "", longs, NULL)) != -1) {
    switch (ch) {
      case 'n':
        o->name = optarg;
        break;
      case 'o':
        o->history = optarg;
        break;
      case 't':
        o->times = optarg;
        break;
      case 'g':
        o->group = optarg;
        break;
      case 'r':
        o->rate = parse_num("--rate", optarg, 0, 1e7);
        break;
      case 's':
        o->size = (unsigned)parse_num("--size", optarg, MIN_SIZE, MAX_SIZE);
        break;
      case 'd':
        o->duration = parse_num("--duration", optarg, 0, 1e6);
        break;
      case 'c':
        o->count = (uint64_t)parse_num("--count", optarg, 0, 1e15);
        break;
      case 'D':
        o->drain_s = parse_num("--drain", optarg, 0, 3600);
        break;
      case 'R':
        o->reconnect_s = parse_num("--reconnect", optarg, 0, 3600);
        break;
      case 'w':
        o->window = (uint64_t)parse_num("--window", optarg, 0, 1e9);
        break;
      case 'G':
        if (!strcmp(optarg, "mix"))
          o->guarantee = -1;
        else if (!strcmp(optarg, "agreed"))
          o->guarantee = CPG_TYPE_AGREED;
        else if (!strcmp(optarg, "safe"))
          o->guarantee = CPG_TYPE_SAFE;
        else if (!strcmp(optarg, "fifo"))
          o->guarantee = CPG_TYPE_FIFO;
        else if (!strcmp(optarg, "unordered"))
          o->guarantee = CPG_TYPE_UNORDERED;
        else
          die_usage("--guarantee must be agreed, safe, fifo, unordered or mix, not '%s'", optarg);
        break;
      case 'h':
        usage();
        exit(0);
      default:
        die_usage("bad option");
    }
  }
  if (optind < argc) die_usage("unexpected argument '%s'", argv[optind]);
  if (!o->name || !*o->name) die_usage("--name is required");
  if (strpbrk(o->name, " \t\n")) die_usage("--name must not contain white space");
  if (!o->history) die_usage("--history is required");
  if (strlen(o->group) > CPG_MAX_NAME_LENGTH)
    die_usage("--group is longer than %d bytes", CPG_MAX_NAME_LENGTH);
}
