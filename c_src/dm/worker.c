/* Workers: start, the perform schedule, the mailbox, callback completions
 * with Tarearbol's response forms, crashes and stops. Loop thread only. */
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "term/term.h"
#include "dm/mgr.h"

static const char A_NORMAL[] = "\x77\x06normal";
static const char A_SHUTDOWN[] = "\x77\x08shutdown";
static const char A_CRASHED[] = "\x77\x07crashed";

static uint64_t mono_us(void) { return uv_hrtime() / 1000; }


static dm__wheel *wheel_of(dm__worker *w) { return &w->m->node->wheel; }

/* The loop's cached time in µs: no clock read per perform. Dues that
 * chain at a fixed rate never read it, so its coarseness does not skew
 * them. */
static uint64_t loop_us(dm__worker *w) { return uv_now(w->m->node->loop) * 1000; }

static void worker_message(dm__proc *p, dm__node *n, const dm__ctrl *ctl);
static void worker_exit(dm__proc *p, dm__node *n, const erlang_pid *from,
                        const char *reason, size_t len);
const dm__proc_ops dm__worker_ops = {worker_message, worker_exit};

static dm__worker *of_proc(dm__proc *p) { return (dm__worker *)p; }
static dm__worker *of_timer(dm__timer *t) {
  return (dm__worker *)((char *)t - offsetof(dm__worker, timer));
}

/* Arms w's timer. The wheel grows an array to take it; when even that
 * fails the worker says so instead of silently never running again. */
static void arm(dm__worker *w, uint64_t due_us) {
  if (dm__wheel_add(wheel_of(w), &w->timer, due_us) != 0)
    DM_ERROR("manager %s: out of memory arming a worker's timer", w->m->name);
}

static void schedule(dm__worker *w, uint64_t delay_ms) {
  w->due = mono_us() + delay_ms * 1000 + 1; /* never 0, which means none */
  arm(w, w->due);
}

/* The first perform: at once or after instant_ms when instant, else after
 * a period. Workers booted together from children_specs spread their first
 * performs over the period after it, so they do not all fall due in the
 * same millisecond for ever after. */
static void first_schedule(dm__worker *w, uint32_t instant_ms) {
  if (w->instant)
    schedule(w, instant_ms);
  else if (w->timeout_ms)
    schedule(w, w->timeout_ms + (w->m->spread ? w->hash % w->timeout_ms : 0));
}

/* After init: the first perform keeps the time chosen at start, so a
 * slow init does not bunch up what the boot spread out. */
static void arm_first(dm__worker *w) {
  if (w->due)
    arm(w, w->due);
}

/* Runs a callback for w; w must be idle. */
static int run(dm__worker *w, int kind, const char *msg, size_t len,
               dm__replyto *reply, int wrap) {
  dm__wjob *j = dm__job_new(w->m, w, kind);
  if (!j)
    return DM_ENOMEM;
  if (msg) {
    j->owned = dm__malloc(len ? len : 1);
    if (!j->owned) {
      dm__job_free(j);
      return DM_ENOMEM;
    }
    memcpy(j->owned, msg, len);
    j->msg.data = j->owned;
    j->msg.len = len;
  }
  j->reply = reply;
  j->wrap = wrap;
  if (kind == DM__JOB_PERFORM)
    j->due = w->due;
  w->flags |= DM__W_BUSY;
  w->flags &= (uint8_t)~DM__W_LULL_FIRED;
  /* Milliseconds since the node started, plus one (0 means idle): 32 bits
   * cover 49 days of a single callback. */
  w->busy_ms = (uint32_t)(uv_now(w->m->node->loop) - w->m->node->start_ms) + 1;
  if (kind == DM__JOB_PERFORM)
    w->flags &= (uint8_t)~DM__W_PERFORM_DUE;
  /* While busy the timer watches for slowness (lull x timeout); the next
   * perform is re-armed from w->due when the callback returns. */
  if (w->timeout_ms && (kind == DM__JOB_PERFORM || kind == DM__JOB_CALL ||
                        kind == DM__JOB_CAST)) {
    uint64_t lull_us = (uint64_t)((double)w->timeout_ms * w->lull * 1000.0);
    arm(w, loop_us(w) + lull_us);
  } else {
    dm__wheel_del(wheel_of(w), &w->timer);
  }
  dm__job_submit(j);
  return 0;
}

static void set_blob(dm__blob **slot, const char *data, size_t len) {
  dm__blob *b = dm__blob_new(data, len);
  if (!b) {
    DM_ERROR("out of memory storing a term; keeping the old one");
    return;
  }
  dm__blob_unref(*slot);
  *slot = b;
}

/* Payload and value become the same term: one blob for both. A periodic
 * worker does this on every perform, so when the worker is the blob's only
 * owner and it is large enough, the bytes are rewritten in place and
 * nothing is allocated. */
static void set_both(dm__worker *w, const char *data, size_t len) {
  dm__blob *b = w->payload;
  if (b && b == w->value && dm__blob_refs(b) == 2 && dm__blob_fits(b, len)) {
    dm__blob_rewrite(b, data, len);
    return;
  }
  set_blob(&w->payload, data, len);
  dm__blob_unref(w->value);
  w->value = dm__blob_ref(w->payload);
}

static void finalize(dm__worker *w) {
  dm__node *n = w->m->node;
  dm__links *l = w->proc.links;
  if (l) {
    erlang_pid self, to;
    dm__proc_pid(n, &w->proc, &self);
    for (uint32_t i = 0; i < l->count; i++) {
      snprintf(to.node, sizeof to.node, "%s", n->peer_names[l->items[i].peer]);
      to.num = l->items[i].num;
      to.serial = l->items[i].serial;
      to.creation = l->items[i].creation;
      n->x.index = 0;
      if (dm__enc_exit(&n->x, &self, &to, dm__blob_data(w->stop_reason),
                       dm__blob_size(w->stop_reason)) == 0)
        dm__node_send(n, to.node, &n->x);
    }
  }
  dm__worker_free(w);
}

/* Frees the mailbox: its mail and the replies they would have had. */
static void free_mailbox(dm__mailbox *mb) {
  if (!mb)
    return;
  for (dm__mail *m = mb->head, *next; m; m = next) {
    next = m->next;
    dm__free(m->reply);
    dm__free(m);
  }
  dm__free(mb);
}

int dm__worker_set_id(dm__worker *w, const char *id, size_t len) {
  if (len <= DM__ID_INLINE) {
    w->id.inl[0] = (char)len;
    memcpy(w->id.inl + 1, id, len);
    return 0;
  }
  if (!(w->id.blob = dm__blob_new(id, len)))
    return DM_ENOMEM;
  w->flags |= DM__W_ID_BLOB;
  return 0;
}

void dm__worker_release_id(dm__worker *w) {
  if (w->flags & DM__W_ID_BLOB)
    dm__blob_unref(w->id.blob);
  w->flags &= (uint8_t)~DM__W_ID_BLOB;
  w->id.inl[0] = 0;
}

void dm__worker_free(dm__worker *w) {
  if (w->flags & DM__W_STOPPING)
    dm__blob_unref(w->stop_reason);
  else
    free_mailbox(w->mbox);
  dm__proc_free_links(w->m->node, &w->proc);
  dm__worker_release_id(w);
  dm__blob_unref(w->opts);
  dm__blob_unref(w->payload);
  dm__blob_unref(w->value);
  dm__slab_free(&w->m->node->workers, w);
}

void dm__worker_stop(dm__worker *w, const char *reason, size_t reason_len) {
  dm__manager *m = w->m;
  dm__node *n = m->node;
  if (w->flags & DM__W_STOPPING)
    return;
  dm__children_del(m, w);
  dm__pidtab_del(&n->pids, w->proc.key);
  dm__wheel_del(wheel_of(w), &w->timer);
  /* Callers still waiting in the mailbox see the worker die, as a BEAM
   * caller's monitor would; then the stop reason takes the mailbox's
   * place. */
  dm__mailbox *mb = w->mbox;
  for (dm__mail *mail = mb ? mb->head : NULL; mail; mail = mail->next)
    if (mail->reply)
      dm__reply_exit(n, mail->reply, reason, reason_len);
  free_mailbox(mb);
  w->flags |= DM__W_STOPPING;
  w->stop_reason = dm__blob_new(reason, reason_len);
  if (w->flags & DM__W_BUSY)
    return; /* terminate follows the running callback */
  if (m->b->terminate && run(w, DM__JOB_TERMINATE, reason, reason_len, NULL, 0) == 0)
    return;
  finalize(w);
}

static int is_normal_exit(const char *r, size_t len) {
  return dm__term_is_atom(r, len, "normal") || dm__term_is_atom(r, len, "shutdown");
}

/* A crash (or an exit signal): terminate, then restart per restart type
 * with the original opts. */
static void crash(dm__worker *w, const char *reason, size_t len) {
  dm__manager *m = w->m;
  int restart = w->restart == DM__PERMANENT ||
                (w->restart == DM__TRANSIENT && !is_normal_exit(reason, len));
  m->st.crashes++;
  DM_WARN("manager %s: a worker crashed%s", m->name,
          restart ? "; restarting it" : "");
  /* The stop may free w at once, so the restart works from copies. */
  dm__blob *id = restart ? dm__blob_new(dm__worker_id(w), dm__worker_id_len(w)) : NULL;
  dm__blob *opts = restart ? dm__blob_ref(w->opts) : NULL;
  dm__worker_stop(w, reason, len);
  if (id && opts && dm__manager_allow_restart(m) &&
      dm__worker_start(m, dm__blob_data(id), dm__blob_len(id), dm__blob_data(opts),
                       dm__blob_len(opts), NULL) == 0)
    m->st.restarts++;
  dm__blob_unref(id);
  dm__blob_unref(opts);
}

int dm__worker_start(dm__manager *m, const char *id, size_t idlen,
                     const char *opts, size_t optslen, dm__worker **out) {
  dm__node *n = m->node;
  dm__child_opts o = m->defaults;
  int r = DM_ENOMEM;
  if (m->default_payload) {
    o.payload = dm__blob_data(m->default_payload);
    o.payload_len = dm__blob_len(m->default_payload);
  }
  if (opts && (r = dm__opts_parse(opts, optslen, &o, NULL)))
    return r;
  dm__worker *w = dm__slab_alloc(&n->workers);
  if (!w)
    return DM_ENOMEM;
  w->proc.kind = DM__P_WORKER;
  w->m = m;
  dm__timer_init(&w->timer);
  if (dm__worker_set_id(w, id, idlen))
    goto err;
  if (!opts) {
    opts = "\x6a";
    optslen = 1;
  }
  if (m->last_opts && dm__blob_len(m->last_opts) == optslen &&
      memcmp(dm__blob_data(m->last_opts), opts, optslen) == 0) {
    w->opts = dm__blob_ref(m->last_opts);
  } else {
    w->opts = dm__blob_new(opts, optslen);
    dm__blob_unref(m->last_opts);
    m->last_opts = dm__blob_ref(w->opts);
  }
  w->payload = o.payload ? dm__blob_new(o.payload, o.payload_len) : NULL;
  if (!w->opts || (o.payload && !w->payload))
    goto err;
  w->hash = dm__id_hash(m, id, idlen);
  w->timeout_ms = o.timeout_ms;
  w->lull = o.lull;
  w->restart = o.restart;
  w->instant = (uint8_t)o.instant;
  if ((r = dm__proc_spawn(n, &w->proc)))
    goto err;
  if ((r = dm__children_put(m, w))) {
    dm__pidtab_del(&n->pids, w->proc.key);
    goto err;
  }
  if (out)
    *out = w;
  first_schedule(w, o.instant_ms);
  if (m->b->init && run(w, DM__JOB_INIT, NULL, 0, NULL, 0) == 0)
    return 0; /* the timer waits for init */
  return 0;
err:
  dm__worker_free(w);
  return r;
}

/* ---- responses -------------------------------------------------------------- */

/* Applies a perform/call/cast response. Returns 0 when w lives on, 1 when
 * it stopped (halt or moved). */
static int apply(dm__worker *w, const dm__response *rs) {
  dm__manager *m = w->m;
  switch (rs->kind) {
  case DM__R_HALT:
    m->st.halts++;
    dm__worker_stop(w, A_NORMAL, sizeof A_NORMAL - 1);
    return 1;
  case DM__R_OK:
    set_blob(&w->payload, rs->term, rs->term_len);
    return 0;
  case DM__R_TIMEOUT:
    w->timeout_ms = rs->timeout_ms;
    set_both(w, rs->term, rs->term_len);
    return 0;
  case DM__R_REPLACE:
    set_both(w, rs->term, rs->term_len);
    return 0;
  case DM__R_REPLACE_ID: {
    dm__buf canon = DM__BUF_INIT;
    if (dm__canon(rs->id, rs->id_len, &canon) != 0) {
      dm__buf_free(&canon);
      set_blob(&w->value, rs->term, rs->term_len);
      return 0;
    }
    if (canon.len == dm__worker_id_len(w) &&
        memcmp(canon.data, dm__worker_id(w), canon.len) == 0) {
      set_both(w, rs->term, rs->term_len);
      dm__buf_free(&canon);
      return 0;
    }
    /* A new id: this worker goes, a new one is put there with the same
     * opts and the new payload. */
    dm__worker *old = dm__children_get(m, canon.data, canon.len,
                                       dm__id_hash(m, canon.data, canon.len));
    if (old)
      dm__worker_stop(old, A_SHUTDOWN, sizeof A_SHUTDOWN - 1);
    dm__worker *moved = NULL;
    if (dm__worker_start(m, canon.data, canon.len, dm__blob_data(w->opts),
                         dm__blob_len(w->opts), &moved) == 0)
      set_both(moved, rs->term, rs->term_len);
    dm__buf_free(&canon);
    dm__worker_stop(w, A_NORMAL, sizeof A_NORMAL - 1);
    return 1;
  }
  default:
    set_blob(&w->value, rs->term, rs->term_len);
    return 0;
  }
}

static void drain(dm__worker *w);
static void replace_payload(dm__worker *w, const char *p, size_t len);

void dm__worker_completed(dm__wjob *j) {
  dm__worker *w = j->w;
  dm__manager *m = w->m;
  dm__node *n = m->node;
  const char *out = j->out.buff;
  size_t len = (size_t)j->out.index;
  /* A behaviour's output is checked like a peer's input (on the pool). */
  int valid = j->valid;
  int crashed = j->rc != DM_CB_OK;
  static const char bad_return[] = "\x77\x0a" "bad_return";
  w->flags &= (uint8_t)~DM__W_BUSY;
  w->busy_ms = 0;
  if (crashed && !valid) {
    out = A_CRASHED;
    len = sizeof A_CRASHED - 1;
  }
  if (w->flags & DM__W_STOPPING) {
    if (j->kind == DM__JOB_CALL && j->reply) {
      if (crashed)
        dm__reply_exit(n, j->reply, out, len);
      else if (valid) {
        dm__response stopped;
        dm__response_parse(out, len, &stopped);
        dm__reply_to(n, j->reply, stopped.reply, stopped.reply_len, j->wrap);
      }
    }
    if (j->kind != DM__JOB_TERMINATE && m->b->terminate &&
        run(w, DM__JOB_TERMINATE, dm__blob_data(w->stop_reason),
            dm__blob_size(w->stop_reason), NULL, 0) == 0) {
      dm__job_free(j);
      return;
    }
    dm__job_free(j);
    finalize(w);
    return;
  }
  if (!crashed && !valid && j->kind != DM__JOB_INIT && j->kind != DM__JOB_CAST &&
      !(j->kind == DM__JOB_CALL && !m->b->call)) {
    DM_ERROR("manager %s: a callback returned no valid term", m->name);
    crashed = 1;
    out = bad_return;
    len = sizeof bad_return - 1;
  }
  dm__response rs = {.kind = 0};
  if (valid)
    rs = j->rs;
  else if (crashed) /* out is A_CRASHED or bad_return */
    dm__response_parse(out, len, &rs);
  switch (j->kind) {
  case DM__JOB_INIT:
    if (crashed)
      break;
    if (valid)
      set_blob(&w->payload, out, len);
    arm_first(w);
    break;
  case DM__JOB_PERFORM:
    m->st.performs++;
    if (j->due)
      dm__manager_note_lateness(m, j->started_us > j->due ? j->started_us - j->due : 0);
    w->due = 0;
    if (crashed)
      break;
    if (apply(w, &rs))
      goto done; /* w is gone */
    if (w->timeout_ms) {
      /* Fixed rate: the next perform is one period after this one was
       * due, so queueing delays do not accumulate; a perform that overran
       * its period is followed a full period after it ended. */
      uint64_t now = loop_us(w), next = j->due + (uint64_t)w->timeout_ms * 1000;
      w->due = next > now ? next : now + (uint64_t)w->timeout_ms * 1000;
      arm(w, w->due);
    } else {
      dm__wheel_del(wheel_of(w), &w->timer);
    }
    break;
  case DM__JOB_CALL:
    m->st.calls++;
    if (crashed) {
      if (j->reply)
        dm__reply_exit(n, j->reply, out, len);
      break;
    }
    if (!m->b->call) {
      static const char not_impl[] = "\x68\x02\x77\x05" "error" "\x77\x0f" "not_implemented";
      dm__reply_to(n, j->reply, not_impl, sizeof not_impl - 1, j->wrap);
      break;
    }
    dm__reply_to(n, j->reply, rs.reply, rs.reply_len, j->wrap);
    if (apply(w, &rs))
      goto done;
    break;
  case DM__JOB_CAST:
    m->st.casts++;
    if (!crashed && valid && apply(w, &rs))
      goto done;
    break;
  default:
    break;
  }
  if (crashed) {
    dm__job_free(j);
    crash(w, out, len);
    return;
  }
  /* The next perform keeps its time across calls and casts: the timer
   * watched for slowness while busy, now it waits for w->due again. */
  if (j->kind != DM__JOB_PERFORM && j->kind != DM__JOB_INIT) {
    if (w->due && !(w->flags & DM__W_PERFORM_DUE))
      arm(w, w->due);
    else
      dm__wheel_del(wheel_of(w), &w->timer);
  }
  drain(w);
done:
  dm__job_free(j);
}

/* Runs what waited while w was busy: mail first, then a due perform. */
static void drain(dm__worker *w) {
  if (w->flags & (DM__W_BUSY | DM__W_STOPPING))
    return;
  dm__mail *mail;
  while ((mail = w->mbox ? w->mbox->head : NULL) != NULL) {
    w->mbox->head = mail->next;
    if (!--w->mbox->count) {
      dm__free(w->mbox);
      w->mbox = NULL;
    }
    if (mail->kind == DM__JOB_PAYLOAD) {
      replace_payload(w, mail->msg, mail->len);
      dm__free(mail);
      if (w->flags & DM__W_BUSY)
        return; /* init runs: the rest waits for it */
      continue;
    }
    dm__wheel_del(wheel_of(w), &w->timer);
    if (run(w, mail->kind, mail->msg, mail->len, mail->reply, mail->wrap) == 0)
      mail->reply = NULL; /* the job owns it now */
    else if (mail->reply)
      dm__reply_exit(w->m->node, mail->reply, A_CRASHED, sizeof A_CRASHED - 1);
    dm__free(mail->reply);
    dm__free(mail);
    return;
  }
  if (w->flags & DM__W_PERFORM_DUE)
    run(w, DM__JOB_PERFORM, NULL, 0, NULL, 0);
}

/* {payload, P}: the payload is replaced and init runs again on it. */
static void replace_payload(dm__worker *w, const char *p, size_t len) {
  set_blob(&w->payload, p, len);
  if (w->m->b->init)
    run(w, DM__JOB_INIT, NULL, 0, NULL, 0);
}

void dm__worker_ahead(const dm__timer *t) {
  const dm__worker *w = of_timer((dm__timer *)t);
  if (w->payload)
    __builtin_prefetch(w->payload, 1);
}

void dm__worker_on_timer(dm__timer *t, void *ud) {
  dm__worker *w = of_timer(t);
  dm__manager *m = w->m;
  (void)ud;
  if (w->flags & DM__W_BUSY) {
    /* Slower than lull x timeout: tell the behaviour, once per job, on a
     * pool thread of its own with copies of the terms. */
    if (w->flags & DM__W_LULL_FIRED)
      return;
    w->flags |= DM__W_LULL_FIRED;
    m->st.timeouts++;
    if (!m->b->handle_timeout)
      return;
    dm__wjob *j = dm__job_new(m, NULL, DM__JOB_TIMEOUT);
    size_t il = dm__worker_id_len(w), pl = dm__blob_size(w->payload);
    if (!j)
      return;
    j->owned = dm__malloc(il + pl);
    if (!j->owned) {
      dm__job_free(j);
      return;
    }
    memcpy(j->owned, dm__worker_id(w), il);
    memcpy(j->owned + il, dm__blob_data(w->payload), pl);
    j->id.data = j->owned;
    j->id.len = il;
    j->payload.data = j->owned + il;
    j->payload.len = pl;
    dm__job_submit(j);
    return;
  }
  w->flags |= DM__W_PERFORM_DUE;
  drain(w);
}

int dm__worker_deliver(dm__worker *w, int kind, const char *msg, size_t len,
                       const dm__gen *g, int wrap) {
  dm__manager *m = w->m;
  dm__replyto *reply = NULL;
  if (!dm__term_depth_ok(msg, len, DM__TERM_MAX_DEPTH)) {
    /* Too deep for a behaviour to walk safely: refused, not delivered. */
    static const char too_deep[] = "\x68\x02\x77\x05" "error" "\x77\x08" "too_deep";
    m->st.bad_requests++;
    if (kind == DM__JOB_CALL) {
      dm__replyto *r = dm__replyto_new(g);
      if (r)
        dm__reply_to(m->node, r, too_deep, sizeof too_deep - 1, 0);
      dm__free(r);
    }
    return DM_EINVAL;
  }
  if (kind == DM__JOB_CALL) {
    reply = dm__replyto_new(g);
    if (!reply)
      return DM_ENOMEM;
  }
  if (!(w->flags & DM__W_BUSY) && !w->mbox) {
    if (kind == DM__JOB_PAYLOAD) {
      replace_payload(w, msg, len);
      return 0;
    }
    int r = run(w, kind, msg, len, reply, wrap);
    if (r)
      dm__free(reply);
    return r;
  }
  if (w->mbox && w->mbox->count >= m->max_mailbox) {
    m->st.mailbox_overflows++;
    if (kind == DM__JOB_CALL) {
      static const char overloaded[] = "\x68\x02\x77\x05" "error" "\x77\x0a" "overloaded";
      dm__reply_to(m->node, reply, overloaded, sizeof overloaded - 1, 0);
    } else {
      m->st.casts_dropped++;
    }
    dm__free(reply);
    return DM_ETOOBIG;
  }
  dm__mail *mail = dm__malloc(sizeof *mail + len);
  if (!mail) {
    dm__free(reply);
    return DM_ENOMEM;
  }
  mail->next = NULL;
  mail->kind = kind;
  mail->wrap = wrap;
  mail->reply = reply;
  mail->len = len;
  memcpy(mail->msg, msg, len);
  if (!w->mbox) {
    w->mbox = dm__calloc(1, sizeof *w->mbox);
    if (!w->mbox) {
      dm__free(mail->reply);
      dm__free(mail);
      return DM_ENOMEM;
    }
  }
  if (w->mbox->tail)
    w->mbox->tail->next = mail;
  else
    w->mbox->head = mail;
  w->mbox->tail = mail;
  w->mbox->count++;
  return 0;
}

/* ---- the worker's pid ------------------------------------------------------- */

static void worker_message(dm__proc *p, dm__node *n, const dm__ctrl *ctl) {
  dm__worker *w = of_proc(p);
  dm__gen g;
  (void)n;
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

static void worker_exit(dm__proc *p, dm__node *n, const erlang_pid *from,
                        const char *reason, size_t len) {
  dm__worker *w = of_proc(p);
  (void)n;
  (void)from;
  /* Not trapping exits: a linked process's abnormal death takes the
   * worker with it; `normal` is ignored, as in OTP. */
  if (dm__term_is_atom(reason, len, "normal"))
    return;
  crash(w, reason, len);
}
