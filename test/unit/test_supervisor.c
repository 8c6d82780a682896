/* The supervisor, driven with the test as the pool and no sockets: a
 * crash restarts a worker per its restart type with its original opts;
 * more than max_restarts restarts within max_seconds restart every
 * worker with its own opts and last payload, and more than max_restarts of those take
 * the manager down; dm__sup_reset starts the counts again. Time is the
 * loop's cached time, which stands still here: every crash falls in the
 * same window unless a test ages the intensity ring. */
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

/* The worker under id crashes in a perform with reason (Erlang text),
 * and everything that follows runs. */
static void crash(fixture *f, const char *id, const char *reason) {
  dm__worker *w = find(f->m, id);
  assert_non_null(w);
  script.perform = T(reason);
  script.perform_rc = DM_CB_CRASH;
  perform_now(w);
  pool_run_all(f->m->pool);
  script.perform = T("tick");
  script.perform_rc = DM_CB_OK;
}

/* Restarted with the opts it was put with, not what it became: a new
 * pid, the original payload and period; terminate saw the crash. */
static void a_crash_restarts_a_permanent_worker_with_its_original_opts(void **state) {
  (void)state;
  fixture f;
  fixture_init(&f, "s=script");
  assert_int_equal(put(f.m, "a", "[{payload, 1}, {timeout, 400}]"), 0);
  dm__worker *w = find(f.m, "a");
  uint32_t key = w->proc.key;
  script.perform = T("{{timeout, 900}, 2}");
  perform_now(w);
  pool_run_all(f.m->pool);
  assert_cell(w->payload, "2");
  assert_int_equal(w->timeout_ms, 900);
  script.nlog = 0;
  crash(&f, "a", "boom");
  assert_int_equal(f.m->st.crashes, 1);
  assert_int_equal(f.m->st.restarts, 1);
  dm__worker *again = find(f.m, "a");
  assert_non_null(again);
  assert_true(again->proc.key != key);
  assert_null(dm__proctab_get(&f.b.n.pids, key));
  assert_cell(again->payload, "1");
  assert_cell(*dm__worker_value(again), "nil");
  assert_int_equal(again->timeout_ms, 400);
  assert_true(dm__timer_armed(&again->timer));
  assert_logged(1, DM__JOB_TERMINATE, "a", "boom");
  assert_term_equal(script.log[1].payload.b, script.log[1].payload.len, T("2"));
  assert_int_equal(f.s.workers.live, 1);
  fixture_free(&f);
}

static void a_temporary_worker_is_not_restarted(void **state) {
  (void)state;
  fixture f;
  fixture_init(&f, "s=script");
  assert_int_equal(put(f.m, "a", "[{restart, temporary}]"), 0);
  crash(&f, "a", "boom");
  assert_null(find(f.m, "a"));
  assert_int_equal(f.m->st.crashes, 1);
  assert_int_equal(f.m->st.restarts, 0);
  assert_logged(1, DM__JOB_TERMINATE, "a", "boom");
  assert_int_equal(f.s.workers.live, 0);
  fixture_free(&f);
}

/* normal and shutdown are normal exits; anything else is abnormal. */
static void a_transient_worker_restarts_only_on_an_abnormal_reason(void **state) {
  (void)state;
  fixture f;
  fixture_init(&f, "s=script");
  assert_int_equal(put(f.m, "n", "[{restart, transient}]"), 0);
  assert_int_equal(put(f.m, "s", "[{restart, transient}]"), 0);
  assert_int_equal(put(f.m, "x", "[{restart, transient}]"), 0);
  crash(&f, "n", "normal");
  crash(&f, "s", "shutdown");
  crash(&f, "x", "{bad, thing}");
  assert_null(find(f.m, "n"));
  assert_null(find(f.m, "s"));
  assert_non_null(find(f.m, "x"));
  assert_int_equal(f.m->st.crashes, 3);
  assert_int_equal(f.m->st.restarts, 1);
  fixture_free(&f);
}

/* max_restarts=2: the third crash within max_seconds is one too many.
 * Every worker restarts with its own opts and the payload it had (c too,
 * which children_specs does not name, and b with what its perform made
 * of its payload); the manager does not boot again. The crashed one
 * restarts as any crashed worker does, from its opts. */
static void more_than_max_restarts_in_max_seconds_restart_every_worker(void **state) {
  (void)state;
  static const char *const ids[] = {"a", "b"};
  fixture f;
  fixture_init(&f, "s=script,max_restarts=2,max_seconds=5");
  script.specs = specs_of(ids, 2);
  dm__manager *m = f.m;
  assert_int_equal(put(m, "a", "[{payload, 1}]"), 0);
  assert_int_equal(put(m, "b", "[{payload, 10}, {timeout, 700}]"), 0);
  assert_int_equal(put(m, "c", "[]"), 0);
  script.perform = T("{ok, 11}");
  perform_now(find(m, "b"));
  pool_run_all(m->pool);
  script.perform = T("{{timeout, 300}, 5}");
  perform_now(find(m, "a"));
  pool_run_all(m->pool);
  uint32_t bkey = find(m, "b")->proc.key;
  crash(&f, "a", "boom");
  crash(&f, "a", "boom");
  assert_int_equal(m->st.restarts, 2);
  assert_int_equal(m->st.escalations, 0);
  script.nlog = 0;
  crash(&f, "a", "boom");
  assert_int_equal(m->st.escalations, 1);
  assert_int_equal(m->st.restarts, 5); /* b and c together, then a */
  assert_int_equal(m->st.crashes, 3);
  assert_int_equal(m->state, DM__STARTED);
  assert_int_equal(m->count, 3);
  dm__worker *a = find(m, "a"), *b = find(m, "b"), *c = find(m, "c");
  assert_non_null(a);
  assert_non_null(b);
  assert_non_null(c);
  assert_true(b->proc.key != bkey);
  assert_cell(b->payload, "11");
  assert_int_equal(b->timeout_ms, 700);
  assert_cell(a->payload, "1");
  assert_true(dm__timer_armed(&b->timer));
  /* The perform that crashed, then terminate for each of the three; no
   * boot, no children_specs. */
  assert_logged(0, DM__JOB_PERFORM, "a", NULL);
  size_t terminates = 0;
  for (size_t k = 0; k < script.nlog; k++) {
    terminates += script.log[k].kind == DM__JOB_TERMINATE;
    assert_int_not_equal(script.log[k].kind, DM__JOB_SPECS);
    assert_int_not_equal(script.log[k].kind, DM__JOB_STATE_CHANGE);
  }
  assert_int_equal(terminates, 3);
  assert_int_equal(f.s.workers.live, 3);
  fixture_free(&f);
}

/* Crashes further apart than max_seconds never add up. */
static void crashes_further_apart_than_max_seconds_do_not_escalate(void **state) {
  (void)state;
  fixture f;
  fixture_init(&f, "s=script,max_restarts=2,max_seconds=5");
  dm__manager *m = f.m;
  assert_int_equal(put(m, "a", "[]"), 0);
  crash(&f, "a", "boom");
  crash(&f, "a", "boom");
  /* As if those two happened max_seconds ago. */
  uint64_t now = uv_now(&f.b.loop);
  assert_true(now >= 5000);
  for (uint32_t k = 0; k < m->max_restarts + 1; k++)
    m->restarts_at[k] = now - 5000;
  crash(&f, "a", "boom");
  assert_int_equal(m->st.escalations, 0);
  assert_int_equal(m->st.restarts, 3);
  assert_non_null(find(m, "a"));
  fixture_free(&f);
}

/* The manager's own intensity is max_restarts escalations in max_seconds
 * too: with max_restarts=1, two crashes escalate, and a second
 * escalation takes the manager down, with no boot and no workers. */
static void escalating_past_max_restarts_takes_the_manager_down(void **state) {
  (void)state;
  static const char *const ids[] = {"a"};
  fixture f;
  fixture_init(&f, "s=script,max_restarts=1,max_seconds=5");
  script.specs = specs_of(ids, 1);
  dm__manager *m = f.m;
  assert_int_equal(put(m, "a", "[]"), 0);
  crash(&f, "a", "boom");
  crash(&f, "a", "boom");
  assert_int_equal(m->st.escalations, 1);
  assert_int_equal(m->state, DM__STARTED);
  assert_non_null(find(m, "a"));
  crash(&f, "a", "boom");
  script.nlog = 0;
  crash(&f, "a", "boom");
  assert_int_equal(m->st.escalations, 2);
  assert_int_equal(m->state, DM__DOWN);
  assert_int_equal(m->count, 0);
  assert_null(find(m, "a"));
  assert_logged(script.nlog - 1, DM__JOB_STATE_CHANGE, NULL, "down");
  for (size_t k = 0; k < script.nlog; k++)
    assert_int_not_equal(script.log[k].kind, DM__JOB_SPECS);
  assert_int_equal(f.s.workers.live, 0);
  fixture_free(&f);
}

/* After a reset the counts start from nothing: two more crashes are
 * within intensity where, without it, the first would have escalated;
 * the one after them escalates again. */
static void sup_reset_clears_the_counts(void **state) {
  (void)state;
  fixture f;
  fixture_init(&f, "s=script,max_restarts=2,max_seconds=5");
  dm__manager *m = f.m;
  assert_int_equal(put(m, "a", "[]"), 0);
  crash(&f, "a", "boom");
  crash(&f, "a", "boom");
  dm__sup_reset(m);
  assert_int_equal(m->nrestarts, 0);
  assert_int_equal(m->nescalated, 0);
  crash(&f, "a", "boom");
  crash(&f, "a", "boom");
  assert_int_equal(m->st.escalations, 0);
  assert_int_equal(m->st.restarts, 4);
  crash(&f, "a", "boom");
  assert_int_equal(m->st.escalations, 1);
  assert_int_equal(m->nescalated, 1);
  dm__sup_reset(m);
  assert_int_equal(m->nescalated, 0);
  fixture_free(&f);
}

int main(void) {
  ei_init();
  dm__log_level = DM_LOG_NONE;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(a_crash_restarts_a_permanent_worker_with_its_original_opts),
      cmocka_unit_test(a_temporary_worker_is_not_restarted),
      cmocka_unit_test(a_transient_worker_restarts_only_on_an_abnormal_reason),
      cmocka_unit_test(more_than_max_restarts_in_max_seconds_restart_every_worker),
      cmocka_unit_test(crashes_further_apart_than_max_seconds_do_not_escalate),
      cmocka_unit_test(escalating_past_max_restarts_takes_the_manager_down),
      cmocka_unit_test(sup_reset_clears_the_counts),
  };
  return cmocka_run_group_tests_name("supervisor", tests, NULL, NULL);
}
