/* client_options: fault_client's command line (usage in client_options.c). */
#pragma once

#include <stdint.h>

/* fault_client's exit status (also in --help). */
enum exit_code {
  EXIT_CLEAN = 0,
  EXIT_API = 1,
  EXIT_USAGE = 2,
  EXIT_DAEMON_GONE = 3,
  EXIT_BAD_MESSAGE = 4,
  EXIT_DRAIN_TIMEOUT = 5,
};

/* The payload starts with "n<nodeid>:<pid> <seq> <g>\0" and is padded to
 * --size with bytes that depend on seq, so a torn or misplaced payload shows. */
#define HEADER_MAX 64
#define MIN_SIZE HEADER_MAX
#define MAX_SIZE (1u << 20)

struct opts {
  const char *name, *history, *times, *group;
  double rate;     /* messages per second; 0 = as fast as the API takes them */
  unsigned size;   /* payload bytes */
  int guarantee;   /* -1 = mix */
  double duration; /* seconds; 0 = until a signal */
  uint64_t count;  /* messages; 0 = unlimited */
  double drain_s;
  double reconnect_s; /* 0 = no reconnect */
  uint64_t window;    /* own messages sent but not yet delivered back; 0 = no limit */
};

/* Fills `o` from the command line; prints usage and exits 0 for --help, and
 * exits 2 with a message for a bad command line. */
void parse_opts(int argc, char** argv, struct opts* o);
