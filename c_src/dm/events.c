/* A manager's event subscribers: BEAM processes that asked, with
 * {subscribe, Pid, Events}, to hear of worker crashes, restarts,
 * escalations, state changes and late performs. Each event is a plain
 * message {tarearbol_cnode, {Name, Node}, Event, Map}. Subscribers are
 * bounded (DM__SUBS_MAX), each is watched (a monitor from the manager),
 * so one that dies is dropped, and each has a budget of messages (a
 * token bucket) so that no burst of events can fill its connection.
 * Lateness is summarised: a subscriber hears of the first perform over
 * its threshold at once, then at most once per interval, of how many
 * there were since, the largest lateness among them and its worker. Loop
 * thread only. */
#include <string.h>

#include "dm/mgr.h"

#define LATE_DEFAULT_MS 100
#define LATE_INTERVAL_DEFAULT_MS 1000
#define LATE_INTERVAL_MIN_MS 10
#define MS_MAX 86400000 /* a day */

typedef struct dm__sub {
  erlang_pid pid;
  erlang_ref mon; /* the manager's watch of it */
  uint8_t kinds;  /* DM__EV_* */
  uint8_t dead;   /* gone while the list was walked */
  uint32_t late_interval_ms;
  uint64_t late_us;      /* the threshold */
  uint64_t late_next_ms; /* loop ms before which no late event goes */
  uint64_t late_count;   /* late performs not told yet */
  uint64_t late_max_us;  /* the largest lateness among them */
  dm__blob *late_id;     /* ... and its worker's id */
  uint64_t tokens_ms;    /* loop ms of the last refill */
  uint32_t tokens;
  uint64_t dropped; /* events past the budget, not told yet */
} sub;

static const struct {
  const char *name;
  uint8_t kind;
} kinds[] = {{"crash", DM__EV_CRASH},
             {"restart", DM__EV_RESTART},
             {"escalation", DM__EV_ESCALATION},
             {"state", DM__EV_STATE},
             {"late", DM__EV_LATE},
             {"all", DM__EV_ALL}};

#define ENC(call)                                                              \
  do {                                                                         \
    if ((call) < 0)                                                            \
      return DM_ENOMEM;                                                        \
  } while (0)

static uint64_t now_ms(const dm__manager *m) {
  return uv_now(m->node->loop);
}

/* ---- parsing
 * ------------------------------------------------------------------ */

typedef struct {
  uint8_t kinds;
  uint64_t late_us;
  uint32_t interval_ms;
} spec;

static int ms_in(const char *b, int *i, long long min, long long max,
                 long long *out) {
  return ei_decode_longlong(b, i, out) == 0 && *out >= min && *out <= max ? 0
                                                                          : -1;
}

/* One element of Events at *i: an event's name (or all), {late, Ms} or
 * {late, Ms, IntervalMs}. */
static int parse_one(const char *b, size_t len, int *i, spec *sp) {
  int arity;
  size_t s = (size_t)*i;
  for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
    if (dm__term_is_atom(b + s, len - s, kinds[k].name)) {
      sp->kinds |= kinds[k].kind;
      return dm__term_skip(b, len, &s) ? -1 : (*i = (int)s, 0);
    }
  }
  long long ms, interval = LATE_INTERVAL_DEFAULT_MS;
  if (ei_decode_tuple_header(b, i, &arity) < 0 || (arity != 2 && arity != 3) ||
      !dm__term_is_atom(b + *i, len - (size_t)*i, "late"))
    return -1;
  s = (size_t)*i;
  if (dm__term_skip(b, len, &s))
    return -1;
  *i = (int)s;
  if (ms_in(b, i, 1, MS_MAX, &ms) ||
      (arity == 3 && ms_in(b, i, LATE_INTERVAL_MIN_MS, MS_MAX, &interval)))
    return -1;
  sp->kinds |= DM__EV_LATE;
  sp->late_us = (uint64_t)ms * 1000;
  sp->interval_ms = (uint32_t)interval;
  return 0;
}

/* Events: all, or a proper, non-empty list of elements. On -1, [*bad,
 * *bad + *bad_len) is what is wrong: an element, or Events itself. */
static int parse_events(const char *b, size_t len, spec *sp, size_t *bad,
                        size_t *bad_len) {
  int i = 0, n, tail;
  sp->kinds = 0;
  sp->late_us = (uint64_t)LATE_DEFAULT_MS * 1000;
  sp->interval_ms = LATE_INTERVAL_DEFAULT_MS;
  *bad = 0;
  *bad_len = len;
  if (dm__term_is_atom(b, len, "all")) {
    sp->kinds = DM__EV_ALL;
    return 0;
  }
  if (ei_decode_list_header(b, &i, &n) < 0 || n <= 0)
    return -1;
  for (int e = 0; e < n; e++) {
    size_t start = (size_t)i, end = start;
    if (dm__term_skip(b, len, &end))
      return -1;
    if (parse_one(b, len, &i, sp) || (size_t)i != end) {
      *bad = start;
      *bad_len = end - start;
      return -1;
    }
  }
  return ei_decode_list_header(b, &i, &tail) == 0 && tail == 0 &&
                 (size_t)i == len
             ? 0
             : -1;
}

/* ---- the list
 * ------------------------------------------------------------------ */

static int events_new(dm__manager *m) {
  dm__events *ev = dm__calloc(1, sizeof *ev);
  if (!ev)
    return DM_ENOMEM;
  if (ei_x_new(&ev->x) < 0) {
    dm__free(ev);
    return DM_ENOMEM;
  }
  if (ei_x_new(&ev->y) < 0) {
    ei_x_free(&ev->x);
    dm__free(ev);
    return DM_ENOMEM;
  }
  ev->late_min_us = UINT64_MAX;
  m->events = ev;
  return 0;
}

static void recount(dm__events *ev) {
  ev->any = 0;
  ev->late_min_us = UINT64_MAX;
  for (size_t i = 0; i < ev->count; i++) {
    sub *s = &ev->subs[i];
    if (s->dead)
      continue;
    ev->any |= s->kinds;
    if ((s->kinds & DM__EV_LATE) && s->late_us < ev->late_min_us)
      ev->late_min_us = s->late_us;
  }
}

static void drop(dm__events *ev, size_t i) {
  dm__blob_unref(ev->subs[i].late_id);
  ev->subs[i] = ev->subs[--ev->count];
}

/* Takes out what died while the list was walked. */
static void compact(dm__events *ev) {
  for (size_t i = 0; !ev->walking && i < ev->count;) {
    if (ev->subs[i].dead)
      drop(ev, i);
    else
      i++;
  }
  recount(ev);
}

static long find_pid(const dm__events *ev, const erlang_pid *pid) {
  for (size_t i = 0; ev && i < ev->count; i++)
    if (!ev->subs[i].dead &&
        ei_cmp_pids((erlang_pid *)&ev->subs[i].pid, (erlang_pid *)pid) == 0)
      return (long)i;
  return -1;
}

/* ---- sending
 * ------------------------------------------------------------------- */

/* Opens {tarearbol_cnode, {Name, Node}, Event, #{...pairs}} in x. */
static int head_in(dm__manager *m, ei_x_buff *x, const char *event,
                   long pairs) {
  x->index = 0;
  ENC(ei_x_encode_tuple_header(x, 4));
  ENC(ei_x_encode_atom(x, "tarearbol_cnode"));
  ENC(ei_x_encode_tuple_header(x, 2));
  ENC(ei_x_encode_atom(x, m->name));
  ENC(ei_x_encode_atom(x, m->node->dist.ec.thisnodename));
  ENC(ei_x_encode_atom(x, event));
  ENC(ei_x_encode_map_header(x, pairs));
  return 0;
}

static int head(dm__manager *m, const char *event, long pairs) {
  return head_in(m, &m->events->x, event, pairs);
}

static int key_u64(ei_x_buff *x, const char *key, uint64_t v) {
  ENC(ei_x_encode_atom(x, key));
  ENC(ei_x_encode_ulonglong(x, v));
  return 0;
}

/* What ev->x holds goes to s, within s's budget. */
static void deliver(dm__manager *m, sub *s) {
  dm__events *ev = m->events;
  uint64_t now = now_ms(m);
  if (now > s->tokens_ms) {
    uint64_t t = s->tokens + (now - s->tokens_ms) * DM__EV_RATE / 1000;
    s->tokens = t > DM__EV_BURST ? DM__EV_BURST : (uint32_t)t;
    s->tokens_ms = now;
  }
  if (!s->tokens) {
    s->dropped++;
    m->st.events_dropped++;
    return;
  }
  s->tokens--;
  if (dm__node_send_msg(m->node, &s->pid, ev->x.buff, (size_t)ev->x.index) == 0)
    m->st.events_sent++;
  if (s->dropped && s->tokens && !s->dead) {
    /* What was dropped is told once the budget allows again, out of the
     * same budget: a sustained flood is told at its end. */
    uint64_t n = s->dropped;
    s->dropped = 0;
    s->tokens--;
    if (head_in(m, &ev->y, "dropped", 1) == 0 &&
        key_u64(&ev->y, "count", n) == 0 &&
        dm__node_send_msg(m->node, &s->pid, ev->y.buff, (size_t)ev->y.index) ==
            0)
      m->st.events_sent++;
  }
}

/* What ev->x holds goes to every subscriber of kind. A send may lose a
 * connection, and with it subscribers: they are only marked meanwhile. */
static void broadcast(dm__manager *m, int kind, int rc) {
  dm__events *ev = m->events;
  if (rc) {
    DM_ERROR("manager %s: out of memory encoding an event", m->name);
    return;
  }
  ev->walking++;
  for (size_t i = 0; i < ev->count; i++)
    if (!ev->subs[i].dead && (ev->subs[i].kinds & kind))
      deliver(m, &ev->subs[i]);
  ev->walking--;
  compact(ev);
}

static int may_send(const dm__manager *m, int kind) {
  return dm__ev_wanted(m, kind) && !m->node->stopping;
}

static int enc_pid_of(dm__manager *m, const dm__proc *p) {
  erlang_pid pid;
  dm__proc_pid(m->node, p, &pid);
  ENC(ei_x_encode_atom(&m->events->x, "pid"));
  ENC(ei_x_encode_pid(&m->events->x, &pid));
  return 0;
}

static int enc_id(ei_x_buff *x, const char *id, size_t len) {
  ENC(ei_x_encode_atom(x, "id"));
  ENC(ei_x_append_buf(x, id, (int)len));
  return 0;
}

void dm__ev_crash(dm__manager *m, const dm__worker *w, const char *reason,
                  size_t len) {
  if (!may_send(m, DM__EV_CRASH))
    return;
  ei_x_buff *x = &m->events->x;
  int r = head(m, "crash", 3) ||
          enc_id(x, dm__worker_id(w), dm__worker_id_len(w)) ||
          enc_pid_of(m, &w->proc) || ei_x_encode_atom(x, "reason") < 0 ||
          ei_x_append_buf(x, reason, (int)len) < 0;
  broadcast(m, DM__EV_CRASH, r);
}

void dm__ev_restart(dm__manager *m, const dm__worker *w) {
  if (!may_send(m, DM__EV_RESTART))
    return;
  int r = head(m, "restart", 2) ||
          enc_id(&m->events->x, dm__worker_id(w), dm__worker_id_len(w)) ||
          enc_pid_of(m, &w->proc);
  broadcast(m, DM__EV_RESTART, r);
}

void dm__ev_escalation(dm__manager *m, size_t workers, int down) {
  if (!may_send(m, DM__EV_ESCALATION))
    return;
  ei_x_buff *x = &m->events->x;
  int r = head(m, "escalation", 4) || key_u64(x, "workers", workers) ||
          ei_x_encode_atom(x, "action") < 0 ||
          ei_x_encode_atom(x, down ? "down" : "restart_all") < 0 ||
          key_u64(x, "max_restarts", m->max_restarts) ||
          key_u64(x, "max_seconds", m->max_seconds);
  broadcast(m, DM__EV_ESCALATION, r);
}

void dm__ev_state(dm__manager *m, int state) {
  if (!may_send(m, DM__EV_STATE))
    return;
  ei_x_buff *x = &m->events->x;
  int r = head(m, "state", 1) || ei_x_encode_atom(x, "state") < 0 ||
          ei_x_encode_atom(x, dm__state_name(state)) < 0;
  broadcast(m, DM__EV_STATE, r);
}

/* ---- lateness
 * ------------------------------------------------------------------ */

static void on_late_timer(uv_timer_t *t);

/* The summary of s waits until due (loop ms). */
static void arm_late(dm__manager *m, uint64_t due) {
  dm__events *ev = m->events;
  if (m->node->stopping)
    return;
  if (!ev->timer_open) {
    if (uv_timer_init(m->node->loop, &ev->timer) < 0)
      return;
    ev->timer.data = m;
    ev->timer_open = 1;
  }
  if (ev->timer_due && ev->timer_due <= due)
    return;
  uint64_t now = now_ms(m);
  ev->timer_due = due;
  uv_timer_start(&ev->timer, on_late_timer, due > now ? due - now : 0, 0);
}

/* s hears of count late performs, the largest late_us, of worker id. */
static void send_late(dm__manager *m, sub *s, const char *id, size_t idlen,
                      uint64_t count, uint64_t late_us) {
  ei_x_buff *x = &m->events->x;
  int r = head(m, "late", 5) || enc_id(x, id, idlen) ||
          key_u64(x, "late_us", late_us) || key_u64(x, "count", count) ||
          key_u64(x, "threshold_ms", s->late_us / 1000) ||
          key_u64(x, "interval_ms", s->late_interval_ms);
  if (r)
    DM_ERROR("manager %s: out of memory encoding an event", m->name);
  else
    deliver(m, s);
  s->late_next_ms = now_ms(m) + s->late_interval_ms;
}

static void flush_late(dm__manager *m, sub *s) {
  send_late(m, s, dm__blob_data(s->late_id), dm__blob_len(s->late_id),
            s->late_count, s->late_max_us);
  s->late_count = s->late_max_us = 0;
  dm__blob_unref(s->late_id);
  s->late_id = NULL;
}

static void on_late_timer(uv_timer_t *t) {
  dm__manager *m = t->data;
  dm__events *ev = m->events;
  uint64_t now = now_ms(m), next = 0;
  ev->timer_due = 0;
  ev->walking++;
  for (size_t i = 0; i < ev->count; i++) {
    sub *s = &ev->subs[i];
    if (s->dead || !s->late_count)
      continue;
    if (now >= s->late_next_ms)
      flush_late(m, s);
    else if (!next || s->late_next_ms < next)
      next = s->late_next_ms;
  }
  ev->walking--;
  compact(ev);
  if (next)
    arm_late(m, next);
}

void dm__ev_late_slow(dm__manager *m, const dm__worker *w, uint64_t late_us) {
  dm__events *ev = m->events;
  if (m->node->stopping)
    return;
  uint64_t now = now_ms(m);
  ev->walking++;
  for (size_t i = 0; i < ev->count; i++) {
    sub *s = &ev->subs[i];
    if (s->dead || !(s->kinds & DM__EV_LATE) || late_us < s->late_us)
      continue;
    if (!s->late_count && now >= s->late_next_ms) {
      /* The first in a while goes at once. */
      send_late(m, s, dm__worker_id(w), dm__worker_id_len(w), 1, late_us);
      continue;
    }
    s->late_count++;
    if (!s->late_id || late_us > s->late_max_us) {
      dm__blob *id = dm__blob_new(dm__worker_id(w), dm__worker_id_len(w));
      if (id) {
        dm__blob_unref(s->late_id);
        s->late_id = id;
        s->late_max_us = late_us;
      }
    }
    if (!s->late_id) /* out of memory: counted, told with the next one */
      continue;
    arm_late(m, s->late_next_ms);
  }
  ev->walking--;
  compact(ev);
}

/* ---- requests
 * ------------------------------------------------------------------ */

static void reply_error_detail(dm__manager *m, const dm__gen *g,
                               const char *what, const char *d, size_t len) {
  static const char head[] = "\x68\x02" DM__A_ERROR "\x68\x02";
  ei_x_buff *x = dm__reply_begin(m->node, g);
  int r = !x || ei_x_append_buf(x, head, (int)DM__ALEN(head)) < 0 ||
          ei_x_encode_atom(x, what) < 0 || ei_x_append_buf(x, d, (int)len) < 0;
  dm__reply_end(m->node, g, r ? DM_ENOMEM : 0);
}

static void reply_error(dm__manager *m, const dm__gen *g, const char *what) {
  static const char head[] = "\x68\x02" DM__A_ERROR;
  ei_x_buff *x = dm__reply_begin(m->node, g);
  int r = !x || ei_x_append_buf(x, head, (int)DM__ALEN(head)) < 0 ||
          ei_x_encode_atom(x, what) < 0;
  dm__reply_end(m->node, g, r ? DM_ENOMEM : 0);
}

static void reply_ok(dm__manager *m, const dm__gen *g) {
  dm__reply(m->node, g, DM__A_OK, DM__ALEN(DM__A_OK));
}

static int decode_pid(const char *b, size_t len, erlang_pid *pid) {
  int i = 0;
  return ei_decode_pid(b, &i, pid) == 0 && (size_t)i == len ? 0 : -1;
}

static void apply_spec(sub *s, const spec *sp) {
  s->kinds = sp->kinds;
  s->late_us = sp->late_us;
  s->late_interval_ms = sp->interval_ms;
}

void dm__ev_subscribe(dm__manager *m, const dm__gen *g, const char *pidt,
                      size_t pid_len, const char *events, size_t events_len) {
  erlang_pid pid;
  spec sp;
  size_t bad, bad_len;
  if (decode_pid(pidt, pid_len, &pid)) {
    m->st.bad_requests++;
    reply_error_detail(m, g, "bad_pid", pidt, pid_len);
    return;
  }
  if (parse_events(events, events_len, &sp, &bad, &bad_len)) {
    m->st.bad_requests++;
    reply_error_detail(m, g, "bad_events", events + bad, bad_len);
    return;
  }
  if (!m->events && events_new(m)) {
    reply_error(m, g, "enomem");
    return;
  }
  dm__events *ev = m->events;
  long k = find_pid(ev, &pid);
  if (k >= 0) { /* again: the new events replace the old */
    apply_spec(&ev->subs[k], &sp);
    recount(ev);
    reply_ok(m, g);
    return;
  }
  if (ev->count >= DM__SUBS_MAX) {
    reply_error(m, g, "too_many_subscribers");
    return;
  }
  if (dm__array_grow((void **)&ev->subs, &ev->cap, ev->count + 1,
                     sizeof *ev->subs, 4)) {
    reply_error(m, g, "enomem");
    return;
  }
  sub *s = &ev->subs[ev->count];
  memset(s, 0, sizeof *s);
  s->pid = pid;
  /* The watch goes out before the reply, so a subscriber that is already
   * gone is dropped as soon as its node says so. */
  int r = dm__proc_watch(m->node, &m->proc, &pid, &s->mon);
  if (r == DM_EINVAL) {
    m->st.bad_requests++;
    reply_error_detail(m, g, "bad_pid", pidt, pid_len);
    return;
  }
  if (r) {
    reply_error(m, g, r == DM_ECLOSED ? "noconnection" : "enomem");
    return;
  }
  apply_spec(s, &sp);
  s->tokens = DM__EV_BURST;
  s->tokens_ms = now_ms(m);
  ev->count++;
  recount(ev);
  reply_ok(m, g);
}

void dm__ev_unsubscribe(dm__manager *m, const dm__gen *g, const char *pidt,
                        size_t pid_len) {
  erlang_pid pid;
  if (decode_pid(pidt, pid_len, &pid)) {
    m->st.bad_requests++;
    reply_error_detail(m, g, "bad_pid", pidt, pid_len);
    return;
  }
  long k = find_pid(m->events, &pid);
  if (k >= 0) {
    dm__proc_unwatch(m->node, &m->proc, &pid, &m->events->subs[k].mon);
    drop(m->events, (size_t)k);
    recount(m->events);
  }
  reply_ok(m, g);
}

void dm__ev_subscriber_down(dm__manager *m, const erlang_ref *ref) {
  dm__events *ev = m->events;
  for (size_t i = 0; ev && i < ev->count; i++) {
    if (ei_cmp_refs((erlang_ref *)&ev->subs[i].mon, (erlang_ref *)ref) == 0) {
      /* Marked, and taken out unless the list is being walked (a send
       * that lost a connection brought us here). */
      ev->subs[i].dead = 1;
      compact(ev);
      return;
    }
  }
}

void dm__ev_stop(dm__manager *m) {
  dm__events *ev = m->events;
  if (ev && ev->timer_open) {
    uv_timer_stop(&ev->timer);
    uv_close((uv_handle_t *)&ev->timer, NULL);
    ev->timer_open = 0;
  }
}

void dm__ev_free(dm__manager *m) {
  dm__events *ev = m->events;
  if (!ev)
    return;
  for (size_t i = 0; i < ev->count; i++)
    dm__blob_unref(ev->subs[i].late_id);
  dm__free(ev->subs);
  ei_x_free(&ev->x);
  ei_x_free(&ev->y);
  dm__free(ev);
  m->events = NULL;
}

size_t dm__ev_count(const dm__manager *m) {
  size_t k = 0;
  for (size_t i = 0; m->events && i < m->events->count; i++)
    k += !m->events->subs[i].dead;
  return k;
}
