/* Levelled logging to stderr with file:line. stdout is reserved for the
 * READY line. */
#ifndef DM_LOG_H
#define DM_LOG_H

enum { DM_LOG_DEBUG = 0, DM_LOG_INFO, DM_LOG_WARNING, DM_LOG_ERROR, DM_LOG_NONE };

extern int dm__log_level;

/* Parses "debug", "info", "warning", "error" or "none"; -1 when unknown. */
int dm__log_parse_level(const char *s);
void dm__log_write(int level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define DM_LOG(level, ...)                                                     \
  do {                                                                         \
    if ((level) >= dm__log_level)                                              \
      dm__log_write((level), __FILE__, __LINE__, __VA_ARGS__);                 \
  } while (0)

#define DM_DEBUG(...) DM_LOG(DM_LOG_DEBUG, __VA_ARGS__)
#define DM_INFO(...) DM_LOG(DM_LOG_INFO, __VA_ARGS__)
#define DM_WARN(...) DM_LOG(DM_LOG_WARNING, __VA_ARGS__)
#define DM_ERROR(...) DM_LOG(DM_LOG_ERROR, __VA_ARGS__)

#endif
