/* dm: the dynamic managers. Their wire API (api.c), the behaviour loader
 * (loader.c), the supervisor (supervisor.c), workers (worker.c, run.c,
 * complete.c) and their mailboxes (mailbox.c), the children table
 * (children.c), callback jobs (job.c), children_specs boots (boot.c), the
 * node-wide scheduler (sched.c), the encoders of Child, State and stats
 * (encode.c), the lateness histogram (lateness.c), --manager parsing
 * (manager.c), child opts and responses, and durable state (durable.c).
 * Depends on node, store, runtime, term and base; plugs into the node through process kinds and loop hooks. */
#ifndef DM_MGR_H
#define DM_MGR_H

#include <ei.h>
#include <stddef.h>
#include <stdint.h>

#include "dm.h"
#include "node/node.h"
#include "runtime/runtime.h"
#include "store/store.h"
#include "term/term.h"

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

/* ---- managers and workers ---------------------------------------------------*/

typedef struct dm__manager dm__manager;
typedef struct dm__durable dm__durable;
typedef struct dm__events dm__events;
typedef struct dm__worker dm__worker;
typedef struct dm__sched dm__sched;
typedef struct dm_ctx dm__wjob;

/* ---- opts.c: the opts workers were started with ---- */
/* Shared by the workers started one after the other with the same opts
 * (children_specs, puts in a loop): each keeps one pointer to it instead
 * of its manager's, its lull, its restart type and whether it performs
 * at once. Reference-counted; loop thread only. */
typedef struct dm__wopts {
  dm__manager *m;   /* whose workers these are */
  uint32_t refs;
  uint32_t len;     /* of term */
  float lull;
  uint8_t restart;  /* DM__PERMANENT, DM__TRANSIENT or DM__TEMPORARY */
  uint8_t instant;  /* 0 no, 1 yes */
  char term[];      /* the opts as given, no version byte */
} dm__wopts;
/* The opts term (len bytes) as o parsed it, for workers of m, with one
 * reference; NULL when out of memory. */
dm__wopts *dm__wopts_new(dm__manager *m, const char *term, size_t len,
                         const dm__child_opts *o);
static inline dm__wopts *dm__wopts_ref(dm__wopts *r) {
  r->refs++;
  return r;
}
/* Drops a reference; the last one frees. NULL is fine. */
void dm__wopts_unref(dm__wopts *r);

/* What a finished job is handed back to: its creator's. cancelled is 1
 * when the node is stopping and nothing may be sent or started. */
typedef void (*dm__job_done_fn)(dm__wjob *j, int cancelled);

/* ---- mailbox.c: messages waiting for a busy worker ---- */
typedef struct dm__mail {
  struct dm__mail *next;
  int kind;          /* DM__JOB_CALL, DM__JOB_CAST or DM__JOB_PAYLOAD */
  int wrap;          /* reply {ok, R} (synch_call) rather than R */
  dm__replyto *reply; /* owned by the mail */
  size_t len;
  char msg[];        /* the request, no version byte */
} dm__mail;

typedef struct dm__mailbox {
  dm__mail *head, *tail;
  uint32_t count;
} dm__mailbox;

static inline uint32_t dm__mailbox_count(const dm__mailbox *mb) {
  return mb ? mb->count : 0;
}
/* Appends a mail with a copy of msg; *mb is created when NULL. On success
 * the mail owns reply. 0 or DM_ENOMEM (reply still the caller's). */
int dm__mailbox_push(dm__mailbox **mb, int kind, const char *msg, size_t len,
                     dm__replyto *reply, int wrap);
/* Takes out the oldest mail, or NULL; *mb is freed once empty. The caller
 * frees the mail and its reply with dm__free. */
dm__mail *dm__mailbox_pop(dm__mailbox **mb);
/* Frees the mailbox. With n, every caller still waiting sees its call
 * exit with reason, as a BEAM caller's monitor would. */
void dm__mailbox_free(dm__mailbox *mb, dm__node *n, const char *reason,
                      size_t len);

/* ---- workers ---- */
enum {
  DM__W_BUSY = 1,         /* a callback is in flight */
  DM__W_PERFORM_DUE = 2,  /* the period elapsed while busy */
  DM__W_STOPPING = 4,     /* out of the table; terminate pending; the
                           * reason is in the annex */
  DM__W_LULL_FIRED = 8,   /* handle_timeout ran for the current job */
  DM__W_ID_BLOB = 16,     /* the id is a blob, not inline */
  DM__W_DIRTY = 32,       /* payload or value changed since last recorded */
  DM__W_SPEC = 64,        /* its id came from children_specs */
  DM__W_VALUE_SAME = 128, /* the value is the payload's term */
  DM__W_VALUE_OWN = 256,  /* the value is a term of its own, in the annex */
  DM__W_MAIL = 512,       /* mail waits, in the annex */
};

/* Ids up to this many bytes live in the worker itself: no allocation, and
 * no cache miss to reach them on every perform. */
#define DM__ID_INLINE 15

/* A worker is 64 bytes, one cache line, in the scheduler's slab: what a
 * perform reads and what every worker needs, nothing else. What few
 * workers have lives out of line by pid key: a value of its own, mail and
 * a stop reason in its annex (annex.c), links and monitors in the node.
 * At a million workers the pid table adds 16.8 bytes a worker (2^21
 * slots of 8 bytes), the children table 8.4 (2^21 of 4) and the timer
 * wheel about 11 (a pointer a worker, in arrays a little larger than
 * their slots).
 * Budget: proc 8, timer 16, id 16, opts 8, payload 8, timeout 4, gen 4. */
struct dm__worker {
  dm__proc proc;       /* pid key, kind, and its flags (DM__W_*) */
  /* Idle, its due is the next perform's (0: none), armed or not. Busy,
   * the job keeps that due (dm_ctx.due) and the timer watches for
   * slowness: its due is then when the callback began plus lull x
   * timeout, armed or not, which also tells since when it is busy
   * (dm__worker_busy_since). Both meanings in one field keep every
   * worker 12 bytes smaller. */
  dm__timer timer;
  union {              /* canonical encoding; see dm__worker_id() */
    dm__blob *blob;    /* DM__W_ID_BLOB */
    char inl[DM__ID_INLINE + 1]; /* length, then the bytes */
  } id;
  /* As given, and its manager; restarts start from these. NULL marks a
   * free slot to a walk over the slab. */
  dm__wopts *opts;
  dm__cell payload;    /* nil when none was given */
  uint32_t timeout_ms;
  uint32_t gen;        /* --state-dir: its record's generation (durable.c) */
};

static inline dm__manager *dm__worker_mgr(const dm__worker *w) { return w->opts->m; }

/* ---- annex.c: what few workers have, out of line ---- */
/* By pid key, in dm__sched.annex; the worker's flags say what it holds. */
typedef struct dm__annex {
  dm__cell value;            /* DM__W_VALUE_OWN, else nil */
  struct dm__mailbox *mbox;  /* DM__W_MAIL, else NULL */
  dm__blob *stop_reason;     /* once DM__W_STOPPING; NULL: nil */
} dm__annex;
/* w's annex, or NULL. */
dm__annex *dm__annex_of(const dm__worker *w);
/* w's annex, made (empty) when it has none; NULL when out of memory.
 * w must have its pid key. */
dm__annex *dm__annex_get(dm__worker *w);
/* Frees w's annex when it holds nothing. */
void dm__annex_tidy(dm__worker *w);
/* Frees w's annex and what it holds (waiting callers are not told). */
void dm__annex_free(dm__worker *w);
/* The mail waiting for w, or NULL. */
dm__mailbox *dm__worker_mbox(const dm__worker *w);
/* Why a stopping w stops, or NULL (nil). */
const dm__blob *dm__worker_stop_reason(const dm__worker *w);

/* ---- value.c: a worker's value ---- */
/* The value: the payload's cell, the annex's, or a nil cell. Lent. */
const dm__cell *dm__worker_value(const dm__worker *w);
/* value := the term; payload unchanged. 0 or DM_ENOMEM (logged; the old
 * value stays). */
int dm__worker_set_value(dm__worker *w, const char *data, size_t len);
/* payload := the term; value unchanged. 0 or DM_ENOMEM (logged; both
 * stay as they were). */
int dm__worker_set_payload(dm__worker *w, const char *data, size_t len);
/* payload := value := the term; out of memory (logged) both stay. */
void dm__worker_set_both(dm__worker *w, const char *data, size_t len);
/* payload and value become these cells (value nil: none), which w takes
 * and leaves nil. w must have its pid key. 0, or DM_ENOMEM with nothing
 * changed and the cells still the caller's. */
int dm__worker_take_terms(dm__worker *w, dm__cell *payload, dm__cell *value);

/* The worker whose process p is. */
static inline dm__worker *dm__worker_of(dm__proc *p) {
  return p ? (dm__worker *)(void *)((char *)p - offsetof(dm__worker, proc)) : NULL;
}

static inline const char *dm__worker_id(const dm__worker *w) {
  return (w->proc.flags & DM__W_ID_BLOB) ? dm__blob_data(w->id.blob) : w->id.inl + 1;
}
static inline size_t dm__worker_id_len(const dm__worker *w) {
  return (w->proc.flags & DM__W_ID_BLOB) ? dm__blob_len(w->id.blob)
                                    : (size_t)(unsigned char)w->id.inl[0];
}

enum { DM__STARTING = 0, DM__STARTED, DM__DOWN };
enum { DM__PICK_HASHRING = 0, DM__PICK_RANDOM, DM__PICK_STREAM };

static inline const char *dm__state_name(int s) {
  return s == DM__STARTING ? "starting" : s == DM__STARTED ? "started" : "down";
}

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
  X(bad_requests)                                                              \
  X(events_sent)    /* messages to subscribers */                              \
  X(events_dropped) /* past a subscriber's rate; see events.c */

#define DM__LATE_BUCKETS 128 /* 100 of 100 us below 10 ms, then doublings */

typedef struct {
#define DM__MSTATS_FIELD(n) uint64_t n;
  DM__MSTATS_MAP(DM__MSTATS_FIELD)
#undef DM__MSTATS_FIELD
  uint64_t late[DM__LATE_BUCKETS]; /* see lateness.c */
  uint64_t late_max_us;
  uint64_t late_count;
} dm__mstats;

struct dm__manager {
  dm__proc proc;
  /* durable.c: a checkpoint pass is under way, in parts; the slab's
   * shrink waits for its end (a move would carry a worker past it). */
  int mid_checkpoint;
  dm__node *node;
  dm__sched *sched;
  char *name;
  char *struct_name; /* 'Elixir.<Name>.State' */
  const dm_behaviour *b;
  int check_options; /* b->options can be read: unknown keys are refused */
  dm__kv *options;
  size_t noptions;
  dm__child_opts defaults;
  dm__blob *default_payload;
  dm__wopts *last_opts; /* shared by consecutive workers with equal opts */
  int spread;          /* booting: first performs spread over a period */
  int pickup;
  uint32_t max_mailbox;
  unsigned threads;
  int state;
  uint32_t epoch;  /* bumped by restart: stale children_specs results are dropped */
  /* Where the jobs of workers go back to: the supervisor's, given when the
   * manager is made, so that workers never name it. */
  dm__job_done_fn worker_done;

  /* Open addressing by id hash. A slot holds the worker's pid key and 4
   * bits of its hash above it (see children.c): 4 bytes a slot, which a
   * worker's moves in memory leave alone. Read slots with
   * dm__children_at. */
  uint32_t *slots;
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
  size_t free_jobs_low; /* the fewest kept since the last dm__jobs_trim */
  /* handle_state_change runs one at a time, in order: a pool of several
   * threads could otherwise run `started` before `starting`. */
  int sc_running;
  dm__wjob *sc_head, *sc_tail; /* waiting, linked through base.next */
  dm__buf scratch;   /* canonical ids of requests: api.c's alone */
  /* put, put_new, del and get that came while `starting`: applied in
   * order once children_specs is in (boot.c), so a user's put wins over
   * the spec's, and a get sees the children. */
  struct dm__held *held_head, *held_tail;
  size_t nheld;
  /* How a held request is served in the end (api.c's dispatch). */
  void (*replay)(dm__manager *m, const char *msg, size_t len);
  dm__durable *durable; /* with --state-dir: the store and its batches */
  dm__events *events;   /* subscribers; NULL until the first subscribes */
};

/* The node-wide scheduler: every manager's workers in one slab and one
 * timer wheel, driven from the node's loop hooks. */
struct dm__sched {
  dm__node *node;
  dm__wheel wheel;    /* every worker's next perform */
  dm__slab workers;   /* every manager's workers */
  uv_timer_t wheel_timer;
  int timer_open;     /* wheel_timer is initialised and not closed */
  dm__manager **managers;
  size_t nmanagers, capmanagers;
  /* The call each busy worker runs, if it runs one: worker key -> job. A
   * worker stopped meanwhile exits its caller at once. */
  dm__pidtab calls;
  /* Workers' annexes: worker key -> dm__annex (annex.c). */
  dm__pidtab annex;
  unsigned threads;   /* default pool size of a manager */
  const char *state_dir; /* --state-dir, or NULL */
  uint32_t sync_ms;      /* --state-sync-ms */
  const dm_behaviour *const *builtins; /* compiled in, NULL-terminated */
  uint8_t kind_manager, kind_worker; /* process kinds registered with the node */
  uint64_t compacted_ms; /* the last look at the tables' size (compact.c) */
  uint64_t compact_wait_ms; /* until the next look; 0: the shortest */
  uint64_t compact_jitter_ms; /* and this much more */
  uint64_t compactions;  /* times they were made smaller */
  uint64_t compact_moves; /* workers moved to another slot */
  uint64_t jobs_trimmed_ms; /* the last dm__jobs_trim of every manager */
  /* The clock as dm__sched_now_us read it, and how often it gave it
   * since; 0 after each prepare phase, read afresh then. */
  uint64_t clock_us;
  unsigned clock_uses;
};
/* CLOCK_MONOTONIC in microseconds, for the schedule of performs: read
 * once for DM__CLOCK_USES calls, and again after the loop may have
 * slept. A million completions a second each arming a timer so take a
 * clock read each 32 of them, a few microseconds stale at most. */
#define DM__CLOCK_USES 32u
static inline uint64_t dm__sched_now_us(dm__sched *s) {
  if (!s->clock_us || ++s->clock_uses >= DM__CLOCK_USES) {
    s->clock_us = uv_hrtime() / 1000;
    s->clock_uses = 0;
  }
  return s->clock_us;
}

/* ---- compact.c: memory back after many workers went ---- */
/* Shrinks the slab and the tables when they are mostly empty; looks at
 * most once a second (now_ms, monotonic). Prepare phase only. */
void dm__sched_compact(dm__sched *s, uint64_t now_ms);

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
  dm__job_done_fn done; /* NULL: only freed */
  int kind;
  int rc;
  uint32_t epoch;
  int wrap;
  const char *state_name;
  dm_term id, payload, msg;
  /* A small payload travels in the job itself, next to the terms the
   * pool thread reads anyway: the worker's blob stays on the loop's core. */
  char payload_copy[16];
  /* A worker's job: its next perform's due (µs, 0: none) when the job
   * began; for a perform, the due it ran for. */
  uint64_t due;
  char *owned;        /* memory the job owns (msg copy, copied terms) */
  dm__replyto *reply;
  int answered;       /* the caller already had its answer (the call exited) */
  ei_x_buff out;
  ei_x_buff sends;    /* pid, then 4-byte length and message, repeated */
  /* Checked on the pool thread, so the loop does not walk the output
   * again: out is one whole term, and for a worker's job rs is what it
   * means. */
  int valid;
  dm__response rs;
};

/* ---- children.c: the children table ---- */
int dm__children_put(dm__manager *m, dm__worker *w);
/* Makes room for n children in all (a hint: failure only means rehashing
 * later). */
int dm__children_reserve(dm__manager *m, size_t n);
/* A slot holds a pid key in its low bits, a tag above them; 0 is empty. */
#define DM__CHILD_KEY_MASK (((uint32_t)1 << DM__PROC_KEY_BITS) - 1)
/* The worker in slot i of m's children table, or NULL. */
dm__worker *dm__children_at(const dm__manager *m, size_t i);
/* The same for a walk over the slots in order: the workers a few slots
 * ahead are fetched meanwhile. A slot is a pid key, so reaching its
 * worker is two cache misses in a large table; a walk over a million
 * children would wait for both at every slot. */
dm__worker *dm__children_walk(const dm__manager *m, size_t i);
dm__worker *dm__children_get(const dm__manager *m, const char *id, size_t len,
                             uint32_t hash);
/* Fetches the slot where a lookup of hash starts into the cache: a caller
 * with many ids to look up starts the next ones' misses early. */
static inline void dm__children_prefetch(const dm__manager *m, uint32_t hash) {
  if (m->cap)
    __builtin_prefetch(&m->slots[hash & (m->cap - 1)]);
}
void dm__children_del(dm__manager *m, dm__worker *w);
/* True for a table at most an eighth full: dm__children_shrink rehashes
 * it to half full at most; on failure it stays as it is. */
static inline int dm__children_sparse(const dm__manager *m) {
  return m->cap > 64 && m->count < m->cap / 8;
}
void dm__children_shrink(dm__manager *m);
uint32_t dm__id_hash(const dm__manager *m, const char *id, size_t len);

/* ---- lateness.c: the histogram of how late performs start ---- */
void dm__lateness_note(dm__mstats *s, uint64_t late_us);
/* The p-quantile (0..1), as the top of its bucket, at most the maximum. */
uint64_t dm__lateness_percentile(const dm__mstats *s, double p);
/* The largest lateness bucket b counts. */
uint64_t dm__lateness_bucket_top(size_t b);

/* ---- job.c: callback jobs ---- */
/* A job of m (for w, or manager-level when w is NULL), handed back to
 * done when finished. NULL when out of memory. */
dm__wjob *dm__job_new(dm__manager *m, dm__worker *w, int kind, dm__job_done_fn done);
void dm__job_free(dm__wjob *j);
/* Frees the jobs kept for reuse that none needed since the last call (a
 * burst's, after a stall): called once a second. Returns how many. */
size_t dm__jobs_trim(dm__manager *m);
void dm__job_submit(dm__wjob *j);
/* The pools' completion function (see dm__pool_start). */
void dm__job_done(dm__job *j, void *ud);
void dm__job_ahead(const dm__job *j);

/* ---- run.c: a worker's callback on its way ---- */
/* Runs a callback for w, which must be idle: w is busy until its job
 * comes back. A call's reply record passes to the job. 0 or DM_ENOMEM. */
int dm__worker_run(dm__worker *w, int kind, const char *msg, size_t len,
                   dm__replyto *reply, int wrap);
/* Arms w's timer for due_us (monotonic µs). */
void dm__worker_arm(dm__worker *w, uint64_t due_us);
/* Disarms it; its due stays. */
void dm__worker_disarm(dm__worker *w);
/* Disarms it and sets its due to due_us: the due it keeps while it waits
 * for something else than its timer. */
void dm__worker_park(dm__worker *w, uint64_t due_us);
/* The loop's time (ms, as uv_now) when w's callback began; w is busy. */
uint64_t dm__worker_busy_since(const dm__worker *w);
/* The loop's cached time in µs. */
uint64_t dm__worker_now_us(const dm__worker *w);

/* ---- worker.c: a worker's life ---- */
/* Stores w's id, inline when short. 0 or DM_ENOMEM. */
int dm__worker_set_id(dm__worker *w, const char *id, size_t len);
void dm__worker_release_id(dm__worker *w);
/* Starts a worker for id (canonical) with opts (as given, validated). */
int dm__worker_start(dm__manager *m, const char *id, size_t idlen,
                     const char *opts, size_t optslen, dm__worker **out);
/* A worker for id (canonical) with opts that goes on from payload and
 * value (NULL: nil) instead of the payload its opts give: init does not
 * run again. For workers restarted together and workers restored from
 * the store. */
int dm__worker_resume(dm__manager *m, const char *id, size_t idlen,
                      const char *opts, size_t optslen, const dm__cell *payload,
                      const dm__cell *value, dm__worker **out);
/* put and put_new: a worker for id (any encoding) with opts, replacing
 * the one there unless only_new. 0, DM_EBADTERM (bad id), DM_EINVAL (bad
 * opts, described in detail when given) or DM_ENOMEM. */
int dm__worker_put(dm__manager *m, const char *id, size_t idlen, const char *opts,
                   size_t optslen, int only_new, ei_x_buff *detail, dm__worker **out);
/* The same for an id already canonical, with its dm__id_hash. */
int dm__worker_put_canon(dm__manager *m, const char *canon, size_t canon_len, uint32_t hash,
                         const char *opts, size_t optslen, int only_new, ei_x_buff *detail,
                         dm__worker **out);
/* Stops a worker: out of the table now, terminate then freed. */
void dm__worker_stop(dm__worker *w, const char *reason, size_t reason_len);
/* Stops every worker of m. */
void dm__workers_stop_all(dm__manager *m, const char *reason, size_t len);
/* A call or cast for w (runs now or waits in the mailbox). */
int dm__worker_deliver(dm__worker *w, int kind, const char *msg, size_t len,
                       const dm__gen *g, int wrap);
/* A message to w's pid: calls, casts and {payload, P}. */
void dm__worker_message(dm__worker *w, const dm__ctrl *ctl);
/* Runs what waited while w was busy: mail first, then a due perform. */
void dm__worker_drain(dm__worker *w);
/* The wheel's callback for a worker's timer (ud: the scheduler). */
void dm__worker_on_timer(dm__timer *t, void *ud);
/* The wheel's look-ahead: prefetches the payload a perform will read. */
void dm__worker_ahead(const dm__timer *t);
/* Its job came back after the node began stopping. */
void dm__worker_cancelled(dm__wjob *j);
/* The last of a stopped worker: exits to its links, then freed. */
void dm__worker_finalize(dm__worker *w);
void dm__worker_free(dm__worker *w);

/* ---- complete.c: what a finished callback means for its worker ---- */
enum {
  DM__OUT_LIVES = 0, /* the worker goes on */
  DM__OUT_STOPPED,   /* it stopped (halt, moved to a new id) or was gone */
  DM__OUT_CRASHED,   /* it crashed: reason says why; still in the table */
};
typedef struct {
  int kind;
  const char *reason; /* DM__OUT_CRASHED: lent from the job or static */
  size_t reason_len;
} dm__outcome;
/* Applies j's result to its worker and says what became of it. j stays
 * the caller's to free, after it is done with the reason. */
void dm__worker_completed(dm__wjob *j, dm__outcome *out);

/* ---- boot.c: children_specs and the manager's state ---- */
/* Goes `starting`, asks children_specs, puts its children, goes
 * `started`. */
void dm__boot(dm__manager *m);
/* The manager's state becomes state; handle_state_change runs, in order. */
void dm__state_change(dm__manager *m, int state);
/* Keeps a request (a gen_server message, versioned) that came while the
 * manager was starting, to be handed to m->replay once it has started.
 * 0, DM_ETOOBIG (too many wait already) or DM_ENOMEM. */
#define DM__HELD_MAX 100000
int dm__boot_hold(dm__manager *m, const char *msg, size_t len);
/* Drops what is held (the manager goes away). */
void dm__boot_free_held(dm__manager *m);

/* ---- supervisor.c ---- */
/* The completion of every worker job: the outcome decides what happens
 * next (restart per restart type and intensity, escalation). */
void dm__sup_worker_done(dm__wjob *j, int cancelled);
/* restart: a clean slate for the intensity counts. */
void dm__sup_reset(dm__manager *m);
/* A worker is about to be restarted after a crash. Returns 1 when that
 * is within the manager's intensity; 0 when it is not and every other
 * worker was restarted with its opts and last payload (this one still
 * restarts); -1 when the manager went down instead. */
int dm__sup_allow_restart(dm__manager *m);
/* The process kind of workers (message, exit signals). */
extern const dm__proc_ops dm__worker_ops;

/* ---- chunks.c: checkpoints, as groups of children in memory order ---- */
/* What a manager's checkpoints know between them. */
typedef struct {
  uint64_t *marked; /* groups the next checkpoint writes, whatever changed */
  size_t nmarked;   /* words of marked */
  int all;          /* every group, in the space: a mark was lost, or the
                       workers were laid out anew */
  int relaid;       /* laid out anew: the next checkpoint changes space */
  int cut_other;    /* the next checkpoint empties the other space */
  unsigned space;   /* the key space (0 or 1) checkpoints write in */
  uint64_t seq;     /* the sequence number of the last pass */
  int in_pass;      /* a pass stopped at its limit goes on from cursor */
  int clean;        /* no group of this pass was left out */
  size_t cursor;    /* the next group the pass looks at */
  uint64_t passes;  /* passes begun */
  size_t end[2];    /* groups at or past end[s] hold no record in space s */
  size_t last_groups, last_bytes; /* what the last checkpoint wrote */
} dm__chunks;
/* w's group is written at the next checkpoint (w is going). */
void dm__chunks_mark(dm__chunks *c, const dm__slab *slab, const dm__worker *w);
void dm__chunks_free(dm__chunks *c);
/* Every worker of the manager has a new place in memory (a boot, an
 * escalation): the next checkpoint writes them all. */
void dm__chunks_relaid(dm__chunks *c);
/* Adds to b, as state records, the groups of m holding a worker marked
 * DM__W_DIRTY or marked in c, and unmarks both: a pass over the slab, in
 * parts of about limit bytes, one a call (c->in_pass while it is not
 * over). *changed: the dirty workers, *written: the records added or
 * removed. 0, or an error (a group it could not add stays marked, its
 * workers with it). */
int dm__chunks_write(dm__manager *m, dm__chunks *c, dm__store_batch *b, size_t limit,
                     size_t *changed, size_t *written);
/* One record read at boot (oldest first): every entry is checked, and
 * given to its child when the child's record has the entry's Gen
 * (*applied), skipped when not (*stale); c learns the sequence number and
 * the key. 0, DM_EBADTERM (not a record: corrupt) or DM_ENOMEM. */
int dm__chunks_restore(dm__manager *m, dm__chunks *c, uint32_t key, const char *rec,
                       size_t len, size_t *applied, size_t *stale);

/* ---- durable.c: the manager's children in its store ---- */
/* Opens m's store under dir, checkpointing every sync_ms. 0 or an error
 * (logged with what the user must know: held by another node, another
 * format, corrupt). */
int dm__durable_open(dm__manager *m, const char *dir, uint32_t sync_ms);
/* At the first boot: every stored child back with its opts, payload and
 * value (spread over their periods); the deleted spec ids kept until
 * children_specs is in. 0 or an error (logged). */
int dm__durable_restore(dm__manager *m);
/* Whether children_specs may add the id (canonical): not when the store
 * restored it or the user deleted it. */
int dm__durable_spec_wanted(dm__manager *m, const char *canon, size_t len);
/* children_specs is in: what the restore kept goes. */
void dm__durable_restored(dm__manager *m);
/* This turn's batch: w as it is now; w gone (del, halt...); everything
 * gone (restart). Nothing without a store. */
void dm__durable_put(dm__manager *m, dm__worker *w);
void dm__durable_del(dm__manager *m, const dm__worker *w);
void dm__durable_clear(dm__manager *m);
/* The call g is answered once this turn's batch is committed: 1, or 0
 * when there is no store (the caller answers now). */
int dm__durable_ack(dm__manager *m, const dm__gen *g);
/* The loop is about to block: this turn's batch goes to the writer. */
void dm__durable_flush(dm__manager *m);
/* Every worker of m was started anew where the slab had room: the next
 * checkpoint records them all. Nothing without a store. */
void dm__durable_relaid(dm__manager *m);
/* The payload or value of w changed: the next checkpoint records it. */
static inline void dm__durable_dirty(dm__worker *w) { w->proc.flags |= DM__W_DIRTY; }
/* stats' store_* entries: how many, and the entries. */
size_t dm__durable_nstats(const dm__manager *m);
int dm__durable_enc_stats(dm__manager *m, ei_x_buff *x);
/* The node stops: the last payloads recorded, what is queued committed. */
void dm__durable_stop(dm__manager *m);
void dm__durable_free(dm__manager *m);

/* ---- events.c: what a manager tells its subscribers ---- */
/* Kinds of event, as a subscription's bit set. */
enum {
  DM__EV_CRASH = 1,      /* a worker crashed: id, pid, reason */
  DM__EV_RESTART = 2,    /* a crashed worker was started again: id, pid */
  DM__EV_ESCALATION = 4, /* past the intensity: every worker restarted, or down */
  DM__EV_STATE = 8,      /* the manager's state changed */
  DM__EV_LATE = 16,      /* performs started later than a threshold */
  DM__EV_ALL = 31,
};
/* Subscribers a manager takes: each costs a watch and a little memory,
 * and every event is one message per subscriber. */
#define DM__SUBS_MAX 64
/* Every subscriber's budget: a burst of this many messages, refilled at
 * this many a second. Past it events are dropped and counted, and the
 * next that goes is preceded by {dropped, #{count => N}}. */
#define DM__EV_BURST 1000
#define DM__EV_RATE 1000

struct dm__events {
  struct dm__sub *subs;
  size_t count, cap;
  uint8_t any;          /* union of the subscribers' kinds */
  uint64_t late_min_us; /* smallest late threshold; UINT64_MAX: none */
  uv_timer_t timer;     /* the next late summary that waits */
  int timer_open;
  uint64_t timer_due;   /* loop ms the timer is set for, 0: not set */
  ei_x_buff x;          /* the event being built */
  ei_x_buff y;          /* a {dropped, ...} notice, sent amid a broadcast of x */
  int walking;          /* the list is being walked: the gone are only marked */
};

static inline int dm__ev_wanted(const dm__manager *m, int kind) {
  return m->events && (m->events->any & kind);
}
/* {subscribe, Pid, Events} and {unsubscribe, Pid}, answered here. */
void dm__ev_subscribe(dm__manager *m, const dm__gen *g, const char *pid,
                      size_t pid_len, const char *events, size_t events_len);
void dm__ev_unsubscribe(dm__manager *m, const dm__gen *g, const char *pid,
                        size_t pid_len);
/* The manager's watch of a subscriber fired: it is gone. */
void dm__ev_subscriber_down(dm__manager *m, const erlang_ref *ref);
/* The events. Each costs a test when nobody subscribed to it. */
void dm__ev_crash(dm__manager *m, const dm__worker *w, const char *reason,
                  size_t len);
void dm__ev_restart(dm__manager *m, const dm__worker *w);
void dm__ev_escalation(dm__manager *m, size_t workers, int down);
void dm__ev_state(dm__manager *m, int state);
void dm__ev_late_slow(dm__manager *m, const dm__worker *w, uint64_t late_us);
static inline void dm__ev_late(dm__manager *m, const dm__worker *w, uint64_t late_us) {
  if (m->events && late_us >= m->events->late_min_us)
    dm__ev_late_slow(m, w, late_us);
}
/* Subscribers now (stats). */
size_t dm__ev_count(const dm__manager *m);
/* The node stops: the timer is closed. After the loop: freed. */
void dm__ev_stop(dm__manager *m);
void dm__ev_free(dm__manager *m);

/* ---- sys.c: OTP system messages to managers and workers ---- */
/* get_state (the State map, the Child map) and get_status answered at
 * once, everything else refused at once. */
void dm__sys_manager(dm__manager *m, const dm__gen *g);
void dm__sys_worker(dm__worker *w, const dm__gen *g);

/* ---- encode.c ---- */
/* %Tarearbol.DynamicManager.Child{} of w. 0 or DM_ENOMEM. */
int dm__enc_child(dm__node *n, ei_x_buff *x, const dm__worker *w);
/* {ok, [{Id, Opts, Payload, Value}], Next}: the children of the table's
 * slots from slot on, at most limit of them; Next is {Cap, Slot} to go
 * on from, or done. */
int dm__enc_dump(dm__manager *m, ei_x_buff *x, size_t slot, size_t limit);
int dm__enc_state(dm__manager *m, ei_x_buff *x);
int dm__enc_stats(dm__manager *m, ei_x_buff *x);
/* info's managers: a list of maps. */
int dm__enc_managers(dm__sched *s, ei_x_buff *x);

/* ---- api.c ---- */
/* The process kind of managers: Tarearbol's requests. */
extern const dm__proc_ops dm__manager_ops;
/* Serves a request that waited for the boot (m->replay). */
void dm__api_replay(dm__manager *m, const char *msg, size_t len);

/* ---- loader.c ---- */
/* The behaviour named name in builtins (NULL-terminated), or NULL. */
const dm_behaviour *dm__builtin_behaviour(const dm_behaviour *const *builtins,
                                          const char *name);
/* 1 when a --manager BEHAVIOUR names a shared object (it contains '/' or
 * ends in .so), 0 when it names a built-in one. */
int dm__is_behaviour_path(const char *s);
/* The behaviour of the shared object at path, for the manager named
 * manager, or NULL with one line logged saying why. *has_options is 1 when
 * the object has dm_behaviour's `options` (it exports DM_BEHAVIOUR_SYMBOL),
 * 0 when its struct ends before them (DM_BEHAVIOUR_SYMBOL_V0): then
 * `options` must not be read. The object stays loaded for the life of the
 * process. */
const dm_behaviour *dm__load_behaviour(const char *manager, const char *path,
                                       int *has_options);

/* ---- manager.c ---- */
/* A manager from a --manager NAME=BEHAVIOUR[,key=value...] spec, booting.
 * 0 or an error (logged). */
int dm__manager_new(dm__sched *s, const char *spec, dm__manager **out);
/* Frees m and every worker it has. */
void dm__manager_free(dm__manager *m);

/* ---- sched.c ---- */
/* Sets up the scheduler and plugs it into the node (kinds, hooks).
 * builtins: the behaviours compiled in, NULL-terminated, lent. */
int dm__sched_init(dm__sched *s, dm__node *n, unsigned threads,
                   const dm_behaviour *const *builtins);
/* Adds a manager from its --manager spec. */
int dm__sched_add_manager(dm__sched *s, const char *spec);

#endif
