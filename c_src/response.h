/* What a perform, call or cast response means, in Tarearbol's terms. Pure
 * parsing over a validated term, so it is tested on its own. */
#ifndef DM_RESPONSE_H
#define DM_RESPONSE_H

#include <stddef.h>
#include <stdint.h>

enum {
  DM__R_HALT = 1,     /* halt */
  DM__R_OK,           /* {ok, R}: payload := R */
  DM__R_REPLACE,      /* {replace, P}: payload := value := P */
  DM__R_REPLACE_ID,   /* {replace, Id, P}: the same, under Id */
  DM__R_TIMEOUT,      /* {{timeout, T}, R}: value := payload := R, period T */
  DM__R_OTHER,        /* anything else: value := the response */
};

typedef struct {
  int kind;
  const char *term; /* R or P, or the whole response for OTHER */
  size_t term_len;
  const char *id;   /* REPLACE_ID: the new id (not canonical) */
  size_t id_len;
  uint32_t timeout_ms;
  const char *reply; /* what a call's caller gets: the unwrapped value */
  size_t reply_len;
} dm__response;

/* Classifies the response r (a whole, validated term, no version byte). */
void dm__response_parse(const char *r, size_t len, dm__response *out);

#endif
