/* The slab: zeroed slots, reuse of freed ones, growth over many chunks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "base/base.h"
#include "dm.h"

static void slots_are_zeroed_and_reused(void **state) {
  (void)state;
  dm__slab s;
  assert_int_equal(dm__slab_init(&s, 20, 4096), 0);
  assert_int_equal(s.size, 24);
  char *a = dm__slab_alloc(&s), *b = dm__slab_alloc(&s);
  assert_non_null(a);
  assert_true(b == a + 24);
  memset(a, 0xff, 24);
  dm__slab_free(&s, a);
  char *c = dm__slab_alloc(&s);
  assert_ptr_equal(c, a);
  for (int i = 0; i < 24; i++)
    assert_int_equal(c[i], 0);
  assert_int_equal(s.live, 2);
  dm__slab_destroy(&s);
}

static void many_chunks(void **state) {
  (void)state;
  dm__slab s;
  enum { N = 100000 };
  void **p = malloc(N * sizeof *p);
  assert_int_equal(dm__slab_init(&s, 120, 1 << 16), 0);
  for (int i = 0; i < N; i++) {
    p[i] = dm__slab_alloc(&s);
    assert_non_null(p[i]);
    memcpy(p[i], &i, sizeof i);
  }
  for (int i = 0; i < N; i++)
    assert_memory_equal(p[i], &i, sizeof i);
  for (int i = 0; i < N; i += 2)
    dm__slab_free(&s, p[i]);
  assert_int_equal(s.live, N / 2);
  size_t chunks = s.nchunks;
  for (int i = 0; i < N / 2; i++)
    assert_non_null(dm__slab_alloc(&s));
  assert_int_equal(s.nchunks, chunks); /* freed slots were reused */
  free(p);
  dm__slab_destroy(&s);
}

static void out_of_memory_is_null(void **state) {
  (void)state;
  dm__slab s;
  assert_int_equal(dm__slab_init(&s, 8, 64), 0);
  dm__alloc_fail_after(0);
  assert_null(dm__slab_alloc(&s));
  dm__alloc_fail_after(-1);
  assert_non_null(dm__slab_alloc(&s));
  dm__slab_destroy(&s);
  assert_int_equal(dm__slab_init(&s, 0, 64), DM_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(slots_are_zeroed_and_reused),
      cmocka_unit_test(many_chunks),
      cmocka_unit_test(out_of_memory_is_null),
  };
  return cmocka_run_group_tests_name("slab", tests, NULL, NULL);
}
