/* fault_client: a CPG client that keeps a group busy and writes down what it
 * saw, for the fault runs (scripts/fault-runs) and the history checker
 * (rcpg-check-history).
 *
 * It joins one group with cpg_model_initialize (totem confchgs on, including
 * the view at join), multicasts numbered messages at a steady rate (or as
 * fast as the API takes them), retries CS_ERR_TRY_AGAIN, and writes a
 * history file:
 *
 *   H <name>                first line
 *   V <view> <m1> <m2> ...  totem confchg: ring id seq, member node ids (from
 *                           the one at the client's own join on)
 *   F                       the next V starts a fresh history: this node
 *                           was cut off and is back (see below), or the
 *                           client reconnected to a restarted daemon
 *   M <origin> <seq> [u|f]  delivered message; " u" for UNORDERED, " f" for
 *                           FIFO (outside the total order: either may overtake
 *                           a SAFE message that waits for stability; FIFO
 *                           keeps its sender's order)
 *   S <origin> <seq>        own send accepted by cpg_mcast_joined
 *
 * origin is "n<nodeid>:<pid>" of the sender, taken from the payload (and
 * checked against the deliver callback's nodeid/pid). The harness appends
 * "X" when it killed the client (or its daemon).
 *
 * A side file (--times, default <history>.times) gets one line per
 * membership event with both clocks, so the harness can time failovers
 * against its own CLOCK_REALTIME stamps and the daemons' logs:
 *   <mono_ns> <real_ns> start <origin>
 *   <mono_ns> <real_ns> V <view> <m1> ...
 *   <mono_ns> <real_ns> C <group members> left <n:p:reason>,... joined <n:p:reason>,...
 *   <mono_ns> <real_ns> M1 <view> <origin> <seq>    first delivery after a V
 *   <mono_ns> <real_ns> S1 <view> <seq>             first accepted send after a V
 *   <mono_ns> <real_ns> lost <cs error>             daemon connection broken
 *   <mono_ns> <real_ns> end sent <n> delivered <n> own <n> try_again <n> bad <n>
 *
 * Fresh histories. CPG does not say "your node was cut off", but rcpgd shows
 * it the way Corosync's minority side does: every remote member leaves with
 * NODEDOWN in one confchg (when the node loses the quorum, or at the view
 * that takes it back), and they come back with NODEUP. So after a confchg
 * that leaves no remote member, all gone with NODEDOWN, the client writes F
 * before every V until a confchg shows a remote member again: the others
 * come back at rcpgd's merge point (the join-list sync, in the middle of a
 * view, perhaps several views later), and this node delivers nothing of
 * theirs before it. Where that was not a cut (every other node that had
 * members failed, or the quorum was lost and regained without a new view)
 * the F only makes the checker more lenient with this history; with members
 * on at least two other nodes and a majority quorum (the fault runs) a
 * failure that leaves a node in the view cannot drop all remote members.
 *
 * Stopping: SIGTERM/SIGINT (or --duration / --count) stops sending; the
 * client then waits up to --drain seconds until its own messages came back,
 * leaves the group, waits for its own leave confchg and finalizes.
 *
 * Exit: 0 clean stop; 1 API failure; 2 usage; 3 the daemon connection broke
 * (history ends there); 4 a delivered message failed verification; 5 own
 * messages still missing when the drain time ran out. */

#include <corosync/cpg.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "client_options.h"
#include "history_writer.h"

struct client {
  const struct opts* o;
  cpg_handle_t h;
  int fd;
  struct cpg_name group;
  unsigned nodeid, pid;
  char origin[32];
  struct history hist;
  /* counters */
  uint64_t next_seq; /* next seq to send, from 1 */
  uint64_t sent, delivered, own_delivered, try_again, bad;
  /* sent / own_delivered when the current connection began: after a
   * reconnect only this connection's messages can still come back. */
  uint64_t sent_base, own_base;
  uint64_t views;
  /* the last view (M1/S1 lines, repeated views) */
  uint64_t view_seq;
  char view_list[4096];
  int first_delivery_pending, first_send_pending;
  /* Since the last totem view a confchg left no remote member, all gone
   * with NODEDOWN (see "Fresh histories"). */
  int cut;
  /* set when our own leave confchg arrived */
  int left;
  int joined;
};

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) {
  (void)sig;
  g_stop = 1;
}

static struct client* g_client; /* for the callbacks */

static void client_warn(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
static void client_warn(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "fault_client[%s]: ", g_client ? g_client->o->name : "?");
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static uint64_t clock_ns(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* One line in the times file, prefixed with both clocks. */
static void stamp(struct client* c, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static void stamp(struct client* c, const char* fmt, ...) {
  char line[4096];
  size_t cap = sizeof(line) - 1; /* room for the newline */
  int n = snprintf(line, cap, "%" PRIu64 " %" PRIu64 " ", clock_ns(CLOCK_MONOTONIC),
                   clock_ns(CLOCK_REALTIME));
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line + n, cap - (size_t)n, fmt, ap);
  va_end(ap);
  size_t len = strlen(line);
  line[len++] = '\n';
  history_times(&c->hist, line, len);
}

static const char* guarantee_letter(int g) {
  switch (g) {
    case CPG_TYPE_UNORDERED:
      return "U";
    case CPG_TYPE_FIFO:
      return "F";
    case CPG_TYPE_AGREED:
      return "A";
    case CPG_TYPE_SAFE:
      return "S";
  }
  return "?";
}

static int letter_guarantee(char l) {
  switch (l) {
    case 'U':
      return CPG_TYPE_UNORDERED;
    case 'F':
      return CPG_TYPE_FIFO;
    case 'A':
      return CPG_TYPE_AGREED;
    case 'S':
      return CPG_TYPE_SAFE;
  }
  return -1;
}

/* --guarantee mix: every guarantee, AGREED and SAFE twice as often as the
 * others, in an order that puts UNORDERED/FIFO right behind SAFE messages
 * (where they may overtake). */
static int guarantee_for(const struct opts* o, uint64_t seq) {
  static const int mix[] = {CPG_TYPE_AGREED, CPG_TYPE_SAFE,      CPG_TYPE_FIFO,
                            CPG_TYPE_AGREED, CPG_TYPE_UNORDERED, CPG_TYPE_SAFE};
  if (o->guarantee >= 0) return o->guarantee;
  return mix[seq % (sizeof(mix) / sizeof(mix[0]))];
}

static uint8_t fill_byte(uint64_t seq, size_t i) {
  return (uint8_t)(seq * 131u + i * 7u + 1u);
}

static size_t make_payload(const struct client* c, uint64_t seq, int g, uint8_t* buf) {
  memset(buf, 0, HEADER_MAX);
  snprintf((char*)buf, HEADER_MAX, "%s %" PRIu64 " %s", c->origin, seq, guarantee_letter(g));
  for (size_t i = HEADER_MAX; i < c->o->size; i++) buf[i] = fill_byte(seq, i);
  return c->o->size;
}

/* ---------------------------------------------------------------- callbacks */

static void on_deliver(cpg_handle_t handle, const struct cpg_name* group, uint32_t nodeid,
                       uint32_t pid, void* msg, size_t len) {
  (void)handle;
  (void)group;
  struct client* c = g_client;
  const uint8_t* p = msg;
  char origin[32];
  uint64_t seq;
  char g;
  unsigned on, op;
  int ok = len >= HEADER_MAX && memchr(p, 0, HEADER_MAX) != NULL &&
           sscanf((const char*)p, "n%u:%u %" SCNu64 " %c", &on, &op, &seq, &g) == 4 &&
           letter_guarantee(g) >= 0 && on == nodeid && op == pid;
  for (size_t i = HEADER_MAX; ok && i < len; i++) ok = p[i] == fill_byte(seq, i);
  if (!ok) {
    c->bad++;
    client_warn("bad message from node %u pid %u (%zu bytes): \"%.40s\"", nodeid, pid, len,
                memchr(p, 0, len < HEADER_MAX ? len : HEADER_MAX) ? (const char*)p : "(no header)");
    return;
  }
  snprintf(origin, sizeof(origin), "n%u:%u", on, op);
  int g_int = letter_guarantee(g);
  const char* mark = g_int == CPG_TYPE_UNORDERED ? " u" : g_int == CPG_TYPE_FIFO ? " f" : "";
  history_linef(&c->hist, "M %s %" PRIu64 "%s\n", origin, seq, mark);
  c->delivered++;
  if (on == c->nodeid && op == c->pid) c->own_delivered++;
  if (c->first_delivery_pending) {
    c->first_delivery_pending = 0;
    stamp(c, "M1 %" PRIu64 " %s %" PRIu64, c->view_seq, origin, seq);
  }
}

static const char* reason_name(uint32_t r) {
  switch (r) {
    case CPG_REASON_JOIN:
      return "JOIN";
    case CPG_REASON_LEAVE:
      return "LEAVE";
    case CPG_REASON_NODEDOWN:
      return "NODEDOWN";
    case CPG_REASON_NODEUP:
      return "NODEUP";
    case CPG_REASON_PROCDOWN:
      return "PROCDOWN";
  }
  return "?";
}

static void list_addrs(char* out, size_t cap, const struct cpg_address* a, size_t n) {
  size_t used = 0;
  out[0] = '-';
  out[1] = 0;
  for (size_t i = 0; i < n && used + 48 < cap; i++)
    used += (size_t)snprintf(out + used, cap - used, "%sn%u:%u:%s", i ? "," : "", a[i].nodeid,
                             a[i].pid, reason_name(a[i].reason));
}

static void on_confchg(cpg_handle_t handle, const struct cpg_name* group,
                       const struct cpg_address* members, size_t n_members,
                       const struct cpg_address* left, size_t n_left,
                       const struct cpg_address* joined, size_t n_joined) {
  (void)handle;
  (void)group;
  struct client* c = g_client;
  char l[2048], j[2048];
  list_addrs(l, sizeof(l), left, n_left);
  list_addrs(j, sizeof(j), joined, n_joined);
  stamp(c, "C %zu left %s joined %s", n_members, l, j);
  for (size_t i = 0; i < n_left; i++)
    if (left[i].nodeid == c->nodeid && left[i].pid == c->pid) c->left = 1;
  /* Every remote member gone with NODEDOWN, none left: this node was cut
   * off (or the only other node with members went away). */
  size_t remote_nodedown = 0;
  int remote_left_otherwise = 0, remote_remaining = 0;
  for (size_t i = 0; i < n_left; i++) {
    if (left[i].nodeid == c->nodeid) continue;
    if (left[i].reason == CPG_REASON_NODEDOWN)
      remote_nodedown++;
    else
      remote_left_otherwise = 1;
  }
  for (size_t i = 0; i < n_members; i++) remote_remaining |= members[i].nodeid != c->nodeid;
  if (remote_nodedown > 0 && !remote_left_otherwise && !remote_remaining) {
    c->cut = 1;
    stamp(c, "cut");
  } else if (c->cut && remote_remaining) {
    /* The others are back (NODEUP at rcpgd's merge point): from here on
     * this history continues. Until then every view starts it afresh:
     * views may come and go before the merge point, and what the daemon
     * delivers starts only there (in the middle of the view). */
    c->cut = 0;
  }
  for (size_t i = 0; i < n_joined; i++)
    if (joined[i].nodeid == c->nodeid && joined[i].pid == c->pid) c->joined = 1;
}

static void on_totem(cpg_handle_t handle, struct cpg_ring_id ring_id, uint32_t n,
                     const uint32_t* members) {
  (void)handle;
  struct client* c = g_client;
  char list[4096];
  size_t used = 0;
  list[0] = 0;
  int fresh = c->cut;
  for (uint32_t i = 0; i < n && used + 16 < sizeof(list); i++)
    used += (size_t)snprintf(list + used, sizeof(list) - used, " %u", members[i]);
  /* A connected client gets totem confchgs before it is a member of the
   * group; its history starts at its join, with the view the daemon gives
   * it then (CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF). A V written earlier
   * would claim the client saw that view from its beginning. */
  if (!c->joined) {
    stamp(c, "Vpre %" PRIu64 "%s", ring_id.seq, list);
    return;
  }
  /* The view at join (CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF) repeats the
   * ring a client connected before joining was already told about, as on
   * Corosync: the same view once more is no event. */
  if (c->views > 0 && ring_id.seq == c->view_seq && strcmp(list, c->view_list) == 0) {
    stamp(c, "Vsame %" PRIu64, ring_id.seq);
    return;
  }
  snprintf(c->view_list, sizeof(c->view_list), "%s", list);
  if (fresh) {
    history_linef(&c->hist, "F\n");
    stamp(c, "fresh");
    /* Own messages from before the cut may be lost for good. */
    c->sent_base = c->sent;
    c->own_base = c->own_delivered;
  }
  history_linef(&c->hist, "V %" PRIu64 "%s\n", ring_id.seq, list);
  stamp(c, "V %" PRIu64 "%s", ring_id.seq, list);
  c->views++;
  c->view_seq = ring_id.seq;
  c->first_delivery_pending = 1;
  c->first_send_pending = 1;
}

/* ---------------------------------------------------------------- connection */

static cs_error_t connect_and_join(struct client* c) {
  cpg_model_v1_data_t model = {
      .model = CPG_MODEL_V1,
      .cpg_deliver_fn = on_deliver,
      .cpg_confchg_fn = on_confchg,
      .cpg_totem_confchg_fn = on_totem,
      .flags = CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
  };
  cs_error_t rc = cpg_model_initialize(&c->h, CPG_MODEL_V1, (cpg_model_data_t*)&model, NULL);
  if (rc != CS_OK) return rc;
  unsigned nodeid = 0;
  if ((rc = cpg_local_get(c->h, &nodeid)) != CS_OK || (rc = cpg_fd_get(c->h, &c->fd)) != CS_OK) {
    cpg_finalize(c->h);
    return rc;
  }
  if (c->nodeid != 0 && nodeid != c->nodeid)
    client_warn("the daemon now says node %u (was %u)", nodeid, c->nodeid);
  c->nodeid = nodeid;
  snprintf(c->origin, sizeof(c->origin), "n%u:%u", c->nodeid, c->pid);
  c->left = c->joined = 0;
  for (;;) {
    rc = cpg_join(c->h, &c->group);
    if (rc != CS_ERR_TRY_AGAIN) break;
    usleep(10000);
  }
  if (rc != CS_OK) cpg_finalize(c->h);
  return rc;
}

static int lost_connection(cs_error_t rc) {
  return rc == CS_ERR_LIBRARY || rc == CS_ERR_BAD_HANDLE || rc == CS_ERR_NOT_EXIST;
}

/* After the daemon connection broke: with --reconnect, connect again (the
 * daemon may be restarting) and start a fresh history. Returns 1 when
 * connected again. */
static int reconnect(struct client* c) {
  cpg_finalize(c->h);
  if (c->o->reconnect_s <= 0) return 0;
  uint64_t deadline = clock_ns(CLOCK_MONOTONIC) + (uint64_t)(c->o->reconnect_s * 1e9);
  while (!g_stop && clock_ns(CLOCK_MONOTONIC) < deadline) {
    if (connect_and_join(c) == CS_OK) {
      c->sent_base = c->sent;
      c->own_base = c->own_delivered;
      history_linef(&c->hist, "F\n");
      stamp(c, "reconnected %s", c->origin);
      return 1;
    }
    usleep(50000);
  }
  return 0;
}

/* Runs callbacks for everything pending; waits up to timeout_ns for the fd
 * first. Returns CS_OK or the error that broke the connection. */
static cs_error_t pump(struct client* c, int64_t timeout_ns) {
  if (timeout_ns > 0) {
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    struct timespec ts = {.tv_sec = timeout_ns / 1000000000, .tv_nsec = timeout_ns % 1000000000};
    if (ppoll(&p, 1, &ts, NULL) < 0 && errno != EINTR) {
      client_warn("poll: %s", strerror(errno));
      return CS_ERR_LIBRARY;
    }
  }
  cs_error_t rc = cpg_dispatch(c->h, CS_DISPATCH_ALL);
  history_flush(&c->hist);
  return rc == CS_ERR_TRY_AGAIN ? CS_OK : rc;
}

/* ---------------------------------------------------------------- main loop */

/* Sends what is due at `now`; returns 0, or a connection error. Stops at the
 * first CS_ERR_TRY_AGAIN (the caller dispatches and comes back). */
static cs_error_t send_due(struct client* c, uint64_t* start_ns, uint64_t now, int* blocked) {
  static uint8_t buf[MAX_SIZE];
  const struct opts* o = c->o;
  uint64_t due = c->sent + 1024;
  if (o->rate > 0) {
    /* The schedule is start + k/rate; after a stall (no quorum, a view
     * change) at most 100 ms worth is caught up, then the schedule moves. */
    due = (uint64_t)((double)(now - *start_ns) * 1e-9 * o->rate) + 1;
    uint64_t backlog = (uint64_t)(o->rate / 10) + 1;
    if (due > c->sent + backlog) {
      *start_ns += (uint64_t)((double)(due - c->sent - backlog) / o->rate * 1e9);
      due = c->sent + backlog;
    }
  }
  if (o->count && due > o->count) due = o->count;
  *blocked = 0;
  while (c->sent < due && !g_stop) {
    if (o->window && (c->sent - c->sent_base) - (c->own_delivered - c->own_base) >= o->window) {
      *blocked = 1; /* wait for our own deliveries */
      return CS_OK;
    }
    uint64_t seq = c->next_seq;
    int g = guarantee_for(o, seq);
    struct iovec iov = {.iov_base = buf, .iov_len = make_payload(c, seq, g, buf)};
    cs_error_t rc = cpg_mcast_joined(c->h, (cpg_guarantee_t)g, &iov, 1);
    if (rc == CS_ERR_TRY_AGAIN) {
      c->try_again++;
      *blocked = 1;
      return CS_OK;
    }
    if (rc != CS_OK) return rc;
    history_linef(&c->hist, "S %s %" PRIu64 "\n", c->origin, seq);
    if (c->first_send_pending) {
      c->first_send_pending = 0;
      stamp(c, "S1 %" PRIu64 " %" PRIu64, c->view_seq, seq);
    }
    c->next_seq++;
    c->sent++;
  }
  return CS_OK;
}

int main(int argc, char** argv) {
  struct opts o;
  parse_opts(argc, argv, &o);
  struct client c = {.o = &o, .pid = (unsigned)getpid(), .next_seq = 1};
  g_client = &c;
  char times_path[4096];
  if (!o.times) {
    snprintf(times_path, sizeof(times_path), "%s.times", o.history);
    o.times = times_path;
  }
  if (history_open(&c.hist, o.history, o.times) != 0) {
    client_warn("cannot create %s or %s: %s", o.history, o.times, strerror(errno));
    return EXIT_API;
  }
  c.group.length = (uint32_t)strlen(o.group);
  memcpy(c.group.value, o.group, c.group.length);

  struct sigaction sa = {.sa_handler = on_signal};
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  history_linef(&c.hist, "H %s\n", o.name);
  cs_error_t rc = connect_and_join(&c);
  if (rc != CS_OK) {
    client_warn("cannot connect and join group '%s': error %d", o.group, (int)rc);
    history_close(&c.hist);
    return lost_connection(rc) ? EXIT_DAEMON_GONE : EXIT_API;
  }
  stamp(&c, "start %s", c.origin);

  int status = EXIT_CLEAN;
  uint64_t start_ns = clock_ns(CLOCK_MONOTONIC);
  uint64_t stop_at = o.duration > 0 ? start_ns + (uint64_t)(o.duration * 1e9) : UINT64_MAX;
  const int64_t interval = o.rate > 0 ? (int64_t)(1e9 / o.rate) : 0;
  for (;;) {
    uint64_t now = clock_ns(CLOCK_MONOTONIC);
    if (now >= stop_at || (o.count && c.sent >= o.count)) g_stop = 1;
    if (g_stop) break;
    int blocked = 0;
    /* Nothing is sent before our own join confchg: until then the daemon
     * would refuse mcasts anyway. */
    rc = c.joined ? send_due(&c, &start_ns, now, &blocked) : CS_OK;
    int64_t wait = blocked ? 1000000 : interval;
    if (rc == CS_OK) rc = pump(&c, !c.joined ? 5000000 : wait);
    if (rc != CS_OK) {
      stamp(&c, "lost %d", (int)rc);
      history_flush(&c.hist);
      if (!lost_connection(rc)) {
        client_warn("CPG call failed: error %d", (int)rc);
        status = EXIT_API;
        goto out;
      }
      if (!reconnect(&c)) {
        client_warn("the daemon connection broke (error %d)", (int)rc);
        status = EXIT_DAEMON_GONE;
        goto out;
      }
    }
  }

  /* Drain: our own messages come back to us too (CPG delivers to the
   * sender); once they have, everything we sent is in the group's order. */
  uint64_t drain_end = clock_ns(CLOCK_MONOTONIC) + (uint64_t)(o.drain_s * 1e9);
  while (c.own_delivered - c.own_base < c.sent - c.sent_base &&
         clock_ns(CLOCK_MONOTONIC) < drain_end) {
    if ((rc = pump(&c, 5000000)) != CS_OK) {
      stamp(&c, "lost %d", (int)rc);
      client_warn("the daemon connection broke while draining (error %d)", (int)rc);
      status = EXIT_DAEMON_GONE;
      goto out;
    }
  }
  if (c.own_delivered - c.own_base < c.sent - c.sent_base) {
    client_warn("%" PRIu64 " of %" PRIu64 " own messages not delivered after %g s",
                (c.sent - c.sent_base) - (c.own_delivered - c.own_base), c.sent - c.sent_base,
                o.drain_s);
    status = EXIT_DRAIN_TIMEOUT;
  }
  rc = cpg_leave(c.h, &c.group);
  uint64_t leave_end = clock_ns(CLOCK_MONOTONIC) + 5000000000u;
  while (rc == CS_OK && !c.left && clock_ns(CLOCK_MONOTONIC) < leave_end) rc = pump(&c, 5000000);
  cpg_finalize(c.h);

out:
  if (c.bad && status == EXIT_CLEAN) status = EXIT_BAD_MESSAGE;
  stamp(&c,
        "end sent %" PRIu64 " delivered %" PRIu64 " own %" PRIu64 " try_again %" PRIu64
        " bad %" PRIu64 " views %" PRIu64 " status %d",
        c.sent, c.delivered, c.own_delivered, c.try_again, c.bad, c.views, status);
  if (history_close(&c.hist) != 0) {
    client_warn("writing %s failed: %s", o.history, strerror(errno));
    if (status == EXIT_CLEAN) status = EXIT_API;
  }
  fprintf(stderr,
          "fault_client[%s]: %s sent %" PRIu64 " delivered %" PRIu64 " (own %" PRIu64
          ") views %" PRIu64 " try_again %" PRIu64 " bad %" PRIu64 " exit %d\n",
          o.name, c.origin, c.sent, c.delivered, c.own_delivered, c.views, c.try_again, c.bad,
          status);
  return status;
}
