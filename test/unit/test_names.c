/* The pid table of processes, the generic key -> pointer map (both open
 * addressing with backward-shift deletion) and the name table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "base/base.h"
#include "dm.h"
#include "node/node.h"

static void pidtab_put_get_del(void **state) {
  (void)state;
  dm__pidtab t;
  int a, b;
  dm__pidtab_init(&t);
  assert_null(dm__pidtab_get(&t, 5));
  assert_int_equal(dm__pidtab_put(&t, 5, &a), 0);
  assert_int_equal(dm__pidtab_put(&t, 6, &b), 0);
  assert_ptr_equal(dm__pidtab_get(&t, 5), &a);
  assert_ptr_equal(dm__pidtab_get(&t, 6), &b);
  assert_int_equal(dm__pidtab_put(&t, 5, &b), 0);
  assert_ptr_equal(dm__pidtab_get(&t, 5), &b);
  assert_int_equal(t.count, 2);
  assert_ptr_equal(dm__pidtab_del(&t, 5), &b);
  assert_null(dm__pidtab_get(&t, 5));
  assert_null(dm__pidtab_del(&t, 5));
  assert_int_equal(dm__pidtab_put(&t, 0, &a), DM_EINVAL);
  dm__pidtab_free(&t);
}

static void pidtab_many_keys_survive_growth_and_deletes(void **state) {
  (void)state;
  dm__pidtab t;
  dm__pidtab_init(&t);
  const uint32_t n = 200000;
  for (uint32_t k = 1; k <= n; k++)
    assert_int_equal(dm__pidtab_put(&t, k * 7919u, (void *)(uintptr_t)k), 0);
  assert_int_equal(t.count, n);
  /* Delete every third key, then check every key. */
  for (uint32_t k = 1; k <= n; k += 3)
    assert_ptr_equal(dm__pidtab_del(&t, k * 7919u), (void *)(uintptr_t)k);
  for (uint32_t k = 1; k <= n; k++) {
    void *v = dm__pidtab_get(&t, k * 7919u);
    if ((k - 1) % 3 == 0)
      assert_null(v);
    else
      assert_ptr_equal(v, (void *)(uintptr_t)k);
  }
  dm__pidtab_free(&t);
}

/* Reserving keeps what is there and makes room so that many puts do
 * not grow the table again. */
static void pidtab_reserve_keeps_entries_and_makes_room(void **state) {
  (void)state;
  dm__pidtab t;
  int v[100];
  dm__pidtab_init(&t);
  for (uint32_t k = 1; k <= 100; k++)
    assert_int_equal(dm__pidtab_put(&t, k, &v[k - 1]), 0);
  assert_int_equal(dm__pidtab_reserve(&t, 100000), 0);
  size_t cap = t.cap;
  assert_true(cap * 3 >= 100000 * 4);
  for (uint32_t k = 1; k <= 100; k++)
    assert_ptr_equal(dm__pidtab_get(&t, k), &v[k - 1]);
  for (uint32_t k = 101; k <= 100000; k++)
    assert_int_equal(dm__pidtab_put(&t, k, &v[0]), 0);
  assert_int_equal(t.cap, cap);
  assert_int_equal(dm__pidtab_reserve(&t, 10), 0); /* never shrinks */
  assert_int_equal(t.cap, cap);
  dm__pidtab_free(&t);
}

static void pidtab_out_of_memory_is_an_error(void **state) {
  (void)state;
  dm__pidtab t;
  int a;
  dm__pidtab_init(&t);
  dm__alloc_fail_after(0);
  assert_int_equal(dm__pidtab_put(&t, 1, &a), DM_ENOMEM);
  dm__alloc_fail_after(-1);
  assert_null(dm__pidtab_get(&t, 1));
  assert_int_equal(dm__pidtab_put(&t, 1, &a), 0);
  dm__pidtab_free(&t);
}

/* Processes with these keys, numbered from 1. */
static dm__proc *procs_keyed(uint32_t n, uint32_t step) {
  dm__proc *p = calloc(n + 1, sizeof *p);
  assert_non_null(p);
  for (uint32_t k = 1; k <= n; k++)
    p[k].key = k * step;
  return p;
}

static void proctab_put_get_del(void **state) {
  (void)state;
  dm__proctab t;
  dm__proc a = {.key = 5}, b = {.key = 6}, zero = {.key = 0};
  dm__proctab_init(&t);
  assert_null(dm__proctab_get(&t, 5));
  assert_null(dm__proctab_del(&t, 5));
  assert_int_equal(dm__proctab_put(&t, &a), 0);
  assert_int_equal(dm__proctab_put(&t, &b), 0);
  assert_ptr_equal(dm__proctab_get(&t, 5), &a);
  assert_ptr_equal(dm__proctab_get(&t, 6), &b);
  assert_null(dm__proctab_get(&t, 7));
  assert_null(dm__proctab_get(&t, 0));
  assert_int_equal(t.count, 2);
  assert_ptr_equal(dm__proctab_del(&t, 5), &a);
  assert_null(dm__proctab_get(&t, 5));
  assert_ptr_equal(dm__proctab_get(&t, 6), &b);
  assert_int_equal(dm__proctab_put(&t, &zero), DM_EINVAL);
  dm__proctab_free(&t);
}

/* Keys that share home slots: every process is found through growth and
 * through deletions that shift others back. */
static void proctab_many_processes_survive_growth_and_deletes(void **state) {
  (void)state;
  dm__proctab t;
  const uint32_t n = 200000;
  dm__proc *p = procs_keyed(n, 7919u);
  dm__proctab_init(&t);
  for (uint32_t k = 1; k <= n; k++)
    assert_int_equal(dm__proctab_put(&t, &p[k]), 0);
  assert_int_equal(t.count, n);
  assert_true(t.cap * 3 >= (size_t)n * 4);
  for (uint32_t k = 1; k <= n; k += 3)
    assert_ptr_equal(dm__proctab_del(&t, p[k].key), &p[k]);
  for (uint32_t k = 1; k <= n; k++)
    assert_ptr_equal(dm__proctab_get(&t, p[k].key), (k - 1) % 3 ? &p[k] : NULL);
  dm__proctab_free(&t);
  free(p);
}

/* A process copied elsewhere is found at its new address; moving
 * allocates nothing, and an absent key is refused. */
static void proctab_moved_process_is_found_at_its_copy(void **state) {
  (void)state;
  dm__proctab t;
  const uint32_t n = 1000;
  dm__proc *p = procs_keyed(n, 1), copy;
  dm__proctab_init(&t);
  for (uint32_t k = 1; k <= n; k++)
    assert_int_equal(dm__proctab_put(&t, &p[k]), 0);
  copy = p[77];
  dm__alloc_fail_after(0);
  assert_int_equal(dm__proctab_moved(&t, &copy), 0);
  dm__alloc_fail_after(-1);
  p[77].key = 0; /* the old place is free now */
  assert_ptr_equal(dm__proctab_get(&t, 77), &copy);
  assert_ptr_equal(dm__proctab_get(&t, 78), &p[78]);
  dm__proc stranger = {.key = n + 1};
  assert_int_equal(dm__proctab_moved(&t, &stranger), DM_EINVAL);
  assert_ptr_equal(dm__proctab_del(&t, 77), &copy);
  dm__proctab_free(&t);
  free(p);
}

/* Reserving makes room ahead; shrinking gives the room of a table that
 * emptied back, keeps every process, and out of memory leaves it as it
 * was. */
static void proctab_reserve_and_shrink(void **state) {
  (void)state;
  dm__proctab t;
  const uint32_t n = 100000;
  dm__proc *p = procs_keyed(n, 1);
  dm__proctab_init(&t);
  assert_int_equal(dm__proctab_reserve(&t, n), 0);
  size_t cap = t.cap;
  for (uint32_t k = 1; k <= n; k++)
    assert_int_equal(dm__proctab_put(&t, &p[k]), 0);
  assert_int_equal(t.cap, cap);
  dm__proctab_shrink(&t); /* full: nothing to do */
  assert_int_equal(t.cap, cap);
  for (uint32_t k = 1; k <= n; k++)
    if (k % 20)
      assert_ptr_equal(dm__proctab_del(&t, k), &p[k]);
  assert_true(dm__proctab_sparse(&t));
  dm__alloc_fail_after(0);
  dm__proctab_shrink(&t);
  dm__alloc_fail_after(-1);
  assert_int_equal(t.cap, cap);
  dm__proctab_shrink(&t);
  assert_true(t.cap <= cap / 8);
  assert_int_equal(t.count, n / 20);
  for (uint32_t k = 1; k <= n; k++)
    assert_ptr_equal(dm__proctab_get(&t, k), k % 20 ? NULL : &p[k]);
  dm__proctab_free(&t);
  free(p);
}

static void proctab_out_of_memory_is_an_error(void **state) {
  (void)state;
  dm__proctab t;
  dm__proc a = {.key = 1};
  dm__proctab_init(&t);
  dm__alloc_fail_after(0);
  assert_int_equal(dm__proctab_put(&t, &a), DM_ENOMEM);
  dm__alloc_fail_after(-1);
  assert_null(dm__proctab_get(&t, 1));
  assert_int_equal(dm__proctab_put(&t, &a), 0);
  assert_ptr_equal(dm__proctab_get(&t, 1), &a);
  dm__proctab_free(&t);
}

static void nametab_register_lookup_unregister(void **state) {
  (void)state;
  dm__nametab t;
  int a, b;
  dm__nametab_init(&t);
  assert_int_equal(dm__nametab_put(&t, "alpha", &a), 0);
  assert_int_equal(dm__nametab_put(&t, "beta", &b), 0);
  assert_int_equal(dm__nametab_put(&t, "alpha", &b), DM_EEXISTS);
  assert_int_equal(dm__nametab_put(&t, "", &b), DM_EINVAL);
  assert_ptr_equal(dm__nametab_get(&t, "alpha"), &a);
  assert_ptr_equal(dm__nametab_get(&t, "beta"), &b);
  assert_null(dm__nametab_get(&t, "gamma"));
  assert_ptr_equal(dm__nametab_del(&t, "alpha"), &a);
  assert_null(dm__nametab_get(&t, "alpha"));
  assert_ptr_equal(dm__nametab_get(&t, "beta"), &b);
  for (int i = 0; i < 100; i++) {
    char name[16];
    snprintf(name, sizeof name, "n%d", i);
    assert_int_equal(dm__nametab_put(&t, name, &a), 0);
  }
  assert_int_equal(t.count, 101);
  dm__nametab_free(&t);
}

/* replace allocates nothing and refuses an absent key; shrink keeps every
 * entry and gives the room of a table that emptied back. */
static void pidtab_replace_and_shrink(void **state) {
  (void)state;
  dm__pidtab t;
  int x;
  dm__pidtab_init(&t);
  assert_int_equal(dm__pidtab_replace(&t, 3, &x), DM_EINVAL);
  const uint32_t n = 100000;
  for (uint32_t k = 1; k <= n; k++)
    assert_int_equal(dm__pidtab_put(&t, k, (void *)(uintptr_t)k), 0);
  dm__alloc_fail_after(0);
  assert_int_equal(dm__pidtab_replace(&t, 77, &x), 0);
  dm__alloc_fail_after(-1);
  assert_ptr_equal(dm__pidtab_get(&t, 77), &x);
  assert_int_equal(dm__pidtab_replace(&t, n + 1, &x), DM_EINVAL);
  size_t cap = t.cap;
  dm__pidtab_shrink(&t); /* full: nothing to do */
  assert_int_equal(t.cap, cap);
  for (uint32_t k = 1; k <= n; k++)
    if (k % 20)
      assert_non_null(dm__pidtab_del(&t, k));
  /* Out of memory, it stays as it is. */
  dm__alloc_fail_after(0);
  dm__pidtab_shrink(&t);
  dm__alloc_fail_after(-1);
  assert_int_equal(t.cap, cap);
  dm__pidtab_shrink(&t);
  assert_true(t.cap <= cap / 8);
  assert_int_equal(t.count, n / 20);
  for (uint32_t k = 20; k <= n; k += 20)
    assert_ptr_equal(dm__pidtab_get(&t, k), (void *)(uintptr_t)k);
  dm__pidtab_free(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(pidtab_put_get_del),
      cmocka_unit_test(pidtab_replace_and_shrink),
      cmocka_unit_test(pidtab_many_keys_survive_growth_and_deletes),
      cmocka_unit_test(pidtab_reserve_keeps_entries_and_makes_room),
      cmocka_unit_test(pidtab_out_of_memory_is_an_error),
      cmocka_unit_test(proctab_put_get_del),
      cmocka_unit_test(proctab_many_processes_survive_growth_and_deletes),
      cmocka_unit_test(proctab_moved_process_is_found_at_its_copy),
      cmocka_unit_test(proctab_reserve_and_shrink),
      cmocka_unit_test(proctab_out_of_memory_is_an_error),
      cmocka_unit_test(nametab_register_lookup_unregister),
  };
  return cmocka_run_group_tests_name("names", tests, NULL, NULL);
}
