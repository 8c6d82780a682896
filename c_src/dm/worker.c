/* A worker's life: start, put, the perform schedule, delivery of calls,
 * casts and {payload, P} (now or through the mailbox), stop and the end.
 * What a finished callback means is complete.c's; what a crash leads to
 * is the supervisor's. Loop thread only. */
#include <string.h>

#include "dm/mgr.h"

static dm__worker *of_timer(dm__timer *t) {
  return (dm__worker *)((char *)t - offsetof(dm__worker, timer));
}

static void schedule(dm__worker *w, uint64_t delay_ms) {
  dm__worker_arm(w, dm__sched_now_us(dm__worker_mgr(w)->sched) + delay_ms * 1000 +
                       1); /* never 0, which means none */
}

/* The first perform: at once or after instant_ms when instant, else after
 * a period. Workers booted together from children_specs spread their first
 * performs over the period after it, so they do not all fall due in the
 * same millisecond for ever after. */
static void first_schedule(dm__worker *w, uint32_t instant_ms, uint32_t hash) {
  if (w->opts->instant)
    schedule(w, instant_ms);
  else if (w->timeout_ms)
    schedule(w, w->timeout_ms + (dm__worker_mgr(w)->spread ? hash % w->timeout_ms : 0));
}

int dm__worker_set_id(dm__worker *w, const char *id, size_t len) {
  if (len <= DM__ID_INLINE) {
    w->id.inl[0] = (char)len;
    memcpy(w->id.inl + 1, id, len);
    return 0;
  }
  if (!(w->id.blob = dm__blob_new(id, len)))
    return DM_ENOMEM;
  w->proc.flags |= DM__W_ID_BLOB;
  return 0;
}

void dm__worker_release_id(dm__worker *w) {
  if (w->proc.flags & DM__W_ID_BLOB)
    dm__blob_unref(w->id.blob);
  w->proc.flags &= (uint16_t)~DM__W_ID_BLOB;
  w->id.inl[0] = 0;
}

void dm__worker_free(dm__worker *w) {
  dm__manager *m = dm__worker_mgr(w);
  if (w->proc.flags & (DM__W_STOPPING | DM__W_VALUE_OWN | DM__W_MAIL))
    dm__annex_free(w);
  dm__proc_release(m->node, &w->proc);
  dm__worker_release_id(w);
  dm__cell_clear(&w->payload);
  dm__wopts_unref(w->opts);
  w->opts = NULL; /* a free slot, to a walk over the slab */
  dm__slab_free(&m->sched->workers, w);
}

void dm__worker_finalize(dm__worker *w) {
  /* Links get the exit signal and monitors fire, with the stop reason. */
  const dm__blob *reason = dm__worker_stop_reason(w);
  dm__proc_down(dm__worker_mgr(w)->node, &w->proc, dm__blob_data(reason),
                dm__blob_size(reason));
  dm__worker_free(w);
}

void dm__worker_stop(dm__worker *w, const char *reason, size_t reason_len) {
  dm__manager *m = dm__worker_mgr(w);
  dm__node *n = m->node;
  if (w->proc.flags & DM__W_STOPPING)
    return;
  dm__children_del(m, w);
  dm__proctab_del(&n->pids, w->proc.key);
  dm__worker_disarm(w);
  /* Callers still waiting in the mailbox see the worker die. The stop
   * reason goes to the annex; out of memory, it reads as nil. */
  dm__annex *a = (w->proc.flags & DM__W_MAIL) ? dm__annex_of(w) : NULL;
  if (a) {
    dm__mailbox_free(a->mbox, n, reason, reason_len);
    a->mbox = NULL;
    w->proc.flags &= (uint16_t)~DM__W_MAIL;
  }
  w->proc.flags |= DM__W_STOPPING;
  if ((a = dm__annex_get(w)) && !(a->stop_reason = dm__blob_new(reason, reason_len)))
    dm__annex_tidy(w);
  if (w->proc.flags & DM__W_BUSY) {
    /* A call that runs now exits its caller at once, with the stop's
     * reason, as a BEAM caller's monitor fires when the callee dies; its
     * late result is not sent. Terminate follows the running callback. */
    dm__wjob *call = dm__pidtab_get(&m->sched->calls, w->proc.key);
    if (call && call->reply && !call->answered) {
      dm__reply_exit(n, call->reply, reason, reason_len);
      call->answered = 1;
    }
    return;
  }
  if (m->b->terminate &&
      dm__worker_run(w, DM__JOB_TERMINATE, reason, reason_len, NULL, 0) == 0)
    return;
  dm__worker_finalize(w);
}

void dm__workers_stop_all(dm__manager *m, const char *reason, size_t len) {
  for (size_t i = 0; i < m->cap; i++) {
    /* Stopping removes the worker from the table and shifts others into
     * this slot: look at it again until it is empty. */
    while (m->slots && m->slots[i])
      dm__worker_stop(dm__children_at(m, i), reason, len);
  }
}

void dm__worker_cancelled(dm__wjob *j) {
  if (j->kind == DM__JOB_CALL && j->w)
    dm__pidtab_del(&j->m->sched->calls, j->w->proc.key);
  /* A worker already out of the table is only reachable from its job, so
   * it goes with it. */
  if (j->w && (j->w->proc.flags & DM__W_STOPPING))
    dm__worker_free(j->w);
  else if (j->w)
    j->w->proc.flags &= (uint16_t)~DM__W_BUSY;
}

/* A new worker for id with opts; with `payload` (and `value`, NULL for
 * nil) it resumes from those and init does not run again. */
static int start(dm__manager *m, const char *id, size_t idlen, const char *opts,
                 size_t optslen, const dm__cell *payload, const dm__cell *value,
                 dm__worker **out) {
  dm__node *n = m->node;
  dm__child_opts o = m->defaults;
  int r = DM_ENOMEM;
  if (m->default_payload) {
    o.payload = dm__blob_data(m->default_payload);
    o.payload_len = dm__blob_len(m->default_payload);
  }
  if (opts && (r = dm__opts_parse(opts, optslen, &o, NULL)))
    return r;
  if (!opts) {
    opts = "\x6a";
    optslen = 1;
  }
  dm__wopts *rec;
  if (m->last_opts && m->last_opts->len == optslen &&
      memcmp(m->last_opts->term, opts, optslen) == 0) {
    rec = dm__wopts_ref(m->last_opts);
  } else {
    if (!(rec = dm__wopts_new(m, opts, optslen, &o)))
      return DM_ENOMEM;
    /* Shared while the next worker's opts are the same (children_specs,
     * puts in a loop); big opts are not kept for that, so they go with
     * their worker. */
    if (optslen <= 4096) {
      dm__wopts_unref(m->last_opts);
      m->last_opts = dm__wopts_ref(rec);
    }
  }
  dm__worker *w = dm__slab_alloc(&m->sched->workers);
  if (!w) {
    dm__wopts_unref(rec);
    return DM_ENOMEM;
  }
  w->opts = rec; /* first: it names the manager */
  w->proc.kind = m->sched->kind_worker;
  dm__timer_init(&w->timer);
  r = DM_ENOMEM;
  if (dm__worker_set_id(w, id, idlen))
    goto err;
  if (!payload && o.payload && dm__cell_set(&w->payload, o.payload, o.payload_len))
    goto err;
  w->timeout_ms = o.timeout_ms;
  if ((r = dm__proc_spawn(n, &w->proc)))
    goto err;
  if (payload) {
    /* After the spawn: a value of its own goes to the annex, by pid key. */
    dm__cell p = DM__CELL_NIL, v = DM__CELL_NIL;
    dm__cell_copy(&p, payload);
    if (value)
      dm__cell_copy(&v, value);
    if ((r = dm__worker_take_terms(w, &p, &v))) {
      dm__cell_clear(&p);
      dm__cell_clear(&v);
    }
  }
  if (r || (r = dm__children_put(m, w))) {
    dm__proctab_del(&n->pids, w->proc.key);
    goto err;
  }
  if (out)
    *out = w;
  first_schedule(w, o.instant_ms, dm__id_hash(m, id, idlen));
  if (m->b->init && !payload)
    dm__worker_run(w, DM__JOB_INIT, NULL, 0, NULL, 0); /* the timer waits for init */
  return 0;
err:
  dm__worker_free(w);
  return r;
}

int dm__worker_start(dm__manager *m, const char *id, size_t idlen,
                     const char *opts, size_t optslen, dm__worker **out) {
  return start(m, id, idlen, opts, optslen, NULL, NULL, out);
}

int dm__worker_resume(dm__manager *m, const char *id, size_t idlen,
                      const char *opts, size_t optslen, const dm__cell *payload,
                      const dm__cell *value, dm__worker **out) {
  dm__cell p = DM__CELL_NIL;
  if (payload)
    dm__cell_copy(&p, payload);
  else if (dm__cell_set(&p, DM__A_NIL, DM__ALEN(DM__A_NIL)))
    return DM_ENOMEM;
  int r = start(m, id, idlen, opts, optslen, &p, value, out);
  dm__cell_clear(&p);
  return r;
}

int dm__worker_put(dm__manager *m, const char *id, size_t idlen, const char *opts,
                   size_t optslen, int only_new, ei_x_buff *detail, dm__worker **out) {
  dm__buf canon = DM__BUF_INIT;
  int r = dm__canon(id, idlen, &canon);
  if (!r) /* else DM_EBADTERM: {error, {bad_id, Id}} */
    r = dm__worker_put_canon(m, canon.data, canon.len,
                             dm__id_hash(m, canon.data, canon.len), opts, optslen,
                             only_new, detail, out);
  dm__buf_free(&canon);
  return r;
}

int dm__worker_put_canon(dm__manager *m, const char *canon, size_t canon_len, uint32_t hash,
                         const char *opts, size_t optslen, int only_new, ei_x_buff *detail,
                         dm__worker **out) {
  dm__child_opts probe = m->defaults;
  int r = dm__opts_parse(opts, optslen, &probe, detail);
  if (r)
    return r; /* DM_EINVAL: {error, {bad_opts, Detail}} */
  dm__worker *old = dm__children_get(m, canon, canon_len, hash);
  if (old && only_new)
    return 0;
  /* A spec id stays one when put over: deleting it later must keep
   * children_specs from bringing it back. */
  int spec = old && (old->proc.flags & DM__W_SPEC);
  if (old)
    dm__worker_stop(old, DM__A_SHUTDOWN, DM__ALEN(DM__A_SHUTDOWN));
  dm__worker *w = NULL;
  r = dm__worker_start(m, canon, canon_len, opts, optslen, &w);
  if (r == 0) {
    m->st.puts++;
    if (spec)
      w->proc.flags |= DM__W_SPEC;
    if (out)
      *out = w;
  }
  return r;
}

/* {payload, P}: the payload is replaced and init runs again on it. */
static void replace_payload(dm__worker *w, const char *p, size_t len) {
  dm__worker_set_payload(w, p, len);
  dm__durable_dirty(w);
  if (dm__worker_mgr(w)->b->init)
    dm__worker_run(w, DM__JOB_INIT, NULL, 0, NULL, 0);
}

/* The oldest mail waiting for w, or NULL; with the last one the mailbox
 * leaves the annex. */
static dm__mail *next_mail(dm__worker *w) {
  if (!(w->proc.flags & DM__W_MAIL))
    return NULL;
  dm__annex *a = dm__annex_of(w);
  dm__mail *mail = dm__mailbox_pop(&a->mbox);
  if (!a->mbox) {
    w->proc.flags &= (uint16_t)~DM__W_MAIL;
    dm__annex_tidy(w);
  }
  return mail;
}

void dm__worker_drain(dm__worker *w) {
  if (w->proc.flags & (DM__W_BUSY | DM__W_STOPPING))
    return;
  dm__mail *mail;
  while ((mail = next_mail(w)) != NULL) {
    if (mail->kind == DM__JOB_PAYLOAD) {
      replace_payload(w, mail->msg, mail->len);
      dm__free(mail);
      if (w->proc.flags & DM__W_BUSY)
        return; /* init runs: the rest waits for it */
      continue;
    }
    dm__worker_disarm(w);
    if (dm__worker_run(w, mail->kind, mail->msg, mail->len, mail->reply, mail->wrap) == 0)
      mail->reply = NULL; /* the job owns it now */
    else if (mail->reply)
      dm__reply_exit(dm__worker_mgr(w)->node, mail->reply, DM__A_CRASHED, DM__ALEN(DM__A_CRASHED));
    dm__free(mail->reply);
    dm__free(mail);
    return;
  }
  if (w->proc.flags & DM__W_PERFORM_DUE)
    dm__worker_run(w, DM__JOB_PERFORM, NULL, 0, NULL, 0);
}

void dm__worker_ahead(const dm__timer *t) {
  const dm__worker *w = of_timer((dm__timer *)t);
  const dm__blob *b = dm__cell_blob(&w->payload);
  if (b)
    __builtin_prefetch(b, 1);
}

/* Slower than lull x timeout: the behaviour hears of it, once per job, on
 * a pool thread of its own with copies of the terms. */
static void lull_fired(dm__worker *w) {
  dm__manager *m = dm__worker_mgr(w);
  if (w->proc.flags & DM__W_LULL_FIRED)
    return;
  w->proc.flags |= DM__W_LULL_FIRED;
  m->st.timeouts++;
  if (!m->b->handle_timeout)
    return;
  dm__wjob *j = dm__job_new(m, NULL, DM__JOB_TIMEOUT, NULL);
  size_t il = dm__worker_id_len(w), pl = dm__cell_size(&w->payload);
  if (!j)
    return;
  j->owned = dm__malloc(il + pl);
  if (!j->owned) {
    dm__job_free(j);
    return;
  }
  memcpy(j->owned, dm__worker_id(w), il);
  memcpy(j->owned + il, dm__cell_data(&w->payload), pl);
  j->id.data = j->owned;
  j->id.len = il;
  j->payload.data = j->owned + il;
  j->payload.len = pl;
  dm__job_submit(j);
}

void dm__worker_on_timer(dm__timer *t, void *ud) {
  dm__worker *w = of_timer(t);
  (void)ud;
  if (w->proc.flags & DM__W_BUSY) {
    lull_fired(w);
    return;
  }
  w->proc.flags |= DM__W_PERFORM_DUE;
  dm__worker_drain(w);
}

int dm__worker_deliver(dm__worker *w, int kind, const char *msg, size_t len,
                       const dm__gen *g, int wrap) {
  static const char too_deep[] = "\x68\x02" DM__A_ERROR "\x77\x08" "too_deep";
  static const char overloaded[] = "\x68\x02" DM__A_ERROR "\x77\x0a" "overloaded";
  dm__manager *m = dm__worker_mgr(w);
  dm__replyto *reply = NULL;
  if (!dm__term_depth_ok(msg, len, DM__TERM_MAX_DEPTH)) {
    /* Too deep for a behaviour to walk safely: refused, not delivered. */
    m->st.bad_requests++;
    if (kind == DM__JOB_CALL)
      dm__reply(m->node, g, too_deep, DM__ALEN(too_deep));
    return DM_EINVAL;
  }
  if (kind == DM__JOB_CALL) {
    reply = dm__replyto_new(g);
    if (!reply)
      return DM_ENOMEM;
  }
  if (!(w->proc.flags & (DM__W_BUSY | DM__W_MAIL))) {
    if (kind == DM__JOB_PAYLOAD) {
      replace_payload(w, msg, len);
      return 0;
    }
    int r = dm__worker_run(w, kind, msg, len, reply, wrap);
    if (r)
      dm__free(reply);
    return r;
  }
  if (dm__mailbox_count(dm__worker_mbox(w)) >= m->max_mailbox) {
    m->st.mailbox_overflows++;
    if (kind == DM__JOB_CALL)
      dm__reply_to(m->node, reply, overloaded, DM__ALEN(overloaded), 0);
    else
      m->st.casts_dropped++;
    dm__free(reply);
    return DM_ETOOBIG;
  }
  dm__annex *a = dm__annex_get(w);
  int r = a ? dm__mailbox_push(&a->mbox, kind, msg, len, reply, wrap) : DM_ENOMEM;
  if (r) {
    dm__free(reply);
    dm__annex_tidy(w);
    return r;
  }
  w->proc.flags |= DM__W_MAIL;
  return 0;
}

void dm__worker_message(dm__worker *w, const dm__ctrl *ctl) {
  dm__gen g;
  dm__gen_decode(ctl->msg, ctl->msg_len, &g);
  if (g.kind == DM__GEN_CALL) {
    dm__worker_deliver(w, DM__JOB_CALL, g.req, g.req_len, &g, 0);
  } else if (g.kind == DM__GEN_CAST) {
    dm__worker_deliver(w, DM__JOB_CAST, g.req, g.req_len, NULL, 0);
  } else {
    /* {payload, P}: the payload is replaced and init runs again. */
    int i = 1, arity;
    const char *msg = ctl->msg;
    size_t len = ctl->msg_len;
    if (ei_decode_tuple_header(msg, &i, &arity) == 0 && arity == 2 &&
        dm__term_is_atom(msg + i, len - (size_t)i, "payload")) {
      size_t a = (size_t)i, end;
      if (dm__term_skip(msg, len, &a) != 0)
        return;
      end = a;
      /* While a callback runs it waits in the mailbox, in order with
       * calls and casts, so it is never lost. */
      if (dm__term_skip(msg, len, &end) == 0 && end == len)
        dm__worker_deliver(w, DM__JOB_PAYLOAD, msg + a, len - a, NULL, 0);
    }
  }
}
