/* A worker's life, driven with the test as the pool and no sockets: it
 * starts in the children table with its perform armed; a perform's
 * response applies in Tarearbol's forms; what arrives while a callback
 * runs waits in the mailbox and runs after it, in order, up to
 * max_mailbox; a stop while busy waits for the callback, then terminate,
 * then the worker is freed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "bare_node.h"
#include "fake_pool.h"
#include "script.h"

static void a_started_worker_is_in_the_children_table_and_armed(void **state) {
  (void)state;
  fixture f;
  fixture_init(&f, "w=script");
  assert_int_equal(put(f.m, "a", "[{payload, 1}, {timeout, 250}]"), 0);
  dm__worker *w = find(f.m, "a");
  assert_non_null(w);
  assert_int_equal(f.m->count, 1);
  assert_ptr_equal(dm__proctab_get(&f.b.n.pids, w->proc.key), w);
  assert_true(dm__timer_armed(&w->timer));
  assert_true(w->timer.due != 0);
  assert_int_equal(w->timeout_ms, 250);
  assert_cell(w->payload, "1");
  assert_cell(*dm__worker_value(w), "nil");
  /* No init: nothing runs before the first period is up. */
  assert_int_equal(dm__pool_depth(f.m->pool), 0);
  fixture_free(&f);
}

static void a_perform_runs_on_the_payload_and_is_armed_again(void **state) {
  (void)state;
  fixture f;
  fixture_init(&f, "w=script");
  assert_int_equal(put(f.m, "a", "[{payload, 1}]"), 0);
  dm__worker *w = find(f.m, "a");
  perform_now(w);
  assert_true(w->proc.flags & DM__W_BUSY);
  assert_int_equal(dm__pool_depth(f.m->pool), 1);
  assert_int_equal(pool_run_all(f.m->pool), 1);
  assert_int_equal(script.nlog, 1);
  assert_logged(0, DM__JOB_PERFORM, "a", NULL);
  assert_term_equal(script.log[0].payload.b, script.log[0].payload.len, T("1"));
  assert_false(w->proc.flags & DM__W_BUSY);
  assert_true(dm__timer_armed(&w->timer));
  assert_int_equal(f.m->st.performs, 1);
  fixture_free(&f);
}

static void halt_stops_the_worker_and_removes_it(void **state) {
  (void)state;
  fixture f;
  fixture_init(&f, "w=script");
  assert_int_equal(put(f.m, "a", "[{payload, 1}]"), 0);
  dm__worker *w = find(f.m, "a");
  uint32_t key = w->proc.key;
  script.perform = T("halt");
  perform_now(w);
  pool_run_all(f.m->pool);
  assert_null(find(f.m, "a"));
  assert_int_equal(f.m->count, 0);
  assert_null(dm__proctab_get(&f.b.n.pids, key));
  assert_int_equal(f.m->st.halts, 1);
  assert_int_equal(f.m->st.crashes, 0);
  /* terminate ran with reason normal, and the worker is gone. */
  assert_int_equal(script.nlog, 2);
  assert_logged(1, DM__JOB_TERMINATE, "a", "normal");
  assert_int_equal(f.s.workers.live, 0);
  fixture_free(&f);
}

static void ok_sets_the_payload_and_keeps_the_value(void **state) {
  (void)state;
  fixture f;
  fixture_init(&f, "w=script");
  assert_int_equal(put(f.m, "a", "[{payload, 1}]"), 0);
  dm__worker *w = find(f.m, "a");
  perform_now(w); /* tick: the value */
  pool_run_all(f.m->pool);
  script.perform = T("{ok, 7}");
  perform_now(w);
  pool_run_all(f.m->pool);
  assert_cell(w->payload, "7");
  assert_cell(*dm__worker_value(w), "tick");
  fixture_free(&f);
}

static void replace_sets_payload_and_value(void **state) {
  (void)state;
  fixture f;
  fixture_init(&f, "w=script");
  assert_int_equal(put(f.m, "a", "[{payload, 1}]"), 0);
  dm__worker *w = find(f.m, "a");
  script.perform = T("{replace, {p, 8}}");
  perform_now(w);
  pool_run_all(f.m->pool);
  assert_cell(w->payload, "{p, 8}");
  assert_cell(*dm__worker_value(w), "{p, 8}");
  assert_ptr_equal(find(f.m, "a"), w);
  fixture_free(&f);
}

/* {replace, NewId, P}: the worker under a goes (terminate, normal) and
 * one under b takes its opts, with P as payload and value. */
static void replace_with_a_new_id_moves_the_worker_with_its_opts(void **state) {
  (void)state;
  fixture f;
  fixture_init(&f, "w=script");
  assert_int_equal(put(f.m, "a", "[{payload, 1}, {timeout, 300}]"), 0);
  dm__worker *w = find(f.m, "a");
  term opts = T("[{payload, 1}, {timeout, 300}]");
  script.perform = T("{replace, b, 9}");
  perform_now(w);
  pool_run_all(f.m->pool);
  assert_null(find(f.m, "a"));
  dm__worker *moved = find(f.m, "b");
  assert_non_null(moved);
  assert_int_equal(f.m->count, 1);
  assert_cell(moved->payload, "9");
  assert_cell(*dm__worker_value(moved), "9");
  assert_term_equal(moved->opts->term, moved->opts->len, opts);
  assert_int_equal(moved->timeout_ms, 300);
  assert_true(dm__timer_armed(&moved->timer));
  assert_logged(1, DM__JOB_TERMINATE, "a", "normal");
  /* The same id again is no move: payload and value only. */
  script.perform = T("{replace, b, 10}");
  perform_now(moved);
  pool_run_all(f.m->pool);
  assert_ptr_equal(find(f.m, "b"), moved);
  assert_cell(moved->payload, "10");
  fixture_free(&f);
}

static void any_other_response_sets_the_value_and_keeps_the_payload(void **state) {
  (void)state;
  fixture f;
  fixture_init(&f, "w=script");
  assert_int_equal(put(f.m, "a", "[{payload, 1}]"), 0);
  dm__worker *w = find(f.m, "a");
  script.perform = T("{ok, 2, extra}");
  perform_now(w);
  pool_run_all(f.m->pool);
  assert_cell(w->payload, "1");
  assert_cell(*dm__worker_value(w), "{ok, 2, extra}");
  fixture_free(&f);
}

/* A call's response applies like a perform's, and its caller gets it
 * unwrapped: R of {ok, R}, P of {replace, P}. */
static void a_caller_gets_the_unwrapped_response_and_it_applies(void **state) {
  (void)state;
  fixture f;
  fixture_init(&f, "w=script");
  assert_int_equal(put(f.m, "a", "[{payload, 1}]"), 0);
  dm__worker *w = find(f.m, "a");
  assert_int_equal(call(w, 1, "{ok, 5}"), 0);
  pool_run_all(f.m->pool);
  assert_int_equal(f.b.n.stats.undeliverable, 1);
  assert_sent(&f.b.n, SENT_REPLY, 1, "5");
  assert_cell(w->payload, "5");
  assert_int_equal(call(w, 2, "{replace, 6}"), 0);
  pool_run_all(f.m->pool);
  assert_sent(&f.b.n, SENT_REPLY, 2, "6");
  assert_cell(*dm__worker_value(w), "6");
  assert_int_equal(f.m->st.calls, 2);
  fixture_free(&f);
}

static void a_call_while_busy_waits_in_the_mailbox_and_runs_after_in_order(void **state) {
  (void)state;
  fixture f;
  fixture_init(&f, "w=script,max_mailbox=4");
  assert_int_equal(put(f.m, "a", "[{payload, 1}]"), 0);
  dm__worker *w = find(f.m, "a");
  perform_now(w);
  assert_int_equal(call(w, 1, "first"), 0);
  assert_int_equal(cast(w, "second"), 0);
  assert_int_equal(call(w, 3, "third"), 0);
  /* Only the perform runs; the rest waits. */
  assert_int_equal(dm__mailbox_count(dm__worker_mbox(w)), 3);
  assert_int_equal(dm__pool_depth(f.m->pool), 1);
  assert_int_equal(pool_run_one(f.m->pool), 1); /* the perform; first starts */
  assert_int_equal(dm__mailbox_count(dm__worker_mbox(w)), 2);
  assert_int_equal(f.b.n.stats.undeliverable, 0);
  assert_int_equal(pool_run_one(f.m->pool), 1);
  assert_int_equal(f.b.n.stats.undeliverable, 1);
  assert_sent(&f.b.n, SENT_REPLY, 1, "first");
  assert_int_equal(pool_run_all(f.m->pool), 2);
  assert_int_equal(f.b.n.stats.undeliverable, 2);
  assert_sent(&f.b.n, SENT_REPLY, 3, "third");
  assert_null(dm__worker_mbox(w));
  assert_int_equal(script.nlog, 4);
  assert_logged(0, DM__JOB_PERFORM, "a", NULL);
  assert_logged(1, DM__JOB_CALL, "a", "first");
  assert_logged(2, DM__JOB_CAST, "a", "second");
  assert_logged(3, DM__JOB_CALL, "a", "third");
  fixture_free(&f);
}

static void past_max_mailbox_a_call_is_answered_overloaded_and_counted(void **state) {
  (void)state;
  fixture f;
  fixture_init(&f, "w=script,max_mailbox=2");
  assert_int_equal(put(f.m, "a", "[{payload, 1}]"), 0);
  dm__worker *w = find(f.m, "a");
  perform_now(w);
  assert_int_equal(call(w, 1, "one"), 0);
  assert_int_equal(call(w, 2, "two"), 0);
  assert_int_equal(call(w, 3, "three"), DM_ETOOBIG);
  assert_int_equal(f.m->st.mailbox_overflows, 1);
  assert_int_equal(f.b.n.stats.undeliverable, 1);
  assert_sent(&f.b.n, SENT_REPLY, 3, "{error, overloaded}");
  /* A cast has nobody to answer: it is dropped and counted. */
  assert_int_equal(cast(w, "four"), DM_ETOOBIG);
  assert_int_equal(f.m->st.mailbox_overflows, 2);
  assert_int_equal(f.m->st.casts_dropped, 1);
  assert_int_equal(dm__mailbox_count(dm__worker_mbox(w)), 2);
  pool_run_all(f.m->pool);
  assert_int_equal(script.nlog, 3); /* the perform, one and two */
  assert_logged(2, DM__JOB_CALL, "a", "two");
  fixture_free(&f);
}

/* Out of the table at once; its callback finishes, then terminate runs
 * with the stop's reason, then the worker is freed. A call still waiting
 * sees its call exit with that reason. */
static void a_stop_while_busy_runs_terminate_after_the_callback(void **state) {
  (void)state;
  fixture f;
  fixture_init(&f, "w=script");
  assert_int_equal(put(f.m, "a", "[{payload, 1}]"), 0);
  dm__worker *w = find(f.m, "a");
  perform_now(w);
  assert_int_equal(call(w, 7, "waiting"), 0);
  dm__worker_stop(w, DM__A_SHUTDOWN, DM__ALEN(DM__A_SHUTDOWN));
  assert_null(find(f.m, "a"));
  assert_int_equal(f.m->count, 0);
  assert_int_equal(f.b.n.stats.undeliverable, 1);
  assert_sent(&f.b.n, SENT_EXIT, 7, "shutdown");
  assert_int_equal(f.s.workers.live, 1);
  assert_int_equal(dm__pool_depth(f.m->pool), 1); /* the perform only */
  assert_int_equal(pool_run_one(f.m->pool), 1);
  assert_int_equal(f.s.workers.live, 1);
  assert_int_equal(dm__pool_depth(f.m->pool), 1); /* terminate now */
  assert_int_equal(pool_run_one(f.m->pool), 1);
  assert_int_equal(script.nlog, 2);
  assert_logged(0, DM__JOB_PERFORM, "a", NULL);
  assert_logged(1, DM__JOB_TERMINATE, "a", "shutdown");
  assert_int_equal(f.s.workers.live, 0);
  assert_int_equal(dm__pool_depth(f.m->pool), 0);
  assert_int_equal(f.s.annex.count, 0); /* the stop reason went with it */
  fixture_free(&f);
}

/* {payload, P} to the worker's pid while a callback runs is neither lost
 * nor applied early: the call before it sees the old payload, the one
 * after it the new. */
static void a_payload_message_while_busy_waits_in_order(void **state) {
  (void)state;
  fixture f;
  fixture_init(&f, "w=script");
  assert_int_equal(put(f.m, "a", "[{payload, 1}]"), 0);
  dm__worker *w = find(f.m, "a");
  term p = T("{payload, 42}");
  char msg[sizeof p.b + 1] = {(char)131};
  memcpy(msg + 1, p.b, p.len);
  dm__ctrl ctl;
  memset(&ctl, 0, sizeof ctl);
  ctl.op = DM__OP_SEND;
  ctl.msg = msg;
  ctl.msg_len = p.len + 1;
  perform_now(w);
  assert_int_equal(call(w, 1, "before"), 0);
  dm__worker_message(w, &ctl);
  assert_int_equal(call(w, 2, "after"), 0);
  assert_int_equal(dm__mailbox_count(dm__worker_mbox(w)), 3);
  assert_cell(w->payload, "1");
  pool_run_all(f.m->pool);
  assert_int_equal(script.nlog, 3);
  assert_logged(1, DM__JOB_CALL, "a", "before");
  assert_term_equal(script.log[1].payload.b, script.log[1].payload.len, T("1"));
  assert_logged(2, DM__JOB_CALL, "a", "after");
  assert_term_equal(script.log[2].payload.b, script.log[2].payload.len, T("42"));
  assert_cell(w->payload, "42");
  fixture_free(&f);
}

/* While a call runs, its job keeps the next perform's due and the timer
 * watches for slowness, its due telling since when the worker is busy;
 * afterwards the perform is armed at the same due, runs for it, and the
 * next is a period after it. */
static void a_call_keeps_the_next_perform_due_and_says_since_when_it_is_busy(void **state) {
  (void)state;
  fixture f;
  fixture_init(&f, "w=script");
  assert_int_equal(put(f.m, "a", "[{payload, 1}, {timeout, 250}, {lull, 2.0}]"), 0);
  dm__worker *w = find(f.m, "a");
  uint64_t due = w->timer.due;
  assert_true(due != 0);
  assert_int_equal(call(w, 1, "hello"), 0);
  assert_true(w->proc.flags & DM__W_BUSY);
  assert_true(dm__timer_armed(&w->timer));
  assert_int_equal(w->timer.due, uv_now(&f.b.loop) * 1000 + 500000);
  assert_int_equal(dm__worker_busy_since(w), uv_now(&f.b.loop));
  pool_run_all(f.m->pool);
  assert_false(w->proc.flags & DM__W_BUSY);
  assert_true(dm__timer_armed(&w->timer));
  assert_int_equal(w->timer.due, due);
  /* The perform then runs for that due, and is late from it. */
  perform_now(w);
  assert_int_equal(pool_run_all(f.m->pool), 1);
  assert_int_equal(f.m->st.performs, 1);
  assert_int_equal(f.m->st.late_count, 1);
  assert_true(f.m->st.late_max_us < 1000000);
  assert_int_equal(w->timer.due, due + 250000);
  fixture_free(&f);
}

/* The value is the payload's own term after {replace, P}: no byte of its
 * own. {ok, P} with another P moves the old term to the annex as the
 * value; with the same P (a get) it stays one; {replace, P} again frees
 * the annex. Mail waits in the annex and leaves it when drained. */
static void the_value_is_the_payload_until_a_response_parts_them(void **state) {
  (void)state;
  fixture f;
  fixture_init(&f, "w=script");
  assert_int_equal(put(f.m, "a", "[{payload, 1}]"), 0);
  dm__worker *w = find(f.m, "a");
  assert_false(w->proc.flags & (DM__W_VALUE_SAME | DM__W_VALUE_OWN));
  assert_cell(*dm__worker_value(w), "nil");
  script.perform = T("{replace, {big, \"more than seven bytes\"}}");
  perform_now(w);
  pool_run_all(f.m->pool);
  assert_true(w->proc.flags & DM__W_VALUE_SAME);
  assert_ptr_equal(dm__worker_value(w), &w->payload);
  assert_int_equal(f.s.annex.count, 0);
  /* A get answers {ok, P}: nothing moves. */
  assert_int_equal(call(w, 1, "{ok, {big, \"more than seven bytes\"}}"), 0);
  pool_run_all(f.m->pool);
  assert_true(w->proc.flags & DM__W_VALUE_SAME);
  assert_int_equal(f.s.annex.count, 0);
  /* A call waits while the worker is busy: in the annex. */
  perform_now(w);
  assert_int_equal(call(w, 2, "{ok, 7}"), 0);
  assert_true(w->proc.flags & DM__W_MAIL);
  assert_int_equal(f.s.annex.count, 1);
  pool_run_all(f.m->pool);
  assert_false(w->proc.flags & DM__W_MAIL);
  /* The perform set both again; then {ok, 7} parted them. */
  assert_cell(w->payload, "7");
  assert_cell(*dm__worker_value(w), "{big, \"more than seven bytes\"}");
  assert_true(w->proc.flags & DM__W_VALUE_OWN);
  assert_false(w->proc.flags & DM__W_VALUE_SAME);
  assert_int_equal(f.s.annex.count, 1);
  /* Out of memory they stay as they were. */
  term eight = T("{eight, eight}");
  dm__alloc_fail_after(0);
  assert_int_equal(dm__worker_set_value(w, eight.b, eight.len), DM_ENOMEM);
  dm__alloc_fail_after(-1);
  assert_cell(*dm__worker_value(w), "{big, \"more than seven bytes\"}");
  script.perform = T("{replace, 9}");
  perform_now(w);
  pool_run_all(f.m->pool);
  assert_true(w->proc.flags & DM__W_VALUE_SAME);
  assert_false(w->proc.flags & DM__W_VALUE_OWN);
  assert_int_equal(f.s.annex.count, 0);
  assert_cell(*dm__worker_value(w), "9");
  /* Moving the payload out needs the annex: without memory for it,
   * payload and value stay one. */
  term ten = T("10");
  dm__alloc_fail_after(0);
  assert_int_equal(dm__worker_set_payload(w, ten.b, ten.len), DM_ENOMEM);
  dm__alloc_fail_after(-1);
  assert_cell(w->payload, "9");
  assert_true(w->proc.flags & DM__W_VALUE_SAME);
  assert_int_equal(f.s.annex.count, 0);
  fixture_free(&f);
}

/* Workers put one after the other with the same opts share one record of
 * them: it names their manager and holds what the opts mean. Other opts
 * get a record of their own; the last one made is kept for the next. */
static void workers_put_with_the_same_opts_share_one_record(void **state) {
  (void)state;
  fixture f;
  fixture_init(&f, "w=script");
  const char *same = "[{payload, 1}, {lull, 2.5}, {restart, transient}]";
  assert_int_equal(put(f.m, "a", same), 0);
  assert_int_equal(put(f.m, "b", same), 0);
  assert_int_equal(put(f.m, "c", "[{payload, 2}, {instant_perform, true}]"), 0);
  dm__worker *a = find(f.m, "a"), *b = find(f.m, "b"), *c = find(f.m, "c");
  assert_ptr_equal(a->opts, b->opts);
  assert_ptr_not_equal(a->opts, c->opts);
  assert_ptr_equal(dm__worker_mgr(a), f.m);
  assert_ptr_equal(dm__worker_mgr(c), f.m);
  assert_int_equal(a->opts->refs, 2);
  assert_int_equal(a->opts->restart, DM__TRANSIENT);
  assert_true(a->opts->lull == 2.5f);
  assert_int_equal(a->opts->instant, 0);
  assert_term_equal(a->opts->term, a->opts->len, T(same));
  assert_int_equal(c->opts->refs, 2); /* c's and the manager's, for the next */
  assert_ptr_equal(f.m->last_opts, c->opts);
  assert_int_equal(c->opts->restart, DM__PERMANENT);
  assert_int_equal(c->opts->instant, 1);
  fixture_free(&f);
}

int main(void) {
  ei_init();
  dm__log_level = DM_LOG_NONE;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(a_started_worker_is_in_the_children_table_and_armed),
      cmocka_unit_test(workers_put_with_the_same_opts_share_one_record),
      cmocka_unit_test(the_value_is_the_payload_until_a_response_parts_them),
      cmocka_unit_test(a_call_keeps_the_next_perform_due_and_says_since_when_it_is_busy),
      cmocka_unit_test(a_perform_runs_on_the_payload_and_is_armed_again),
      cmocka_unit_test(halt_stops_the_worker_and_removes_it),
      cmocka_unit_test(ok_sets_the_payload_and_keeps_the_value),
      cmocka_unit_test(replace_sets_payload_and_value),
      cmocka_unit_test(replace_with_a_new_id_moves_the_worker_with_its_opts),
      cmocka_unit_test(any_other_response_sets_the_value_and_keeps_the_payload),
      cmocka_unit_test(a_caller_gets_the_unwrapped_response_and_it_applies),
      cmocka_unit_test(a_call_while_busy_waits_in_the_mailbox_and_runs_after_in_order),
      cmocka_unit_test(past_max_mailbox_a_call_is_answered_overloaded_and_counted),
      cmocka_unit_test(a_stop_while_busy_runs_terminate_after_the_callback),
      cmocka_unit_test(a_payload_message_while_busy_waits_in_order),
  };
  return cmocka_run_group_tests_name("worker", tests, NULL, NULL);
}
