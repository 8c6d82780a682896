/* A manager's wire API: Tarearbol's requests (state, stats, restart, put,
 * put_new, del, get, synch_call, asynch_call), count, dump (pages of children
 * with their payloads), subscribe and unsubscribe (events.c) as a table of handlers, for
 * calls and for the casts that have a cast form. Each handler does its
 * work first, then encodes its answer once, into the reply packet. */
#include <stdlib.h>
#include <string.h>

#include "dm/mgr.h"

/* Elements of a request tuple, as slices; arity 0 for a bare atom. */
typedef struct {
  int arity;
  const char *el[3];
  size_t len[3];
} req_t;

typedef struct {
  const char *name;
  int arity;     /* 0: the bare atom */
  int when_down; /* served while the manager is down */
  int held;      /* waits while the manager is starting */
  void (*call)(dm__manager *m, const dm__gen *g, const req_t *q);
  void (*cast)(dm__manager *m, const req_t *q); /* NULL: no cast form */
} handler;

#define ENC(call)                                                              \
  do {                                                                         \
    if ((call) < 0)                                                            \
      return DM_ENOMEM;                                                        \
  } while (0)

static const char OK[] = DM__A_OK;
static const char ERROR[] = DM__A_ERROR;
static const char EMPTY_MAP[] = "\x74\x00\x00\x00\x00";

static void reply_const(dm__manager *m, const dm__gen *g, const char *t, size_t len) {
  dm__reply(m->node, g, t, len);
}

/* {error, Atom} */
static void reply_error(dm__manager *m, const dm__gen *g, const char *atom) {
  ei_x_buff *x = dm__reply_begin(m->node, g);
  static const char head[] = "\x68\x02" DM__A_ERROR;
  int r = !x || ei_x_append_buf(x, head, (int)DM__ALEN(head)) < 0 ||
          ei_x_encode_atom(x, atom) < 0;
  dm__reply_end(m->node, g, r ? DM_ENOMEM : 0);
}

/* {error, {What, Detail}} */
static int enc_error_detail(ei_x_buff *x, const char *what, const char *d, size_t len) {
  static const char head[] = "\x68\x02" DM__A_ERROR "\x68\x02";
  ENC(ei_x_append_buf(x, head, (int)DM__ALEN(head)));
  ENC(ei_x_encode_atom(x, what));
  ENC(ei_x_append_buf(x, d, (int)len));
  return 0;
}

static dm__worker *find(dm__manager *m, const char *id, size_t len) {
  dm__buf *canon = &m->scratch;
  canon->len = 0;
  if (dm__canon(id, len, canon) != 0)
    return NULL;
  return dm__children_get(m, canon->data, canon->len,
                          dm__id_hash(m, canon->data, canon->len));
}

/* hashring: the message's first two tuple elements choose the worker, so
 * repeated calls land on the same one while the children stay. */
static size_t hashring_start(dm__manager *m, const char *msg, size_t len) {
  int i = 0, arity;
  size_t start = 0;
  dm__buf canon = DM__BUF_INIT;
  if (ei_decode_tuple_header(msg, &i, &arity) == 0 && arity >= 1) {
    size_t a = (size_t)i, b = (size_t)i;
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
  return start;
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
      if (w && !(w->proc.flags & DM__W_BUSY)) {
        m->cursor = (m->cursor + k + 1) & (m->cap - 1);
        return w;
      }
    }
    start = m->cursor++;
  } else {
    start = hashring_start(m, msg, len);
  }
  for (size_t k = 0; k < m->cap; k++) {
    dm__worker *w = dm__children_at(m, (start + k) & (m->cap - 1));
    if (w)
      return w;
  }
  return NULL;
}

static dm__worker *target(dm__manager *m, const req_t *q) {
  return dm__term_is_atom(q->el[1], q->len[1], "nil") ? pick(m, q->el[2], q->len[2])
                                                       : find(m, q->el[1], q->len[1]);
}

/* ---- handlers ------------------------------------------------------------------ */

static void call_state(dm__manager *m, const dm__gen *g, const req_t *q) {
  ei_x_buff *x = dm__reply_begin(m->node, g);
  (void)q;
  dm__reply_end(m->node, g, x ? dm__enc_state(m, x) : DM_ENOMEM);
}

static void call_count(dm__manager *m, const dm__gen *g, const req_t *q) {
  ei_x_buff *x = dm__reply_begin(m->node, g);
  (void)q;
  dm__reply_end(m->node, g,
                x && ei_x_encode_ulonglong(x, m->count) == 0 ? 0 : DM_ENOMEM);
}

static void call_stats(dm__manager *m, const dm__gen *g, const req_t *q) {
  ei_x_buff *x = dm__reply_begin(m->node, g);
  (void)q;
  dm__reply_end(m->node, g, x ? dm__enc_stats(m, x) : DM_ENOMEM);
}

static void cast_restart(dm__manager *m, const req_t *q) {
  (void)q;
  dm__workers_stop_all(m, DM__A_SHUTDOWN, DM__ALEN(DM__A_SHUTDOWN));
  dm__durable_clear(m);
  dm__sup_reset(m);
  dm__boot(m);
}

static void call_restart(dm__manager *m, const dm__gen *g, const req_t *q) {
  cast_restart(m, q);
  reply_const(m, g, OK, DM__ALEN(OK));
}

/* *changed: a worker was started (put_new of an id there changes
 * nothing). */
static int do_put(dm__manager *m, const req_t *q, ei_x_buff *detail, int *changed) {
  int only_new = dm__term_is_atom(q->el[0], q->len[0], "put_new");
  dm__worker *w = NULL;
  int r = dm__worker_put(m, q->el[1], q->len[1], q->el[2], q->len[2], only_new, detail, &w);
  if (r == 0 && w)
    dm__durable_put(m, w);
  *changed = r == 0 && w;
  return r;
}

static void call_put(dm__manager *m, const dm__gen *g, const req_t *q) {
  ei_x_buff d;
  if (ei_x_new(&d) < 0) {
    reply_error(m, g, dm_strerror(DM_ENOMEM));
    return;
  }
  int changed = 0;
  int r = do_put(m, q, &d, &changed);
  if (r == DM_EBADTERM || r == DM_EINVAL)
    m->st.bad_requests++;
  if (r == 0) {
    if (!changed || !dm__durable_ack(m, g)) /* else: once committed */
      reply_const(m, g, OK, DM__ALEN(OK));
  } else if (r == DM_EBADTERM || r == DM_EINVAL) {
    ei_x_buff *x = dm__reply_begin(m->node, g);
    int e = !x ? DM_ENOMEM
            : r == DM_EBADTERM ? enc_error_detail(x, "bad_id", q->el[1], q->len[1])
                               : enc_error_detail(x, "bad_opts", d.buff, (size_t)d.index);
    dm__reply_end(m->node, g, e);
  } else {
    reply_error(m, g, dm_strerror(r));
  }
  ei_x_free(&d);
}

static void cast_put(dm__manager *m, const req_t *q) {
  int changed;
  if (do_put(m, q, NULL, &changed))
    m->st.bad_requests++;
}

static int do_del(dm__manager *m, const req_t *q) {
  dm__worker *w = find(m, q->el[1], q->len[1]);
  if (!w)
    return DM_ENOTFOUND;
  m->st.dels++;
  dm__durable_del(m, w);
  dm__worker_stop(w, DM__A_SHUTDOWN, DM__ALEN(DM__A_SHUTDOWN));
  return 0;
}

static void call_del(dm__manager *m, const dm__gen *g, const req_t *q) {
  if (do_del(m, q) == 0) {
    if (!dm__durable_ack(m, g)) /* else: once committed */
      reply_const(m, g, OK, DM__ALEN(OK));
  } else {
    reply_error(m, g, "not_found");
  }
}

static void cast_del(dm__manager *m, const req_t *q) { (void)do_del(m, q); }

static void call_get(dm__manager *m, const dm__gen *g, const req_t *q) {
  dm__worker *w = find(m, q->el[1], q->len[1]);
  if (!w) {
    reply_const(m, g, EMPTY_MAP, DM__ALEN(EMPTY_MAP));
    return;
  }
  ei_x_buff *x = dm__reply_begin(m->node, g);
  dm__reply_end(m->node, g, x ? dm__enc_child(m->node, x, w) : DM_ENOMEM);
}

/* The most children one dump page holds. */
#define DUMP_MAX 10000

/* {dump, Cursor, Limit}: a page of the children with their payloads, for
 * a cluster's handoffs and for listing big managers. Cursor is 0, or the
 * Next of the page before, {Cap, Slot}: the table's size then and where
 * to go on; {error, moved} when the table was resized since (the walk
 * starts again from 0). */
static void call_dump(dm__manager *m, const dm__gen *g, const req_t *q) {
  int i = 0, arity, type, size;
  unsigned long long cap = m->cap, slot = 0, limit = 0;
  const char *c = q->el[1];
  const char *what = NULL;
  if (ei_get_type(c, &i, &type, &size) == 0 && type == ERL_SMALL_TUPLE_EXT) {
    if (ei_decode_tuple_header(c, &i, &arity) < 0 || arity != 2 ||
        ei_decode_ulonglong(c, &i, &cap) < 0 || ei_decode_ulonglong(c, &i, &slot) < 0 ||
        (size_t)i != q->len[1] || slot > cap)
      what = "bad_cursor";
  } else if (ei_decode_ulonglong(c, &i, &slot) < 0 || slot != 0 || (size_t)i != q->len[1]) {
    what = "bad_cursor";
  }
  i = 0;
  if (!what && (ei_decode_ulonglong(q->el[2], &i, &limit) < 0 || (size_t)i != q->len[2] ||
                limit < 1 || limit > DUMP_MAX))
    what = "bad_limit";
  if (what) {
    ei_x_buff *x = dm__reply_begin(m->node, g);
    const char *d = what[4] == 'c' ? q->el[1] : q->el[2];
    size_t dl = what[4] == 'c' ? q->len[1] : q->len[2];
    dm__reply_end(m->node, g, x ? enc_error_detail(x, what, d, dl) : DM_ENOMEM);
    m->st.bad_requests++;
    return;
  }
  if (cap != m->cap) {
    reply_error(m, g, "moved");
    return;
  }
  ei_x_buff *x = dm__reply_begin(m->node, g);
  dm__reply_end(m->node, g, x ? dm__enc_dump(m, x, (size_t)slot, (size_t)limit) : DM_ENOMEM);
}

static void call_subscribe(dm__manager *m, const dm__gen *g, const req_t *q) {
  dm__ev_subscribe(m, g, q->el[1], q->len[1], q->el[2], q->len[2]);
}

static void call_unsubscribe(dm__manager *m, const dm__gen *g, const req_t *q) {
  dm__ev_unsubscribe(m, g, q->el[1], q->len[1]);
}

static void call_synch(dm__manager *m, const dm__gen *g, const req_t *q) {
  dm__worker *w = target(m, q);
  if (!w)
    reply_const(m, g, ERROR, DM__ALEN(ERROR));
  else /* the reply comes when the worker's call callback returns */
    dm__worker_deliver(w, DM__JOB_CALL, q->el[2], q->len[2], g, 1);
}

static void call_asynch(dm__manager *m, const dm__gen *g, const req_t *q) {
  dm__worker *w = target(m, q);
  if (!w) {
    reply_const(m, g, ERROR, DM__ALEN(ERROR));
    return;
  }
  dm__worker_deliver(w, DM__JOB_CAST, q->el[2], q->len[2], NULL, 0);
  reply_const(m, g, OK, DM__ALEN(OK));
}

/* when_down: served while the manager is down; held: waits while it is
 * starting (Tarearbol serialises these after children_specs). */
static const handler handlers[] = {
    {"state", 0, 1, 0, call_state, NULL},
    {"count", 0, 1, 0, call_count, NULL},
    {"stats", 0, 1, 0, call_stats, NULL},
    {"restart", 0, 1, 0, call_restart, cast_restart},
    {"put", 3, 0, 1, call_put, cast_put},
    {"put_new", 3, 0, 1, call_put, cast_put},
    {"del", 2, 0, 1, call_del, cast_del},
    {"get", 2, 0, 1, call_get, NULL},
    {"dump", 3, 1, 1, call_dump, NULL},
    {"synch_call", 3, 0, 0, call_synch, NULL},
    {"asynch_call", 3, 0, 0, call_asynch, NULL},
    {"subscribe", 3, 1, 0, call_subscribe, NULL},
    {"unsubscribe", 2, 1, 0, call_unsubscribe, NULL},
};

/* ---- dispatch ------------------------------------------------------------------ */

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

/* The handler of request r, filling q, or NULL. */
static const handler *lookup(const char *r, size_t len, req_t *q) {
  size_t n = sizeof handlers / sizeof handlers[0];
  for (size_t i = 0; i < n; i++) {
    if (handlers[i].arity == 0 && dm__term_is_atom(r, len, handlers[i].name)) {
      q->arity = 0;
      return &handlers[i];
    }
  }
  if (split(r, len, q) != 0)
    return NULL;
  for (size_t i = 0; i < n; i++)
    if (handlers[i].arity && handlers[i].arity == q->arity &&
        dm__term_is_atom(q->el[0], q->len[0], handlers[i].name))
      return &handlers[i];
  return NULL;
}

static void handle_call(dm__manager *m, const dm__gen *g) {
  req_t q;
  const handler *h = lookup(g->req, g->req_len, &q);
  if (!h) {
    m->node->stats.unknown_requests++;
    m->st.bad_requests++;
    ei_x_buff *x = dm__reply_begin(m->node, g);
    dm__reply_end(m->node, g, x ? dm__enc_unknown_request(x, g->req, g->req_len) : DM_ENOMEM);
    return;
  }
  if (m->state == DM__DOWN && !h->when_down) {
    reply_error(m, g, "down");
    return;
  }
  h->call(m, g, &q);
}

static void handle_cast(dm__manager *m, const dm__gen *g) {
  req_t q;
  const handler *h = lookup(g->req, g->req_len, &q);
  if (!h || !h->cast || (m->state == DM__DOWN && !h->when_down)) {
    m->st.bad_requests++;
    return;
  }
  h->cast(m, &q);
}

/* While starting, a request that changes or reads children waits for
 * the boot; one past the bound is refused ({error, starting}), a cast
 * dropped. Returns 1 when g was held or refused. */
static int hold(dm__manager *m, const dm__gen *g, const char *msg, size_t len) {
  req_t q;
  const handler *h;
  if (m->state != DM__STARTING || !(h = lookup(g->req, g->req_len, &q)) || !h->held)
    return 0;
  int r = dm__boot_hold(m, msg, len);
  if (r == 0)
    return 1;
  if (g->kind == DM__GEN_CALL) {
    reply_error(m, g, r == DM_ETOOBIG ? "starting" : dm_strerror(r));
  } else {
    m->st.casts_dropped++;
  }
  return 1;
}

static void dispatch(dm__manager *m, const char *msg, size_t len, int may_hold) {
  dm__gen g;
  dm__gen_decode(msg, len, &g);
  if (g.kind == DM__GEN_OTHER) {
    m->st.bad_requests++;
    return;
  }
  if (g.kind == DM__GEN_SYSTEM) { /* never held: sys must not wait */
    dm__sys_manager(m, &g);
    return;
  }
  if (may_hold && hold(m, &g, msg, len))
    return;
  if (g.kind == DM__GEN_CAST)
    handle_cast(m, &g);
  else
    handle_call(m, &g);
}

void dm__api_replay(dm__manager *m, const char *msg, size_t len) {
  dispatch(m, msg, len, 1);
}

static void manager_message(dm__proc *p, dm__node *n, const dm__ctrl *ctl) {
  (void)n;
  dispatch((dm__manager *)p, ctl->msg, ctl->msg_len, 1);
}

static void manager_exit(dm__proc *p, dm__node *n, const erlang_pid *from,
                         const char *reason, size_t len) {
  /* A manager outlives its callers, as a process trapping exits. */
  (void)p;
  (void)n;
  (void)from;
  (void)reason;
  (void)len;
}

/* A subscriber's watch fired. */
static void manager_down(dm__proc *p, dm__node *n, const erlang_ref *ref,
                         const char *reason, size_t len) {
  (void)n;
  (void)reason;
  (void)len;
  dm__ev_subscriber_down((dm__manager *)p, ref);
}

const dm__proc_ops dm__manager_ops = {manager_message, manager_exit, manager_down};
