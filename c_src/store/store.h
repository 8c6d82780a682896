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
#include <pthread.h>
#include <uv.h>

#include "base/base.h"

/* The on-disk format this node reads and writes, kept in meta. A store of
 * another version is refused at open, never converted. */
#define DM__STORE_FORMAT 3u
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
  size_t journal_size; /* bytes of a journal created at open */
  uint64_t apply_us;   /* how long journaled batches may wait for LMDB */
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

/* Reads every state record (see dm__store_batch_state) in one read
 * transaction, as dm__store_load does (loop thread, at boot): oldest
 * first, by the sequence number each starts with, then by key. A record
 * too short to start with one makes the store corrupt (DM_EIO, logged). */
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
/* Stores rec as the state record key, apart from the children: the
 * caller's checkpoints, a few thousand records each holding many
 * children's changing state, so that a checkpoint of a million children
 * writes a few thousand records, not a million. rec starts with a
 * sequence number, 8 bytes big-endian, that orders the records at load;
 * the rest is the caller's. An empty rec removes the record. Errors as
 * put. */
int dm__store_batch_state(dm__store_batch *b, uint32_t key, const char *rec,
                          size_t reclen);
/* The same, leaving the record's reclen (> 0) bytes for the caller to
 * write, at *room, before the batch is submitted. *room stays valid until
 * a later call grows the batch past what dm__store_batch_reserve made
 * room for. Errors as put. */
int dm__store_batch_state_room(dm__store_batch *b, uint32_t key, size_t reclen,
                               char **room);
/* Removes every state record at a key from from to last (both
 * included) that earlier batches wrote; one this batch puts in the range
 * may stay, whichever comes first. Errors as put. */
int dm__store_batch_state_cut(dm__store_batch *b, uint32_t from, uint32_t last);
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
 * the batch is durable (why is NULL): in the journal or committed to LMDB,
 * and b is NULL: the store frees the batch once LMDB has it. Otherwise
 * nothing of
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

/* Loop thread: queues b for the writer thread. A batch of at most
 * DM__STORE_JOURNAL_RECORD_MAX bytes goes into the journal with the others
 * queued with it, one sync for them all, and into LMDB later, in one
 * transaction with the batches journaled since (within apply_us); a bigger
 * one is committed to LMDB at once, after them. done runs on the loop
 * thread when the batch is durable. 0, or DM_EINVAL (b in flight already,
 * no done), DM_ENOMEM or DM_ECLOSED (the store is stopping), and then done
 * never runs and b stays the caller's. */
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
  uint64_t journaled;       /* batches made durable by the journal */
  uint64_t journal_syncs;   /* journal writes, one sync each */
  uint64_t journal_resets;  /* times the journal started over */
  uint64_t replayed;        /* batches read back from the journal at open */
  uint64_t apply_failures;  /* LMDB commits of journaled batches that failed */
} dm__store_stats;

/* Loop thread. Makes what the journal holds reach LMDB first, so that a
 * load sees it: for tests and tools; the node loads only at boot. */
int dm__store_apply(dm__store *s);

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
/* The jseq LMDB's meta holds (*has 0 when there is none yet). 0, or a dm
 * error with a message in err (meta's jseq is not 8 bytes: corrupt). */
int dm__store_env_read_jseq(const dm__store_env *e, uint64_t *jseq, int *has,
                            const char *path, char *err, size_t errlen);
/* Records jseq in the write transaction t. 0 or LMDB's error. */
int dm__store_env_put_jseq(const dm__store_env *e, struct MDB_txn *t,
                           uint64_t jseq);
/* The name (static) and dm error of an LMDB or errno result. */
const char *dm__store_env_reason(int mdb_rc, int *dm_err);

/* batch.c: what a batch holds, and how it is written. */

enum {
  DM__STORE_PUT = 1,
  DM__STORE_DEL,
  DM__STORE_MARK,
  DM__STORE_UNMARK,
  DM__STORE_STATE_PUT, /* id: the key, 4 bytes big-endian */
  DM__STORE_STATE_DEL,
  DM__STORE_STATE_CUT /* every state record from the key to the record's */
};
/* The sequence number that starts a state record. */
#define DM__STORE_STATE_SEQ 8u

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
  struct dm__store_batch *next; /* in the writer's queues */
  struct dm__store_ack *ack;    /* taken at submit, given back at done */
  uint64_t jseq;                /* its record in the journal, or 0 */
};

/* What the loop hears of a batch: written by the writer, then the loop's. */
typedef struct dm__store_ack {
  struct dm__store_ack *next;
  dm__store_done_fn done;
  void *ud;
  dm__store_batch *batch; /* the caller's again: it failed */
  int rc;
  const char *why;
  size_t nputs, ndels, nstates;
  int clear, journaled;
} dm__store_ack;

/* journal.c: the journal in front of LMDB. */

/* The journal's size when the store creates it. At some 100 bytes a put,
 * 1 MiB holds some ten thousand puts: LMDB takes them within apply_us. */
#define DM__STORE_JOURNAL_SIZE ((size_t)1 << 20)
/* Batches bigger than this go to LMDB directly. */
#define DM__STORE_JOURNAL_RECORD_MAX ((size_t)64 << 10)

typedef struct {
  int fd;
  char *file;        /* path/journal */
  uint64_t epoch;    /* of the header: records of another are not read */
  uint64_t size;     /* of the file */
  uint64_t off;      /* where the next record goes */
  uint64_t seq;      /* the last record written durably */
  uint64_t next_seq; /* the last one added to out, or 0 */
  dm__buf out;       /* records added, not yet written */
  uint64_t syncs, resets;
} dm__store_journal;

/* Opens path/journal, or creates it (size bytes, 0 for the default) when
 * it is missing and may_create. A journal that is missing when it may not
 * be, of another format, or whose header is damaged is refused: 0 or a dm
 * error with a message in err. Close it with dm__store_journal_close. */
int dm__store_journal_open(dm__store_journal *j, const char *path,
                           size_t size, int may_create, char *err,
                           size_t errlen);
void dm__store_journal_close(dm__store_journal *j);
/* Reads the records of the header's epoch, in order, up to the first that
 * is not whole; gives fn each one past after (LMDB's jseq) as a new batch
 * with its jseq, fn owning it. Records past after must follow it without a
 * gap and decode, or the journal is corrupt. Leaves off past the last
 * record and seq at the last one. 0, fn's non-zero value, or a dm error
 * with a message in err. */
int dm__store_journal_replay(dm__store_journal *j, const char *path,
                             uint64_t after,
                             int (*fn)(void *ud, dm__store_batch *b),
                             void *ud, char *err, size_t errlen);
/* Bytes b takes in the journal. */
size_t dm__store_journal_need(const dm__store_batch *b);
/* Whether need more bytes fit after what is added. */
int dm__store_journal_room(const dm__store_journal *j, size_t need);
/* Adds b's record to out, giving b the next seq. 0 or DM_ENOMEM. */
int dm__store_journal_add(dm__store_journal *j, dm__store_batch *b);
/* Writes out and syncs it. 0 or errno; on failure the records added are
 * dropped and their seqs given again. */
int dm__store_journal_write(dm__store_journal *j);
/* Starts over: a new epoch in the header, synced. 0 or errno. */
int dm__store_journal_reset(dm__store_journal *j);
/* Whether more than half of the file holds records. */
int dm__store_journal_half_full(const dm__store_journal *j);
/* CRC-32C of n bytes, continuing crc (0 to start). */
uint32_t dm__store_crc32c(uint32_t crc, const void *data, size_t n);

/* store.c and writer.c: the store object. */

/* How long journaled batches wait for LMDB by default: each LMDB commit
 * costs two syncs, which the journal's callers do not wait for, and the
 * fewer of them the better, while LMDB should not lag far behind. */
#define DM__STORE_APPLY_US 20000u

typedef struct {
  dm__store_batch *head, *tail;
} dm__store_queue;

typedef struct {
  dm__store_ack *head, *tail;
} dm__store_acks;

/* What the writer counts, under mx. */
typedef struct {
  uint64_t commits, last_commit_us, max_commit_us;
  uint64_t map_used, map_size, map_grown;
  uint64_t journal_syncs, journal_resets, apply_failures;
} dm__store_wstats;

struct dm__store {
  uv_async_t async;
  char *path; /* DIR/NAME */
  int lock_fd;
  dm__store_env env;
  dm__store_journal journal; /* the writer's, after open */
  uint64_t apply_us;
  pthread_t writer;

  pthread_mutex_t mx; /* todo, fin, stopping, apply_*, w */
  pthread_cond_t cv;  /* the writer waits on it */
  pthread_cond_t applied_cv; /* the applier's turns, apply_done */
  pthread_cond_t acv;        /* the applier waits on it (monotonic) */
  pthread_t applier;
  dm__store_queue todo;      /* submitted, for the writer */
  dm__store_acks fin;        /* answered, for the loop */
  int stopping;
  uint64_t apply_asked, apply_done;
  dm__store_wstats w;
  /* The writer and the applier: */
  dm__store_queue unapplied; /* journaled, not yet in LMDB */
  size_t unapplied_bytes;
  uint64_t apply_at;       /* when they go to LMDB (or are tried again) */
  int failed;              /* LMDB refused them: its error */
  int urgent;              /* commit them now */
  int applying;            /* the applier is committing a turn */
  uint64_t applied_turns;  /* turns the applier finished */
  dm__store_batch *direct; /* a big batch for the applier to commit */
  int direct_rc;           /* and how it went */
  int astop;               /* the applier stops */
  /* Held by a read transaction of the loop and by the writer resizing the
   * map: LMDB may remap only when no transaction of the process is open. */
  pthread_mutex_t map_mx;

  /* the thread committing to LMDB */
  uint64_t grown;       /* times the map doubled */
  uint64_t released_at; /* when the map's pages last went */

  /* loop side */
  dm__store_acks ready; /* taken from fin, dones not yet run */
  int stopped;
  uint64_t replayed;
  dm__store_stats stats;
};

uint64_t dm__store_now_us(void);
/* Appends b to q (writer.c). */
void dm__store_push(dm__store_queue *q, dm__store_batch *b);
/* writer.c: commits the batches from `from` on to LMDB (any thread that
 * owns the environment: the writer, or the loop before the writer
 * starts). 0 or an errno or LMDB error. */
int dm__store_commit(dm__store *s, dm__store_batch *from);
void *dm__store_writer_main(void *arg);
void *dm__store_applier_main(void *arg);

/* Writes the operations of b from *pos on into the write transaction t
 * (writer thread), its clear first when *pos is 0, until b ends or the
 * transaction holds *ops operations and *bytes bytes of ids and records
 * (both counted down; the caller commits then). *pos moves past what was
 * written. 0 or LMDB's error. */
int dm__store_batch_apply(dm__store_batch *b, struct MDB_txn *t,
                          const dm__store_env *e, size_t *pos, size_t *ops,
                          size_t *bytes);

#endif
