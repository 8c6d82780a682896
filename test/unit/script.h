/* A manager of a scripted behaviour, on a bare node, with the test as
 * its pool. perform answers what the test set in script.perform; call
 * and cast answer with their request, or crash with Reason when it is
 * {crash, Reason}; children_specs writes script.specs. Every callback is
 * logged with the id, message and payload it saw, in the order it ran.
 * Include after bare_node.h and fake_pool.h. */
#ifndef TEST_SCRIPT_H
#define TEST_SCRIPT_H

#include <string.h>

#include "dm/mgr.h"

typedef struct {
  int kind; /* DM__JOB_* */
  term id, msg, payload;
} logged;

static struct {
  term perform; /* what perform writes */
  int perform_rc;
  term specs; /* children_specs' map; empty: no children */
  logged log[64];
  size_t nlog;
} script;

static void copy_term(term *t, const char *data, size_t len) {
  assert_true(len <= sizeof t->b);
  memcpy(t->b, data, len);
  t->len = len;
}

static void note(int kind, const dm_term *id, const char *msg, size_t msg_len,
                 const dm_term *payload) {
  assert_true(script.nlog < sizeof script.log / sizeof *script.log);
  logged *l = &script.log[script.nlog++];
  memset(l, 0, sizeof *l);
  l->kind = kind;
  if (id)
    copy_term(&l->id, id->data, id->len);
  if (msg)
    copy_term(&l->msg, msg, msg_len);
  if (payload)
    copy_term(&l->payload, payload->data, payload->len);
}

static int answer(const dm_term *msg, ei_x_buff *out) {
  char a[MAXATOMLEN_UTF8];
  int i = 0, arity;
  if (ei_decode_tuple_header(msg->data, &i, &arity) == 0 && arity == 2 &&
      ei_decode_atom(msg->data, &i, a) == 0 && strcmp(a, "crash") == 0) {
    assert_int_equal(ei_x_append_buf(out, msg->data + i, (int)msg->len - i), 0);
    return DM_CB_CRASH;
  }
  assert_int_equal(ei_x_append_buf(out, msg->data, (int)msg->len), 0);
  return DM_CB_OK;
}

static int s_perform(dm_ctx *ctx, const dm_term *id, const dm_term *payload,
                     ei_x_buff *out) {
  (void)ctx;
  note(DM__JOB_PERFORM, id, NULL, 0, payload);
  assert_int_equal(ei_x_append_buf(out, script.perform.b, (int)script.perform.len), 0);
  return script.perform_rc;
}

static int s_call(dm_ctx *ctx, const dm_term *msg, const erlang_pid *from,
                  const dm_term *id, const dm_term *payload, ei_x_buff *out) {
  (void)ctx;
  (void)from;
  note(DM__JOB_CALL, id, msg->data, msg->len, payload);
  return answer(msg, out);
}

static int s_cast(dm_ctx *ctx, const dm_term *msg, const dm_term *id,
                  const dm_term *payload, ei_x_buff *out) {
  (void)ctx;
  note(DM__JOB_CAST, id, msg->data, msg->len, payload);
  return answer(msg, out);
}

static int s_terminate(dm_ctx *ctx, const dm_term *reason, const dm_term *id,
                       const dm_term *payload) {
  (void)ctx;
  note(DM__JOB_TERMINATE, id, reason->data, reason->len, payload);
  return DM_CB_OK;
}

static int s_state_change(dm_ctx *ctx, const char *state) {
  (void)ctx;
  term t = T(state);
  note(DM__JOB_STATE_CHANGE, NULL, t.b, t.len, NULL);
  return DM_CB_OK;
}

static int s_specs(dm_ctx *ctx, ei_x_buff *out) {
  (void)ctx;
  note(DM__JOB_SPECS, NULL, NULL, 0, NULL);
  if (script.specs.len)
    assert_int_equal(ei_x_append_buf(out, script.specs.b, (int)script.specs.len), 0);
  return DM_CB_OK;
}

static const dm_behaviour scripted = {
    .name = "script",
    .children_specs = s_specs,
    .perform = s_perform,
    .call = s_call,
    .cast = s_cast,
    .terminate = s_terminate,
    .handle_state_change = s_state_change,
};
static const dm_behaviour *const builtins[] = {&scripted, NULL};

typedef struct {
  bare_node b;
  dm__sched s;
  dm__manager *m;
} fixture;

/* children_specs' map: each id (an atom) with empty opts. */
static inline term specs_of(const char *const *ids, size_t n) {
  term t;
  int i = 0;
  assert_int_equal(ei_encode_map_header(t.b, &i, (int)n), 0);
  for (size_t k = 0; k < n; k++) {
    assert_true(strlen(ids[k]) + 8 < sizeof t.b - (size_t)i);
    assert_int_equal(ei_encode_atom(t.b, &i, ids[k]), 0);
    assert_int_equal(ei_encode_empty_list(t.b, &i), 0);
  }
  t.len = (size_t)i;
  return t;
}

/* A manager made from its --manager spec ("m=script,max_mailbox=2"),
 * booted: its state changes and children_specs have run. The log starts
 * empty after that; perform answers `tick`. */
static inline void fixture_init(fixture *f, const char *spec) {
  memset(&script, 0, sizeof script);
  script.perform = T("tick");
  bare_node_init(&f->b);
  assert_int_equal(dm__sched_init(&f->s, &f->b.n, 1, builtins), 0);
  assert_int_equal(dm__sched_add_manager(&f->s, spec), 0);
  f->m = f->s.managers[f->s.nmanagers - 1];
  pool_run_all(f->m->pool);
  assert_int_equal(f->m->state, DM__STARTED);
  script.nlog = 0;
}

/* Workers still in the table go with their manager; valgrind sees that
 * their terms went too. */
static inline void fixture_free(fixture *f) { bare_node_free(&f->b); }

/* ---- workers ------------------------------------------------------------ */

static inline term id_of(const char *atom) {
  term t;
  int i = 0;
  assert_int_equal(ei_encode_atom(t.b, &i, atom), 0);
  t.len = (size_t)i;
  return t;
}

/* put, as the wire API does it: id an atom, opts as Erlang text. */
static inline int put(dm__manager *m, const char *atom, const char *opts) {
  term id = id_of(atom), o = T(opts);
  return dm__worker_put(m, id.b, id.len, o.b, o.len, 0, NULL, NULL);
}

/* The worker under the atom id, or NULL. */
static inline dm__worker *find(dm__manager *m, const char *atom) {
  term id = id_of(atom);
  dm__buf c = DM__BUF_INIT;
  assert_int_equal(dm__canon(id.b, id.len, &c), 0);
  dm__worker *w = dm__children_get(m, c.data, c.len, dm__id_hash(m, c.data, c.len));
  dm__buf_free(&c);
  return w;
}

/* Its period is up: as the wheel does, the timer is unlinked, then fired. */
static inline void perform_now(dm__worker *w) {
  dm__worker_disarm(w);
  dm__worker_on_timer(&w->timer, dm__worker_mgr(w)->sched);
}

/* A gen call from caller k with the request given as Erlang text. */
static inline int call(dm__worker *w, int k, const char *req) {
  term r = T(req), tag;
  dm__gen g = caller(k, r.b, r.len, &tag);
  return dm__worker_deliver(w, DM__JOB_CALL, r.b, r.len, &g, 0);
}

static inline int cast(dm__worker *w, const char *req) {
  term r = T(req);
  return dm__worker_deliver(w, DM__JOB_CAST, r.b, r.len, NULL, 0);
}

#define assert_cell(cell, text)                                                \
  assert_term_equal(dm__cell_data(&(cell)), dm__cell_size(&(cell)), T(text))

/* The i-th callback run since the fixture booted was of kind, for the
 * worker id, with msg (the request or the reason), when these are given. */
static inline void assert_logged(size_t i, int kind, const char *id, const char *msg) {
  assert_true(i < script.nlog);
  assert_int_equal(script.log[i].kind, kind);
  if (id)
    assert_term_equal(script.log[i].id.b, script.log[i].id.len, id_of(id));
  if (msg)
    assert_term_equal(script.log[i].msg.b, script.log[i].msg.len, T(msg));
}

#endif
