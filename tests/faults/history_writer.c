/* history_writer: see history_writer.h. */
#include "history_writer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

enum { kInitialCap = 1 << 16, kFlushAt = 1 << 15 };

static void write_all(struct history* h, int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (!h->error) h->error = errno;
      return;
    }
    p += w;
    n -= (size_t)w;
  }
}

int history_open(struct history* h, const char* path, const char* times_path) {
  *h = (struct history){.fd = -1, .times_fd = -1};
  h->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (h->fd < 0) return -1;
  h->times_fd = open(times_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  h->buf = malloc(kInitialCap);
  if (h->times_fd < 0 || !h->buf) {
    int e = h->times_fd < 0 ? errno : ENOMEM;
    close(h->fd);
    if (h->times_fd >= 0) close(h->times_fd);
    free(h->buf);
    errno = e;
    return -1;
  }
  h->cap = kInitialCap;
  return 0;
}

void history_linef(struct history* h, const char* fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(h->buf + h->used, h->cap - h->used, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < h->cap - h->used) {
      h->used += (size_t)n;
      break;
    }
    /* Did not fit: flush, and grow if a single line is larger than the buffer. */
    if (h->used > 0) {
      history_flush(h);
      continue;
    }
    char* bigger = realloc(h->buf, (size_t)n + 1);
    if (!bigger) {
      if (!h->error) h->error = ENOMEM;
      return;
    }
    h->buf = bigger;
    h->cap = (size_t)n + 1;
  }
  if (h->used >= kFlushAt) history_flush(h);
}

void history_times(struct history* h, const char* line, size_t len) {
  write_all(h, h->times_fd, line, len);
}

void history_flush(struct history* h) {
  if (h->used == 0) return;
  write_all(h, h->fd, h->buf, h->used);
  h->used = 0;
}

int history_close(struct history* h) {
  history_flush(h);
  if (close(h->fd) != 0 && !h->error) h->error = errno;
  if (close(h->times_fd) != 0 && !h->error) h->error = errno;
  free(h->buf);
  h->buf = NULL;
  if (h->error) {
    errno = h->error;
    return -1;
  }
  return 0;
}
