/* A worker's value: its payload (DM__W_VALUE_SAME: {replace, P} and
 * {{timeout, T}, P} make them one term, which is what a periodic worker
 * does on every perform), a term of its own in its annex
 * (DM__W_VALUE_OWN), or nil (neither flag). The common case so costs no
 * byte of its own. Loop thread only. */
#include <string.h>

#include "dm/mgr.h"

static const dm__cell nil_cell = DM__CELL_NIL;

const dm__cell *dm__worker_value(const dm__worker *w) {
  if (w->proc.flags & DM__W_VALUE_SAME)
    return &w->payload;
  if (w->proc.flags & DM__W_VALUE_OWN)
    return &dm__annex_of(w)->value;
  return &nil_cell;
}

static void no_memory(void) { DM_ERROR("out of memory storing a term; keeping the old one"); }

/* The own value goes, and the annex with it when nothing else is there. */
static void drop_own(dm__worker *w) {
  if (!(w->proc.flags & DM__W_VALUE_OWN))
    return;
  dm__cell_clear(&dm__annex_of(w)->value);
  w->proc.flags &= (uint16_t)~DM__W_VALUE_OWN;
  dm__annex_tidy(w);
}

/* The value becomes v, which it takes; v is left nil. 0 or DM_ENOMEM
 * (nothing changed). */
static int take_own(dm__worker *w, dm__cell *v) {
  dm__annex *a = dm__annex_get(w);
  if (!a)
    return DM_ENOMEM;
  dm__cell_clear(&a->value);
  a->value = *v;
  *v = DM__CELL_NIL;
  w->proc.flags = (uint16_t)((w->proc.flags & ~DM__W_VALUE_SAME) | DM__W_VALUE_OWN);
  return 0;
}

int dm__worker_set_value(dm__worker *w, const char *data, size_t len) {
  dm__cell v = DM__CELL_NIL;
  int r = dm__cell_set(&v, data, len);
  if (!r && (r = take_own(w, &v)))
    dm__cell_clear(&v);
  if (r)
    no_memory();
  return r;
}

static int same_term(const dm__cell *a, const char *data, size_t len) {
  return dm__cell_size(a) == len && memcmp(dm__cell_data(a), data, len) == 0;
}

int dm__worker_set_payload(dm__worker *w, const char *data, size_t len) {
  int r;
  if (!(w->proc.flags & DM__W_VALUE_SAME)) {
    if ((r = dm__cell_set(&w->payload, data, len)))
      no_memory();
    return r;
  }
  /* The value was the payload: the old term stays the value, in the
   * annex, unless the payload does not change ({ok, P} of a get). */
  if (same_term(&w->payload, data, len))
    return 0;
  dm__cell p = DM__CELL_NIL, old = w->payload;
  if ((r = dm__cell_set(&p, data, len)) == 0) {
    w->payload = DM__CELL_NIL;
    if ((r = take_own(w, &old)) == 0) {
      w->payload = p;
      return 0;
    }
    w->payload = old;
    dm__cell_clear(&p);
  }
  no_memory();
  return r;
}

void dm__worker_set_both(dm__worker *w, const char *data, size_t len) {
  /* A periodic worker does this on every perform: when the worker is the
   * only owner of its payload's blob, and it is large enough, the bytes
   * are rewritten in place and nothing is allocated. */
  dm__blob *b = dm__cell_blob(&w->payload);
  if ((w->proc.flags & DM__W_VALUE_SAME) && len > DM__CELL_INLINE && b &&
      dm__blob_refs(b) == 1 && dm__blob_fits(b, len)) {
    dm__blob_rewrite(b, data, len);
    return;
  }
  if (dm__cell_set(&w->payload, data, len)) {
    no_memory();
    return;
  }
  drop_own(w);
  w->proc.flags |= DM__W_VALUE_SAME;
}

int dm__worker_take_terms(dm__worker *w, dm__cell *payload, dm__cell *value) {
  int same = !dm__cell_is_nil(value) &&
             same_term(payload, dm__cell_data(value), dm__cell_size(value));
  if (!same && !dm__cell_is_nil(value)) {
    if (take_own(w, value))
      return DM_ENOMEM;
  } else {
    drop_own(w);
    dm__cell_clear(value);
  }
  dm__cell_clear(&w->payload);
  w->payload = *payload;
  *payload = DM__CELL_NIL;
  w->proc.flags = (uint16_t)((w->proc.flags & ~DM__W_VALUE_SAME) | (same ? DM__W_VALUE_SAME : 0));
  return 0;
}
