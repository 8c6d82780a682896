/* Encoders of the public API that behaviours share: room reserved in an
 * ei_x_buff at once, and Elixir's %DateTime{}. */
#include <limits.h>
#include <stdlib.h>
#include <time.h>

#include "dm.h"
#include "term/term.h"

#define ENC(call)                                                              \
  do {                                                                         \
    if ((call) < 0)                                                            \
      return DM_ENOMEM;                                                        \
  } while (0)

int dm_x_reserve(ei_x_buff *x, size_t bytes) {
  if (x->index < 0 || bytes > (size_t)INT_MAX - (size_t)x->index)
    return DM_ENOMEM;
  size_t need = (size_t)x->index + bytes;
  if (need <= (size_t)x->buffsz)
    return 0;
  /* ei_x_buff memory is ei's own (it frees it with free), so it is grown
   * with realloc, not through the node's wrapper. */
  char *b = realloc(x->buff, need);
  if (!b)
    return DM_ENOMEM;
  x->buff = b;
  x->buffsz = (int)need;
  return 0;
}

int dm_encode_datetime(ei_x_buff *x, unsigned long long us) {
  time_t secs = (time_t)(us / 1000000u);
  struct tm tm;
  gmtime_r(&secs, &tm);
  ENC(ei_x_encode_map_header(x, 13));
  ENC(ei_x_encode_atom(x, "__struct__"));
  ENC(ei_x_encode_atom(x, "Elixir.DateTime"));
  ENC(ei_x_encode_atom(x, "calendar"));
  ENC(ei_x_encode_atom(x, "Elixir.Calendar.ISO"));
  ENC(ei_x_encode_atom(x, "year"));
  ENC(ei_x_encode_long(x, tm.tm_year + 1900));
  ENC(ei_x_encode_atom(x, "month"));
  ENC(ei_x_encode_long(x, tm.tm_mon + 1));
  ENC(ei_x_encode_atom(x, "day"));
  ENC(ei_x_encode_long(x, tm.tm_mday));
  ENC(ei_x_encode_atom(x, "hour"));
  ENC(ei_x_encode_long(x, tm.tm_hour));
  ENC(ei_x_encode_atom(x, "minute"));
  ENC(ei_x_encode_long(x, tm.tm_min));
  ENC(ei_x_encode_atom(x, "second"));
  ENC(ei_x_encode_long(x, tm.tm_sec));
  ENC(ei_x_encode_atom(x, "microsecond"));
  ENC(ei_x_encode_tuple_header(x, 2));
  ENC(ei_x_encode_long(x, (long)(us % 1000000u)));
  ENC(ei_x_encode_long(x, 6));
  ENC(ei_x_encode_atom(x, "time_zone"));
  ENC(ei_x_encode_binary(x, "Etc/UTC", 7));
  ENC(ei_x_encode_atom(x, "zone_abbr"));
  ENC(ei_x_encode_binary(x, "UTC", 3));
  ENC(ei_x_encode_atom(x, "utc_offset"));
  ENC(ei_x_encode_long(x, 0));
  ENC(ei_x_encode_atom(x, "std_offset"));
  ENC(ei_x_encode_long(x, 0));
  return 0;
}
