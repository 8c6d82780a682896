/* The supervisor: what a worker's outcome leads to. A crash restarts the
 * worker per its restart type with its original opts, within the
 * manager's intensity (max_restarts in max_seconds, as OTP supervisors);
 * past it every worker restarts with its own opts and last payload, and
 * past the manager's own intensity it goes down. Exit signals from links are crashes too. Loop thread only. */
#include <string.h>

#include "dm/mgr.h"

/* Counts an event in a ring of the last max_restarts + 1 times and says
 * whether more than max_restarts fell within max_seconds. */
static int over_intensity(dm__manager *m, uint64_t *ring, uint32_t *n) {
  uint64_t now = uv_now(m->node->loop);
  uint32_t size = m->max_restarts + 1;
  ring[*n % size] = now;
  (*n)++;
  if (*n < size)
    return 0;
  /* The oldest of the last `size` events. */
  uint64_t oldest = ring[*n % size];
  return now - oldest < (uint64_t)m->max_seconds * 1000;
}

void dm__sup_reset(dm__manager *m) { m->nrestarts = m->nescalated = 0; }

/* Every worker restarts with its own opts and the payload and value it
 * had: put children included, nothing goes back to children_specs, so
 * an escalation drops no child. */
static void restart_all(dm__manager *m) {
  typedef struct {
    dm__blob *id;
    dm__wopts *opts;
    dm__cell payload, value;
    int spec;
    uint32_t gen;
  } saved;
  size_t n = 0;
  saved *all = m->count ? dm__calloc(m->count, sizeof *all) : NULL;
  if (m->count && !all) {
    DM_ERROR("manager %s: out of memory restarting every worker; they go on", m->name);
    return;
  }
  for (size_t i = 0; i < m->cap && n < m->count; i++) {
    dm__worker *w = dm__children_walk(m, i);
    if (!w)
      continue;
    saved *sv = &all[n++];
    sv->spec = (w->proc.flags & DM__W_SPEC) != 0;
    sv->gen = w->gen;
    sv->id = dm__blob_new(dm__worker_id(w), dm__worker_id_len(w));
    sv->opts = dm__wopts_ref(w->opts);
    dm__cell_copy(&sv->payload, &w->payload);
    dm__cell_copy(&sv->value, dm__worker_value(w));
  }
  dm__workers_stop_all(m, DM__A_SHUTDOWN, DM__ALEN(DM__A_SHUTDOWN));
  m->spread = 1;
  for (size_t k = 0; k < n; k++) {
    saved *sv = &all[k];
    dm__worker *w = NULL;
    if (sv->id && dm__worker_resume(m, dm__blob_data(sv->id), dm__blob_len(sv->id),
                                    sv->opts->term, sv->opts->len,
                                    &sv->payload, &sv->value, &w) == 0) {
      m->st.restarts++;
      if (sv->spec)
        w->proc.flags |= DM__W_SPEC;
      w->gen = sv->gen; /* the same record: its state entries hold */
    } else
      DM_ERROR("manager %s: a worker could not be restarted (out of memory)", m->name);
    dm__blob_unref(sv->id);
    dm__wopts_unref(sv->opts);
    dm__cell_clear(&sv->payload);
    dm__cell_clear(&sv->value);
  }
  m->spread = 0;
  dm__durable_relaid(m);
  dm__free(all);
}

int dm__sup_allow_restart(dm__manager *m) {
  if (!over_intensity(m, m->restarts_at, &m->nrestarts))
    return 1;
  /* The worker supervisor gave up: every worker restarts. Past the
   * manager's own intensity it goes down instead, as DESIGN says. */
  m->nrestarts = 0;
  m->st.escalations++;
  if (over_intensity(m, m->escalated_at, &m->nescalated)) {
    DM_ERROR("manager %s: restart intensity exceeded again; going down", m->name);
    dm__ev_escalation(m, m->count + 1, 1); /* the crashed one included */
    dm__workers_stop_all(m, DM__A_SHUTDOWN, DM__ALEN(DM__A_SHUTDOWN));
    dm__state_change(m, DM__DOWN);
    return -1;
  }
  DM_WARN("manager %s: more than %u restarts in %u s; restarting every worker "
          "(%zu) with its opts and last payload", m->name, m->max_restarts,
          m->max_seconds, m->count);
  /* One event for them all: a restart event per worker would be a flood. */
  dm__ev_escalation(m, m->count + 1, 0); /* the crashed one included */
  restart_all(m);
  return 0;
}

static int is_normal_exit(const char *r, size_t len) {
  return dm__term_is_atom(r, len, "normal") || dm__term_is_atom(r, len, "shutdown");
}

/* A crash (or an exit signal): terminate, then restart per restart type
 * with the original opts. */
static void crash(dm__worker *w, const char *reason, size_t len) {
  dm__manager *m = dm__worker_mgr(w);
  int restart = w->opts->restart == DM__PERMANENT ||
                (w->opts->restart == DM__TRANSIENT && !is_normal_exit(reason, len));
  char idtext[160], why[240];
  m->st.crashes++;
  DM_WARN("manager %s: worker %s crashed: %s%s", m->name,
          dm__term_print(dm__worker_id(w), dm__worker_id_len(w), idtext, sizeof idtext),
          dm__term_print(reason, len, why, sizeof why), restart ? "; restarting it" : "");
  /* The stop may free w at once, so the restart works from copies. */
  dm__blob *id = restart ? dm__blob_new(dm__worker_id(w), dm__worker_id_len(w)) : NULL;
  dm__wopts *opts = restart ? dm__wopts_ref(w->opts) : NULL;
  int spec = (w->proc.flags & DM__W_SPEC) != 0;
  if (!restart)
    dm__durable_del(m, w);
  dm__ev_crash(m, w, reason, len);
  dm__worker_stop(w, reason, len);
  /* Within intensity, or after every other worker restarted: this one
   * restarts as a crashed one does, from its opts. */
  dm__worker *again = NULL;
  if (id && opts && dm__sup_allow_restart(m) >= 0 &&
      dm__worker_start(m, dm__blob_data(id), dm__blob_len(id), opts->term, opts->len,
                       &again) == 0) {
    m->st.restarts++;
    if (spec)
      again->proc.flags |= DM__W_SPEC;
    dm__durable_put(m, again);
    dm__ev_restart(m, again);
  }
  dm__blob_unref(id);
  dm__wopts_unref(opts);
}

void dm__sup_worker_done(dm__wjob *j, int cancelled) {
  dm__outcome oc;
  if (cancelled) {
    dm__worker_cancelled(j);
  } else {
    dm__worker_completed(j, &oc);
    if (oc.kind == DM__OUT_CRASHED)
      crash(j->w, oc.reason, oc.reason_len);
  }
  dm__job_free(j);
}

/* {system, _, _}: a look at the head only, so the calls and casts that
 * make up a worker's traffic are not decoded twice. */
static int is_system(const char *msg, size_t len) {
  int i = 0, v, arity;
  return ei_decode_version(msg, &i, &v) == 0 && ei_decode_tuple_header(msg, &i, &arity) == 0 &&
         arity == 3 && dm__term_is_atom(msg + i, len - (size_t)i, "system");
}

static void worker_message(dm__proc *p, dm__node *n, const dm__ctrl *ctl) {
  dm__gen g;
  (void)n;
  /* sys's requests are answered at once, busy or not, not mailed. The
   * worker's own code never sees them, which keeps worker.c below the
   * encoders. */
  if (is_system(ctl->msg, ctl->msg_len)) {
    dm__gen_decode(ctl->msg, ctl->msg_len, &g);
    if (g.kind == DM__GEN_SYSTEM)
      dm__sys_worker((dm__worker *)p, &g);
    return;
  }
  dm__worker_message((dm__worker *)p, ctl);
}

static void worker_exit(dm__proc *p, dm__node *n, const erlang_pid *from,
                        const char *reason, size_t len) {
  (void)n;
  (void)from;
  /* Not trapping exits: a linked process's abnormal death takes the
   * worker with it; `normal` is ignored, as in OTP. */
  if (dm__term_is_atom(reason, len, "normal"))
    return;
  crash((dm__worker *)p, reason, len);
}

const dm__proc_ops dm__worker_ops = {worker_message, worker_exit, NULL};
