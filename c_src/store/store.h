/* store: a manager's durable state under --state-dir. One store per
 * manager, an LMDB environment in DIR/NAME/ holding the records of its
 * children, the children_specs ids the user deleted, and a meta database
 * that names the format and the manager. The loop thread builds batches of
 * changes; the store's own writer thread commits them in groups, each group
 * in one durable transaction, and hands every batch back to the loop, in
 * submission order, through a uv_async_t: the loop never waits on the disk.
 * Depends on base, libuv and LMDB (which this header does not expose). */
#ifndef DM_STORE_H
#define DM_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "base/base.h"

/* The on-disk format this node reads and writes, kept in meta. A store of
 * another version is refused at open, never converted. */
#define DM__STORE_FORMAT 2u
/* The longest id, in bytes: LMDB's key limit. Longer ids are refused by
 * the batch calls with DM_ETOOBIG. */
#define DM__STORE_ID_MAX 511
/* The map LMDB reserves at open: address space, not memory or disk (the
 * file grows with the data). In make bench-store a child with a 64 to 200
 * byte record took 130 to 400 bytes of file, and rewriting every child
 * keeps up to three copies of the tree until LMDB reuses the older pages:
 * 10M small children fit. */
#define DM__STORE_MAP_SIZE ((size_t)16 << 30)
/* The map doubles when a commit finds it full, up to this much. */
#define DM__STORE_MAP_MAX ((size_t)1 << 40)

typedef struct dm__store dm__store;
typedef struct dm__store_batch dm__store_batch;

/* ---- open, load ----------------------------------------------------------*/

/* How big the map starts and how far it may grow; 0 takes the default. A
 * test sets both small to fill the map; the node keeps the defaults. */
typedef struct {
  size_t map_size; /* bytes at open (at least twice the data found) */
  size_t map_max;  /* bytes the map may double up to */
} dm__store_limits;

/* Opens the store of manager name under dir, on the loop thread; it may
 * block (the node is booting). Creates dir and dir/name when missing,
 * takes an exclusive lock on dir/name/LOCK (and writes the node's pid
 * there), opens or creates the environment and checks its meta. A store
 * another running node holds, of another format version, not written for
 * this manager, or corrupt (not LMDB, truncated, meta missing or wrong) is
 * refused; refusing writes nothing to data.mdb (LOCK and LMDB's lock.mdb,
 * which hold no data, may be created). 0 with *out set,
 * or a negative dm error (DM_EINVAL, DM_EIO, DM_ENOMEM, DM_EEXISTS when
 * the lock is held) with a message for the user in err. The caller owns
 * *out: dm__store_stop, then dm__store_free once the loop has run. */
int dm__store_open(dm__store **out, uv_loop_t *loop, const char *dir,
                   const char *name, char *err, size_t errlen);
/* The same with limits (NULL: the defaults). */
int dm__store_open_with(dm__store **out, uv_loop_t *loop, const char *dir,
                        const char *name, const dm__store_limits *lim,
                        char *err, size_t errlen);

/* Reads every child, then every deleted spec id, in one read transaction,
 * in the bytewise order of their ids (loop thread, at boot; it blocks).
 * Either callback may be NULL. The bytes are LMDB's, valid only during the
 * call. A callback returning non-zero stops the walk and load returns that
 * value. 0, or DM_EIO (logged) when the store turns out corrupt. */
int dm__store_load(dm__store *s,
                   int (*child)(void *ud, const char *id, size_t idlen,
                                const char *rec, size_t reclen),
                   int (*deleted)(void *ud, const char *id, size_t idlen),
                   void *ud);

/* Reads every state record (see dm__store_batch_state), in key order, in
 * one read transaction, as dm__store_load does (loop thread, at boot). */
int dm__store_load_state(dm__store *s,
                         int (*state)(void *ud, uint32_t key, const char *rec,
                                      size_t reclen),
                         void *ud);

/* "DIR/NAME", for log lines; owned by the store. */
const char *dm__store_path(const dm__store *s);

/* ---- batches -------------------------------------------------------------*/
/* The changes of one loop turn, built on the loop thread. Operations keep
 * their order, so a later one on the same id wins. Ids and records are
 * copied in. A batch belongs to its creator, who frees it, except from
 * dm__store_submit until its done runs: then the store holds it and every
 * call below on it fails with DM_EINVAL. */

/* An empty batch, or NULL when out of memory. */
dm__store_batch *dm__store_batch_new(void);
/* Stores rec (opaque: the caller encodes it) as the child id. 0, DM_EINVAL
 * (empty id, batch in flight), DM_ETOOBIG (id over DM__STORE_ID_MAX or a
 * record over 4 GiB) or DM_ENOMEM; the batch is unchanged on failure. */
int dm__store_batch_put(dm__store_batch *b, const char *id, size_t idlen,
                        const char *rec, size_t reclen);
/* Removes the child id (nothing when there is none). Errors as put. */
int dm__store_batch_del(dm__store_batch *b, const char *id, size_t idlen);
/* Marks (on) or unmarks a children_specs id as deleted by the user.
 * Errors as put. */
int dm__store_batch_deleted(dm__store_batch *b, const char *id, size_t idlen,
                            int on);
/* Stores rec (opaque) as the state record key, apart from the children:
 * the caller's checkpoints, a few thousand records each holding many
 * children's changing state, so that a checkpoint of a million children
 * writes a few thousand records, not a million. An empty rec removes the
 * record. Errors as put. */
int dm__store_batch_state(dm__store_batch *b, uint32_t key, const char *rec,
                          size_t reclen);
/* The same, leaving the record's reclen (> 0) bytes for the caller to
 * write, at *room, before the batch is submitted. *room stays valid until
 * a later call grows the batch past what dm__store_batch_reserve made
 * room for. Errors as put. */
int dm__store_batch_state_room(dm__store_batch *b, uint32_t key, size_t reclen,
                               char **room);
/* Room for ops more operations holding bytes more bytes of ids and
 * records: calls within it do not allocate. 0, DM_EINVAL or DM_ENOMEM. */
int dm__store_batch_reserve(dm__store_batch *b, size_t ops, size_t bytes);
/* Restart: every child, every deleted mark and every state record goes, then what the batch
 * holds after this call is applied. Operations added before it are
 * dropped, as the clear would undo them. 0 or DM_EINVAL. */
int dm__store_batch_clear(dm__store_batch *b);
/* Empties the batch for reuse, keeping its memory. 0 or DM_EINVAL. */
int dm__store_batch_reset(dm__store_batch *b);
/* Operations held, a clear counting as one: 0 means nothing to commit. */
size_t dm__store_batch_count(const dm__store_batch *b);
/* Frees b (NULL is fine). Not while it is in flight. */
void dm__store_batch_free(dm__store_batch *b);

/* ---- commits -------------------------------------------------------------*/

/* On the loop thread, once per submitted batch, in submission order. rc 0:
 * the batch is committed and durable (why is NULL). Otherwise nothing of
 * the batch was applied; rc is DM_ETOOBIG (why "map_full": the map is at
 * its maximum; "txn_full": too big for one transaction, which LMDB's
 * spilling of dirty pages makes rare: 2M records commit in one),
 * DM_ENOMEM ("enomem") or DM_EIO, why then naming the cause: "enospc",
 * "edquot", "eio", "erofs", "efbig", "corrupt", "panic" (LMDB gave up on
 * the environment: every later batch fails too), "write_failed" (anything
 * else). why is a static string, fit to be an atom; the store logs the
 * details. b is the caller's again: free it or reuse it, here or later. */
typedef void (*dm__store_done_fn)(void *ud, dm__store_batch *b, int rc,
                                  const char *why);

/* Loop thread: queues b for the writer thread, which applies it (with any
 * batches queued behind it, in order) in one write transaction and commits
 * it durably; done then runs on the loop thread. 0, or DM_EINVAL (b in
 * flight already, no done) or DM_ECLOSED (the store is stopping), and then
 * done never runs and b stays the caller's. */
int dm__store_submit(dm__store *s, dm__store_batch *b, dm__store_done_fn done,
                     void *ud);

/* ---- stats ---------------------------------------------------------------*/
/* Counted on the loop thread as dones run. */
typedef struct {
  uint64_t commits;         /* write transactions committed */
  uint64_t batches;         /* batches committed (a commit holds one or more) */
  uint64_t records_put;     /* children written by committed batches */
  uint64_t records_deleted; /* child dels in committed batches */
  uint64_t states_put;      /* state records written by committed batches */
  uint64_t clears;          /* clears in committed batches */
  uint64_t commit_failures; /* batches that failed, none of them applied */
  uint64_t last_commit_us;  /* last commit, first write to durable */
  uint64_t max_commit_us;   /* slowest commit so far */
  uint64_t map_used;        /* bytes of the map up to its last used page */
  uint64_t map_size;        /* bytes of the map now */
  uint64_t map_grown;       /* times the map doubled */
  uint64_t queued;          /* batches submitted whose done has not run */
} dm__store_stats;

/* Loop thread. */
void dm__store_get_stats(const dm__store *s, dm__store_stats *out);

/* ---- stop, free ----------------------------------------------------------*/

/* Loop thread, as the node stops: refuses new batches, waits for the writer
 * to commit every batch already submitted, runs their dones (inside this
 * call, in order; a submit from one of them fails with DM_ECLOSED), closes
 * the environment, releases the lock and closes the async handle. */
void dm__store_stop(dm__store *s);
/* After dm__store_stop and once the loop has run the handle's close:
 * releases the store's memory. NULL is fine. */
void dm__store_free(dm__store *s);

/* ---- internal to store/ --------------------------------------------------*/
/* Declared here because the folder has one header; nothing outside store/
 * uses them. LMDB's types are named by their struct tags only. */

struct MDB_env;
struct MDB_txn;

/* lock.c: the LOCK file of a store's directory. */

/* Takes an exclusive, non-blocking flock on path/LOCK and writes the pid
 * there. 0 with *fd set, DM_EEXISTS when another node holds it, DM_EIO;
 * a message in err. */
int dm__store_lock_take(const char *path, int *fd, char *err, size_t errlen);
/* Releases it (the file stays, naming the last holder). */
void dm__store_lock_release(int fd);

/* env.c: the LMDB environment, opened, created and checked. */

typedef struct {
  struct MDB_env *env;
  unsigned children, deleted, state, meta; /* the named databases (MDB_dbi) */
  size_t map_size, map_max;
  size_t psize; /* page size */
} dm__store_env;

/* Opens (or creates) the environment in the directory path for manager
 * name, checked as dm__store_open says. 0 or a dm error, message in err. */
int dm__store_env_open(dm__store_env *e, const char *path, const char *name,
                       size_t map_size, size_t map_max, char *err,
                       size_t errlen);
void dm__store_env_close(dm__store_env *e);
/* Bytes of the map up to its last used page. */
uint64_t dm__store_env_used(const dm__store_env *e);
/* Doubles the map, up to map_max. No transaction of this process may be
 * open. 0, MDB_MAP_FULL when it is at map_max already, or LMDB's error. */
int dm__store_env_grow(dm__store_env *e);
/* Hands the pages of the map back to the page cache (MADV_DONTNEED: the
 * map is read-only and shared, so nothing is lost; a later read maps them
 * again). No transaction of this process may be open. */
void dm__store_env_release(dm__store_env *e);
/* fsyncs the directory path, so that names created in it are durable;
 * logs a failure. */
void dm__store_sync_dir(const char *path);
/* rc, or ENOSPC for an EIO when the file system of path is full. */
int dm__store_env_refine(const char *path, int rc);
/* The name (static) and dm error of an LMDB or errno result. */
const char *dm__store_env_reason(int mdb_rc, int *dm_err);

/* batch.c: what a batch holds, and how it is written. */

enum {
  DM__STORE_PUT = 1,
  DM__STORE_DEL,
  DM__STORE_MARK,
  DM__STORE_UNMARK,
  DM__STORE_STATE_PUT, /* id: the key, 4 bytes big-endian */
  DM__STORE_STATE_DEL
};

typedef struct {
  uint64_t off;    /* the id's first byte in bytes; the record follows it */
  uint32_t reclen; /* record bytes (puts only) */
  uint16_t idlen;  /* 1 .. DM__STORE_ID_MAX */
  uint8_t kind;    /* DM__STORE_PUT ... */
} dm__store_op;

struct dm__store_batch {
  dm__buf bytes; /* ids and records, in operation order */
  dm__store_op *ops;
  uint32_t *order; /* the writer's: ops in the order it applies them */
  size_t nops, capops, caporder;
  size_t nputs, ndels; /* child puts and dels among ops */
  size_t nstates;      /* state records written among ops */
  int clear;           /* drop everything before ops */
  int sorted;          /* order is filled in */
  /* From submit to done: the store's. */
  int inflight;
  struct dm__store_batch *next;
  dm__store_done_fn done;
  void *ud;
  int rc; /* set by the writer */
  const char *why;
  int lead;         /* first batch of its commit: counts the commit */
  uint64_t took_us; /* that commit's duration */
  uint64_t map_used, map_size, map_grown; /* after it */
};

/* Writes the operations of b from *pos on into the write transaction t
 * (writer thread), its clear first when *pos is 0, until b ends or the
 * transaction holds *ops operations and *bytes bytes of ids and records
 * (both counted down; the caller commits then). *pos moves past what was
 * written. 0 or LMDB's error. */
int dm__store_batch_apply(dm__store_batch *b, struct MDB_txn *t,
                          const dm__store_env *e, size_t *pos, size_t *ops,
                          size_t *bytes);

#endif
