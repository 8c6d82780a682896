/* dm: managers, their workers and jobs. Depends on node, runtime, term
 * and base. */
#ifndef DM_MGR_H
#define DM_MGR_H

#include <ei.h>
#include <stddef.h>
#include <stdint.h>

#include "dm.h"
#include "node/node.h"
#include "runtime/runtime.h"

/* ---- opts ----------------------------------------------------------------*/
/* Child options, from children_specs or put: a proplist or a map with
 * payload, timeout, lull, instant_perform (or 'instant_perform?') and
 * restart. Missing keys take the manager's defaults. */

enum { DM__PERMANENT = 0, DM__TRANSIENT, DM__TEMPORARY };

typedef struct {
  const char *payload; /* encoded term, no version byte; lent */
  size_t payload_len;
  uint32_t timeout_ms; /* 0: never perform periodically */
  float lull;
  int instant;         /* 0 no, 1 yes */
  uint32_t instant_ms; /* delay of the first perform when instant */
  uint8_t restart;
} dm__child_opts;

/* Parses opts (a validated term, no version byte) over the defaults in
 * *out. On DM_EINVAL, `detail` gets the term for {error, {bad_opts,
 * Detail}}: {Key, Value} for a bad value, the opts themselves when they are
 * neither a list nor a map. */
int dm__opts_parse(const char *buf, size_t len, dm__child_opts *out,
                   ei_x_buff *detail);

/* Parses a manager default given on the command line (key=value) into
 * *out. Payload values are not handled here. 0 or DM_EINVAL. */
int dm__opts_default(const char *key, const char *value, dm__child_opts *out);

/* ---- response ------------------------------------------------------------*/
/* What a perform, call or cast response means, in Tarearbol's terms. Pure
 * parsing over a validated term, so it is tested on its own. */

enum {
  DM__R_HALT = 1,     /* halt */
  DM__R_OK,           /* {ok, R}: payload := R */
  DM__R_REPLACE,      /* {replace, P}: payload := value := P */
  DM__R_REPLACE_ID,   /* {replace, Id, P}: the same, under Id */
  DM__R_TIMEOUT,      /* {{timeout, T}, R}: value := payload := R, period T */
  DM__R_OTHER,        /* anything else: value := the response */
};

typedef struct {
  int kind;
  const char *term; /* R or P, or the whole response for OTHER */
  size_t term_len;
  const char *id;   /* REPLACE_ID: the new id (not canonical) */
  size_t id_len;
  uint32_t timeout_ms;
  const char *reply; /* what a call's caller gets: the unwrapped value */
  size_t reply_len;
} dm__response;

/* Classifies the response r (a whole, validated term, no version byte). */
void dm__response_parse(const char *r, size_t len, dm__response *out);

/* ---- mgr -----------------------------------------------------------------*/
/* Managers and their workers: the internal structures shared by
 * manager.c (requests, state), worker.c (life cycle, callbacks),
 * children.c (the id → worker table) and job.c (callback jobs). */

typedef struct dm__manager dm__manager;
typedef struct dm__worker dm__worker;
typedef struct dm_ctx dm__wjob;

/* A term owned by the runtime: 4-byte length, 4-byte reference count,
 * then the bytes. NULL is nil. Payload and value, and the opts of workers
 * started from one spec, share one blob instead of holding copies. */
typedef char dm__blob;
#define DM__BLOB_HDR 8
dm__blob *dm__blob_new(const char *data, size_t len);
dm__blob *dm__blob_ref(dm__blob *b);
void dm__blob_unref(dm__blob *b);
static inline uint32_t dm__blob_len(const dm__blob *b) {
  return b ? *(const uint32_t *)(const void *)b : 0;
}
static inline const char *dm__blob_data(const dm__blob *b) {
  return b ? b + DM__BLOB_HDR : "\x73\x03nil"; /* nil as SMALL_ATOM */
}
static inline size_t dm__blob_size(const dm__blob *b) {
  return b ? dm__blob_len(b) : 5;
}
static inline uint32_t dm__blob_refs(const dm__blob *b) {
  return ((const uint32_t *)(const void *)b)[1];
}
/* True when len bytes fit in b's allocation. */
int dm__blob_fits(const dm__blob *b, size_t len);
/* Overwrites b's bytes; only for a blob no one else is reading. */
void dm__blob_rewrite(dm__blob *b, const char *data, size_t len);

/* A message waiting for a busy worker. */
typedef struct dm__mail {
  struct dm__mail *next;
  int kind;          /* DM__JOB_CALL, DM__JOB_CAST or DM__JOB_PAYLOAD */
  int wrap;          /* reply {ok, R} (synch_call) rather than R */
  struct dm__replyto *reply;
  size_t len;
  char msg[];        /* the request, no version byte */
} dm__mail;

typedef struct dm__mailbox {
  dm__mail *head, *tail;
  uint32_t count;
} dm__mailbox;

/* Where a call's reply goes: the caller and its tag. */
typedef struct dm__replyto {
  erlang_pid from;
  int has_mref;
  erlang_ref mref;
  size_t tag_len;
  char tag[];
} dm__replyto;

enum {
  DM__W_BUSY = 1,         /* a callback is in flight */
  DM__W_PERFORM_DUE = 2,  /* the period elapsed while busy */
  DM__W_STOPPING = 4,     /* out of the table; terminate pending */
  DM__W_LULL_FIRED = 8,   /* handle_timeout ran for the current job */
  DM__W_ID_BLOB = 16,     /* the id is a blob, not inline */
};

/* Ids up to this many bytes live in the worker itself: no allocation, and
 * no cache miss to reach them on every perform. */
#define DM__ID_INLINE 15

struct dm__worker {
  dm__proc proc;       /* pid and links */
  dm__timer timer;     /* next perform, or the lull check while busy */
  dm__manager *m;
  union {              /* canonical encoding; see dm__worker_id() */
    dm__blob *blob;    /* DM__W_ID_BLOB */
    char inl[DM__ID_INLINE + 1]; /* length, then the bytes */
  } id;
  dm__blob *opts;      /* as given; restarts start from these */
  dm__blob *payload;
  dm__blob *value;     /* NULL: nil */
  union {
    struct dm__mailbox *mbox; /* out of line: NULL while nothing waits */
    dm__blob *stop_reason;    /* once DM__W_STOPPING: the mailbox is gone */
  };
  uint64_t due;        /* monotonic µs of the next perform, 0: none */
  uint32_t hash;
  uint32_t timeout_ms;
  float lull;
  uint32_t busy_ms;    /* ms since node start + 1 while busy, else 0 */
  uint8_t flags;
  uint8_t restart;
  uint8_t instant;
};

static inline const char *dm__worker_id(const dm__worker *w) {
  return (w->flags & DM__W_ID_BLOB) ? dm__blob_data(w->id.blob) : w->id.inl + 1;
}
static inline size_t dm__worker_id_len(const dm__worker *w) {
  return (w->flags & DM__W_ID_BLOB) ? dm__blob_len(w->id.blob)
                                    : (size_t)(unsigned char)w->id.inl[0];
}

/* The wheel's look-ahead: prefetches the payload a perform will read. */
void dm__worker_ahead(const dm__timer *t);
/* Stores w's id, inline when short. 0 or DM_ENOMEM. */
int dm__worker_set_id(dm__worker *w, const char *id, size_t len);
void dm__worker_release_id(dm__worker *w);

enum { DM__STARTING = 0, DM__STARTED, DM__DOWN };
enum { DM__PICK_HASHRING = 0, DM__PICK_RANDOM, DM__PICK_STREAM };

typedef struct {
  char *key, *value;
} dm__kv;

/* Counters and the lateness histogram shown by `stats`. */
#define DM__MSTATS_MAP(X)                                                      \
  X(performs)                                                                  \
  X(calls)                                                                     \
  X(casts)                                                                     \
  X(puts)                                                                      \
  X(dels)                                                                      \
  X(halts)                                                                     \
  X(crashes)                                                                   \
  X(restarts)                                                                  \
  X(mailbox_overflows)                                                         \
  X(casts_dropped)                                                             \
  X(timeouts)                                                                  \
  X(escalations)                                                               \
  X(bad_requests)

#define DM__LATE_BUCKETS 128 /* 100 of 100 us below 10 ms, then doublings */

typedef struct {
#define DM__MSTATS_FIELD(n) uint64_t n;
  DM__MSTATS_MAP(DM__MSTATS_FIELD)
#undef DM__MSTATS_FIELD
  uint64_t late[DM__LATE_BUCKETS]; /* see late_bucket() in manager.c */
  uint64_t late_max_us;
  uint64_t late_count;
} dm__mstats;

struct dm__manager {
  dm__proc proc;
  dm__node *node;
  char *name;
  char *struct_name; /* 'Elixir.<Name>.State' */
  const dm_behaviour *b;
  dm__kv *options;
  size_t noptions;
  dm__child_opts defaults;
  dm__blob *default_payload;
  dm__blob *last_opts; /* shared by consecutive workers with equal opts */
  int spread;          /* booting: first performs spread over a period */
  int pickup;
  uint32_t max_mailbox;
  unsigned threads;
  int state;
  uint32_t epoch;  /* bumped by restart: stale children_specs results are dropped */

  /* Open addressing by id hash. A slot holds the worker's address with 16
   * bits of its hash in the top bits, which user-space addresses leave
   * free: a lookup passes over other ids without touching their workers.
   * Read slots with dm__children_at. */
  uintptr_t *slots;
  int untagged;       /* an address used the top bits: tags are off */
  size_t cap, count;
  size_t cursor;      /* stream pickup */

  dm__pool *pool;
  dm__mstats st;
  uint64_t seed;     /* of the id hash, random per manager */
  uint32_t max_restarts, max_seconds; /* intensity, as OTP supervisors */
  uint64_t *restarts_at;   /* ring of the last max_restarts + 1 restarts, ms */
  uint64_t *escalated_at;  /* the same for restarts of every worker */
  uint32_t nrestarts, nescalated;
  dm__wjob *free_jobs;
  size_t nfree_jobs;
  /* handle_state_change runs one at a time, in order: a pool of several
   * threads could otherwise run `started` before `starting`. */
  int sc_running;
  dm__wjob *sc_head, *sc_tail; /* waiting, linked through base.next */
  dm__buf scratch;   /* canonical ids of requests, reused */
};

/* Jobs kept for reuse, with their buffers: a steady stream of performs
 * allocates nothing. */
#define DM__FREE_JOBS_MAX 16384
/* The wheel fires no more timers while this many jobs are in the pools:
 * an overloaded node falls behind (its lateness shows it) at a constant
 * cost per perform, instead of queueing a job per worker, outgrowing the
 * reuse list and paying malloc for each. */
#define DM__INFLIGHT_MAX 8192

/* Job kinds. */
enum {
  DM__JOB_INIT = 1,
  DM__JOB_PERFORM,
  DM__JOB_CALL,
  DM__JOB_CAST,
  DM__JOB_TERMINATE,
  DM__JOB_TIMEOUT,
  DM__JOB_STATE_CHANGE,
  DM__JOB_SPECS,
  DM__JOB_PAYLOAD, /* a {payload, P} message: mail only, never a job */
};

/* A callback on its way to the pool and back. It is also the dm_ctx the
 * callback sees. */
struct dm_ctx {
  dm__job base;
  dm__manager *m;
  dm__worker *w;      /* NULL for manager-level jobs */
  int kind;
  int rc;
  uint32_t epoch;
  int wrap;
  const char *state_name;
  dm_term id, payload, msg;
  /* A small payload travels in the job itself, next to the terms the
   * pool thread reads anyway: the worker's blob stays on the loop's core. */
  char payload_copy[16];
  uint64_t due;        /* the perform's due time, µs */
  uint64_t started_us; /* when the callback began, set on the pool */
  char *owned;        /* memory the job owns (msg copy, copied terms) */
  dm__replyto *reply;
  ei_x_buff out;
  ei_x_buff sends;    /* pid, then 4-byte length and message, repeated */
  /* Checked on the pool thread, so the loop does not walk the output
   * again: out is one whole term, and for a worker's job rs is what it
   * means. */
  int valid;
  dm__response rs;
};

/* children.c */
int dm__children_put(dm__manager *m, dm__worker *w);
/* Makes room for n children in all (a hint: failure only means rehashing
 * later). */
int dm__children_reserve(dm__manager *m, size_t n);
/* The address bits of a children-table slot; the 16 above hold a tag. */
#define DM__ADDR_BITS 48
#define DM__ADDR_MASK (((uintptr_t)1 << DM__ADDR_BITS) - 1)
/* The worker in slot i of m's children table, or NULL. */
static inline dm__worker *dm__children_at(const dm__manager *m, size_t i) {
  uintptr_t v = m->slots[i];
  return (dm__worker *)(m->untagged ? v : v & DM__ADDR_MASK);
}
dm__worker *dm__children_get(const dm__manager *m, const char *id, size_t len,
                             uint32_t hash);
void dm__children_del(dm__manager *m, dm__worker *w);
uint32_t dm__id_hash(const dm__manager *m, const char *id, size_t len);

/* job.c */
dm__wjob *dm__job_new(dm__manager *m, dm__worker *w, int kind);
void dm__job_free(dm__wjob *j);
void dm__job_submit(dm__wjob *j);
void dm__job_done(dm__job *j, void *ud);
void dm__job_ahead(const dm__job *j);

/* worker.c */
/* Starts a worker for id (canonical) with opts (as given, validated). */
int dm__worker_start(dm__manager *m, const char *id, size_t idlen,
                     const char *opts, size_t optslen, dm__worker **out);
/* Stops a worker: out of the table now, terminate then freed. */
void dm__worker_stop(dm__worker *w, const char *reason, size_t reason_len);
/* A call or cast for w (runs now or waits in the mailbox). */
int dm__worker_deliver(dm__worker *w, int kind, const char *msg, size_t len,
                       const dm__gen *g, int wrap);
void dm__worker_completed(dm__wjob *j);
void dm__worker_on_timer(dm__timer *t, void *ud);
void dm__worker_free(dm__worker *w);

/* manager.c */
void dm__manager_completed(dm__wjob *j);
void dm__manager_note_lateness(dm__manager *m, uint64_t late_us);
/* Replies to a call recorded in r, wrapping in {ok, R} when wrap. */
void dm__reply_to(dm__node *n, const dm__replyto *r, const char *term,
                  size_t len, int wrap);
/* Makes the caller's gen call exit with reason (an encoded term). */
void dm__reply_exit(dm__node *n, const dm__replyto *r, const char *reason,
                    size_t len);
dm__replyto *dm__replyto_new(const dm__gen *g);

/* A worker is about to be restarted after a crash. Returns 1 when that
 * is within the manager's intensity; 0 when it is not, in which case every
 * worker was restarted (or the manager went down) instead. */
int dm__manager_allow_restart(dm__manager *m);

/* Manager life cycle: declared in node.h, which main and the node use. */
/* The behaviour compiled in under name, or NULL. */
const dm_behaviour *dm__builtin_behaviour(const char *name);
/* A behaviour from a shared object (path containing '/' or ending .so);
 * NULL with the reason logged. */
const dm_behaviour *dm__load_behaviour(const char *path);

#endif
