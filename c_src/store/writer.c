/* The store's writer thread. It takes what the loop queued, in order. A
 * small batch goes into the journal with the others queued with it (one
 * sync for them all), is acknowledged, and waits, within apply_us, to be
 * committed to LMDB in one transaction with the batches journaled since. A
 * big batch is committed to LMDB at once, after them. The acknowledgements
 * go back to the loop, in submission order, through the store's async
 * handle. */
#include "store/store.h"

#include <errno.h>
#include <lmdb.h>
#include <string.h>
#include <time.h>

#include "dm.h"

/* The most one transaction holds. LMDB keeps a transaction's dirty pages
 * in memory until it commits, and keeps them for reuse for as long as the
 * environment is open: a first load of a million children in one
 * transaction would leave some 150 MiB behind. Bigger batches commit in
 * several transactions of this size, each durable. */
#define SLICE_OPS 8192u
#define SLICE_BYTES ((size_t)2 << 20)
/* Journaled batches go to LMDB once they hold this much, whatever their
 * age. */
#define APPLY_BYTES ((size_t)1 << 20)
/* How long journaled batches wait for LMDB (each LMDB commit costs two
 * syncs that the journal's callers do not wait for), and how long after a
 * failed commit of journaled batches it is tried again. */
#define RETRY_US 1000000u

uint64_t dm__store_now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

void dm__store_push(dm__store_queue *q, dm__store_batch *b) {
  b->next = NULL;
  if (q->tail)
    q->tail->next = b;
  else
    q->head = b;
  q->tail = b;
}

/* ---- LMDB ----------------------------------------------------------------*/

/* LMDB reads the file through its map, and each page it reads stays in
 * the node's RSS, with its neighbours the kernel maps around a fault: a
 * checkpoint of a million children left 50 MiB of the file mapped. After
 * a commit of more than RELEASE_BYTES, or RELEASE_US after the last time,
 * the map's pages go back to the page cache (they stay cached, and come
 * back on the next read). */
#define RELEASE_BYTES ((size_t)1 << 20)
#define RELEASE_US 1000000u

static void release(dm__store *s, size_t written) {
  uint64_t now = dm__store_now_us();
  if (written < RELEASE_BYTES && now - s->released_at < RELEASE_US)
    return;
  s->released_at = now;
  pthread_mutex_lock(&s->map_mx);
  dm__store_env_release(&s->env);
  pthread_mutex_unlock(&s->map_mx);
}

/* Applies the batches from `from` on and commits them, in transactions of
 * at most SLICE_OPS operations and SLICE_BYTES bytes, each recording the
 * jseq of the last journaled batch it completes, doubling the map and
 * trying the transaction again while the map is full and may grow. 0 or
 * LMDB's error, refined; the transactions before a failed one stay
 * committed (every operation may be applied twice, so the caller tries the
 * batches again whole). */
int dm__store_commit(dm__store *s, dm__store_batch *from) {
  uint64_t t0 = dm__store_now_us();
  dm__store_batch *b = from;
  size_t pos = 0, written = 0, nops = 0;
  int rc = 0;
  for (dm__store_batch *c = from; c; c = c->next)
    nops += dm__store_batch_count(c);
  if (!nops)
    return 0;
  while (b) {
    dm__store_batch *sb = b; /* where this transaction starts */
    size_t spos = pos, ops = SLICE_OPS, bytes = SLICE_BYTES;
    uint64_t jseq = 0;
    MDB_txn *t;
    if ((rc = mdb_txn_begin(s->env.env, NULL, 0, &t)))
      break;
    while (b && ops && bytes && !rc) {
      rc = dm__store_batch_apply(b, t, &s->env, &pos, &ops, &bytes);
      written += SLICE_BYTES - bytes;
      if (!rc && pos >= b->nops) {
        if (b->jseq)
          jseq = b->jseq;
        b = b->next;
        pos = 0;
      }
    }
    if (!rc && jseq)
      rc = dm__store_env_put_jseq(&s->env, t, jseq);
    if (rc)
      mdb_txn_abort(t);
    else
      rc = mdb_txn_commit(t); /* it aborts the transaction itself on failure */
    if (rc != MDB_MAP_FULL) {
      if (rc)
        break;
      continue;
    }
    pthread_mutex_lock(&s->map_mx);
    rc = dm__store_env_grow(&s->env);
    pthread_mutex_unlock(&s->map_mx);
    if (rc)
      break;
    s->grown++;
    DM_INFO("store %s: map grown to %zu KiB", s->path, s->env.map_size >> 10);
    b = sb;
    pos = spos;
  }
  release(s, written);
  uint64_t took = dm__store_now_us() - t0, used = dm__store_env_used(&s->env);
  pthread_mutex_lock(&s->mx);
  if (!rc) {
    s->w.commits++;
    s->w.last_commit_us = took;
    if (took > s->w.max_commit_us)
      s->w.max_commit_us = took;
  }
  s->w.map_used = used;
  s->w.map_size = s->env.map_size;
  s->w.map_grown = s->grown;
  pthread_mutex_unlock(&s->mx);
  return dm__store_env_refine(s->path, rc);
}

/* ---- the applier thread ------------------------------------------------*/

/* Waits on cv (a CLOCK_MONOTONIC one) until at, in dm__store_now_us's
 * microseconds. */
static void timed_wait(pthread_cond_t *cv, pthread_mutex_t *mx, uint64_t at) {
  struct timespec ts = {(time_t)(at / 1000000), (long)(at % 1000000) * 1000};
  pthread_cond_timedwait(cv, mx, &ts);
}

/* Whether the applier has something to commit now. Under mx. */
static int due(dm__store *s) {
  if (s->direct)
    return 1;
  return s->unapplied.head &&
         (s->urgent || s->unapplied_bytes >= APPLY_BYTES ||
          dm__store_now_us() >= s->apply_at);
}

/* Commits to LMDB what the journal made durable, oldest first, in one
 * transaction (sliced) per turn, so that the writer's syncs never wait on
 * LMDB's; and a big batch the writer hands over and waits for. When LMDB
 * refuses journaled batches they stay queued, tried again after RETRY_US
 * (they are acknowledged, and in the journal), and the writer refuses new
 * batches meanwhile. */
void *dm__store_applier_main(void *arg) {
  dm__store *s = arg;
  pthread_mutex_lock(&s->mx);
  while (!s->astop) {
    if (!due(s)) {
      if (s->unapplied.head)
        timed_wait(&s->acv, &s->mx, s->apply_at);
      else
        pthread_cond_wait(&s->acv, &s->mx);
      continue;
    }
    dm__store_batch *list = s->unapplied.head, *direct = s->direct;
    dm__store_batch *tail = s->unapplied.tail;
    size_t bytes = s->unapplied_bytes;
    s->unapplied.head = s->unapplied.tail = NULL;
    s->unapplied_bytes = 0;
    s->urgent = 0;
    s->applying = 1;
    pthread_mutex_unlock(&s->mx);
    int rc = list ? dm__store_commit(s, list) : 0, drc = rc;
    if (!rc && direct)
      drc = dm__store_commit(s, direct);
    pthread_mutex_lock(&s->mx);
    if (rc) {
      if (!s->failed)
        DM_WARN("store %s: LMDB refused changes the journal holds (%s); "
                "they are tried again every second, and new changes are "
                "refused meanwhile",
                s->path, mdb_strerror(rc));
      s->failed = rc;
      s->w.apply_failures++;
      s->apply_at = dm__store_now_us() + RETRY_US;
      tail->next = s->unapplied.head; /* back in front, in order */
      if (!s->unapplied.head)
        s->unapplied.tail = tail;
      s->unapplied.head = list;
      s->unapplied_bytes += bytes;
      list = NULL;
    } else if (list) {
      if (s->failed)
        DM_INFO("store %s: LMDB takes changes again", s->path);
      s->failed = 0;
    }
    if (direct) {
      s->direct = NULL;
      s->direct_rc = drc;
    }
    s->applying = 0;
    s->applied_turns++;
    pthread_cond_broadcast(&s->applied_cv);
    pthread_mutex_unlock(&s->mx);
    while (list) {
      dm__store_batch *b = list;
      list = b->next;
      dm__store_batch_free(b);
    }
    pthread_mutex_lock(&s->mx);
  }
  pthread_mutex_unlock(&s->mx);
  return NULL;
}

/* Under mx: waits until LMDB holds everything journaled, or refused it in
 * a turn that began after this call. */
static void drain(dm__store *s) {
  /* A turn under way began before this call: the one after it counts. */
  uint64_t turn = s->applied_turns + (s->applying ? 2 : 1);
  s->urgent = 1;
  pthread_cond_signal(&s->acv);
  while ((s->unapplied.head || s->applying) &&
         !(s->failed && s->applied_turns >= turn))
    pthread_cond_wait(&s->applied_cv, &s->mx);
}

/* ---- the writer thread ---------------------------------------------------*/

/* Tells the loop how b went: rc 0 gives b to the store (journaled: it
 * waits for LMDB; committed: it is freed), else back to the caller. Under
 * mx. */
static void answer(dm__store *s, dm__store_batch *b, int rc,
                   dm__store_acks *out) {
  dm__store_ack *a = b->ack;
  b->ack = NULL;
  a->next = NULL;
  a->nputs = b->nputs;
  a->ndels = b->ndels;
  a->nstates = b->nstates;
  a->clear = b->clear;
  a->journaled = !rc && b->jseq;
  a->rc = 0;
  a->why = NULL;
  a->batch = NULL;
  if (rc) {
    a->why = dm__store_env_reason(rc, &a->rc);
    a->batch = b;
    b->jseq = 0;
  } else if (b->jseq) {
    if (!s->unapplied.head) {
      s->apply_at = dm__store_now_us() + s->apply_us;
      pthread_cond_signal(&s->acv);
    }
    dm__store_push(&s->unapplied, b);
    s->unapplied_bytes += b->bytes.len;
  } else {
    dm__store_batch_free(b);
  }
  if (out->tail)
    out->tail->next = a;
  else
    out->head = a;
  out->tail = a;
}

/* Starts the journal over when LMDB holds all it has. Under mx, which it
 * leaves held. */
static void restart_journal(dm__store *s) {
  if (s->unapplied.head || s->applying || s->journal.off <= 4096)
    return;
  int e = dm__store_journal_reset(&s->journal);
  if (e)
    DM_WARN("store %s: cannot start its journal over (%s); changes go to "
            "LMDB directly once it is full",
            s->path, strerror(e));
}

/* Writes what was added to the journal, and answers its batches. */
static void flush(dm__store *s, dm__store_queue *pend, dm__store_acks *out) {
  if (!pend->head)
    return;
  int rc = dm__store_journal_write(&s->journal);
  if (rc)
    DM_WARN("store %s: cannot write its journal: %s", s->path, strerror(rc));
  pthread_mutex_lock(&s->mx);
  dm__store_batch *b = pend->head, *next;
  for (; b; b = next) {
    next = b->next;
    answer(s, b, rc, out);
  }
  pthread_mutex_unlock(&s->mx);
  pend->head = pend->tail = NULL;
}

/* The batches of one turn of the writer, in order. */
static void take(dm__store *s, dm__store_batch *g, dm__store_acks *out) {
  dm__store_queue pend = {NULL, NULL};
  dm__store_batch *b, *next;
  for (b = g; b; b = next) {
    next = b->next;
    b->next = NULL;
    b->jseq = 0;
    if (!dm__store_batch_count(b)) {
      dm__store_push(&pend, b); /* answered with the batches before it */
      continue;
    }
    size_t need = dm__store_journal_need(b);
    int small = need <= DM__STORE_JOURNAL_RECORD_MAX;
    pthread_mutex_lock(&s->mx);
    if (dm__store_journal_half_full(&s->journal))
      restart_journal(s);
    int failed = s->failed;
    pthread_mutex_unlock(&s->mx);
    if (small && !failed && !dm__store_journal_room(&s->journal, need)) {
      flush(s, &pend, out);
      pthread_mutex_lock(&s->mx);
      drain(s);
      restart_journal(s);
      failed = s->failed;
      pthread_mutex_unlock(&s->mx);
    }
    if (failed) {
      flush(s, &pend, out);
      pthread_mutex_lock(&s->mx);
      answer(s, b, failed, out);
      pthread_mutex_unlock(&s->mx);
      continue;
    }
    if (small && dm__store_journal_room(&s->journal, need) &&
        !dm__store_journal_add(&s->journal, b)) {
      dm__store_push(&pend, b);
      continue;
    }
    /* Big, or the journal cannot take it: the applier commits it after
     * what the journal holds, and the writer waits, so that LMDB and the
     * journal together always hold a prefix of the changes. */
    flush(s, &pend, out);
    pthread_mutex_lock(&s->mx);
    s->direct = b;
    pthread_cond_signal(&s->acv);
    while (s->direct)
      pthread_cond_wait(&s->applied_cv, &s->mx);
    answer(s, b, s->direct_rc, out);
    pthread_mutex_unlock(&s->mx);
  }
  flush(s, &pend, out);
}

void *dm__store_writer_main(void *arg) {
  dm__store *s = arg;
  pthread_mutex_lock(&s->mx);
  for (;;) {
    while (!s->todo.head && !s->stopping && s->apply_asked == s->apply_done)
      pthread_cond_wait(&s->cv, &s->mx);
    dm__store_batch *g = s->todo.head;
    s->todo.head = s->todo.tail = NULL;
    uint64_t asked = s->apply_asked;
    int stop = s->stopping && !g;
    pthread_mutex_unlock(&s->mx);
    dm__store_acks out = {NULL, NULL};
    if (g)
      take(s, g, &out);
    pthread_mutex_lock(&s->mx);
    if (asked != s->apply_done || stop)
      drain(s);
    s->apply_done = asked;
    s->w.journal_syncs = s->journal.syncs;
    s->w.journal_resets = s->journal.resets;
    pthread_cond_broadcast(&s->applied_cv);
    if (out.head) {
      if (s->fin.tail)
        s->fin.tail->next = out.head;
      else
        s->fin.head = out.head;
      s->fin.tail = out.tail;
      pthread_mutex_unlock(&s->mx);
      uv_async_send(&s->async);
      pthread_mutex_lock(&s->mx);
    }
    if (stop)
      break;
  }
  if (s->unapplied.head)
    DM_ERROR("store %s: stopping with changes LMDB refused; the journal "
             "keeps them, and they are applied at the next start",
             s->path);
  s->astop = 1;
  pthread_cond_signal(&s->acv);
  pthread_mutex_unlock(&s->mx);
  return NULL;
}
