/* Responses: what a perform, call or cast result means in Tarearbol's
 * terms. */
#include "dm/mgr.h"

#include <ei.h>

#include "term/term.h"

void dm__response_parse(const char *r, size_t len, dm__response *o) {
  int i = 0, arity = 0, type, size;
  o->kind = DM__R_OTHER;
  o->term = o->reply = r;
  o->term_len = o->reply_len = len;
  o->id = NULL;
  o->id_len = 0;
  o->timeout_ms = 0;
  if (dm__term_is_atom(r, len, "halt")) {
    o->kind = DM__R_HALT;
    return;
  }
  if (ei_get_type(r, &i, &type, &size) < 0 ||
      (type != ERL_SMALL_TUPLE_EXT && type != ERL_LARGE_TUPLE_EXT) ||
      ei_decode_tuple_header(r, &i, &arity) < 0 || (arity != 2 && arity != 3))
    return;
  size_t a = (size_t)i, b = a, c;
  if (dm__term_skip(r, len, &b))
    return;
  if (arity == 2 && (dm__term_is_atom(r + a, len - a, "ok") ||
                     dm__term_is_atom(r + a, len - a, "replace"))) {
    o->kind = dm__term_is_atom(r + a, len - a, "ok") ? DM__R_OK : DM__R_REPLACE;
    o->term = o->reply = r + b;
    o->term_len = o->reply_len = len - b;
    return;
  }
  if (arity == 3 && dm__term_is_atom(r + a, len - a, "replace")) {
    c = b;
    if (dm__term_skip(r, len, &c))
      return;
    o->kind = DM__R_REPLACE_ID;
    o->id = r + b;
    o->id_len = c - b;
    o->term = o->reply = r + c;
    o->term_len = o->reply_len = len - c;
    return;
  }
  if (arity == 2) {
    /* {{timeout, T}, R} with a non-negative integer T. */
    int k = (int)a, ta;
    long long t;
    if (ei_decode_tuple_header(r, &k, &ta) < 0 || ta != 2 ||
        !dm__term_is_atom(r + k, len - (size_t)k, "timeout"))
      return;
    size_t tpos = (size_t)k;
    if (dm__term_skip(r, len, &tpos))
      return;
    k = (int)tpos;
    if (ei_decode_longlong(r, &k, &t) < 0 || t < 0 || t > UINT32_MAX || (size_t)k != b)
      return;
    o->kind = DM__R_TIMEOUT;
    o->timeout_ms = (uint32_t)t;
    o->term = r + b;
    o->term_len = len - b;
  }
}
