#include "bench_stats.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int samples_init(struct samples* s, size_t cap) {
  memset(s, 0, sizeof(*s));
  s->ns = malloc((cap ? cap : 1) * sizeof(uint64_t));
  if (!s->ns) return -1;
  s->cap = cap;
  return 0;
}

void samples_free(struct samples* s) {
  free(s->ns);
  memset(s, 0, sizeof(*s));
}

static int cmp_u64(const void* a, const void* b) {
  uint64_t x = *(const uint64_t*)a, y = *(const uint64_t*)b;
  return x < y ? -1 : x > y;
}

/* Nearest-rank quantile of sorted data, q in [0,100]. */
static double quantile_us(const struct samples* s, double q) {
  if (s->n == 0) return 0;
  size_t idx = (size_t)(q / 100.0 * (double)s->n);
  if (idx >= s->n) idx = s->n - 1;
  return (double)s->ns[idx] / 1000.0;
}

void samples_summarize(struct samples* s, struct lat_summary* out) {
  memset(out, 0, sizeof(*out));
  if (s->n == 0) return;
  qsort(s->ns, s->n, sizeof(uint64_t), cmp_u64);
  double sum = 0;
  for (size_t i = 0; i < s->n; i++) sum += (double)s->ns[i];
  out->n = s->n;
  out->min = (double)s->ns[0] / 1000.0;
  out->max = (double)s->ns[s->n - 1] / 1000.0;
  out->mean = sum / (double)s->n / 1000.0;
  out->p50 = quantile_us(s, 50);
  out->p90 = quantile_us(s, 90);
  out->p99 = quantile_us(s, 99);
  out->p999 = quantile_us(s, 99.9);
}

void jb_init(struct jbuf* b) {
  memset(b, 0, sizeof(*b));
  jb_raw(b, "{");
}

void jb_free(struct jbuf* b) {
  free(b->p);
  memset(b, 0, sizeof(*b));
}

void jb_raw(struct jbuf* b, const char* fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = b->cap - b->len;
    int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->oom = 1;
      return;
    }
    if ((size_t)n < room) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = b->cap ? b->cap * 2 : 4096;
    while (cap - b->len <= (size_t)n) cap *= 2;
    char* p = realloc(b->p, cap);
    if (!p) {
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
}

void jb_str(struct jbuf* b, const char* key, const char* val) {
  jb_raw(b, "\"%s\":\"", key);
  for (const char* c = val; *c; c++) {
    if (*c == '"' || *c == '\\')
      jb_raw(b, "\\%c", *c);
    else if ((unsigned char)*c < 0x20)
      jb_raw(b, "\\u%04x", (unsigned char)*c);
    else
      jb_raw(b, "%c", *c);
  }
  jb_raw(b, "\",");
}

void jb_num(struct jbuf* b, const char* key, double val) {
  jb_raw(b, "\"%s\":%.6g,", key, val);
}

void jb_int(struct jbuf* b, const char* key, long long val) {
  jb_raw(b, "\"%s\":%lld,", key, val);
}

/* CDF points: every percent, then the tail more finely. */
static const double cdf_q[] = {
    0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,   17,   18,    19, 20,
    21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37,   38,   39,    40, 41,
    42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58,   59,   60,    61, 62,
    63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79,   80,   81,    82, 83,
    84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 99.5, 99.9, 99.99, 100};

void jb_latency(struct jbuf* b, const char* key, const struct samples* s,
                const struct lat_summary* m) {
  jb_raw(b, "\"%s\":{", key);
  jb_int(b, "n", (long long)m->n);
  jb_int(b, "dropped", (long long)s->dropped);
  jb_num(b, "min_us", m->min);
  jb_num(b, "p50_us", m->p50);
  jb_num(b, "p90_us", m->p90);
  jb_num(b, "p99_us", m->p99);
  jb_num(b, "p999_us", m->p999);
  jb_num(b, "max_us", m->max);
  jb_num(b, "mean_us", m->mean);
  size_t nq = sizeof(cdf_q) / sizeof(cdf_q[0]);
  jb_raw(b, "\"cdf_q\":[");
  for (size_t i = 0; i < nq; i++) jb_raw(b, "%s%g", i ? "," : "", cdf_q[i]);
  jb_raw(b, "],\"cdf_us\":[");
  for (size_t i = 0; i < nq && s->n; i++)
    jb_raw(b, "%s%.3f", i ? "," : "", quantile_us(s, cdf_q[i]));
  jb_raw(b, "]},");
}

void jb_close(struct jbuf* b) {
  if (b->len && b->p[b->len - 1] == ',') b->len--;
  jb_raw(b, "}\n");
}
