/* A worker's annex: what few workers have, kept out of line by pid key
 * (dm__sched.annex) so that the others carry no byte for it: a value of
 * its own (DM__W_VALUE_OWN), mail waiting while it is busy (DM__W_MAIL),
 * the reason it stops for (DM__W_STOPPING). A worker's flags say what
 * its annex holds, so one without any never looks it up. Loop thread
 * only. */
#include "dm/mgr.h"

static dm__pidtab *table_of(const dm__worker *w) {
  return &dm__worker_mgr(w)->sched->annex;
}

dm__annex *dm__annex_of(const dm__worker *w) {
  return dm__pidtab_get(table_of(w), w->proc.key);
}

dm__annex *dm__annex_get(dm__worker *w) {
  dm__annex *a = dm__annex_of(w);
  if (a)
    return a;
  if (!(a = dm__calloc(1, sizeof *a)))
    return NULL;
  if (dm__pidtab_put(table_of(w), w->proc.key, a)) {
    dm__free(a);
    return NULL;
  }
  return a;
}

void dm__annex_tidy(dm__worker *w) {
  dm__annex *a = dm__annex_of(w);
  if (a && dm__cell_is_nil(&a->value) && !a->mbox && !a->stop_reason)
    dm__free(dm__pidtab_del(table_of(w), w->proc.key));
}

void dm__annex_free(dm__worker *w) {
  dm__annex *a = dm__pidtab_del(table_of(w), w->proc.key);
  if (!a)
    return;
  dm__cell_clear(&a->value);
  dm__mailbox_free(a->mbox, NULL, NULL, 0);
  dm__blob_unref(a->stop_reason);
  dm__free(a);
}

dm__mailbox *dm__worker_mbox(const dm__worker *w) {
  return (w->proc.flags & DM__W_MAIL) ? dm__annex_of(w)->mbox : NULL;
}

const dm__blob *dm__worker_stop_reason(const dm__worker *w) {
  const dm__annex *a = (w->proc.flags & DM__W_STOPPING) ? dm__annex_of(w) : NULL;
  return a ? a->stop_reason : NULL;
}
