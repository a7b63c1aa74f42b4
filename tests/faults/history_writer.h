/* history_writer: the fault client's two output files, written with plain
 * write(2) from a user-space buffer that is flushed after every dispatch
 * round, so a client killed with SIGKILL leaves a history that is a prefix
 * of what it did (missing at most the last few milliseconds). */
#pragma once

#include <stddef.h>

struct history {
  int fd, times_fd;
  char* buf;
  size_t used, cap;
  int error; /* errno of the first failed write, 0 if none */
};

/* Creates (truncates) both files. Returns 0, or -1 with errno set. */
int history_open(struct history* h, const char* path, const char* times_path);
/* Appends one formatted line to the history (buffered). */
void history_linef(struct history* h, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
/* Writes one complete line to the times file at once (unbuffered: these are
 * rare and their timing matters). */
void history_times(struct history* h, const char* line, size_t len);
/* Writes the buffered history lines. */
void history_flush(struct history* h);
/* Flushes and closes both files. Returns 0, or -1 if any write failed. */
int history_close(struct history* h);
