/* The callback pool: every job runs exactly once on a pool thread and comes
 * back once on the loop thread, in batches; stop hands back what never ran. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <time.h>
#include <cmocka.h>

#include "dm.h"
#include "runtime/runtime.h"

typedef struct {
  dm__job base;
  int ran, done, chained;
  int slow;      /* sleeps 300 ms in run */
  int done_at;   /* order in which it came back */
} tjob;

typedef struct {
  dm__pool *pool;
  size_t done, never_ran, chain_left;
} ctx;

static atomic_int finished; /* jobs whose run has returned */

static void run(dm__job *j) {
  tjob *t = (tjob *)j;
  if (t->slow) {
    struct timespec ts = {0, 300 * 1000000L};
    nanosleep(&ts, NULL);
  }
  t->ran++;
  atomic_fetch_add(&finished, 1);
}

static void on_done(dm__job *j, void *ud) {
  ctx *c = ud;
  tjob *t = (tjob *)j;
  t->done++;
  t->done_at = (int)(c->done + c->never_ran);
  if (!j->run) {
    c->never_ran++;
    return;
  }
  c->done++;
  if (c->chain_left) {
    /* Submitting from inside done chains more work. */
    c->chain_left--;
    t->chained++;
    j->run = run;
    dm__pool_submit(c->pool, j);
    dm__pool_flush(c->pool);
  }
}

static void close_all(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

static void hundred_thousand_jobs_complete_exactly_once(void **state) {
  (void)state;
  uv_loop_t loop;
  ctx c = {0};
  const size_t n = 100000;
  tjob *jobs = calloc(n, sizeof *jobs);
  uv_loop_init(&loop);
  assert_int_equal(dm__pool_start(&c.pool, &loop, 2, on_done, &c), 0);
  assert_int_equal(dm__pool_threads(c.pool), 2);
  for (size_t i = 0; i < n; i++) {
    jobs[i].base.run = run;
    dm__pool_submit(c.pool, &jobs[i].base);
  }
  assert_int_equal(dm__pool_depth(c.pool), n);
  dm__pool_flush(c.pool);
  while (c.done < n)
    uv_run(&loop, UV_RUN_ONCE);
  assert_int_equal(dm__pool_depth(c.pool), 0);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(jobs[i].ran, 1);
    assert_int_equal(jobs[i].done, 1);
  }
  dm__pool_stop(c.pool);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
  free(jobs);
}

static void jobs_submitted_from_done_complete(void **state) {
  (void)state;
  uv_loop_t loop;
  ctx c = {.chain_left = 1000};
  tjob job = {.base.run = run};
  uv_loop_init(&loop);
  assert_int_equal(dm__pool_start(&c.pool, &loop, 2, on_done, &c), 0);
  dm__pool_submit(c.pool, &job.base);
  dm__pool_flush(c.pool);
  while (c.done < 1001)
    uv_run(&loop, UV_RUN_ONCE);
  assert_int_equal(job.ran, 1001);
  assert_int_equal(job.chained, 1000);
  dm__pool_stop(c.pool);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void stop_hands_back_jobs_that_never_ran(void **state) {
  (void)state;
  uv_loop_t loop;
  ctx c = {0};
  tjob jobs[50] = {0};
  uv_loop_init(&loop);
  assert_int_equal(dm__pool_start(&c.pool, &loop, 1, on_done, &c), 0);
  for (int i = 0; i < 50; i++) {
    jobs[i].base.run = run;
    dm__pool_submit(c.pool, &jobs[i].base); /* never flushed */
  }
  dm__pool_stop(c.pool);
  assert_int_equal(c.never_ran, 50);
  for (int i = 0; i < 50; i++) {
    assert_int_equal(jobs[i].ran, 0);
    assert_int_equal(jobs[i].done, 1);
  }
  uv_walk(&loop, close_all, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void a_slow_job_does_not_hold_back_the_others(void **state) {
  (void)state;
  uv_loop_t loop;
  ctx c = {0};
  tjob jobs[3] = {{.base.run = run, .slow = 1}, {.base.run = run}, {.base.run = run}};
  uv_loop_init(&loop);
  assert_int_equal(dm__pool_start(&c.pool, &loop, 2, on_done, &c), 0);
  for (int i = 0; i < 3; i++)
    dm__pool_submit(c.pool, &jobs[i].base);
  dm__pool_flush(c.pool);
  while (c.done < 3)
    uv_run(&loop, UV_RUN_ONCE);
  /* The fast jobs ran on the other thread and came back first. */
  assert_true(jobs[1].done_at < jobs[0].done_at);
  assert_true(jobs[2].done_at < jobs[0].done_at);
  dm__pool_stop(c.pool);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* A lazy job's completion waits for the loop's next collect while the
 * loop has said it collects soon, and wakes the loop once it has not. */
static void lazy_completions_wait_for_collect_only_when_it_comes_soon(void **state) {
  (void)state;
  uv_loop_t loop;
  ctx c = {0};
  tjob a = {.base.run = run, .base.lazy = 1}, b = {.base.run = run, .base.lazy = 1};
  struct timespec tick = {0, 1000000L};
  uv_loop_init(&loop);
  atomic_store(&finished, 0);
  assert_int_equal(dm__pool_start(&c.pool, &loop, 1, on_done, &c), 0);
  dm__pool_collect(c.pool, 1);
  dm__pool_submit(c.pool, &a.base);
  dm__pool_flush(c.pool);
  /* It comes back through collect alone; the thread never woke the loop. */
  while (c.done < 1) {
    nanosleep(&tick, NULL); /* the loop's next tick, while awaiting it */
    dm__pool_collect(c.pool, 1);
  }
  assert_int_equal(a.done, 1);
  assert_int_equal(dm__pool_wakes(c.pool), 0);
  /* Once the loop says it will not collect soon, completions wake it. */
  dm__pool_collect(c.pool, 0);
  dm__pool_submit(c.pool, &b.base);
  dm__pool_flush(c.pool);
  while (c.done < 2)
    uv_run(&loop, UV_RUN_ONCE); /* woken by the thread this time */
  assert_int_equal(b.done, 1);
  assert_int_equal(dm__pool_wakes(c.pool), 1);
  dm__pool_stop(c.pool);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(hundred_thousand_jobs_complete_exactly_once),
      cmocka_unit_test(jobs_submitted_from_done_complete),
      cmocka_unit_test(stop_hands_back_jobs_that_never_ran),
      cmocka_unit_test(a_slow_job_does_not_hold_back_the_others),
      cmocka_unit_test(lazy_completions_wait_for_collect_only_when_it_comes_soon),
  };
  return cmocka_run_group_tests_name("pool", tests, NULL, NULL);
}
