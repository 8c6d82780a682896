/* Child options: a proplist or map of payload, timeout, lull,
 * instant_perform and restart, parsed over a manager's defaults. */
#include "dm/mgr.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dm.h"
#include "term/term.h"

static int atom_is(const char *b, size_t len, const char *name) {
  return dm__term_is_atom(b, len, name);
}

/* Writes {Key, Value} as the error detail. */
static int bad(ei_x_buff *d, const char *k, size_t klen, const char *v,
               size_t vlen) {
  if (d) {
    d->index = 0;
    if (ei_x_encode_tuple_header(d, 2) < 0 || ei_x_append_buf(d, k, (int)klen) < 0 ||
        ei_x_append_buf(d, v, (int)vlen) < 0)
      return DM_ENOMEM;
  }
  return DM_EINVAL;
}

static int get_long(const char *v, long long *out) {
  int i = 0;
  return ei_decode_longlong(v, &i, out);
}

static int one(const char *k, size_t klen, const char *v, size_t vlen,
               dm__child_opts *o, ei_x_buff *d) {
  long long n;
  if (atom_is(k, klen, "payload")) {
    o->payload = v;
    o->payload_len = vlen;
  } else if (atom_is(k, klen, "timeout")) {
    if (atom_is(v, vlen, "infinity"))
      o->timeout_ms = 0;
    else if (get_long(v, &n) == 0 && n >= 0 && n <= UINT32_MAX)
      o->timeout_ms = (uint32_t)n;
    else
      return bad(d, k, klen, v, vlen);
  } else if (atom_is(k, klen, "lull")) {
    double f;
    int i = 0;
    if (get_long(v, &n) == 0)
      f = (double)n;
    else if (ei_decode_double(v, &i, &f) < 0)
      return bad(d, k, klen, v, vlen);
    if (!(f > 0 && f < 1e6))
      return bad(d, k, klen, v, vlen);
    o->lull = (float)f;
  } else if (atom_is(k, klen, "instant_perform?") ||
             atom_is(k, klen, "instant_perform")) {
    if (atom_is(v, vlen, "true")) {
      o->instant = 1;
      o->instant_ms = 0;
    } else if (atom_is(v, vlen, "false")) {
      o->instant = 0;
    } else if (get_long(v, &n) == 0 && n >= 0 && n <= UINT32_MAX) {
      o->instant = 1;
      o->instant_ms = (uint32_t)n;
    } else {
      return bad(d, k, klen, v, vlen);
    }
  } else if (atom_is(k, klen, "restart")) {
    if (atom_is(v, vlen, "permanent"))
      o->restart = DM__PERMANENT;
    else if (atom_is(v, vlen, "transient"))
      o->restart = DM__TRANSIENT;
    else if (atom_is(v, vlen, "temporary"))
      o->restart = DM__TEMPORARY;
    else
      return bad(d, k, klen, v, vlen);
  } else {
    /* Unknown keys are refused rather than ignored: a typo in `timeout`
     * would otherwise silently give the default. */
    if (d) {
      d->index = 0;
      if (ei_x_encode_tuple_header(d, 2) < 0 ||
          ei_x_encode_atom(d, "unknown_option") < 0 ||
          ei_x_append_buf(d, k, (int)klen) < 0)
        return DM_ENOMEM;
    }
    return DM_EINVAL;
  }
  return 0;
}

int dm__opts_parse(const char *buf, size_t len, dm__child_opts *o,
                   ei_x_buff *d) {
  int type, size, i = 0, r;
  size_t k, kend, vend;
  /* The payload goes to behaviours, which may recurse over it. */
  if (!dm__term_depth_ok(buf, len, DM__TERM_MAX_DEPTH)) {
    if (d) {
      d->index = 0;
      if (ei_x_encode_atom(d, "too_deep") < 0)
        return DM_ENOMEM;
    }
    return DM_EINVAL;
  }
  if (ei_get_type(buf, &i, &type, &size) < 0)
    goto not_opts;
  if (type == ERL_NIL_EXT)
    return 0;
  if (type == ERL_MAP_EXT) {
    int arity;
    if (ei_decode_map_header(buf, &i, &arity) < 0)
      goto not_opts;
    k = (size_t)i;
    for (int n = 0; n < arity; n++) {
      kend = k;
      if (dm__term_skip(buf, len, &kend))
        goto not_opts;
      vend = kend;
      if (dm__term_skip(buf, len, &vend))
        goto not_opts;
      if ((r = one(buf + k, kend - k, buf + kend, vend - kend, o, d)))
        return r;
      k = vend;
    }
    return 0;
  }
  if (type == ERL_LIST_EXT) {
    int arity;
    if (ei_decode_list_header(buf, &i, &arity) < 0)
      goto not_opts;
    for (int n = 0; n < arity; n++) {
      /* Each element is {Key, Value} or a bare atom meaning {Atom, true}. */
      int ta, j = i;
      size_t end = (size_t)i;
      if (dm__term_skip(buf, len, &end))
        goto not_opts;
      if (ei_decode_tuple_header(buf, &j, &ta) == 0 && ta == 2) {
        k = (size_t)j;
        kend = k;
        if (dm__term_skip(buf, len, &kend))
          goto not_opts;
        if ((r = one(buf + k, kend - k, buf + kend, end - kend, o, d)))
          return r;
      } else {
        static const char true_atom[] = "\x77\x04true";
        if ((r = one(buf + i, end - (size_t)i, true_atom, sizeof true_atom - 1, o, d)))
          return r;
      }
      i = (int)end;
    }
    /* The tail must be [] for a proper list. */
    if ((size_t)i >= len || (unsigned char)buf[i] != ERL_NIL_EXT)
      goto not_opts;
    return 0;
  }
not_opts:
  if (d) {
    d->index = 0;
    if (ei_x_append_buf(d, buf, (int)len) < 0)
      return DM_ENOMEM;
  }
  return DM_EINVAL;
}

int dm__opts_default(const char *key, const char *value, dm__child_opts *o) {
  char *end;
  errno = 0;
  if (strcmp(key, "timeout") == 0) {
    if (strcmp(value, "infinity") == 0) {
      o->timeout_ms = 0;
      return 0;
    }
    unsigned long v = strtoul(value, &end, 10);
    if (errno || *end || end == value || value[0] == '-' || v > UINT32_MAX)
      return DM_EINVAL;
    o->timeout_ms = (uint32_t)v;
  } else if (strcmp(key, "lull") == 0) {
    double f = strtod(value, &end);
    if (errno || *end || end == value || !(f > 0 && f < 1e6))
      return DM_EINVAL;
    o->lull = (float)f;
  } else if (strcmp(key, "instant_perform") == 0) {
    if (strcmp(value, "true") == 0) {
      o->instant = 1;
      o->instant_ms = 0;
    } else if (strcmp(value, "false") == 0) {
      o->instant = 0;
    } else {
      unsigned long v = strtoul(value, &end, 10);
      if (errno || *end || end == value || value[0] == '-' || v > UINT32_MAX)
        return DM_EINVAL;
      o->instant = 1;
      o->instant_ms = (uint32_t)v;
    }
  } else if (strcmp(key, "restart") == 0) {
    if (strcmp(value, "permanent") == 0)
      o->restart = DM__PERMANENT;
    else if (strcmp(value, "transient") == 0)
      o->restart = DM__TRANSIENT;
    else if (strcmp(value, "temporary") == 0)
      o->restart = DM__TEMPORARY;
    else
      return DM_EINVAL;
  } else {
    return DM_EINVAL;
  }
  return 0;
}

dm__wopts *dm__wopts_new(dm__manager *m, const char *term, size_t len,
                         const dm__child_opts *o) {
  if (len > UINT32_MAX)
    return NULL;
  dm__wopts *r = dm__malloc(sizeof *r + len);
  if (!r)
    return NULL;
  r->m = m;
  r->refs = 1;
  r->len = (uint32_t)len;
  r->lull = o->lull;
  r->restart = o->restart;
  r->instant = (uint8_t)o->instant;
  memcpy(r->term, term, len);
  return r;
}

void dm__wopts_unref(dm__wopts *r) {
  if (r && --r->refs == 0)
    dm__free(r);
}
