/* The timing wheel, on a fake clock: timers fire when due and not before,
 * catch up after stalls, and survive being re-armed or deleted from inside
 * their own firing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "dm.h"
#include "runtime/runtime.h"

#define MS 1000ull

typedef struct {
  dm__timer t;
  int fired;
  uint64_t period; /* re-arm by this many µs when non-zero */
  dm__timer *victim;
} item;

static dm__wheel *cur;
static uint64_t now;

static void fire(dm__timer *t, void *ud) {
  item *it = (item *)t;
  (void)ud;
  it->fired++;
  if (it->victim)
    dm__wheel_del(cur, it->victim);
  if (it->period)
    dm__wheel_add(cur, &it->t, now + it->period);
}

static void setup(dm__wheel *w, uint64_t start) {
  assert_int_equal(dm__wheel_init(w, 4096, start), 0);
  cur = w;
  now = start;
}

static size_t advance_to(dm__wheel *w, uint64_t t) {
  now = t;
  return dm__wheel_advance(w, t, 0, fire, NULL);
}

static void add_del_and_armed(void **state) {
  (void)state;
  dm__wheel w;
  item a = {0};
  setup(&w, 0);
  dm__timer_init(&a.t);
  assert_false(dm__timer_armed(&a.t));
  dm__wheel_add(&w, &a.t, 10 * MS);
  assert_true(dm__timer_armed(&a.t));
  assert_int_equal(w.count, 1);
  dm__wheel_del(&w, &a.t);
  dm__wheel_del(&w, &a.t); /* twice is harmless */
  assert_false(dm__timer_armed(&a.t));
  assert_int_equal(w.count, 0);
  assert_int_equal(advance_to(&w, 20 * MS), 0);
  dm__wheel_free(&w);
}

static void timers_fire_when_due_and_not_before(void **state) {
  (void)state;
  dm__wheel w;
  uint64_t dues[] = {0, 1, 999, 1000, 1001, 5000};
  item it[6] = {0};
  setup(&w, 0);
  for (int i = 0; i < 6; i++) {
    dm__timer_init(&it[i].t);
    dm__wheel_add(&w, &it[i].t, dues[i] * MS);
  }
  for (uint64_t t = 0; t <= 6000; t++) {
    advance_to(&w, t * MS + 500);
    for (int i = 0; i < 6; i++)
      assert_int_equal(it[i].fired, t >= dues[i] ? 1 : 0);
  }
  assert_int_equal(w.count, 0);
  dm__wheel_free(&w);
}

static void periodic_timer_fires_once_per_period(void **state) {
  (void)state;
  dm__wheel w;
  item a = {.period = 100 * MS};
  setup(&w, 0);
  dm__timer_init(&a.t);
  dm__wheel_add(&w, &a.t, 100 * MS);
  for (uint64_t t = 1; t <= 10000; t++)
    advance_to(&w, t * MS);
  assert_int_equal(a.fired, 100);
  dm__wheel_free(&w);
}

static void deleting_a_neighbour_from_inside_fire(void **state) {
  (void)state;
  dm__wheel w;
  item a = {0}, b = {0};
  setup(&w, 0);
  dm__timer_init(&a.t);
  dm__timer_init(&b.t);
  dm__wheel_add(&w, &a.t, 5 * MS);
  dm__wheel_add(&w, &b.t, 5 * MS);
  a.victim = &b.t;
  b.victim = &a.t;
  advance_to(&w, 10 * MS);
  /* Whichever fires first removes the other. */
  assert_int_equal(a.fired + b.fired, 1);
  assert_int_equal(w.count, 0);
  dm__wheel_free(&w);
}

static void catch_up_after_a_stall(void **state) {
  (void)state;
  dm__wheel w;
  item it[400] = {0};
  setup(&w, 0);
  for (int i = 0; i < 400; i++) {
    dm__timer_init(&it[i].t);
    dm__wheel_add(&w, &it[i].t, (uint64_t)(i + 1) * MS);
  }
  assert_int_equal(advance_to(&w, 300 * MS), 300);
  assert_int_equal(advance_to(&w, 10000 * MS), 100); /* longer than a revolution */
  for (int i = 0; i < 400; i++)
    assert_int_equal(it[i].fired, 1);
  dm__wheel_free(&w);
}

static void far_timers_wait_for_their_revolution(void **state) {
  (void)state;
  dm__wheel w;
  item a = {0};
  setup(&w, 0);
  dm__timer_init(&a.t);
  dm__wheel_add(&w, &a.t, 3 * 4096 * MS + 7 * MS);
  for (uint64_t t = 1; t < 3 * 4096 + 7; t++)
    advance_to(&w, t * MS);
  assert_int_equal(a.fired, 0);
  assert_true(dm__timer_armed(&a.t));
  advance_to(&w, (3 * 4096 + 7) * MS);
  assert_int_equal(a.fired, 1);
  dm__wheel_free(&w);
}

static void max_fire_resumes_where_it_stopped(void **state) {
  (void)state;
  dm__wheel w;
  item it[10] = {0};
  setup(&w, 0);
  for (int i = 0; i < 10; i++) {
    dm__timer_init(&it[i].t);
    dm__wheel_add(&w, &it[i].t, 5 * MS);
  }
  now = 5 * MS;
  assert_int_equal(dm__wheel_advance(&w, now, 4, fire, NULL), 4);
  assert_int_equal(dm__wheel_advance(&w, now, 4, fire, NULL), 4);
  assert_int_equal(dm__wheel_advance(&w, now, 4, fire, NULL), 2);
  for (int i = 0; i < 10; i++)
    assert_int_equal(it[i].fired, 1);
  dm__wheel_free(&w);
}

/* Between two calls of a walk that max_fire stopped, timers of that slot
 * can be deleted or re-armed, and new ones armed for the same slot index:
 * each fires once, at its time, and none twice. */
static void a_stopped_walk_survives_changes_before_it_resumes(void **state) {
  (void)state;
  dm__wheel w;
  enum { N = 1000 };
  item *it = calloc(N + 1, sizeof *it);
  setup(&w, 0);
  for (int i = 0; i < N; i++) {
    dm__timer_init(&it[i].t);
    dm__wheel_add(&w, &it[i].t, 5 * MS);
  }
  now = 5 * MS;
  assert_int_equal(dm__wheel_advance(&w, now, 100, fire, NULL), 100);
  /* Not yet fired: one deleted, one moved a second ahead. */
  int gone = -1, moved = -1;
  for (int i = 0; i < N && (gone < 0 || moved < 0); i++)
    if (!it[i].fired) {
      if (gone < 0)
        gone = i;
      else
        moved = i;
    }
  dm__wheel_del(&w, &it[gone].t);
  dm__wheel_add(&w, &it[moved].t, 1005 * MS);
  /* One revolution ahead maps to the slot being walked. */
  dm__timer_init(&it[N].t);
  dm__wheel_add(&w, &it[N].t, (4096 + 5) * MS);
  size_t total = 100;
  while (total < N - 2)
    total += dm__wheel_advance(&w, now, 100, fire, NULL);
  assert_int_equal(total, N - 2);
  for (int i = 0; i < N; i++)
    assert_int_equal(it[i].fired, i == gone || i == moved ? 0 : 1);
  assert_int_equal(advance_to(&w, 1005 * MS), 1);
  assert_int_equal(it[moved].fired, 1);
  assert_int_equal(it[N].fired, 0);
  assert_int_equal(advance_to(&w, (4096 + 6) * MS), 1);
  assert_int_equal(it[N].fired, 1);
  assert_int_equal(w.count, 0);
  dm__wheel_free(&w);
  free(it);
}

static void a_million_timers_fire_exactly_once(void **state) {
  (void)state;
  dm__wheel w;
  const int n = 1000000;
  item *it = calloc((size_t)n, sizeof *it);
  setup(&w, 0);
  for (int i = 0; i < n; i++) {
    dm__timer_init(&it[i].t);
    dm__wheel_add(&w, &it[i].t, (uint64_t)(i % 1000) * MS + (uint64_t)(i % 997));
  }
  size_t total = 0;
  for (uint64_t t = 0; t <= 1000; t++)
    total += advance_to(&w, t * MS + 999);
  assert_int_equal(total, n);
  for (int i = 0; i < n; i++)
    assert_int_equal(it[i].fired, 1);
  free(it);
  dm__wheel_free(&w);
}

/* Periodic timers, 1100 due in every millisecond of their period, after
 * a burst that crowded them all into two slots: the arrays that pass from
 * slot to slot hold little more than 1100, where doubling would leave
 * them at 2048, and the burst's arrays would stay at 16384. */
static void slot_arrays_stay_near_the_most_crowded_slot(void **state) {
  (void)state;
  dm__wheel w;
  enum { PER_MS = 1100, PERIOD_MS = 20 };
  const size_t n = PER_MS * PERIOD_MS;
  item *it = calloc(n, sizeof *it);
  setup(&w, 0);
  for (size_t i = 0; i < n; i++) {
    dm__timer_init(&it[i].t);
    dm__wheel_add(&w, &it[i].t, (i % 2) * MS + 1);
  }
  advance_to(&w, 2 * MS);
  for (size_t i = 0; i < n; i++) {
    it[i].fired = 0;
    it[i].period = PERIOD_MS * MS;
    dm__wheel_add(&w, &it[i].t, (3 + i % PERIOD_MS) * MS + 1);
  }
  for (uint64_t t = 3; t < 3 + 10 * PERIOD_MS; t++)
    advance_to(&w, t * MS + 500);
  size_t room = w.spare.cap;
  for (size_t i = 0; i < w.nslots; i++)
    room += w.slots[i].cap;
  assert_int_equal(w.count, n);
  assert_true(room >= n);
  assert_true(room <= n + n / 4);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(it[i].fired, 10);
  dm__wheel_free(&w);
  free(it);
}

/* A timer re-armed from inside fire for exactly one revolution later maps
 * to the slot being walked: it waits in the next slot instead, fires once
 * per revolution, at most a millisecond late, and neighbours fired in the
 * same walk are unaffected. */
static void rearm_one_revolution_ahead_from_inside_fire(void **state) {
  (void)state;
  dm__wheel w;
  item a = {0}, b = {0};
  setup(&w, 0);
  dm__timer_init(&a.t);
  dm__timer_init(&b.t);
  a.period = 4096 * MS;
  dm__wheel_add(&w, &a.t, 5 * MS);
  dm__wheel_add(&w, &b.t, 5 * MS);
  assert_int_equal(advance_to(&w, 5 * MS), 2);
  assert_true(dm__timer_armed(&a.t));
  assert_false(dm__timer_armed(&b.t));
  assert_int_equal(advance_to(&w, (4096 + 5) * MS - 1), 0);
  assert_int_equal(advance_to(&w, (4096 + 6) * MS), 1);
  assert_int_equal(a.fired, 2);
  assert_int_equal(b.fired, 1);
  assert_int_equal(w.count, 1);
  dm__wheel_free(&w);
}

static void next_in_points_at_the_earliest_slot(void **state) {
  (void)state;
  dm__wheel w;
  item a = {0};
  setup(&w, 0);
  assert_int_equal(dm__wheel_next_in(&w, 0, 777), 777);
  dm__timer_init(&a.t);
  dm__wheel_add(&w, &a.t, 250 * MS);
  advance_to(&w, 10 * MS);
  uint64_t in = dm__wheel_next_in(&w, 10 * MS, 1000 * MS);
  assert_true(in >= 239 * MS && in <= 240 * MS);
  assert_int_equal(dm__wheel_next_in(&w, 10 * MS, 50 * MS), 50 * MS);
  dm__wheel_free(&w);
}

/* A timer copied elsewhere (its owner moved) fires there, whether it
 * waits in its slot or in a walk that max_fire stopped; shrinking the
 * slots loses none. */
static void moved_timers_fire_at_their_new_place(void **state) {
  (void)state;
  dm__wheel w;
  enum { N = 200 };
  item *a = calloc(N, sizeof *a), *b = calloc(N, sizeof *b);
  setup(&w, 0);
  for (int i = 0; i < N; i++) {
    dm__timer_init(&a[i].t);
    dm__wheel_add(&w, &a[i].t, (i < N / 2 ? 5 : 9) * MS);
  }
  now = 5 * MS;
  assert_int_equal(dm__wheel_advance(&w, now, 10, fire, NULL), 10);
  for (int i = 0; i < N; i++) {
    b[i] = a[i];
    b[i].fired = 0; /* what fires from now on is counted at b */
    dm__wheel_moved(&w, &a[i].t, &b[i].t);
    a[i].t.slot = DM__TIMER_OFF; /* the old copy is garbage from now on */
  }
  dm__wheel_shrink(&w);
  size_t total = 10;
  while (total < N / 2)
    total += dm__wheel_advance(&w, now, 10, fire, NULL);
  assert_int_equal(advance_to(&w, 9 * MS), N / 2);
  int at_b = 0;
  for (int i = 0; i < N; i++) {
    assert_int_equal(a[i].fired + b[i].fired, 1);
    at_b += b[i].fired;
  }
  assert_int_equal(at_b, N - 10);
  assert_int_equal(w.count, 0);
  free(a);
  free(b);
  dm__wheel_free(&w);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(add_del_and_armed),
      cmocka_unit_test(timers_fire_when_due_and_not_before),
      cmocka_unit_test(periodic_timer_fires_once_per_period),
      cmocka_unit_test(deleting_a_neighbour_from_inside_fire),
      cmocka_unit_test(catch_up_after_a_stall),
      cmocka_unit_test(far_timers_wait_for_their_revolution),
      cmocka_unit_test(max_fire_resumes_where_it_stopped),
      cmocka_unit_test(a_stopped_walk_survives_changes_before_it_resumes),
      cmocka_unit_test(a_million_timers_fire_exactly_once),
      cmocka_unit_test(slot_arrays_stay_near_the_most_crowded_slot),
      cmocka_unit_test(rearm_one_revolution_ahead_from_inside_fire),
      cmocka_unit_test(next_in_points_at_the_earliest_slot),
      cmocka_unit_test(moved_timers_fire_at_their_new_place),
  };
  return cmocka_run_group_tests_name("wheel", tests, NULL, NULL);
}
