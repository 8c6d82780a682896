/* Child options, from children_specs or put: a proplist or a map with
 * payload, timeout, lull, instant_perform (or 'instant_perform?') and
 * restart. Missing keys take the manager's defaults. */
#ifndef DM_OPTS_H
#define DM_OPTS_H

#include <ei.h>
#include <stddef.h>
#include <stdint.h>

enum { DM__PERMANENT = 0, DM__TRANSIENT, DM__TEMPORARY };

typedef struct {
  const char *payload; /* encoded term, no version byte; lent */
  size_t payload_len;
  uint32_t timeout_ms; /* 0: never perform periodically */
  float lull;
  int instant;         /* 0 no, 1 yes */
  uint32_t instant_ms; /* delay of the first perform when instant */
  uint8_t restart;
} dm__child_opts;

/* Parses opts (a validated term, no version byte) over the defaults in
 * *out. On DM_EINVAL, `detail` gets the term for {error, {bad_opts,
 * Detail}}: {Key, Value} for a bad value, the opts themselves when they are
 * neither a list nor a map. */
int dm__opts_parse(const char *buf, size_t len, dm__child_opts *out,
                   ei_x_buff *detail);

/* Parses a manager default given on the command line (key=value) into
 * *out. Payload values are not handled here. 0 or DM_EINVAL. */
int dm__opts_default(const char *key, const char *value, dm__child_opts *out);

#endif
