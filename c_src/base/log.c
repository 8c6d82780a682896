/* Logging: one line per event on stderr, written with a single write(2) so
 * lines from different threads do not interleave. */
#include "base/base.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int dm__log_level = DM_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warning", "error",
                                          "none"};

int dm__log_parse_level(const char *s) {
  for (int i = 0; i <= DM_LOG_NONE; i++)
    if (strcmp(s, level_names[i]) == 0)
      return i;
  if (strcmp(s, "warn") == 0)
    return DM_LOG_WARNING;
  return -1;
}

void dm__log_write(int level, const char *file, int line, const char *fmt,
                   ...) {
  char buf[1024];
  struct timespec ts;
  struct tm tm;
  const char *base = strrchr(file, '/');
  base = base ? base + 1 : file;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  int n = snprintf(buf, sizeof buf, "%02d:%02d:%02d.%03ld %s %s:%d: ",
                   tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L,
                   level_names[level < 0 || level > DM_LOG_ERROR ? 0 : level],
                   base, line);
  if (n < 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
  va_end(ap);
  size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
  if (len > sizeof buf - 2)
    len = sizeof buf - 2;
  buf[len++] = '\n';
  ssize_t w = write(2, buf, len);
  (void)w;
}
