/* Latency samples, quantiles and the JSON text written by cpg_bench. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Preallocated sample buffer: recording is a store and an increment. */
struct samples {
  uint64_t* ns;
  size_t n;
  size_t cap;
  size_t dropped; /* recorded beyond cap (not kept) */
};

int samples_init(struct samples* s, size_t cap);
void samples_free(struct samples* s);
static inline void samples_add(struct samples* s, uint64_t ns) {
  if (s->n < s->cap)
    s->ns[s->n++] = ns;
  else
    s->dropped++;
}

/* Sorts the samples in place; summary values are in microseconds. */
struct lat_summary {
  size_t n;
  double min, p50, p90, p99, p999, max, mean;
};
void samples_summarize(struct samples* s, struct lat_summary* out);

/* Growable text buffer for one JSON object (built off the hot path). */
struct jbuf {
  char* p;
  size_t len, cap;
  int oom;
};
void jb_init(struct jbuf* b);
void jb_free(struct jbuf* b);
void jb_raw(struct jbuf* b, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void jb_str(struct jbuf* b, const char* key, const char* val); /* "key":"val", */
void jb_num(struct jbuf* b, const char* key, double val);      /* "key":val, */
void jb_int(struct jbuf* b, const char* key, long long val);
/* "key":{"n":..,"min_us":..,"p50_us":..,...,"cdf_q":[..],"cdf_us":[..]}, from sorted samples */
void jb_latency(struct jbuf* b, const char* key, const struct samples* sorted,
                const struct lat_summary* sum);
void jb_close(struct jbuf* b); /* drops a trailing comma, appends "}\n" */
