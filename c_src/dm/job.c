/* Callback jobs: built on the loop thread, run on the pool, handed back in
 * batches to the completion function their creator gave. A job lends the
 * worker's id and payload to the callback: the loop thread does not
 * change them while the worker is busy. */
#include <string.h>

#include "base/base.h"
#include "dm/mgr.h"
#include "term/term.h"

static void run(dm__job *base);

dm__wjob *dm__job_new(dm__manager *m, dm__worker *w, int kind, dm__job_done_fn done) {
  dm__wjob *j = m->free_jobs;
  if (j) {
    m->free_jobs = (dm__wjob *)j->base.next;
    if (--m->nfree_jobs < m->free_jobs_low)
      m->free_jobs_low = m->nfree_jobs;
  } else {
    j = dm__calloc(1, sizeof *j);
    if (!j)
      return NULL;
    /* sends stays empty (NULL) until a callback sends something: ei's
     * x functions grow a buffer from nothing. */
    if (ei_x_new(&j->out) < 0) {
      dm__free(j);
      return NULL;
    }
  }
  j->base.next = NULL;
  j->base.run = run;
  /* A perform's result is applied at the next wheel tick: nobody waits
   * for it, and its next period is counted from when it was due. */
  j->base.lazy = kind == DM__JOB_PERFORM;
  j->valid = 0;
  j->m = m;
  j->w = w;
  j->done = done;
  j->kind = kind;
  j->rc = 0;
  j->wrap = 0;
  j->epoch = m->epoch;
  j->state_name = NULL;
  j->owned = NULL;
  j->reply = NULL;
  j->answered = 0;
  j->msg.data = NULL;
  j->msg.len = 0;
  j->due = 0;
  if (w) {
    j->id.data = dm__worker_id(w);
    j->id.len = dm__worker_id_len(w);
    j->payload.data = dm__cell_data(&w->payload);
    j->payload.len = dm__cell_size(&w->payload);
    if (j->payload.len <= sizeof j->payload_copy) {
      memcpy(j->payload_copy, j->payload.data, j->payload.len);
      j->payload.data = j->payload_copy;
    }
  } else {
    j->id.data = j->payload.data = NULL;
    j->id.len = j->payload.len = 0;
  }
  return j;
}

static void destroy(dm__wjob *j) {
  ei_x_free(&j->out);
  ei_x_free(&j->sends);
  dm__free(j);
}

void dm__job_free(dm__wjob *j) {
  dm__manager *m = j->m;
  dm__free(j->owned);
  dm__free(j->reply);
  j->owned = NULL;
  j->reply = NULL;
  /* Keep a bounded number for reuse, with their buffers, so a steady
   * stream of performs allocates nothing. */
  if (m && m->nfree_jobs < DM__FREE_JOBS_MAX && j->out.buffsz <= 4096 &&
      j->sends.buffsz <= 4096) {
    j->base.next = (dm__job *)m->free_jobs;
    m->free_jobs = j;
    m->nfree_jobs++;
    return;
  }
  destroy(j);
}

size_t dm__jobs_trim(dm__manager *m) {
  /* A few stay whatever happens: a manager that performs now and then
   * should not allocate for each. */
  enum { FLOOR = 64 };
  size_t idle = m->free_jobs_low, n = 0;
  while (idle > n && m->nfree_jobs > FLOOR) {
    dm__wjob *j = m->free_jobs;
    m->free_jobs = (dm__wjob *)j->base.next;
    m->nfree_jobs--;
    destroy(j);
    n++;
  }
  m->free_jobs_low = m->nfree_jobs;
  return n;
}

/* The pool's look-ahead over finished jobs: the worker each one returns
 * to, and its payload, which a perform's result overwrites. */
void dm__job_ahead(const dm__job *base) {
  const dm__wjob *j = (const dm__wjob *)base;
  if (j->w) {
    __builtin_prefetch(j->w, 1);
    __builtin_prefetch((const char *)j->w + 64, 1);
  }
}

void dm__job_submit(dm__wjob *j) {
  dm__pool_submit(j->m->pool, &j->base);
}

/* ---- on a pool thread ---------------------------------------------------- */

static void run(dm__job *base) {
  dm__wjob *j = (dm__wjob *)base;
  const dm_behaviour *b = j->m->b;
  j->out.index = 0;
  j->sends.index = 0;
  switch (j->kind) {
  case DM__JOB_INIT:
    j->rc = b->init ? b->init(j, &j->id, &j->payload, &j->out) : DM_CB_OK;
    break;
  case DM__JOB_PERFORM:
    j->rc = b->perform(j, &j->id, &j->payload, &j->out);
    break;
  case DM__JOB_CALL:
    j->rc = b->call ? b->call(j, &j->msg, &j->reply->from, &j->id, &j->payload, &j->out)
                    : DM_CB_OK;
    break;
  case DM__JOB_CAST:
    j->rc = b->cast ? b->cast(j, &j->msg, &j->id, &j->payload, &j->out) : DM_CB_OK;
    break;
  case DM__JOB_TERMINATE:
    j->rc = b->terminate ? b->terminate(j, &j->msg, &j->id, &j->payload) : DM_CB_OK;
    break;
  case DM__JOB_TIMEOUT:
    j->rc = b->handle_timeout ? b->handle_timeout(j, &j->id, &j->payload) : DM_CB_OK;
    break;
  case DM__JOB_STATE_CHANGE:
    j->rc = b->handle_state_change ? b->handle_state_change(j, j->state_name) : DM_CB_OK;
    break;
  case DM__JOB_SPECS:
    j->rc = b->children_specs ? b->children_specs(j, &j->out) : DM_CB_OK;
    break;
  }
  size_t len = (size_t)j->out.index, end = 0;
  j->valid = len > 0 && dm__term_skip(j->out.buff, len, &end) == 0 && end == len;
  if (j->valid && j->w)
    dm__response_parse(j->out.buff, len, &j->rs);
}

int dm_send(dm_ctx *ctx, const erlang_pid *to, const char *msg, size_t len) {
  size_t end = 0;
  uint32_t l = (uint32_t)len;
  if (!ctx || !to || !msg || len > UINT32_MAX || dm__term_skip(msg, len, &end) ||
      end != len)
    return DM_EINVAL;
  if (ei_x_encode_pid(&ctx->sends, to) < 0 ||
      ei_x_append_buf(&ctx->sends, (const char *)&l, sizeof l) < 0 ||
      ei_x_append_buf(&ctx->sends, msg, (int)len) < 0)
    return DM_ENOMEM;
  return 0;
}

const char *dm_option(const dm_ctx *ctx, const char *key) {
  for (size_t i = 0; i < ctx->m->noptions; i++)
    if (strcmp(ctx->m->options[i].key, key) == 0)
      return ctx->m->options[i].value;
  return NULL;
}

const char *dm_manager_name(const dm_ctx *ctx) { return ctx->m->name; }

/* ---- back on the loop thread ----------------------------------------------- */

static void deliver_sends(dm__wjob *j) {
  dm__node *n = j->m->node;
  int i = 0;
  while (i < j->sends.index) {
    erlang_pid to;
    uint32_t l;
    if (ei_decode_pid(j->sends.buff, &i, &to) < 0)
      break;
    memcpy(&l, j->sends.buff + i, sizeof l);
    i += (int)sizeof l;
    dm__node_send_msg(n, &to, j->sends.buff + i, l);
    i += (int)l;
  }
}

void dm__job_done(dm__job *base, void *ud) {
  dm__wjob *j = (dm__wjob *)base;
  /* Shutting down (or never run): nothing more is sent or started. */
  int cancelled = !base->run || j->m->node->stopping;
  (void)ud;
  if (!cancelled && j->sends.index)
    deliver_sends(j);
  if (j->done)
    j->done(j, cancelled);
  else
    dm__job_free(j);
}
