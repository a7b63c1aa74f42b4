/* cpg_bench: latency, throughput and delivery order through the CPG API.
 *
 * Built once against the distribution's <corosync/cpg.h> and -lcpg; which
 * implementation it talks to (Corosync's libcpg or rcpg's libcpg.so.4) is
 * decided only by the dynamic linker, so the same binary measures both.
 *
 * N processes (--members N, each with a distinct --rank) join one group;
 * they may sit on different nodes (each with its own daemon) as long as they
 * share CLOCK_MONOTONIC, because messages carry their send time. Phases, each
 * preceded by a barrier through the group (every rank multicasts READY and
 * waits for all N):
 *   latency    rank 0 sends one message at a time and waits for its own
 *              delivery (round trip); every member records one-way latency.
 *   throughput ranks < --senders send --count messages as fast as the API
 *              takes them (CS_ERR_TRY_AGAIN: dispatch, retry, count it);
 *              every member records its receive rate and one-way latency.
 * Each sender ends a phase with DONE(count), so every member knows what it
 * should have received and reports loss, per-sender FIFO violations and a
 * digest of its delivery order (identical digests = identical total order).
 * Output: one JSON object per phase and process (--json FILE, appended) and
 * a human-readable line on stdout.
 * Exit: 0 ok, 1 API failure or timeout, 2 usage, 3 verification failed. */

#include <corosync/cpg.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "bench_stats.h"

#define MSG_MAGIC 0x43504742u
#define MAX_MEMBERS 64
#define MAX_SIZES 32
#define MAX_PHASES (2 * MAX_SIZES + 1)

enum msg_type { MSG_READY = 1, MSG_DATA = 2, MSG_DONE = 3 };

struct msg_hdr {
  uint32_t magic;
  uint16_t type;
  uint16_t rank;
  uint32_t phase;
  uint32_t len;   /* whole message */
  uint64_t seq;   /* DATA: per sender and phase, from 0 */
  uint64_t ts_ns; /* sender's CLOCK_MONOTONIC at the send call */
  uint64_t count; /* DONE: DATA messages sent in the phase */
};

enum phase_kind { PHASE_LATENCY, PHASE_THROUGHPUT };

struct opts {
  unsigned members, rank, senders;
  uint32_t lat_sizes[MAX_SIZES], tput_sizes[MAX_SIZES];
  unsigned n_lat, n_tput;
  uint64_t lat_iters, warmup, count, max_bytes;
  int zcb, spin;
  cpg_guarantee_t guarantee;
  const char *guarantee_name, *group, *json, *impl, *setup, *run;
  double timeout_s;
};

struct state {
  const struct opts* o;
  cpg_handle_t h;
  int fd;
  struct cpg_name group;
  unsigned nodeid, max_atomic;
  /* membership */
  size_t members_now;
  int phase_active, member_left;
  uint32_t rank_nodeid[MAX_MEMBERS], rank_pid[MAX_MEMBERS];
  uint64_t ready[MAX_PHASES + 1]; /* bitmask of ranks per phase */
  /* When the last READY of a phase was delivered: the phase's time zero. A
   * descheduled member may dispatch READY and the whole phase's data in one
   * cpg_dispatch call, so the time barrier() returns would be too late. */
  uint64_t ready_done_ns[MAX_PHASES + 1];
  /* the running phase */
  uint32_t phase;
  enum phase_kind kind;
  uint64_t done_mask, done_count[MAX_MEMBERS], next_seq[MAX_MEMBERS];
  uint64_t delivered, fifo_errors, bad_payload, stray, foreign;
  uint64_t digest, first_ns, last_ns, try_again;
  struct samples one_way;
  uint64_t awaited_seq, own_ns;
  int awaited_hit;
  uint64_t all_ranks; /* bitmask of ranks 0..members-1 */
};

static const char* cs_name(cs_error_t e) {
  static const char* names[] = {
      [CS_OK] = "CS_OK",
      [CS_ERR_LIBRARY] = "CS_ERR_LIBRARY",
      [CS_ERR_VERSION] = "CS_ERR_VERSION",
      [CS_ERR_INIT] = "CS_ERR_INIT",
      [CS_ERR_TIMEOUT] = "CS_ERR_TIMEOUT",
      [CS_ERR_TRY_AGAIN] = "CS_ERR_TRY_AGAIN",
      [CS_ERR_INVALID_PARAM] = "CS_ERR_INVALID_PARAM",
      [CS_ERR_NO_MEMORY] = "CS_ERR_NO_MEMORY",
      [CS_ERR_BAD_HANDLE] = "CS_ERR_BAD_HANDLE",
      [CS_ERR_BUSY] = "CS_ERR_BUSY",
      [CS_ERR_ACCESS] = "CS_ERR_ACCESS",
      [CS_ERR_NOT_EXIST] = "CS_ERR_NOT_EXIST",
      [CS_ERR_NAME_TOO_LONG] = "CS_ERR_NAME_TOO_LONG",
      [CS_ERR_EXIST] = "CS_ERR_EXIST",
      [CS_ERR_NO_SPACE] = "CS_ERR_NO_SPACE",
      [CS_ERR_INTERRUPT] = "CS_ERR_INTERRUPT",
      [CS_ERR_NAME_NOT_FOUND] = "CS_ERR_NAME_NOT_FOUND",
      [CS_ERR_NO_RESOURCES] = "CS_ERR_NO_RESOURCES",
      [CS_ERR_NOT_SUPPORTED] = "CS_ERR_NOT_SUPPORTED",
      [CS_ERR_BAD_OPERATION] = "CS_ERR_BAD_OPERATION",
      [CS_ERR_FAILED_OPERATION] = "CS_ERR_FAILED_OPERATION",
      [CS_ERR_MESSAGE_ERROR] = "CS_ERR_MESSAGE_ERROR",
      [CS_ERR_QUEUE_FULL] = "CS_ERR_QUEUE_FULL",
      [CS_ERR_QUEUE_NOT_AVAILABLE] = "CS_ERR_QUEUE_NOT_AVAILABLE",
      [CS_ERR_BAD_FLAGS] = "CS_ERR_BAD_FLAGS",
      [CS_ERR_TOO_BIG] = "CS_ERR_TOO_BIG",
      [CS_ERR_NO_SECTIONS] = "CS_ERR_NO_SECTIONS",
      [CS_ERR_CONTEXT_NOT_FOUND] = "CS_ERR_CONTEXT_NOT_FOUND",
      [CS_ERR_TOO_MANY_GROUPS] = "CS_ERR_TOO_MANY_GROUPS",
  };
  if (e == CS_ERR_SECURITY) return "CS_ERR_SECURITY";
  if ((size_t)e < sizeof(names) / sizeof(names[0]) && names[e]) return names[e];
  return "unknown cs_error_t";
}

static unsigned g_rank;

static void die(const char* fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "cpg_bench[rank %u]: ", g_rank);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(1);
}

/* Bad command line: exit 2. */
static void die_usage(const char* fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die_usage(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("cpg_bench: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputs(" (try --help)\n", stderr);
  va_end(ap);
  exit(2);
}

static void die_cs(const char* call, cs_error_t rc) __attribute__((noreturn));
static void die_cs(const char* call, cs_error_t rc) {
  die("%s failed: %s (%d)", call, cs_name(rc), (int)rc);
}

static inline uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint8_t check_byte(uint64_t seq, unsigned rank) {
  return (uint8_t)(seq * 131u + rank + 7u);
}

static inline uint64_t fnv1a(uint64_t h, uint64_t v) {
  for (int i = 0; i < 8; i++) {
    h ^= (v >> (8 * i)) & 0xff;
    h *= 0x100000001b3ull;
  }
  return h;
}

static struct state* g_st; /* for the callbacks (cpg_context_get costs a lookup) */

static void on_data(struct state* st, const struct msg_hdr* m, uint32_t nodeid, uint32_t pid,
                    const uint8_t* msg, size_t len, uint64_t t) {
  if (!st->phase_active || m->phase != st->phase) {
    st->stray++;
    return;
  }
  unsigned r = m->rank;
  if (m->seq != st->next_seq[r]) st->fifo_errors++;
  st->next_seq[r] = m->seq + 1;
  if (len != m->len || (len > sizeof(*m) && msg[len - 1] != check_byte(m->seq, r)))
    st->bad_payload++;
  st->delivered++;
  st->digest = fnv1a(fnv1a(st->digest, ((uint64_t)nodeid << 32) | pid), m->seq);
  if (!st->first_ns) st->first_ns = t;
  st->last_ns = t;
  if (st->kind == PHASE_THROUGHPUT || m->seq >= st->o->warmup)
    samples_add(&st->one_way, t - m->ts_ns);
  if (r == st->o->rank && m->seq == st->awaited_seq) {
    st->own_ns = t;
    st->awaited_hit = 1;
  }
}

static void deliver_cb(cpg_handle_t h, const struct cpg_name* group, uint32_t nodeid, uint32_t pid,
                       void* msg, size_t len) {
  (void)h;
  (void)group;
  uint64_t t = now_ns();
  struct state* st = g_st;
  struct msg_hdr m;
  if (len < sizeof(m)) {
    st->foreign++;
    return;
  }
  memcpy(&m, msg, sizeof(m));
  if (m.magic != MSG_MAGIC || m.rank >= st->o->members) {
    st->foreign++;
    return;
  }
  switch (m.type) {
    case MSG_DATA:
      on_data(st, &m, nodeid, pid, msg, len, t);
      break;
    case MSG_READY:
      if (m.phase > MAX_PHASES) {
        st->foreign++;
        break;
      }
      if (st->rank_pid[m.rank] == 0) {
        st->rank_nodeid[m.rank] = nodeid;
        st->rank_pid[m.rank] = pid;
      } else if (st->rank_pid[m.rank] != pid || st->rank_nodeid[m.rank] != nodeid) {
        die("two members claim rank %u: (node %u, pid %u) and (node %u, pid %u)", m.rank,
            st->rank_nodeid[m.rank], st->rank_pid[m.rank], nodeid, pid);
      }
      st->ready[m.phase] |= 1ull << m.rank;
      if (st->ready[m.phase] == st->all_ranks && !st->ready_done_ns[m.phase])
        st->ready_done_ns[m.phase] = t;
      break;
    case MSG_DONE:
      if (!st->phase_active || m.phase != st->phase) {
        st->stray++;
        break;
      }
      st->done_mask |= 1ull << m.rank;
      st->done_count[m.rank] = m.count;
      break;
    default:
      st->foreign++;
  }
}

static void confchg_cb(cpg_handle_t h, const struct cpg_name* group,
                       const struct cpg_address* members, size_t n_members,
                       const struct cpg_address* left, size_t n_left,
                       const struct cpg_address* joined, size_t n_joined) {
  (void)h;
  (void)members;
  (void)joined;
  (void)n_joined;
  struct state* st = g_st;
  if (group->length != st->group.length || memcmp(group->value, st->group.value, group->length))
    return;
  st->members_now = n_members;
  if (n_left && st->phase_active) {
    st->member_left = 1;
    fprintf(stderr, "cpg_bench[rank %u]: member (node %u, pid %u) left the group (reason %u)\n",
            st->o->rank, left[0].nodeid, left[0].pid, left[0].reason);
  }
}

/* Waits up to timeout_ms for events (0: just look), then dispatches all. */
static void pump(struct state* st, int timeout_ms) {
  if (!st->o->spin && timeout_ms > 0) {
    struct pollfd p = {.fd = st->fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) < 0 && errno != EINTR)
      die("poll on the cpg fd failed: %s", strerror(errno));
  }
  cs_error_t rc = cpg_dispatch(st->h, CS_DISPATCH_ALL);
  if (rc != CS_OK && rc != CS_ERR_TRY_AGAIN) die_cs("cpg_dispatch(CS_DISPATCH_ALL)", rc);
  if (st->member_left) die("a member left the group during phase %u; aborting", st->phase);
}

#define WAIT_UNTIL(st, cond, ...)                                                    \
  do {                                                                               \
    uint64_t deadline_ = now_ns() + (uint64_t)((st)->o->timeout_s * 1e9);            \
    while (!(cond)) {                                                                \
      if (now_ns() > deadline_) {                                                    \
        fprintf(stderr, "cpg_bench[rank %u]: timeout after %.0f s: ", (st)->o->rank, \
                (st)->o->timeout_s);                                                 \
        fprintf(stderr, __VA_ARGS__);                                                \
        fputc('\n', stderr);                                                         \
        exit(1);                                                                     \
      }                                                                              \
      pump((st), 20);                                                                \
    }                                                                                \
  } while (0)

static void send_msg(struct state* st, void* buf, size_t len, int zcb, cpg_guarantee_t g) {
  uint64_t deadline = 0;
  for (unsigned tries = 0;; tries++) {
    cs_error_t rc;
    if (zcb) {
      rc = cpg_zcb_mcast_joined(st->h, g, buf, len);
    } else {
      struct iovec iov = {.iov_base = buf, .iov_len = len};
      rc = cpg_mcast_joined(st->h, g, &iov, 1);
    }
    if (rc == CS_OK) return;
    if (rc != CS_ERR_TRY_AGAIN) die_cs(zcb ? "cpg_zcb_mcast_joined" : "cpg_mcast_joined", rc);
    st->try_again++;
    if (!deadline)
      deadline = now_ns() + (uint64_t)(st->o->timeout_s * 1e9);
    else if (now_ns() > deadline)
      die("%s kept returning CS_ERR_TRY_AGAIN for %.0f s (phase %u)",
          zcb ? "cpg_zcb_mcast_joined" : "cpg_mcast_joined", st->o->timeout_s, st->phase);
    /* First retry right after draining deliveries; then let the daemon run. */
    pump(st, tries ? 1 : 0);
  }
}

static void send_ctl(struct state* st, uint16_t type, uint32_t phase, uint64_t count) {
  uint8_t buf[64] = {0};
  struct msg_hdr m = {.magic = MSG_MAGIC,
                      .type = type,
                      .rank = (uint16_t)st->o->rank,
                      .phase = phase,
                      .len = sizeof(buf),
                      .ts_ns = now_ns(),
                      .count = count};
  memcpy(buf, &m, sizeof(m));
  send_msg(st, buf, sizeof(buf), 0, CPG_TYPE_AGREED);
}

static void barrier(struct state* st, uint32_t phase) {
  const struct opts* o = st->o;
  uint64_t all = st->all_ranks;
  WAIT_UNTIL(st, st->members_now >= o->members,
             "only %zu of %u members joined group '%s' (phase %u barrier)", st->members_now,
             o->members, o->group, phase);
  send_ctl(st, MSG_READY, phase, 0);
  WAIT_UNTIL(st, (st->ready[phase] & all) == all,
             "barrier of phase %u: READY from ranks mask 0x%" PRIx64 " of 0x%" PRIx64, phase,
             st->ready[phase], all);
}

static uint64_t scaled_count(const struct opts* o, uint64_t n, uint32_t size) {
  if (o->max_bytes && n * size > o->max_bytes) {
    n = o->max_bytes / size;
    if (n < 10) n = 10;
  }
  return n;
}

static void fill_payload(uint8_t* buf, uint32_t size) {
  for (uint32_t i = sizeof(struct msg_hdr); i < size; i++) buf[i] = (uint8_t)i;
}

static void report(struct state* st, uint32_t size, uint64_t per_sender, uint64_t t_start,
                   uint64_t t_send_end, struct samples* rtt, int* verify_failed);

static void run_phase(struct state* st, enum phase_kind kind, uint32_t size, int* verify_failed) {
  const struct opts* o = st->o;
  int sender = kind == PHASE_LATENCY ? o->rank == 0 : o->rank < o->senders;
  unsigned n_senders = kind == PHASE_LATENCY ? 1 : o->senders;
  uint64_t per_sender = kind == PHASE_LATENCY ? o->warmup + scaled_count(o, o->lat_iters, size)
                                              : scaled_count(o, o->count, size);

  /* Everything allocated before the barrier: the timed part only sends. */
  samples_free(&st->one_way);
  if (samples_init(&st->one_way, per_sender * n_senders))
    die("out of memory for %" PRIu64 " latency samples", per_sender * n_senders);
  struct samples rtt = {0};
  if (kind == PHASE_LATENCY && sender && samples_init(&rtt, per_sender))
    die("out of memory for %" PRIu64 " latency samples", per_sender);
  uint8_t* buf = NULL;
  if (sender) {
    if (o->zcb) {
      cs_error_t rc = cpg_zcb_alloc(st->h, size, (void**)&buf);
      if (rc != CS_OK) die("cpg_zcb_alloc(%u bytes) failed: %s (%d)", size, cs_name(rc), (int)rc);
    } else if (!(buf = malloc(size))) {
      die("out of memory for a %u-byte message", size);
    }
    fill_payload(buf, size);
  }
  st->kind = kind;
  st->done_mask = 0;
  memset(st->done_count, 0, sizeof(st->done_count));
  memset(st->next_seq, 0, sizeof(st->next_seq));
  st->delivered = st->fifo_errors = st->bad_payload = st->stray = 0;
  st->digest = 0xcbf29ce484222325ull;
  st->first_ns = st->last_ns = st->try_again = 0;
  st->awaited_seq = UINT64_MAX;
  st->phase_active = 1;

  barrier(st, st->phase);
  uint64_t t_start = st->ready_done_ns[st->phase], t_send_end = 0;
  if (sender) {
    struct msg_hdr m = {.magic = MSG_MAGIC,
                        .type = MSG_DATA,
                        .rank = (uint16_t)o->rank,
                        .phase = st->phase,
                        .len = size};
    for (uint64_t seq = 0; seq < per_sender; seq++) {
      m.seq = seq;
      buf[size - 1] = check_byte(seq, o->rank);
      if (kind == PHASE_LATENCY) {
        st->awaited_seq = seq;
        st->awaited_hit = 0;
      }
      m.ts_ns = now_ns();
      memcpy(buf, &m, sizeof(m));
      send_msg(st, buf, size, o->zcb, o->guarantee);
      if (kind == PHASE_LATENCY) {
        WAIT_UNTIL(st, st->awaited_hit, "own message %" PRIu64 " (%u bytes) not delivered back",
                   seq, size);
        if (seq >= o->warmup) samples_add(&rtt, st->own_ns - m.ts_ns);
      } else if ((seq & 15) == 15) {
        pump(st, 0);
      }
    }
    t_send_end = now_ns();
    send_ctl(st, MSG_DONE, st->phase, per_sender);
  }
  uint64_t want = n_senders == 64 ? ~0ull : (1ull << n_senders) - 1;
  WAIT_UNTIL(st, (st->done_mask & want) == want,
             "phase %u (%s, %u bytes): DONE from senders mask 0x%" PRIx64 " of 0x%" PRIx64
             ", %" PRIu64 " messages delivered",
             st->phase, kind == PHASE_LATENCY ? "latency" : "throughput", size, st->done_mask, want,
             st->delivered);
  st->phase_active = 0;
  report(st, size, per_sender, t_start, t_send_end, kind == PHASE_LATENCY && sender ? &rtt : NULL,
         verify_failed);
  samples_free(&rtt);
  if (buf) {
    if (o->zcb) {
      cs_error_t rc = cpg_zcb_free(st->h, buf);
      if (rc != CS_OK) die_cs("cpg_zcb_free", rc);
    } else {
      free(buf);
    }
  }
  st->phase++;
}

static void report(struct state* st, uint32_t size, uint64_t per_sender, uint64_t t_start,
                   uint64_t t_send_end, struct samples* rtt, int* verify_failed) {
  const struct opts* o = st->o;
  int lat = st->kind == PHASE_LATENCY;
  unsigned n_senders = lat ? 1 : o->senders;
  uint64_t expected = 0;
  for (unsigned r = 0; r < n_senders; r++) expected += st->done_count[r];
  uint64_t lost = expected > st->delivered ? expected - st->delivered : 0;
  uint64_t dup = st->delivered > expected ? st->delivered - expected : 0;
  int bad = lost || dup || st->fifo_errors || st->bad_payload || st->stray;
  if (bad) *verify_failed = 1;

  struct lat_summary ow, rt;
  samples_summarize(&st->one_way, &ow);
  if (rtt) samples_summarize(rtt, &rt);
  double recv_s = st->last_ns > t_start ? (double)(st->last_ns - t_start) / 1e9 : 0;
  double send_s = t_send_end > t_start ? (double)(t_send_end - t_start) / 1e9 : 0;
  double recv_mps = recv_s > 0 ? (double)st->delivered / recv_s : 0;
  double send_mps = send_s > 0 ? (double)per_sender / send_s : 0;
  int sender = t_send_end != 0;

  struct jbuf b;
  jb_init(&b);
  jb_str(&b, "tool", "cpg_bench");
  jb_str(&b, "impl", o->impl);
  jb_str(&b, "setup", o->setup);
  jb_str(&b, "run", o->run);
  jb_str(&b, "test", lat ? "latency" : "throughput");
  jb_str(&b, "api", o->zcb ? "zcb" : "iovec");
  jb_str(&b, "guarantee", o->guarantee_name);
  jb_int(&b, "size", size);
  jb_int(&b, "fragmented", size > st->max_atomic);
  jb_int(&b, "members", o->members);
  jb_int(&b, "senders", n_senders);
  jb_int(&b, "rank", o->rank);
  jb_int(&b, "nodeid", st->nodeid);
  jb_int(&b, "pid", getpid());
  jb_str(&b, "role", sender ? "sender" : "receiver");
  jb_int(&b, "phase", st->phase);
  jb_int(&b, "count_per_sender", (long long)per_sender);
  if (lat) jb_int(&b, "warmup", (long long)o->warmup);
  if (sender) {
    jb_num(&b, "send_s", send_s);
    jb_num(&b, "send_msgs_per_s", send_mps);
    jb_num(&b, "send_mb_per_s", send_mps * size / 1e6);
    jb_int(&b, "try_again", (long long)st->try_again);
  }
  jb_int(&b, "delivered", (long long)st->delivered);
  jb_num(&b, "recv_s", recv_s);
  jb_num(&b, "recv_msgs_per_s", recv_mps);
  jb_num(&b, "recv_mb_per_s", recv_mps * size / 1e6);
  jb_int(&b, "lost", (long long)lost);
  jb_int(&b, "duplicates", (long long)dup);
  jb_int(&b, "fifo_errors", (long long)st->fifo_errors);
  jb_int(&b, "bad_payload", (long long)st->bad_payload);
  jb_int(&b, "stray", (long long)st->stray);
  jb_raw(&b, "\"order_digest\":\"%016" PRIx64 "\",", st->digest);
  jb_int(&b, "ok", !bad);
  if (rtt) jb_latency(&b, "rtt", rtt, &rt);
  jb_latency(&b, "one_way", &st->one_way, &ow);
  jb_close(&b);
  if (b.oom) die("out of memory formatting the JSON result");
  if (o->json) {
    int fd = open(o->json, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    /* One write per object: concurrent members append whole lines. */
    if (fd < 0 || write(fd, b.p, b.len) != (ssize_t)b.len)
      die("cannot append to %s: %s", o->json, strerror(errno));
    close(fd);
  }
  jb_free(&b);

  char line[512];
  int n = snprintf(line, sizeof(line), "[%s %s] rank %u %-10s %7u B %-5s", o->impl, o->setup,
                   o->rank, lat ? "latency" : "throughput", size, o->zcb ? "zcb" : "iovec");
  if (rtt)
    n += snprintf(line + n, sizeof(line) - (size_t)n,
                  " | rtt p50 %.1f p99 %.1f p999 %.1f min %.1f max %.1f us", rt.p50, rt.p99,
                  rt.p999, rt.min, rt.max);
  if (sender && !lat)
    n += snprintf(line + n, sizeof(line) - (size_t)n,
                  " | send %.0f msg/s %.1f MB/s TRY_AGAIN %" PRIu64, send_mps,
                  send_mps * size / 1e6, st->try_again);
  if (!lat)
    n += snprintf(line + n, sizeof(line) - (size_t)n, " | recv %.0f msg/s %.1f MB/s", recv_mps,
                  recv_mps * size / 1e6);
  n += snprintf(line + n, sizeof(line) - (size_t)n,
                " | one-way p50 %.1f p99 %.1f us | order %016" PRIx64 " n=%" PRIu64, ow.p50, ow.p99,
                st->digest, st->delivered);
  if (bad)
    snprintf(line + n, sizeof(line) - (size_t)n,
             " | FAILED lost %" PRIu64 " dup %" PRIu64 " fifo %" PRIu64 " payload %" PRIu64
             " stray %" PRIu64,
             lost, dup, st->fifo_errors, st->bad_payload, st->stray);
  printf("%s\n", line);
  fflush(stdout);
}

/* ------------------------------------------------------------ options */

static void usage(FILE* f) {
  fprintf(f,
          "usage: cpg_bench [options]\n"
          "  --members N        processes in the group (default 1)\n"
          "  --rank R           this process's rank, 0..N-1 (default 0)\n"
          "  --senders K        throughput: ranks 0..K-1 send (default 1)\n"
          "  --lat-sizes LIST   latency phases, bytes (default 64,1024,16384,65536,1047552;\n"
          "                     'none' skips)\n"
          "  --tput-sizes LIST  throughput phases (default 64,1024,16384,65536,1047552)\n"
          "  --lat-iters N      latency messages per size (default 1000) plus --warmup (10)\n"
          "  --count N          throughput messages per sender and size (default 20000)\n"
          "  --max-bytes B      cap count*size per phase at B (at least 10 messages)\n"
          "  --zcb              send with cpg_zcb_alloc + cpg_zcb_mcast_joined\n"
          "  --guarantee G      agreed|fifo|safe|unordered (default agreed)\n"
          "  --spin             dispatch in a loop instead of poll() on the cpg fd\n"
          "  --group NAME       CPG group (default cpg_bench)\n"
          "  --json FILE        append one JSON object per phase\n"
          "  --impl NAME        label for the implementation (default unknown)\n"
          "  --setup NAME       label for the setup (default unknown)\n"
          "  --run NAME         label shared by the members of one run (default: the group)\n"
          "  --timeout S        give up on any wait after S seconds (default 60)\n");
}

static unsigned parse_sizes(const char* arg, uint32_t* out, const char* opt) {
  if (!strcmp(arg, "none") || !*arg) return 0;
  unsigned n = 0;
  const char* p = arg;
  while (*p) {
    char* end;
    errno = 0;
    unsigned long v = strtoul(p, &end, 10);
    if (end == p || errno || (*end && *end != ','))
      die_usage("%s: '%s' is not a comma-separated list of byte counts", opt, arg);
    if (v < 64 || v > (1ul << 30))
      die_usage("%s: %lu is out of range (64 .. 1073741824 bytes)", opt, v);
    if (n == MAX_SIZES) die_usage("%s: at most %d sizes", opt, MAX_SIZES);
    out[n++] = (uint32_t)v;
    p = *end ? end + 1 : end;
  }
  return n;
}

static uint64_t parse_u64(const char* arg, const char* opt, uint64_t lo, uint64_t hi) {
  char* end;
  errno = 0;
  unsigned long long v = strtoull(arg, &end, 10);
  if (end == arg || *end || errno || v < lo || v > hi)
    die_usage("%s: '%s' is not a number in %" PRIu64 "..%" PRIu64, opt, arg, lo, hi);
  return v;
}

static void parse_opts(int argc, char** argv, struct opts* o) {
  enum {
    O_MEMBERS = 256,
    O_RANK,
    O_SENDERS,
    O_LAT_SIZES,
    O_TPUT_SIZES,
    O_LAT_ITERS,
    O_WARMUP,
    O_COUNT,
    O_MAX_BYTES,
    O_ZCB,
    O_GUARANTEE,
    O_SPIN,
    O_GROUP,
    O_JSON,
    O_IMPL,
    O_SETUP,
    O_RUN,
    O_TIMEOUT,
    O_HELP
  };
  static const struct option longopts[] = {{"members", 1, 0, O_MEMBERS},
                                           {"rank", 1, 0, O_RANK},
                                           {"senders", 1, 0, O_SENDERS},
                                           {"lat-sizes", 1, 0, O_LAT_SIZES},
                                           {"tput-sizes", 1, 0, O_TPUT_SIZES},
                                           {"lat-iters", 1, 0, O_LAT_ITERS},
                                           {"warmup", 1, 0, O_WARMUP},
                                           {"count", 1, 0, O_COUNT},
                                           {"max-bytes", 1, 0, O_MAX_BYTES},
                                           {"zcb", 0, 0, O_ZCB},
                                           {"guarantee", 1, 0, O_GUARANTEE},
                                           {"spin", 0, 0, O_SPIN},
                                           {"group", 1, 0, O_GROUP},
                                           {"json", 1, 0, O_JSON},
                                           {"impl", 1, 0, O_IMPL},
                                           {"setup", 1, 0, O_SETUP},
                                           {"run", 1, 0, O_RUN},
                                           {"timeout", 1, 0, O_TIMEOUT},
                                           {"help", 0, 0, O_HELP},
                                           {0, 0, 0, 0}};
  *o = (struct opts){.members = 1,
                     .senders = 1,
                     .lat_iters = 1000,
                     .warmup = 10,
                     .count = 20000,
                     .guarantee = CPG_TYPE_AGREED,
                     .guarantee_name = "agreed",
                     .group = "cpg_bench",
                     .impl = "unknown",
                     .setup = "unknown",
                     .timeout_s = 60};
  const char* defaults = "64,1024,16384,65536,1047552";
  o->n_lat = parse_sizes(defaults, o->lat_sizes, "--lat-sizes");
  o->n_tput = parse_sizes(defaults, o->tput_sizes, "--tput-sizes");
  int c;
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (c) {
      case O_MEMBERS:
        o->members = (unsigned)parse_u64(optarg, "--members", 1, MAX_MEMBERS);
        break;
      case O_RANK:
        o->rank = (unsigned)parse_u64(optarg, "--rank", 0, MAX_MEMBERS - 1);
        break;
      case O_SENDERS:
        o->senders = (unsigned)parse_u64(optarg, "--senders", 1, MAX_MEMBERS);
        break;
      case O_LAT_SIZES:
        o->n_lat = parse_sizes(optarg, o->lat_sizes, "--lat-sizes");
        break;
      case O_TPUT_SIZES:
        o->n_tput = parse_sizes(optarg, o->tput_sizes, "--tput-sizes");
        break;
      case O_LAT_ITERS:
        o->lat_iters = parse_u64(optarg, "--lat-iters", 1, 100000000);
        break;
      case O_WARMUP:
        o->warmup = parse_u64(optarg, "--warmup", 0, 1000000);
        break;
      case O_COUNT:
        o->count = parse_u64(optarg, "--count", 1, 1000000000);
        break;
      case O_MAX_BYTES:
        o->max_bytes = parse_u64(optarg, "--max-bytes", 1, UINT64_MAX / 2);
        break;
      case O_ZCB:
        o->zcb = 1;
        break;
      case O_SPIN:
        o->spin = 1;
        break;
      case O_GROUP:
        o->group = optarg;
        break;
      case O_JSON:
        o->json = optarg;
        break;
      case O_IMPL:
        o->impl = optarg;
        break;
      case O_SETUP:
        o->setup = optarg;
        break;
      case O_RUN:
        o->run = optarg;
        break;
      case O_TIMEOUT:
        o->timeout_s = (double)parse_u64(optarg, "--timeout", 1, 86400);
        break;
      case O_GUARANTEE:
        o->guarantee_name = optarg;
        if (!strcmp(optarg, "agreed"))
          o->guarantee = CPG_TYPE_AGREED;
        else if (!strcmp(optarg, "fifo"))
          o->guarantee = CPG_TYPE_FIFO;
        else if (!strcmp(optarg, "safe"))
          o->guarantee = CPG_TYPE_SAFE;
        else if (!strcmp(optarg, "unordered"))
          o->guarantee = CPG_TYPE_UNORDERED;
        else
          die_usage("--guarantee: '%s' is not agreed, fifo, safe or unordered", optarg);
        break;
      case O_HELP:
        usage(stdout);
        exit(0);
      default:
        usage(stderr);
        exit(2);
    }
  }
  if (optind < argc) {
    fprintf(stderr, "cpg_bench: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    exit(2);
  }
  if (!o->run) o->run = o->group;
  if (o->rank >= o->members) die_usage("--rank %u must be below --members %u", o->rank, o->members);
  if (o->senders > o->members)
    die_usage("--senders %u exceeds --members %u", o->senders, o->members);
  if (strlen(o->group) > CPG_MAX_NAME_LENGTH)
    die_usage("--group: '%s' is longer than %d bytes", o->group, CPG_MAX_NAME_LENGTH);
  if (!o->n_lat && !o->n_tput)
    die_usage("nothing to do: both --lat-sizes and --tput-sizes are 'none'");
  if ((o->lat_iters + o->warmup) * (o->n_lat ? 1 : 0) > 100000000 ||
      o->count * o->senders > 200000000)
    die_usage("too many messages per phase for the latency sample buffers");
}

int main(int argc, char** argv) {
  struct opts o;
  parse_opts(argc, argv, &o);
  g_rank = o.rank;
  struct state st = {.o = &o, .all_ranks = o.members == 64 ? ~0ull : (1ull << o.members) - 1};
  g_st = &st;
  st.group.length = (uint32_t)strlen(o.group);
  memcpy(st.group.value, o.group, st.group.length);

  cpg_model_v1_data_t model = {
      .model = CPG_MODEL_V1, .cpg_deliver_fn = deliver_cb, .cpg_confchg_fn = confchg_cb};
  cs_error_t rc = cpg_model_initialize(&st.h, CPG_MODEL_V1, (cpg_model_data_t*)&model, NULL);
  if (rc != CS_OK)
    die("cpg_model_initialize failed: %s (%d) (is the CPG daemon running and reachable?)",
        cs_name(rc), (int)rc);
  if ((rc = cpg_fd_get(st.h, &st.fd)) != CS_OK) die_cs("cpg_fd_get", rc);
  if ((rc = cpg_local_get(st.h, &st.nodeid)) != CS_OK) die_cs("cpg_local_get", rc);
  uint32_t max_atomic = 0;
  if ((rc = cpg_max_atomic_msgsize_get(st.h, &max_atomic)) != CS_OK)
    die_cs("cpg_max_atomic_msgsize_get", rc);
  st.max_atomic = max_atomic;
  uint64_t deadline = now_ns() + (uint64_t)(o.timeout_s * 1e9);
  while ((rc = cpg_join(st.h, &st.group)) == CS_ERR_TRY_AGAIN && now_ns() < deadline) usleep(10000);
  if (rc != CS_OK) die_cs("cpg_join", rc);
  printf("cpg_bench: rank %u/%u node %u pid %d group '%s' max atomic %u B, %s, %s\n", o.rank,
         o.members, st.nodeid, (int)getpid(), o.group, max_atomic,
         o.zcb ? "cpg_zcb_mcast_joined" : "cpg_mcast_joined", o.guarantee_name);
  fflush(stdout);

  int verify_failed = 0;
  for (unsigned i = 0; i < o.n_lat; i++)
    run_phase(&st, PHASE_LATENCY, o.lat_sizes[i], &verify_failed);
  for (unsigned i = 0; i < o.n_tput; i++)
    run_phase(&st, PHASE_THROUGHPUT, o.tput_sizes[i], &verify_failed);
  /* Nobody leaves while another member still waits for its last messages. */
  barrier(&st, st.phase);

  if ((rc = cpg_leave(st.h, &st.group)) != CS_OK) die_cs("cpg_leave", rc);
  if ((rc = cpg_finalize(st.h)) != CS_OK) die_cs("cpg_finalize", rc);
  samples_free(&st.one_way);
  if (st.foreign)
    fprintf(stderr, "cpg_bench[rank %u]: ignored %" PRIu64 " messages not from cpg_bench\n", o.rank,
            st.foreign);
  if (verify_failed) {
    fprintf(stderr, "cpg_bench[rank %u]: verification FAILED (see FAILED lines)\n", o.rank);
    return 3;
  }
  return 0;
}
