/* What a finished callback means for its worker: Tarearbol's response
 * forms applied, the reply to a call, the next perform armed, waiting
 * mail run. The result is an outcome (lives, stopped, crashed with a
 * reason) for the supervisor to act on. Loop thread only. */
#include <string.h>

#include "dm/mgr.h"

/* {replace, Id, P} with a new id: this worker goes, a new one is put there
 * with the same opts and the new payload. */
static void move_to(dm__worker *w, const dm__buf *canon, const dm__response *rs) {
  dm__manager *m = dm__worker_mgr(w);
  dm__worker *old = dm__children_get(m, canon->data, canon->len,
                                     dm__id_hash(m, canon->data, canon->len));
  if (old)
    dm__worker_stop(old, DM__A_SHUTDOWN, DM__ALEN(DM__A_SHUTDOWN));
  dm__worker *moved = NULL;
  if (dm__worker_start(m, canon->data, canon->len, w->opts->term, w->opts->len,
                       &moved) == 0) {
    dm__worker_set_both(moved, rs->term, rs->term_len);
    dm__durable_put(m, moved);
  }
  dm__durable_del(m, w);
  dm__worker_stop(w, DM__A_NORMAL, DM__ALEN(DM__A_NORMAL));
}

/* Applies a perform/call/cast response. Returns 0 when w lives on, 1 when
 * it stopped (halt or moved). */
static int apply(dm__worker *w, const dm__response *rs) {
  switch (rs->kind) {
  case DM__R_HALT:
    dm__worker_mgr(w)->st.halts++;
    dm__durable_del(dm__worker_mgr(w), w);
    dm__worker_stop(w, DM__A_NORMAL, DM__ALEN(DM__A_NORMAL));
    return 1;
  case DM__R_OK:
    dm__worker_set_payload(w, rs->term, rs->term_len);
    return 0;
  case DM__R_TIMEOUT:
    w->timeout_ms = rs->timeout_ms;
    dm__worker_set_both(w, rs->term, rs->term_len);
    return 0;
  case DM__R_REPLACE:
    dm__worker_set_both(w, rs->term, rs->term_len);
    return 0;
  case DM__R_REPLACE_ID: {
    dm__buf canon = DM__BUF_INIT;
    int stopped = 0;
    if (dm__canon(rs->id, rs->id_len, &canon) != 0) {
      dm__worker_set_value(w, rs->term, rs->term_len);
    } else if (canon.len == dm__worker_id_len(w) &&
               memcmp(canon.data, dm__worker_id(w), canon.len) == 0) {
      dm__worker_set_both(w, rs->term, rs->term_len);
    } else {
      move_to(w, &canon, rs);
      stopped = 1;
    }
    dm__buf_free(&canon);
    return stopped;
  }
  default:
    /* nil as a value leaves the stored one alone, as in Tarearbol. */
    if (!dm__term_is_atom(rs->term, rs->term_len, "nil"))
      dm__worker_set_value(w, rs->term, rs->term_len);
    return 0;
  }
}

/* The job of a worker that was stopped while it ran: the caller of a call
 * gets its answer (or the crash), then terminate, then the end. */
static void completed_stopping(dm__wjob *j, const char *out, size_t len,
                               int crashed, int valid) {
  dm__worker *w = j->w;
  dm__manager *m = dm__worker_mgr(w);
  if (j->kind == DM__JOB_CALL && j->reply && !j->answered) {
    if (crashed) {
      dm__reply_exit(m->node, j->reply, out, len);
    } else if (valid) {
      dm__response stopped;
      dm__response_parse(out, len, &stopped);
      dm__reply_to(m->node, j->reply, stopped.reply, stopped.reply_len, j->wrap);
    }
  }
  const dm__blob *reason = dm__worker_stop_reason(w);
  if (j->kind != DM__JOB_TERMINATE && m->b->terminate &&
      dm__worker_run(w, DM__JOB_TERMINATE, dm__blob_data(reason), dm__blob_size(reason),
                     NULL, 0) == 0)
    return;
  dm__worker_finalize(w);
}

void dm__worker_completed(dm__wjob *j, dm__outcome *oc) {
  static const char not_impl[] = "\x68\x02" DM__A_ERROR "\x77\x0f" "not_implemented";
  dm__worker *w = j->w;
  dm__manager *m = dm__worker_mgr(w);
  dm__node *n = m->node;
  const char *out = j->out.buff;
  size_t len = (size_t)j->out.index;
  /* A behaviour's output is checked like a peer's input (on the pool). */
  int valid = j->valid;
  int crashed = j->rc != DM_CB_OK;
  oc->kind = DM__OUT_LIVES;
  if (j->kind == DM__JOB_CALL)
    dm__pidtab_del(&m->sched->calls, w->proc.key);
  w->proc.flags &= (uint16_t)~DM__W_BUSY;
  if (crashed && !valid) {
    out = DM__A_CRASHED;
    len = DM__ALEN(DM__A_CRASHED);
  }
  if (w->proc.flags & DM__W_STOPPING) {
    completed_stopping(j, out, len, crashed, valid);
    oc->kind = DM__OUT_STOPPED;
    return;
  }
  if (!crashed && !valid && j->kind != DM__JOB_INIT && j->kind != DM__JOB_CAST &&
      !(j->kind == DM__JOB_CALL && !m->b->call)) {
    DM_ERROR("manager %s: a callback returned no valid term", m->name);
    crashed = 1;
    out = DM__A_BAD_RETURN;
    len = DM__ALEN(DM__A_BAD_RETURN);
  }
  dm__response rs = {.kind = 0};
  if (valid)
    rs = j->rs;
  else if (crashed) /* out is crashed or bad_return */
    dm__response_parse(out, len, &rs);
  switch (j->kind) {
  case DM__JOB_INIT:
    if (crashed)
      break;
    if (valid)
      dm__worker_set_payload(w, out, len);
    /* The first perform keeps the time chosen at start, so a slow init
     * does not bunch up what the boot spread out. */
    if (j->due)
      dm__worker_arm(w, j->due);
    else
      dm__worker_park(w, 0);
    break;
  case DM__JOB_PERFORM:
    m->st.performs++;
    if (j->due) {
      uint64_t late = j->base.started_us > j->due ? j->base.started_us - j->due : 0;
      dm__lateness_note(&m->st, late);
      dm__ev_late(m, w, late);
    }
    if (crashed)
      break;
    if (apply(w, &rs))
      goto stopped;
    if (w->timeout_ms) {
      /* Fixed rate: the next perform is one period after this one was
       * due, so queueing delays do not accumulate; a perform that overran
       * its period is followed a full period after it ended. */
      uint64_t now = dm__worker_now_us(w), next = j->due + (uint64_t)w->timeout_ms * 1000;
      dm__worker_arm(w, next > now ? next : now + (uint64_t)w->timeout_ms * 1000);
    } else {
      dm__worker_park(w, 0);
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
      dm__reply_to(n, j->reply, not_impl, DM__ALEN(not_impl), j->wrap);
      break;
    }
    dm__reply_to(n, j->reply, rs.reply, rs.reply_len, j->wrap);
    if (apply(w, &rs))
      goto stopped;
    break;
  case DM__JOB_CAST:
    m->st.casts++;
    if (!crashed && valid && apply(w, &rs))
      goto stopped;
    break;
  default:
    break;
  }
  if (crashed) {
    oc->kind = DM__OUT_CRASHED;
    oc->reason = out;
    oc->reason_len = len;
    return;
  }
  /* Whatever it answered may have changed payload or value: the next
   * checkpoint records it (a bit; the record is made then, once). */
  dm__durable_dirty(w);
  /* The next perform keeps its time across calls and casts: the timer
   * watched for slowness while busy, now it waits for the job's due
   * again; a perform due already keeps it for its lateness. */
  if (j->kind != DM__JOB_PERFORM && j->kind != DM__JOB_INIT) {
    if (j->due && !(w->proc.flags & DM__W_PERFORM_DUE))
      dm__worker_arm(w, j->due);
    else
      dm__worker_park(w, j->due);
  }
  dm__worker_drain(w);
  return;
stopped:
  oc->kind = DM__OUT_STOPPED;
}
