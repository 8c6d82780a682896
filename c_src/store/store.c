/* The store object: opened on the loop thread, read once at boot, then fed
 * batches that its writer thread commits in groups, one durable write
 * transaction per group, handing each batch back to the loop in submission
 * order through an async handle. The loop owns the object and its stats;
 * the writer touches only the queues (under the lock) and the environment. */
#include "store/store.h"

#include <errno.h>
#include <limits.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "dm.h"

/* Most operations merged into one transaction. Batches queued behind one
 * another share a commit up to this, which bounds how long a group holds
 * the done of its first batch and what is redone when a failed group is
 * retried batch by batch. A bigger batch still gets a transaction of its
 * own (LMDB spills dirty pages to the file: 2M records commit in one). */
#define MERGE_OPS (1u << 18)
/* The most one transaction holds. LMDB keeps a transaction's dirty pages
 * in memory until it commits, and keeps them for reuse for as long as the
 * environment is open: a first load of a million children in one
 * transaction would leave some 150 MiB behind. Bigger batches commit in
 * several transactions of this size, each durable. */
#define SLICE_OPS 8192u
#define SLICE_BYTES ((size_t)2 << 20)

typedef struct {
  dm__store_batch *head, *tail;
} queue;

struct dm__store {
  uv_async_t async;
  char *path; /* DIR/NAME */
  int lock_fd;
  dm__store_env env;
  pthread_t writer;

  pthread_mutex_t mx; /* todo, fin and stopping */
  pthread_cond_t cv;
  queue todo; /* submitted, for the writer */
  queue fin;  /* applied or failed, for the loop */
  int stopping;
  /* Held by a read transaction of the loop and by the writer resizing the
   * map: LMDB may remap only when no transaction of the process is open. */
  pthread_mutex_t map_mx;
  uint64_t grown; /* writer: times the map doubled */
  uint64_t released_at; /* writer: when the map's pages last went */

  /* loop side */
  queue ready; /* taken from fin, dones not yet run */
  int stopped;
  dm__store_stats stats;
};

static void push(queue *q, dm__store_batch *b) {
  b->next = NULL;
  if (q->tail)
    q->tail->next = b;
  else
    q->head = b;
  q->tail = b;
}

/* Appends the whole of from to q and empties from. */
static void qsplice(queue *q, queue *from) {
  if (!from->head)
    return;
  if (q->tail)
    q->tail->next = from->head;
  else
    q->head = from->head;
  q->tail = from->tail;
  from->head = from->tail = NULL;
}

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* ---- the writer thread ---------------------------------------------------*/

/* LMDB reads the file through its map, and each page it reads stays in
 * the node's RSS, with its neighbours the kernel maps around a fault: a
 * checkpoint of a million children left 50 MiB of the file mapped. After
 * a commit of more than RELEASE_BYTES, or RELEASE_US after the last time,
 * the map's pages go back to the page cache (they stay cached, and come
 * back on the next read). */
#define RELEASE_BYTES ((size_t)1 << 20)
#define RELEASE_US 1000000u

static void release(dm__store *s, size_t written) {
  uint64_t now = now_us();
  if (written < RELEASE_BYTES && now - s->released_at < RELEASE_US)
    return;
  s->released_at = now;
  pthread_mutex_lock(&s->map_mx);
  dm__store_env_release(&s->env);
  pthread_mutex_unlock(&s->map_mx);
}

/* Applies the batches from `from` up to (not including) `to` and commits
 * them, in transactions of at most SLICE_OPS operations and SLICE_BYTES
 * bytes, doubling the map and trying the transaction again while the map
 * is full and may grow. 0 or LMDB's error; the transactions before a
 * failed one stay committed (every operation may be applied twice, so the
 * caller tries the batches again whole). */
static int commit(dm__store *s, dm__store_batch *from, dm__store_batch *to,
                  uint64_t *took) {
  uint64_t t0 = now_us();
  dm__store_batch *b = from;
  size_t pos = 0, written = 0;
  int rc = 0;
  while (b != to) {
    dm__store_batch *sb = b; /* where this transaction starts */
    size_t spos = pos, ops = SLICE_OPS, bytes = SLICE_BYTES;
    MDB_txn *t;
    if ((rc = mdb_txn_begin(s->env.env, NULL, 0, &t)))
      break;
    while (b != to && ops && bytes && !rc) {
      rc = dm__store_batch_apply(b, t, &s->env, &pos, &ops, &bytes);
      written += SLICE_BYTES - bytes;
      if (!rc && pos >= b->nops) {
        b = b->next;
        pos = 0;
      }
    }
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
  *took = now_us() - t0;
  return rc;
}

/* Commits [from, to) and writes the outcome into each of its batches; a
 * failure is logged when it is final. */
static void settle(dm__store *s, dm__store_batch *from, dm__store_batch *to,
                   size_t nbatches, int final) {
  size_t ops = 0;
  for (dm__store_batch *b = from; b != to; b = b->next)
    ops += dm__store_batch_count(b);
  uint64_t took = 0;
  int rc = ops ? dm__store_env_refine(s->path, commit(s, from, to, &took)) : 0;
  int err = 0;
  const char *why = NULL;
  if (rc) {
    why = dm__store_env_reason(rc, &err);
    if (final)
      DM_WARN("store %s: a commit failed (%zu "
              "batch(es), %zu operations, map %zu KiB of at most %zu KiB): %s",
              s->path, nbatches, ops, s->env.map_size >> 10,
              s->env.map_max >> 10, mdb_strerror(rc));
  }
  uint64_t used = dm__store_env_used(&s->env);
  for (dm__store_batch *b = from; b != to; b = b->next) {
    b->rc = err;
    b->why = why;
    b->lead = !rc && ops && b == from;
    b->took_us = b->lead ? took : 0;
    b->map_used = used;
    b->map_size = s->env.map_size;
    b->map_grown = s->grown;
  }
}

/* A group of batches goes in one transaction; when it fails and holds more
 * than one, each is tried alone, so one batch too big for the map or the
 * disk does not fail the small ones queued with it. */
static void apply_group(dm__store *s, dm__store_batch *g, size_t n) {
  settle(s, g, NULL, n, n == 1);
  if (!g->rc || n == 1)
    return;
  DM_INFO("store %s: a commit of %zu batches failed (%s); trying each alone",
          s->path, n, g->why);
  for (dm__store_batch *b = g; b; b = b->next)
    settle(s, b, b->next, 1, 1);
}

static void *writer_main(void *arg) {
  dm__store *s = arg;
  pthread_mutex_lock(&s->mx);
  for (;;) {
    while (!s->todo.head && !s->stopping)
      pthread_cond_wait(&s->cv, &s->mx);
    if (!s->todo.head)
      break; /* stopping, and everything queued is done */
    /* What is queued goes as one group, within MERGE_OPS operations. */
    dm__store_batch *g = s->todo.head, *last = g;
    size_t ops = dm__store_batch_count(g), n = 1;
    while (last->next && ops + dm__store_batch_count(last->next) <= MERGE_OPS) {
      last = last->next;
      ops += dm__store_batch_count(last);
      n++;
    }
    s->todo.head = last->next;
    if (!s->todo.head)
      s->todo.tail = NULL;
    last->next = NULL;
    pthread_mutex_unlock(&s->mx);
    apply_group(s, g, n);
    pthread_mutex_lock(&s->mx);
    queue done = {g, last};
    qsplice(&s->fin, &done);
    pthread_mutex_unlock(&s->mx);
    uv_async_send(&s->async);
    pthread_mutex_lock(&s->mx);
  }
  pthread_mutex_unlock(&s->mx);
  return NULL;
}

/* ---- the loop side -------------------------------------------------------*/

/* Runs the dones of what the writer finished, in order. A done may stop
 * the store: that call runs the rest, and this one finds nothing left. */
static void deliver(dm__store *s) {
  pthread_mutex_lock(&s->mx);
  qsplice(&s->ready, &s->fin);
  pthread_mutex_unlock(&s->mx);
  dm__store_batch *b;
  while ((b = s->ready.head)) {
    s->ready.head = b->next;
    if (!s->ready.head)
      s->ready.tail = NULL;
    dm__store_stats *st = &s->stats;
    st->queued--;
    if (b->rc) {
      st->commit_failures++;
    } else {
      st->batches++;
      st->records_put += b->nputs;
      st->records_deleted += b->ndels;
      st->states_put += b->nstates;
      st->clears += b->clear ? 1 : 0;
    }
    if (b->lead) {
      st->commits++;
      st->last_commit_us = b->took_us;
      if (b->took_us > st->max_commit_us)
        st->max_commit_us = b->took_us;
    }
    st->map_used = b->map_used;
    st->map_size = b->map_size;
    st->map_grown = b->map_grown;
    b->next = NULL;
    b->inflight = 0;
    b->done(b->ud, b, b->rc, b->why);
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
  int r = DM_ENOMEM, locked = 0, env_open = 0, sync_init = 0;
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
  pthread_mutex_init(&s->mx, NULL);
  pthread_mutex_init(&s->map_mx, NULL);
  pthread_cond_init(&s->cv, NULL);
  sync_init = 1;
  if (pthread_create(&s->writer, NULL, writer_main, s) != 0) {
    snprintf(err, errlen, "store %s: cannot start its writer thread", s->path);
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
  if (sync_init) {
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
  return reading(s, read_children, &rd);
}

static int read_state(dm__store *s, MDB_txn *t, void *arg, int *mdb_rc) {
  readers *rd = arg;
  MDB_cursor *c;
  MDB_val k, v;
  int rc = mdb_cursor_open(t, s->env.state, &c);
  if (rc) {
    *mdb_rc = rc;
    return DM_EIO;
  }
  int r = 0;
  for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); !rc && !r;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    const unsigned char *p = k.mv_data;
    if (k.mv_size != 4) {
      DM_ERROR("store %s is corrupt (a state key of %zu bytes)", s->path,
               k.mv_size);
      r = DM_EIO;
      break;
    }
    uint32_t key = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
                   (uint32_t)p[2] << 8 | p[3];
    r = rd->state(rd->ud, key, v.mv_data, v.mv_size);
  }
  mdb_cursor_close(c);
  if (!r && rc != MDB_NOTFOUND) {
    *mdb_rc = rc;
    return DM_EIO;
  }
  return r;
}

int dm__store_load_state(dm__store *s,
                         int (*state)(void *ud, uint32_t key, const char *rec,
                                      size_t reclen),
                         void *ud) {
  readers rd = {NULL, NULL, state, ud};
  return state ? reading(s, read_state, &rd) : 0;
}

int dm__store_submit(dm__store *s, dm__store_batch *b, dm__store_done_fn done,
                     void *ud) {
  if (!b || !done || b->inflight)
    return DM_EINVAL;
  if (s->stopped)
    return DM_ECLOSED;
  b->inflight = 1;
  b->done = done;
  b->ud = ud;
  b->rc = 0;
  b->why = NULL;
  s->stats.queued++;
  pthread_mutex_lock(&s->mx);
  push(&s->todo, b);
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mx);
  return 0;
}

void dm__store_get_stats(const dm__store *s, dm__store_stats *out) {
  *out = s->stats;
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
  deliver(s);
  dm__store_env_close(&s->env);
  dm__store_lock_release(s->lock_fd);
  s->lock_fd = -1;
  uv_close((uv_handle_t *)&s->async, NULL);
}

void dm__store_free(dm__store *s) {
  if (!s)
    return;
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->map_mx);
  pthread_mutex_destroy(&s->mx);
  dm__free(s->path);
  dm__free(s);
}
