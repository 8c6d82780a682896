/* The store object: opened on the loop thread (its journal read back into
 * LMDB), read once at boot, then fed batches that its writer thread
 * (writer.c) makes durable, answering each on the loop in submission order
 * through an async handle. The loop owns the object and its stats; the
 * writer touches only the queues and counters under the lock, the journal
 * and the environment. */
#include "store/store.h"

#include <errno.h>
#include <limits.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "dm.h"

/* ---- the loop side -------------------------------------------------------*/

/* Runs the dones of what the writer answered, in order. A done may stop
 * the store: that call runs the rest, and this one finds nothing left. */
static void deliver(dm__store *s) {
  pthread_mutex_lock(&s->mx);
  if (s->fin.head) {
    if (s->ready.tail)
      s->ready.tail->next = s->fin.head;
    else
      s->ready.head = s->fin.head;
    s->ready.tail = s->fin.tail;
    s->fin.head = s->fin.tail = NULL;
  }
  pthread_mutex_unlock(&s->mx);
  dm__store_ack *a;
  while ((a = s->ready.head)) {
    s->ready.head = a->next;
    if (!s->ready.head)
      s->ready.tail = NULL;
    dm__store_stats *st = &s->stats;
    st->queued--;
    if (a->rc) {
      st->commit_failures++;
    } else {
      st->batches++;
      st->records_put += a->nputs;
      st->records_deleted += a->ndels;
      st->states_put += a->nstates;
      st->clears += a->clear ? 1 : 0;
      st->journaled += a->journaled ? 1 : 0;
    }
    if (a->batch) {
      a->batch->next = NULL;
      a->batch->inflight = 0;
    }
    dm__store_done_fn done = a->done;
    void *ud = a->ud;
    dm__store_batch *b = a->batch;
    int rc = a->rc;
    const char *why = a->why;
    dm__free(a);
    done(ud, b, rc, why);
  }
}

static void on_async(uv_async_t *h) {
  deliver(h->data);
}

/* A manager's name becomes a directory: one path component, and a sane
 * one. */
static int bad_name(const char *name) {
  size_t n = strlen(name);
  return n == 0 || n > 255 || strchr(name, '/') || !strcmp(name, ".") ||
         !strcmp(name, "..");
}

/* Creates the directory p when missing, durably: its parent is synced. */
static int make_dir(const char *p, char *err, size_t errlen) {
  struct stat st;
  if (mkdir(p, 0700) == 0) {
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", p);
    char *slash = strrchr(parent, '/');
    if (slash == parent)
      slash[1] = '\0';
    else if (slash)
      *slash = '\0';
    else
      strcpy(parent, ".");
    dm__store_sync_dir(parent);
  } else if (errno != EEXIST) {
    snprintf(err, errlen, "state dir %s: cannot create it: %s", p,
             strerror(errno));
    return DM_EIO;
  }
  if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) {
    snprintf(err, errlen, "state dir %s: not a directory", p);
    return DM_EIO;
  }
  return 0;
}

static int replayed(void *ud, dm__store_batch *b) {
  dm__store_push(ud, b);
  return 0;
}

/* Opens the journal and applies what it holds that LMDB does not: the
 * changes acknowledged before a crash and not committed to LMDB yet. A
 * store whose meta names no jseq has never had a journal (or never put a
 * record of it into LMDB), and may get a new one. The journal goes on
 * after its last record: opening it writes nothing to it, so that a node
 * refusing the store later (a record that does not decode) leaves it as
 * it was. */
static int open_journal(dm__store *s, size_t size, char *err, size_t errlen) {
  uint64_t jseq;
  int has, r;
  if ((r = dm__store_env_read_jseq(&s->env, &jseq, &has, s->path, err, errlen)) ||
      (r = dm__store_journal_open(&s->journal, s->path, size, !has, err, errlen)))
    return r;
  dm__store_queue q = {NULL, NULL};
  r = dm__store_journal_replay(&s->journal, s->path, jseq, replayed, &q, err,
                               errlen);
  size_t n = 0;
  for (dm__store_batch *b = q.head; b; b = b->next)
    n++;
  if (!r && n) {
    int rc = dm__store_commit(s, q.head);
    if (rc) {
      snprintf(err, errlen,
               "store %s: cannot apply the %zu changes its journal holds: %s; "
               "the node starts once they fit (free room on its file "
               "system)",
               s->path, n, mdb_strerror(rc));
      r = DM_EIO;
    } else {
      DM_INFO("store %s: %zu changes read back from its journal", s->path, n);
    }
  }
  while (q.head) {
    dm__store_batch *b = q.head;
    q.head = b->next;
    dm__store_batch_free(b);
  }
  if (r)
    dm__store_journal_close(&s->journal);
  s->replayed = n;
  memset(&s->w, 0, sizeof s->w);
  return r;
}

int dm__store_open_with(dm__store **out, uv_loop_t *loop, const char *dir,
                        const char *name, const dm__store_limits *lim,
                        char *err, size_t errlen) {
  if (errlen)
    err[0] = '\0';
  if (!dir || !*dir || !name || bad_name(name)) {
    snprintf(err, errlen, "store: bad state dir or manager name \"%s\"",
             name ? name : "");
    return DM_EINVAL;
  }
  size_t map_size = lim && lim->map_size ? lim->map_size : DM__STORE_MAP_SIZE;
  size_t map_max = lim && lim->map_max ? lim->map_max : DM__STORE_MAP_MAX;
  if (map_max < map_size)
    map_max = map_size;
  int r = DM_ENOMEM, locked = 0, env_open = 0, sync_init = 0, journal_open = 0;
  dm__store *s = dm__calloc(1, sizeof *s);
  size_t plen = strlen(dir) + 1 + strlen(name) + 1;
  if (!s || !(s->path = dm__malloc(plen))) {
    snprintf(err, errlen, "store: out of memory");
    goto fail;
  }
  snprintf(s->path, plen, "%s/%s", dir, name);
  if (plen > PATH_MAX - 16) {
    snprintf(err, errlen, "state dir %s: path too long", s->path);
    r = DM_EINVAL;
    goto fail;
  }
  if ((r = make_dir(dir, err, errlen)) || (r = make_dir(s->path, err, errlen)))
    goto fail;
  if ((r = dm__store_lock_take(s->path, &s->lock_fd, err, errlen)))
    goto fail;
  locked = 1;
  if ((r = dm__store_env_open(&s->env, s->path, name, map_size, map_max, err,
                              errlen)))
    goto fail;
  env_open = 1;
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_mutex_init(&s->mx, NULL);
  pthread_mutex_init(&s->map_mx, NULL);
  pthread_cond_init(&s->cv, NULL);
  pthread_cond_init(&s->acv, &ca);
  pthread_cond_init(&s->applied_cv, NULL);
  pthread_condattr_destroy(&ca);
  sync_init = 1;
  s->apply_us = lim && lim->apply_us ? lim->apply_us : DM__STORE_APPLY_US;
  if ((r = open_journal(s, lim ? lim->journal_size : 0, err, errlen)))
    goto fail;
  journal_open = 1;
  if (pthread_create(&s->applier, NULL, dm__store_applier_main, s) != 0) {
    snprintf(err, errlen, "store %s: cannot start its threads", s->path);
    r = DM_EIO;
    goto fail;
  }
  if (pthread_create(&s->writer, NULL, dm__store_writer_main, s) != 0) {
    pthread_mutex_lock(&s->mx);
    s->astop = 1;
    pthread_cond_signal(&s->acv);
    pthread_mutex_unlock(&s->mx);
    pthread_join(s->applier, NULL);
    snprintf(err, errlen, "store %s: cannot start its threads", s->path);
    r = DM_EIO;
    goto fail;
  }
  /* Nothing is submitted yet, so the writer sends nothing on the handle
   * before it exists. */
  if (uv_async_init(loop, &s->async, on_async) != 0) {
    pthread_mutex_lock(&s->mx);
    s->stopping = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mx);
    pthread_join(s->writer, NULL);
    pthread_join(s->applier, NULL);
    snprintf(err, errlen, "store %s: cannot create its async handle", s->path);
    r = DM_EIO;
    goto fail;
  }
  s->async.data = s;
  s->stats.map_used = dm__store_env_used(&s->env);
  s->stats.map_size = s->env.map_size;
  *out = s;
  return 0;
fail:
  if (journal_open)
    dm__store_journal_close(&s->journal);
  if (sync_init) {
    pthread_cond_destroy(&s->applied_cv);
    pthread_cond_destroy(&s->acv);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->map_mx);
    pthread_mutex_destroy(&s->mx);
  }
  if (env_open)
    dm__store_env_close(&s->env);
  if (locked)
    dm__store_lock_release(s->lock_fd);
  if (s)
    dm__free(s->path);
  dm__free(s);
  return r;
}

int dm__store_open(dm__store **out, uv_loop_t *loop, const char *dir,
                   const char *name, char *err, size_t errlen) {
  return dm__store_open_with(out, loop, dir, name, NULL, err, errlen);
}

const char *dm__store_path(const dm__store *s) {
  return s->path;
}

/* Walks one database, calling child, or deleted when child is NULL. 0 at
 * its end, a callback's value, or DM_EIO with LMDB's error in *mdb_rc. */
static int
walk(MDB_txn *t, MDB_dbi db,
     int (*child)(void *, const char *, size_t, const char *, size_t),
     int (*deleted)(void *, const char *, size_t), void *ud, int *mdb_rc) {
  MDB_cursor *c;
  MDB_val k, v;
  int rc = mdb_cursor_open(t, db, &c);
  if (rc) {
    *mdb_rc = rc;
    return DM_EIO;
  }
  int r = 0;
  for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); !rc && !r;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    if (child)
      r = child(ud, k.mv_data, k.mv_size, v.mv_data, v.mv_size);
    else
      r = deleted(ud, k.mv_data, k.mv_size);
  }
  mdb_cursor_close(c);
  if (!r && rc != MDB_NOTFOUND) {
    *mdb_rc = rc;
    return DM_EIO;
  }
  return r;
}

/* Runs fn in a read transaction of the loop, then logs what LMDB said of
 * the store; fn returns 0, a callback's value or DM_EIO with LMDB's error
 * in *mdb_rc. */
static int reading(dm__store *s, int (*fn)(dm__store *, MDB_txn *, void *, int *),
                   void *arg) {
  MDB_txn *t;
  int mdb_rc = 0, r = 0;
  pthread_mutex_lock(&s->map_mx);
  int rc = mdb_txn_begin(s->env.env, NULL, MDB_RDONLY, &t);
  if (rc) {
    mdb_rc = rc;
    r = DM_EIO;
  } else {
    r = fn(s, t, arg, &mdb_rc);
    mdb_txn_abort(t);
    dm__store_env_release(&s->env); /* a load reads every page once */
  }
  pthread_mutex_unlock(&s->map_mx);
  if (mdb_rc) {
    if (mdb_rc == MDB_CORRUPTED || mdb_rc == MDB_PAGE_NOTFOUND)
      DM_ERROR("store %s is corrupt (%s); the node leaves it untouched: "
               "restore it from a backup, or move the directory away to "
               "start with an empty store",
               s->path, mdb_strerror(mdb_rc));
    else
      DM_ERROR("store %s: cannot read it: %s", s->path, mdb_strerror(mdb_rc));
  }
  return r;
}

typedef struct {
  int (*child)(void *, const char *, size_t, const char *, size_t);
  int (*deleted)(void *, const char *, size_t);
  int (*state)(void *, uint32_t, const char *, size_t);
  void *ud;
} readers;

static int read_children(dm__store *s, MDB_txn *t, void *arg, int *mdb_rc) {
  readers *rd = arg;
  int r = 0;
  if (rd->child)
    r = walk(t, s->env.children, rd->child, NULL, rd->ud, mdb_rc);
  if (!r && rd->deleted)
    r = walk(t, s->env.deleted, NULL, rd->deleted, rd->ud, mdb_rc);
  return r;
}

int dm__store_load(dm__store *s,
                   int (*child)(void *ud, const char *id, size_t idlen,
                                const char *rec, size_t reclen),
                   int (*deleted)(void *ud, const char *id, size_t idlen),
                   void *ud) {
  readers rd = {child, deleted, NULL, ud};
  dm__store_apply(s);
  return reading(s, read_children, &rd);
}

/* A state record as read, until all are and they go out in order. */
typedef struct {
  uint64_t seq;
  uint32_t key;
  const char *rec;
  size_t len;
} state_rec;

static int by_seq(const void *x, const void *y) {
  const state_rec *a = x, *b = y;
  if (a->seq != b->seq)
    return a->seq < b->seq ? -1 : 1;
  return a->key < b->key ? -1 : a->key > b->key;
}

static int read_state(dm__store *s, MDB_txn *t, void *arg, int *mdb_rc) {
  readers *rd = arg;
  MDB_cursor *c;
  MDB_val k, v;
  MDB_stat st;
  int rc = mdb_stat(t, s->env.state, &st);
  if (!rc)
    rc = mdb_cursor_open(t, s->env.state, &c);
  if (rc) {
    *mdb_rc = rc;
    return DM_EIO;
  }
  state_rec *all = st.ms_entries ? dm__malloc(st.ms_entries * sizeof *all) : NULL;
  size_t n = 0;
  int r = st.ms_entries && !all ? DM_ENOMEM : 0;
  for (rc = r ? MDB_NOTFOUND : mdb_cursor_get(c, &k, &v, MDB_FIRST); !rc && !r;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    const unsigned char *p = k.mv_data, *q = v.mv_data;
    if (k.mv_size != 4 || v.mv_size < DM__STORE_STATE_SEQ || n == st.ms_entries) {
      DM_ERROR("store %s is corrupt (a state record of %zu bytes at a key of %zu)",
               s->path, v.mv_size, k.mv_size);
      r = DM_EIO;
      break;
    }
    uint64_t seq = 0;
    for (unsigned i = 0; i < DM__STORE_STATE_SEQ; i++)
      seq = seq << 8 | q[i];
    all[n++] = (state_rec){seq,
                           (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
                               (uint32_t)p[2] << 8 | p[3],
                           v.mv_data, v.mv_size};
  }
  mdb_cursor_close(c);
  if (!r && rc != MDB_NOTFOUND) {
    *mdb_rc = rc;
    r = DM_EIO;
  }
  if (!r) {
    if (n)
      qsort(all, n, sizeof *all, by_seq);
    for (size_t i = 0; i < n && !r; i++)
      r = rd->state(rd->ud, all[i].key, all[i].rec, all[i].len);
  }
  dm__free(all);
  return r;
}

int dm__store_load_state(dm__store *s,
                         int (*state)(void *ud, uint32_t key, const char *rec,
                                      size_t reclen),
                         void *ud) {
  readers rd = {NULL, NULL, state, ud};
  if (!state)
    return 0;
  dm__store_apply(s);
  return reading(s, read_state, &rd);
}

int dm__store_submit(dm__store *s, dm__store_batch *b, dm__store_done_fn done,
                     void *ud) {
  if (!b || !done || b->inflight)
    return DM_EINVAL;
  if (s->stopped)
    return DM_ECLOSED;
  dm__store_ack *a = dm__calloc(1, sizeof *a);
  if (!a)
    return DM_ENOMEM;
  a->done = done;
  a->ud = ud;
  b->ack = a;
  b->inflight = 1;
  s->stats.queued++;
  pthread_mutex_lock(&s->mx);
  dm__store_push(&s->todo, b);
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mx);
  return 0;
}

int dm__store_apply(dm__store *s) {
  if (s->stopped)
    return DM_ECLOSED;
  pthread_mutex_lock(&s->mx);
  uint64_t asked = ++s->apply_asked;
  pthread_cond_signal(&s->cv);
  while (s->apply_done < asked)
    pthread_cond_wait(&s->applied_cv, &s->mx);
  pthread_mutex_unlock(&s->mx);
  return 0;
}

void dm__store_get_stats(const dm__store *s, dm__store_stats *out) {
  *out = s->stats;
  dm__store *w = (dm__store *)s; /* the lock, not the store, changes */
  pthread_mutex_lock(&w->mx);
  out->commits = s->w.commits;
  out->last_commit_us = s->w.last_commit_us;
  out->max_commit_us = s->w.max_commit_us;
  if (s->w.map_size) {
    out->map_used = s->w.map_used;
    out->map_size = s->w.map_size;
  }
  out->map_grown = s->w.map_grown;
  out->journal_syncs = s->w.journal_syncs;
  out->journal_resets = s->w.journal_resets;
  out->apply_failures = s->w.apply_failures;
  pthread_mutex_unlock(&w->mx);
  out->replayed = s->replayed;
}

void dm__store_stop(dm__store *s) {
  if (!s || s->stopped)
    return;
  s->stopped = 1;
  pthread_mutex_lock(&s->mx);
  s->stopping = 1;
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mx);
  /* The writer commits everything queued before it returns. */
  pthread_join(s->writer, NULL);
  pthread_join(s->applier, NULL);
  deliver(s);
  while (s->unapplied.head) { /* LMDB refused them: the journal keeps them */
    dm__store_batch *b = s->unapplied.head;
    s->unapplied.head = b->next;
    dm__store_batch_free(b);
  }
  s->unapplied.tail = NULL;
  dm__store_journal_close(&s->journal);
  dm__store_env_close(&s->env);
  dm__store_lock_release(s->lock_fd);
  s->lock_fd = -1;
  uv_close((uv_handle_t *)&s->async, NULL);
}

void dm__store_free(dm__store *s) {
  if (!s)
    return;
  pthread_cond_destroy(&s->applied_cv);
  pthread_cond_destroy(&s->acv);
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->map_mx);
  pthread_mutex_destroy(&s->mx);
  dm__free(s->path);
  dm__free(s);
}
