/* Managers: the registered process that answers Tarearbol's wire API
 * (state, put, put_new, del, get, restart, synch_call, asynch_call, stats),
 * boots children_specs, and owns the workers through the children table. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/base.h"
#include "term/term.h"
#include "dm/mgr.h"

static const char A_SHUTDOWN[] = "\x77\x08shutdown";
static const char A_OK[] = "\x77\x02ok";
static const char A_ERROR[] = "\x77\x05" "error";

/* ---- replies ----------------------------------------------------------------- */

dm__replyto *dm__replyto_new(const dm__gen *g) {
  dm__replyto *r = dm__malloc(sizeof *r + g->tag_len);
  if (!r)
    return NULL;
  r->from = g->from;
  r->has_mref = g->has_mref;
  r->mref = g->mref;
  r->tag_len = g->tag_len;
  memcpy(r->tag, g->tag, g->tag_len);
  return r;
}

void dm__reply_to(dm__node *n, const dm__replyto *r, const char *term,
                  size_t len, int wrap) {
  dm__gen g;
  if (!r)
    return;
  g.from = r->from;
  g.tag = r->tag;
  g.tag_len = r->tag_len;
  if (wrap) {
    /* {ok, Reply} for synch_call. The scratch may be what `term` points
     * into, so build in the packet scratch's sibling carefully. */
    dm__buf b = DM__BUF_INIT;
    if (dm__buf_append(&b, "\x68\x02\x77\x02ok", 6) || dm__buf_append(&b, term, len)) {
      dm__buf_free(&b);
      return;
    }
    dm__node_reply(n, &g, b.data, b.len);
    dm__buf_free(&b);
    return;
  }
  dm__node_reply(n, &g, term, len);
}

void dm__reply_exit(dm__node *n, const dm__replyto *r, const char *reason,
                    size_t len) {
  if (!r || !r->has_mref)
    return;
  n->x.index = 0;
  erlang_pid dead = r->from; /* any pid of ours would do; the name is unused */
  strcpy(dead.node, n->ec.thisnodename);
  dead.creation = n->ec.creation;
  if (dm__enc_monitor_p_exit(&n->x, NULL, &dead, &r->from, &r->mref, reason, len) == 0)
    dm__node_send(n, r->from.node, &n->x);
}

/* ---- encoding ---------------------------------------------------------------- */

#define ENC(call)                                                              \
  do {                                                                         \
    if ((call) < 0)                                                            \
      return DM_ENOMEM;                                                        \
  } while (0)

int dm_x_reserve(ei_x_buff *x, size_t bytes) {
  if (x->index < 0 || bytes > (size_t)INT_MAX - (size_t)x->index)
    return DM_ENOMEM;
  size_t need = (size_t)x->index + bytes;
  if (need <= (size_t)x->buffsz)
    return 0;
  char *b = realloc(x->buff, need);
  if (!b)
    return DM_ENOMEM;
  x->buff = b;
  x->buffsz = (int)need;
  return 0;
}

int dm_encode_datetime(ei_x_buff *x, unsigned long long us) {
  time_t secs = (time_t)(us / 1000000u);
  struct tm tm;
  gmtime_r(&secs, &tm);
  ENC(ei_x_encode_map_header(x, 13));
  ENC(ei_x_encode_atom(x, "__struct__"));
  ENC(ei_x_encode_atom(x, "Elixir.DateTime"));
  ENC(ei_x_encode_atom(x, "calendar"));
  ENC(ei_x_encode_atom(x, "Elixir.Calendar.ISO"));
  ENC(ei_x_encode_atom(x, "year"));
  ENC(ei_x_encode_long(x, tm.tm_year + 1900));
  ENC(ei_x_encode_atom(x, "month"));
  ENC(ei_x_encode_long(x, tm.tm_mon + 1));
  ENC(ei_x_encode_atom(x, "day"));
  ENC(ei_x_encode_long(x, tm.tm_mday));
  ENC(ei_x_encode_atom(x, "hour"));
  ENC(ei_x_encode_long(x, tm.tm_hour));
  ENC(ei_x_encode_atom(x, "minute"));
  ENC(ei_x_encode_long(x, tm.tm_min));
  ENC(ei_x_encode_atom(x, "second"));
  ENC(ei_x_encode_long(x, tm.tm_sec));
  ENC(ei_x_encode_atom(x, "microsecond"));
  ENC(ei_x_encode_tuple_header(x, 2));
  ENC(ei_x_encode_long(x, (long)(us % 1000000u)));
  ENC(ei_x_encode_long(x, 6));
  ENC(ei_x_encode_atom(x, "time_zone"));
  ENC(ei_x_encode_binary(x, "Etc/UTC", 7));
  ENC(ei_x_encode_atom(x, "zone_abbr"));
  ENC(ei_x_encode_binary(x, "UTC", 3));
  ENC(ei_x_encode_atom(x, "utc_offset"));
  ENC(ei_x_encode_long(x, 0));
  ENC(ei_x_encode_atom(x, "std_offset"));
  ENC(ei_x_encode_long(x, 0));
  return 0;
}

/* The constant parts of a Child map, encoded once by hand: `get` answers
 * with one on every call, and ei's atom encoder measures and converts each
 * atom every time. */
static const char CHILD_HEAD[] = "\x74\x00\x00\x00\x05"
                                 "\x77\x0a" "__struct__"
                                 "\x77\x25" "Elixir.Tarearbol.DynamicManager.Child"
                                 "\x77\x03" "pid";
static const char KEY_VALUE[] = "\x77\x05" "value";
static const char KEY_BUSY[] = "\x77\x05" "busy?";
static const char ATOM_NIL[] = "\x77\x03" "nil";
static const char KEY_OPTS[] = "\x77\x04" "opts";

/* Appends a constant above, without its terminating NUL. */
#define APPEND_CONST(x, c) ENC(ei_x_append_buf(x, c, (int)sizeof c - 1))

/* %Tarearbol.DynamicManager.Child{pid, value, busy?, opts} */
static int enc_child(dm__node *n, ei_x_buff *x, const dm__worker *w) {
  erlang_pid pid;
  dm__proc_pid(n, &w->proc, &pid);
  APPEND_CONST(x, CHILD_HEAD);
  /* NEW_PID_EXT: the node as a SMALL_ATOM_UTF8_EXT (node names are ASCII
   * and under 256 bytes), then number, serial and creation. */
  size_t nl = strlen(pid.node);
  char pb[3 + 255 + 12];
  if (nl > 255) {
    ENC(ei_x_encode_pid(x, &pid));
    goto value;
  }
  pb[0] = 'X';
  pb[1] = 'w';
  pb[2] = (char)nl;
  memcpy(pb + 3, pid.node, nl);
  dm__put32be(pb + 3 + nl, pid.num);
  dm__put32be(pb + 7 + nl, pid.serial);
  dm__put32be(pb + 11 + nl, pid.creation);
  ENC(ei_x_append_buf(x, pb, (int)(15 + nl)));
value:
  APPEND_CONST(x, KEY_VALUE);
  ENC(ei_x_append_buf(x, dm__blob_data(w->value), (int)dm__blob_size(w->value)));
  APPEND_CONST(x, KEY_BUSY);
  if (w->busy_ms) {
    uint64_t wall = n->start_wall_us + (uint64_t)(w->busy_ms - 1) * 1000;
    /* start_ms and start_wall_us were read together at start. */
    if (dm_encode_datetime(x, wall))
      return DM_ENOMEM;
  } else {
    APPEND_CONST(x, ATOM_NIL);
  }
  APPEND_CONST(x, KEY_OPTS);
  ENC(ei_x_append_buf(x, dm__blob_data(w->opts), (int)dm__blob_size(w->opts)));
  return 0;
}

static const char *state_name(int s) {
  return s == DM__STARTING ? "starting" : s == DM__STARTED ? "started" : "down";
}

static int enc_state(dm__manager *m, ei_x_buff *x) {
  ENC(ei_x_encode_map_header(x, 4));
  ENC(ei_x_encode_atom(x, "__struct__"));
  ENC(ei_x_encode_atom(x, m->struct_name));
  ENC(ei_x_encode_atom(x, "state"));
  ENC(ei_x_encode_atom(x, state_name(m->state)));
  ENC(ei_x_encode_atom(x, "manager"));
  ENC(ei_x_encode_atom(x, m->name));
  ENC(ei_x_encode_atom(x, "children"));
  ENC(ei_x_encode_map_header(x, (long)m->count));
  for (size_t i = 0; i < m->cap; i++) {
    dm__worker *w = dm__children_at(m, i);
    if (!w)
      continue;
    ENC(ei_x_append_buf(x, dm__worker_id(w), (int)dm__worker_id_len(w)));
    if (enc_child(m->node, x, w))
      return DM_ENOMEM;
  }
  return 0;
}

/* Lateness: 100 µs linear buckets below 10 ms, then powers of two. */
static size_t late_bucket(uint64_t us) {
  if (us < 10000)
    return (size_t)(us / 100);
  size_t b = 100;
  for (uint64_t v = us / 10000; v > 1 && b < 100 + 27; v >>= 1)
    b++;
  return b;
}

static uint64_t bucket_top(size_t b) {
  if (b < 100)
    return (uint64_t)(b + 1) * 100;
  return 10000ull << (b - 100 + 1);
}

void dm__manager_note_lateness(dm__manager *m, uint64_t late_us) {
  size_t b = late_bucket(late_us);
  m->st.late[b < DM__LATE_BUCKETS ? b : DM__LATE_BUCKETS - 1]++;
  m->st.late_count++;
  if (late_us > m->st.late_max_us)
    m->st.late_max_us = late_us;
}

static uint64_t percentile(const dm__mstats *s, double p) {
  uint64_t want = (uint64_t)((double)s->late_count * p + 0.5), seen = 0;
  if (!s->late_count)
    return 0;
  if (want == 0)
    want = 1;
  for (size_t b = 0; b < DM__LATE_BUCKETS; b++) {
    seen += s->late[b];
    if (seen >= want) {
      uint64_t top = bucket_top(b);
      return top < s->late_max_us ? top : s->late_max_us;
    }
  }
  return s->late_max_us;
}

static int enc_stats(dm__manager *m, ei_x_buff *x) {
  dm__mstats *s = &m->st;
  long count = 10 + 0
#define DM__ONE(n) +1
      DM__MSTATS_MAP(DM__ONE)
#undef DM__ONE
      ;
  ENC(ei_x_encode_map_header(x, count));
#define DM__ENC(n)                                                             \
  ENC(ei_x_encode_atom(x, #n));                                                \
  ENC(ei_x_encode_ulonglong(x, s->n));
  DM__MSTATS_MAP(DM__ENC)
#undef DM__ENC
  ENC(ei_x_encode_atom(x, "workers"));
  ENC(ei_x_encode_ulonglong(x, m->count));
  ENC(ei_x_encode_atom(x, "state"));
  ENC(ei_x_encode_atom(x, state_name(m->state)));
  ENC(ei_x_encode_atom(x, "pool_depth"));
  ENC(ei_x_encode_ulonglong(x, dm__pool_depth(m->pool)));
  ENC(ei_x_encode_atom(x, "pool_wakeups"));
  ENC(ei_x_encode_ulonglong(x, dm__pool_wakes(m->pool)));
  ENC(ei_x_encode_atom(x, "threads"));
  ENC(ei_x_encode_ulong(x, m->threads));
  ENC(ei_x_encode_atom(x, "lateness_samples"));
  ENC(ei_x_encode_ulonglong(x, s->late_count));
  ENC(ei_x_encode_atom(x, "lateness_p50_us"));
  ENC(ei_x_encode_ulonglong(x, percentile(s, 0.50)));
  ENC(ei_x_encode_atom(x, "lateness_p99_us"));
  ENC(ei_x_encode_ulonglong(x, percentile(s, 0.99)));
  ENC(ei_x_encode_atom(x, "lateness_max_us"));
  ENC(ei_x_encode_ulonglong(x, s->late_max_us));
  /* The histogram itself, [{UpToUs, Count}] for non-empty buckets, so a
   * watcher can difference two readings and get percentiles over a window
   * of its choosing rather than since boot. */
  long nb = 0;
  for (size_t b = 0; b < DM__LATE_BUCKETS; b++)
    nb += s->late[b] != 0;
  ENC(ei_x_encode_atom(x, "lateness_histogram"));
  if (nb) {
    ENC(ei_x_encode_list_header(x, nb));
    for (size_t b = 0; b < DM__LATE_BUCKETS; b++) {
      if (!s->late[b])
        continue;
      ENC(ei_x_encode_tuple_header(x, 2));
      ENC(ei_x_encode_ulonglong(x, bucket_top(b)));
      ENC(ei_x_encode_ulonglong(x, s->late[b]));
    }
  }
  ENC(ei_x_encode_empty_list(x));
  return 0;
}

int dm__encode_managers(dm__node *n, ei_x_buff *x) {
  if (n->nmanagers)
    ENC(ei_x_encode_list_header(x, (long)n->nmanagers));
  for (size_t i = 0; i < n->nmanagers; i++) {
    dm__manager *m = n->managers[i];
    ENC(ei_x_encode_map_header(x, 4));
    ENC(ei_x_encode_atom(x, "name"));
    ENC(ei_x_encode_atom(x, m->name));
    ENC(ei_x_encode_atom(x, "behaviour"));
    ENC(ei_x_encode_atom(x, m->b->name));
    ENC(ei_x_encode_atom(x, "workers"));
    ENC(ei_x_encode_ulonglong(x, m->count));
    ENC(ei_x_encode_atom(x, "state"));
    ENC(ei_x_encode_atom(x, state_name(m->state)));
  }
  ENC(ei_x_encode_empty_list(x));
  return 0;
}

/* ---- life cycle ------------------------------------------------------------- */

static void state_change(dm__manager *m, int state) {
  m->state = state;
  if (!m->b->handle_state_change)
    return;
  dm__wjob *j = dm__job_new(m, NULL, DM__JOB_STATE_CHANGE);
  if (!j)
    return;
  j->state_name = state_name(state);
  if (m->sc_running) {
    j->base.next = NULL;
    if (m->sc_tail)
      m->sc_tail->base.next = &j->base;
    else
      m->sc_head = j;
    m->sc_tail = j;
    return;
  }
  m->sc_running = 1;
  dm__job_submit(j);
}

/* A handle_state_change finished: the next one waiting goes. */
static void state_change_done(dm__manager *m) {
  dm__wjob *j = m->sc_head;
  m->sc_running = j != NULL;
  if (!j)
    return;
  m->sc_head = (dm__wjob *)j->base.next;
  if (!m->sc_head)
    m->sc_tail = NULL;
  dm__job_submit(j);
}

static void boot(dm__manager *m) {
  m->epoch++;
  state_change(m, DM__STARTING);
  dm__wjob *j = dm__job_new(m, NULL, DM__JOB_SPECS);
  if (!j) {
    DM_ERROR("manager %s: out of memory booting", m->name);
    state_change(m, DM__STARTED);
    return;
  }
  dm__job_submit(j);
}

static void stop_all(dm__manager *m) {
  for (size_t i = 0; i < m->cap; i++) {
    /* Stopping removes the worker from the table and shifts others into
     * this slot: look at it again until it is empty. */
    while (m->slots && m->slots[i])
      dm__worker_stop(dm__children_at(m, i), A_SHUTDOWN, sizeof A_SHUTDOWN - 1);
  }
}

/* Counts an event in a ring of the last max_restarts + 1 times and says
 * whether more than max_restarts fell within max_seconds. */
static int over_intensity(dm__manager *m, uint64_t *ring, uint32_t *n) {
  uint64_t now = uv_now(m->node->loop);
  uint32_t size = m->max_restarts + 1;
  ring[*n % size] = now;
  (*n)++;
  if (*n < size)
    return 0;
  /* The oldest of the last `size` events. */
  uint64_t oldest = ring[*n % size];
  return now - oldest < (uint64_t)m->max_seconds * 1000;
}

int dm__manager_allow_restart(dm__manager *m) {
  if (!over_intensity(m, m->restarts_at, &m->nrestarts))
    return 1;
  /* The worker supervisor gave up: every worker restarts from
   * children_specs, as Tarearbol's rest_for_one tree does. Past the
   * manager's own intensity it goes down instead. */
  m->nrestarts = 0;
  m->st.escalations++;
  stop_all(m);
  if (over_intensity(m, m->escalated_at, &m->nescalated)) {
    DM_ERROR("manager %s: restart intensity exceeded again; going down", m->name);
    state_change(m, DM__DOWN);
  } else {
    DM_WARN("manager %s: more than %u restarts in %u s; restarting every worker",
            m->name, m->max_restarts, m->max_seconds);
    boot(m);
  }
  return 0;
}

/* Canonical id into `canon`; 0 or DM_EBADTERM. */
static int canon_id(const char *id, size_t len, dm__buf *canon) {
  canon->len = 0;
  return dm__canon(id, len, canon);
}

/* put: replaces an existing worker. */
static int put(dm__manager *m, const char *id, size_t idlen, const char *opts,
               size_t optslen, int only_new, ei_x_buff *detail) {
  dm__buf canon = DM__BUF_INIT;
  dm__child_opts probe = m->defaults;
  int r = canon_id(id, idlen, &canon);
  if (r) {
    dm__buf_free(&canon);
    return r == DM_EBADTERM ? DM_EBADTERM : r; /* {error, {bad_id, Id}} */
  }
  if ((r = dm__opts_parse(opts, optslen, &probe, detail))) {
    dm__buf_free(&canon);
    return r; /* DM_EINVAL: {error, {bad_opts, Detail}} */
  }
  dm__worker *old = dm__children_get(m, canon.data, canon.len,
                                     dm__id_hash(m, canon.data, canon.len));
  if (old && only_new) {
    dm__buf_free(&canon);
    return 0;
  }
  if (old)
    dm__worker_stop(old, A_SHUTDOWN, sizeof A_SHUTDOWN - 1);
  r = dm__worker_start(m, canon.data, canon.len, opts, optslen, NULL);
  if (r == 0)
    m->st.puts++;
  dm__buf_free(&canon);
  return r;
}

static dm__worker *find(dm__manager *m, const char *id, size_t len) {
  dm__buf *canon = &m->scratch;
  if (canon_id(id, len, canon) != 0)
    return NULL;
  return dm__children_get(m, canon->data, canon->len,
                          dm__id_hash(m, canon->data, canon->len));
}

/* Picks a worker for synch_call/asynch_call with a nil id. */
static dm__worker *pick(dm__manager *m, const char *msg, size_t len) {
  if (!m->count)
    return NULL;
  size_t start;
  if (m->pickup == DM__PICK_RANDOM) {
    start = (size_t)rand();
  } else if (m->pickup == DM__PICK_STREAM) {
    /* The first worker that is not busy, else the next in turn. */
    for (size_t k = 0; k < m->cap; k++) {
      dm__worker *w = dm__children_at(m, (m->cursor + k) & (m->cap - 1));
      if (w && !(w->flags & DM__W_BUSY)) {
        m->cursor = (m->cursor + k + 1) & (m->cap - 1);
        return w;
      }
    }
    start = m->cursor++;
  } else {
    /* hashring: the message's first two tuple elements choose the worker,
     * so repeated calls land on the same one while the children stay. */
    int i = 0, arity;
    size_t a, b;
    dm__buf canon = DM__BUF_INIT;
    start = 0;
    if (ei_decode_tuple_header(msg, &i, &arity) == 0 && arity >= 1) {
      a = b = (size_t)i;
      if (dm__term_skip(msg, len, &b) == 0 && arity >= 2)
        dm__term_skip(msg, len, &b);
      /* dm__canon appends, so the two elements canonicalise side by side. */
      size_t mid = a;
      dm__term_skip(msg, len, &mid);
      if (dm__canon(msg + a, mid - a, &canon) == 0 &&
          (mid == b || dm__canon(msg + mid, b - mid, &canon) == 0))
        start = (size_t)dm__hash(canon.data, canon.len, m->seed);
    } else if (dm__canon(msg, len, &canon) == 0) {
      start = (size_t)dm__hash(canon.data, canon.len, m->seed);
    }
    dm__buf_free(&canon);
  }
  for (size_t k = 0; k < m->cap; k++) {
    dm__worker *w = dm__children_at(m, (start + k) & (m->cap - 1));
    if (w)
      return w;
  }
  return NULL;
}

/* Elements of a request tuple, as slices. */
typedef struct {
  int arity;
  const char *el[3];
  size_t len[3];
} req_t;

static int split(const char *r, size_t len, req_t *q) {
  int i = 0;
  q->arity = 0;
  if (ei_decode_tuple_header(r, &i, &q->arity) < 0 || q->arity < 1 || q->arity > 3)
    return -1;
  size_t k = (size_t)i;
  for (int e = 0; e < q->arity; e++) {
    size_t s = k;
    if (dm__term_skip(r, len, &k))
      return -1;
    q->el[e] = r + s;
    q->len[e] = k - s;
  }
  return 0;
}

static int is(const req_t *q, int arity, const char *name) {
  return q->arity == arity && dm__term_is_atom(q->el[0], q->len[0], name);
}

static int enc_unknown(ei_x_buff *x, const dm__gen *g) {
  ENC(ei_x_encode_tuple_header(x, 2));
  ENC(ei_x_encode_atom(x, "error"));
  ENC(ei_x_encode_tuple_header(x, 2));
  ENC(ei_x_encode_atom(x, "unknown_request"));
  ENC(ei_x_append_buf(x, g->req, (int)g->req_len));
  return 0;
}

static int enc_error_detail(ei_x_buff *x, const char *what, const char *d,
                            size_t len) {
  ENC(ei_x_encode_tuple_header(x, 2));
  ENC(ei_x_encode_atom(x, "error"));
  ENC(ei_x_encode_tuple_header(x, 2));
  ENC(ei_x_encode_atom(x, what));
  ENC(ei_x_append_buf(x, d, (int)len));
  return 0;
}

/* Serves one call; returns 1 when the reply is sent later (synch_call). */
static int handle_call(dm__manager *m, const dm__gen *g, ei_x_buff *x) {
  dm__node *n = m->node;
  const char *rq = g->req;
  size_t rl = g->req_len;
  req_t q;
  if (dm__term_is_atom(rq, rl, "state"))
    return enc_state(m, x), 0;
  if (dm__term_is_atom(rq, rl, "stats"))
    return enc_stats(m, x), 0;
  if (dm__term_is_atom(rq, rl, "restart")) {
    stop_all(m);
    m->nrestarts = m->nescalated = 0;
    boot(m);
    ei_x_append_buf(x, A_OK, sizeof A_OK - 1);
    return 0;
  }
  if (split(rq, rl, &q) != 0 ||
      !(is(&q, 3, "put") || is(&q, 3, "put_new") || is(&q, 2, "del") ||
        is(&q, 2, "get") || is(&q, 3, "synch_call") || is(&q, 3, "asynch_call"))) {
    n->stats.unknown_requests++;
    m->st.bad_requests++;
    enc_unknown(x, g);
    return 0;
  }
  if (m->state == DM__DOWN) {
    ei_x_encode_tuple_header(x, 2);
    ei_x_encode_atom(x, "error");
    ei_x_encode_atom(x, "down");
    return 0;
  }
  if (is(&q, 3, "put") || is(&q, 3, "put_new")) {
    ei_x_buff d;
    if (ei_x_new(&d) < 0)
      return 0;
    int r = put(m, q.el[1], q.len[1], q.el[2], q.len[2], is(&q, 3, "put_new"), &d);
    if (r == 0) {
      ei_x_append_buf(x, A_OK, sizeof A_OK - 1);
    } else if (r == DM_EBADTERM) {
      m->st.bad_requests++;
      enc_error_detail(x, "bad_id", q.el[1], q.len[1]);
    } else if (r == DM_EINVAL) {
      m->st.bad_requests++;
      enc_error_detail(x, "bad_opts", d.buff, (size_t)d.index);
    } else {
      ei_x_encode_tuple_header(x, 2);
      ei_x_encode_atom(x, "error");
      ei_x_encode_atom(x, dm_strerror(r));
    }
    ei_x_free(&d);
    return 0;
  }
  if (is(&q, 2, "del")) {
    dm__worker *w = find(m, q.el[1], q.len[1]);
    if (w) {
      m->st.dels++;
      dm__worker_stop(w, A_SHUTDOWN, sizeof A_SHUTDOWN - 1);
      ei_x_append_buf(x, A_OK, sizeof A_OK - 1);
    } else {
      ei_x_encode_tuple_header(x, 2);
      ei_x_encode_atom(x, "error");
      ei_x_encode_atom(x, "not_found");
    }
    return 0;
  }
  if (is(&q, 2, "get")) {
    dm__worker *w = find(m, q.el[1], q.len[1]);
    if (w)
      enc_child(n, x, w);
    else
      ei_x_encode_map_header(x, 0);
    return 0;
  }
  /* synch_call / asynch_call */
  dm__worker *w = dm__term_is_atom(q.el[1], q.len[1], "nil")
                      ? pick(m, q.el[2], q.len[2])
                      : find(m, q.el[1], q.len[1]);
  if (!w) {
    ei_x_append_buf(x, A_ERROR, sizeof A_ERROR - 1);
    return 0;
  }
  if (is(&q, 3, "asynch_call")) {
    dm__worker_deliver(w, DM__JOB_CAST, q.el[2], q.len[2], NULL, 0);
    ei_x_append_buf(x, A_OK, sizeof A_OK - 1);
    return 0;
  }
  dm__worker_deliver(w, DM__JOB_CALL, q.el[2], q.len[2], g, 1);
  return 1;
}

static void handle_cast(dm__manager *m, const dm__gen *g) {
  req_t q;
  if (dm__term_is_atom(g->req, g->req_len, "restart")) {
    stop_all(m);
    m->nrestarts = m->nescalated = 0;
    boot(m);
    return;
  }
  if (m->state == DM__DOWN || split(g->req, g->req_len, &q) != 0) {
    m->st.bad_requests++;
    return;
  }
  if (is(&q, 3, "put") || is(&q, 3, "put_new")) {
    if (put(m, q.el[1], q.len[1], q.el[2], q.len[2], is(&q, 3, "put_new"), NULL))
      m->st.bad_requests++;
  } else if (is(&q, 2, "del")) {
    dm__worker *w = find(m, q.el[1], q.len[1]);
    if (w) {
      m->st.dels++;
      dm__worker_stop(w, A_SHUTDOWN, sizeof A_SHUTDOWN - 1);
    }
  } else {
    m->st.bad_requests++;
  }
}

static void manager_message(dm__proc *p, dm__node *n, const dm__ctrl *ctl) {
  dm__manager *m = (dm__manager *)p;
  dm__gen g;
  dm__gen_decode(ctl->msg, ctl->msg_len, &g);
  if (g.kind == DM__GEN_CAST) {
    handle_cast(m, &g);
    return;
  }
  if (g.kind != DM__GEN_CALL) {
    m->st.bad_requests++;
    return;
  }
  /* The node's reply scratch: replies are built and sent one at a time. */
  ei_x_buff *x = &n->reply;
  x->index = 0;
  if (handle_call(m, &g, x) == 0 && x->index > 0)
    dm__node_reply(n, &g, x->buff, (size_t)x->index);
}

static void manager_exit(dm__proc *p, dm__node *n, const erlang_pid *from,
                         const char *reason, size_t len) {
  (void)p;
  (void)n;
  (void)from;
  (void)reason;
  (void)len;
}

const dm__proc_ops dm__manager_ops = {manager_message, manager_exit};

/* children_specs came back: put every child, then `started`. */
static void specs_done(dm__manager *m, dm__wjob *j) {
  const char *b = j->out.buff;
  size_t len = (size_t)j->out.index;
  int i = 0, arity;
  if (j->epoch != m->epoch)
    return; /* a restart came in meanwhile and booted again */
  if (j->rc != DM_CB_OK) {
    DM_ERROR("manager %s: children_specs crashed", m->name);
  } else if (len && (!j->valid || /* checked on the pool thread */
                     ei_decode_map_header(b, &i, &arity) < 0)) {
    DM_ERROR("manager %s: children_specs did not return a map", m->name);
  } else if (len) {
    size_t k = (size_t)i;
    /* Room for all of them at once: a million children would otherwise
     * rehash both tables twenty times over. */
    (void)dm__children_reserve(m, m->count + (size_t)arity);
    (void)dm__pidtab_reserve(&m->node->pids, m->node->pids.count + (size_t)arity);
    m->spread = 1;
    for (int e = 0; e < arity; e++) {
      size_t ks = k, vs;
      dm__term_skip(b, len, &k);
      vs = k;
      dm__term_skip(b, len, &k);
      if (put(m, b + ks, vs - ks, b + vs, k - vs, 0, NULL))
        DM_WARN("manager %s: a child of children_specs was refused", m->name);
    }
    m->spread = 0;
  }
  state_change(m, DM__STARTED);
}

void dm__manager_completed(dm__wjob *j) {
  dm__manager *m = j->m;
  if (j->kind == DM__JOB_SPECS)
    specs_done(m, j);
  else if (j->kind == DM__JOB_STATE_CHANGE)
    state_change_done(m);
  dm__job_free(j);
}

/* ---- creation from the command line ------------------------------------------ */

/* A completion that may wait for the wheel waits at most about this long. */
#define LAZY_TICK_US 2000

static size_t inflight_jobs(const dm__node *n) {
  size_t k = 0;
  for (size_t i = 0; i < n->nmanagers; i++)
    k += dm__pool_depth(n->managers[i]->pool);
  return k;
}

static void on_wheel(uv_timer_t *t) {
  dm__node *n = t->data;
  /* What finished since the last tick first: lazy completions waited for
   * this instead of waking the loop. */
  for (size_t i = 0; i < n->nmanagers; i++)
    dm__pool_collect(n->managers[i]->pool, 1);
  size_t inflight = inflight_jobs(n);
  if (inflight < DM__INFLIGHT_MAX)
    dm__wheel_advance(&n->wheel, uv_hrtime() / 1000, DM__INFLIGHT_MAX - inflight,
                      dm__worker_on_timer, n);
}

int dm__managers_init(dm__node *n) {
  int r = dm__wheel_init(&n->wheel, 4096, uv_hrtime() / 1000);
  n->wheel.ahead = dm__worker_ahead;
  if (r || (r = dm__slab_init(&n->workers, sizeof(dm__worker), 1 << 20)))
    return r;
  uv_timer_init(n->loop, &n->wheel_timer);
  n->wheel_timer.data = n;
  return 0;
}

/* The loop's prepare phase: the wheel timer is set for the next slot with
 * timers, and every pool learns whether that tick comes soon enough for
 * lazy completions to wait for it. */
void dm__managers_check(dm__node *n) {
  int ticking = n->nmanagers && n->wheel.count && !atomic_load(&n->stopping);
  uint64_t in = 0;
  if (ticking) {
    in = dm__wheel_next_in(&n->wheel, uv_hrtime() / 1000, 1000000);
    /* Behind, with the pools full: the next tick takes what finished
     * meanwhile, rather than the loop spinning on a due wheel. */
    if (in == 0 && inflight_jobs(n) >= DM__INFLIGHT_MAX)
      in = 1000;
  }
  for (size_t i = 0; i < n->nmanagers; i++)
    dm__pool_collect(n->managers[i]->pool, ticking && in <= LAZY_TICK_US);
  for (size_t i = 0; i < n->nmanagers; i++)
    dm__pool_flush(n->managers[i]->pool);
  if (ticking)
    uv_timer_start(&n->wheel_timer, on_wheel, (in + 999) / 1000, 0);
  else
    uv_timer_stop(&n->wheel_timer);
}

static int set_option(dm__manager *m, const char *key, const char *value) {
  char *end;
  if (strcmp(key, "pickup") == 0) {
    if (strcmp(value, "hashring") == 0)
      m->pickup = DM__PICK_HASHRING;
    else if (strcmp(value, "random") == 0)
      m->pickup = DM__PICK_RANDOM;
    else if (strcmp(value, "stream") == 0)
      m->pickup = DM__PICK_STREAM;
    else
      return DM_EINVAL;
    return 0;
  }
  if (strcmp(key, "max_restarts") == 0 || strcmp(key, "max_seconds") == 0) {
    unsigned long v = strtoul(value, &end, 10);
    if (*end || end == value || value[0] == '-' || v > 100000 ||
        (key[4] == 's' && v == 0))
      return DM_EINVAL;
    if (key[4] == 'r')
      m->max_restarts = (uint32_t)v;
    else
      m->max_seconds = (uint32_t)v;
    return 0;
  }
  if (strcmp(key, "threads") == 0 || strcmp(key, "max_mailbox") == 0) {
    unsigned long v = strtoul(value, &end, 10);
    if (*end || end == value || value[0] == '-' || v == 0 ||
        v > (key[0] == 't' ? 256ul : 100000000ul))
      return DM_EINVAL;
    if (key[0] == 't')
      m->threads = (unsigned)v;
    else
      m->max_mailbox = (uint32_t)v;
    return 0;
  }
  if (strcmp(key, "payload") == 0) {
    ei_x_buff x;
    long long v;
    if (ei_x_new(&x) < 0)
      return DM_ENOMEM;
    v = strtoll(value, &end, 10);
    if (*value && !*end)
      ei_x_encode_longlong(&x, v);
    else
      ei_x_encode_binary(&x, value, (long)strlen(value));
    m->default_payload = dm__blob_new(x.buff, (size_t)x.index);
    ei_x_free(&x);
    return m->default_payload ? 0 : DM_ENOMEM;
  }
  if (dm__opts_default(key, value, &m->defaults) == 0)
    return 0;
  if (!strcmp(key, "timeout") || !strcmp(key, "lull") ||
      !strcmp(key, "instant_perform") || !strcmp(key, "restart"))
    return DM_EINVAL;
  /* Anything else is the behaviour's (dm_option). */
  dm__kv *kv = dm__realloc(m->options, (m->noptions + 1) * sizeof *kv);
  if (!kv)
    return DM_ENOMEM;
  m->options = kv;
  kv[m->noptions].key = strdup(key);
  kv[m->noptions].value = strdup(value);
  if (!kv[m->noptions].key || !kv[m->noptions].value) {
    free(kv[m->noptions].key);
    free(kv[m->noptions].value);
    return DM_ENOMEM;
  }
  m->noptions++;
  return 0;
}

static void manager_free(dm__manager *m) {
  dm__free(m->name);
  dm__free(m->struct_name);
  for (size_t i = 0; i < m->noptions; i++) {
    free(m->options[i].key);
    free(m->options[i].value);
  }
  dm__free(m->options);
  dm__blob_unref(m->default_payload);
  dm__blob_unref(m->last_opts);
  dm__free(m->restarts_at);
  dm__free(m->escalated_at);
  dm__free(m->slots);
  dm__buf_free(&m->scratch);
  while (m->sc_head) {
    dm__wjob *j = m->sc_head;
    m->sc_head = (dm__wjob *)j->base.next;
    dm__job_free(j);
  }
  while (m->free_jobs) {
    dm__wjob *j = m->free_jobs;
    m->free_jobs = (dm__wjob *)j->base.next;
    ei_x_free(&j->out);
    ei_x_free(&j->sends);
    dm__free(j);
  }
  dm__free(m);
}

int dm__manager_create(dm__node *n, const char *spec) {
  char *copy = strdup(spec), *save = NULL;
  int r = DM_EINVAL;
  dm__manager *m = NULL;
  if (!copy)
    return DM_ENOMEM;
  char *eq = strchr(copy, '=');
  if (!eq || eq == copy) {
    DM_ERROR("--manager wants NAME=BEHAVIOUR[,key=value...], got '%s'", spec);
    goto out;
  }
  *eq = 0;
  char *beh = strtok_r(eq + 1, ",", &save);
  if (!beh) {
    DM_ERROR("--manager %s: no behaviour named", copy);
    goto out;
  }
  const dm_behaviour *b = dm__builtin_behaviour(beh);
  if (!b)
    b = dm__load_behaviour(beh);
  if (!b) {
    DM_ERROR("--manager %s: unknown behaviour '%s' (built in: counter, counter_hooks, pingpong, probe; or a path to a .so)",
             copy, beh);
    goto out;
  }
  if (!b->perform) {
    DM_ERROR("--manager %s: behaviour '%s' has no perform callback", copy, beh);
    goto out;
  }
  if (dm__nametab_get(&n->names, copy)) {
    DM_ERROR("--manager %s: the name is taken", copy);
    goto out;
  }
  m = dm__calloc(1, sizeof *m);
  if (!m) {
    r = DM_ENOMEM;
    goto out;
  }
  m->node = n;
  m->b = b;
  m->proc.kind = DM__P_MANAGER;
  m->name = dm__malloc(strlen(copy) + 1);
  if (m->name)
    strcpy(m->name, copy);
  m->defaults.timeout_ms = 1000;
  m->defaults.lull = 1.1f;
  m->max_mailbox = 1000;
  m->max_restarts = 3;
  m->max_seconds = 5;
  m->threads = n->threads;
  m->seed = ((uint64_t)rand() << 32) ^ (uint64_t)rand() ^ uv_hrtime();
  for (char *kv; (kv = strtok_r(NULL, ",", &save));) {
    char *e = strchr(kv, '=');
    if (!e) {
      DM_ERROR("--manager %s: option '%s' wants key=value", copy, kv);
      goto err;
    }
    *e = 0;
    if ((r = set_option(m, kv, e + 1))) {
      DM_ERROR("--manager %s: bad value for %s: '%s'", copy, kv, e + 1);
      goto err;
    }
  }
  m->restarts_at = dm__calloc(m->max_restarts + 1, sizeof *m->restarts_at);
  m->escalated_at = dm__calloc(m->max_restarts + 1, sizeof *m->escalated_at);
  if (!m->restarts_at || !m->escalated_at) {
    r = DM_ENOMEM;
    goto err;
  }
  size_t sl = strlen(copy) + sizeof "Elixir..State";
  m->struct_name = dm__malloc(sl);
  if (!m->name || !m->struct_name) {
    r = DM_ENOMEM;
    goto err;
  }
  if (strncmp(copy, "Elixir.", 7) == 0)
    snprintf(m->struct_name, sl, "%s.State", copy);
  else
    snprintf(m->struct_name, sl, "Elixir.%s.State", copy);
  if ((r = dm__pool_start(&m->pool, n->loop, m->threads, dm__job_done, m)))
    goto err;
  dm__pool_set_ahead(m->pool, dm__job_ahead);
  dm__manager **ms = dm__realloc(n->managers, (n->nmanagers + 1) * sizeof *ms);
  if (!ms) {
    r = DM_ENOMEM;
    goto err_pool;
  }
  n->managers = ms;
  if ((r = dm__proc_spawn(n, &m->proc)) || (r = dm__proc_register(n, &m->proc, m->name)))
    goto err_pool;
  n->managers[n->nmanagers++] = m;
  DM_INFO("manager %s: behaviour %s, %u threads", m->name, b->name, m->threads);
  boot(m);
  free(copy);
  return 0;
err_pool:
  dm__pool_stop(m->pool);
err:
  manager_free(m);
out:
  free(copy);
  return r ? r : DM_EINVAL;
}

void dm__managers_stop(dm__node *n) {
  uv_timer_stop(&n->wheel_timer);
  uv_close((uv_handle_t *)&n->wheel_timer, NULL);
  for (size_t i = 0; i < n->nmanagers; i++)
    dm__pool_stop(n->managers[i]->pool);
}

void dm__managers_free(dm__node *n) {
  for (size_t i = 0; i < n->nmanagers; i++) {
    dm__manager *m = n->managers[i];
    for (size_t s = 0; s < m->cap; s++) {
      dm__worker *w = dm__children_at(m, s);
      if (w) {
        dm__pidtab_del(&n->pids, w->proc.key);
        dm__worker_free(w);
      }
    }
    dm__nametab_del(&n->names, m->name);
    dm__pidtab_del(&n->pids, m->proc.key);
    dm__proc_free_links(n, &m->proc);
    manager_free(m);
  }
  dm__free(n->managers);
  n->managers = NULL;
  n->nmanagers = 0;
  dm__wheel_free(&n->wheel);
  dm__slab_destroy(&n->workers);
}
