/* Cells: short terms in the cell's own word, longer ones in shared blobs,
 * nil as the empty cell, and the old term kept when memory runs out. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "dm.h"
#include "term/term.h"

static void the_empty_cell_is_nil(void **state) {
  (void)state;
  dm__cell c = DM__CELL_NIL;
  assert_true(dm__cell_is_nil(&c));
  assert_null(dm__cell_blob(&c));
  assert_int_equal(dm__cell_size(&c), DM__ALEN(DM__A_NIL));
  assert_memory_equal(dm__cell_data(&c), DM__A_NIL, DM__ALEN(DM__A_NIL));
  dm__cell_clear(&c);
  assert_true(dm__cell_is_nil(&c));
}

/* A small integer (2 bytes) and INTEGER_EXT (5) need no allocation. */
static void short_terms_are_inline(void **state) {
  (void)state;
  static const char small[] = "\x61\x05", big[] = "\x62\x7f\xff\xff\xff";
  dm__cell c = DM__CELL_NIL;
  assert_int_equal(dm__cell_set(&c, small, 2), 0);
  assert_true(dm__cell_is_inline(&c));
  assert_false(dm__cell_is_nil(&c));
  assert_null(dm__cell_blob(&c));
  assert_int_equal(dm__cell_size(&c), 2);
  assert_memory_equal(dm__cell_data(&c), small, 2);
  /* Inline terms ask nothing of the allocator. */
  dm__alloc_fail_after(0);
  assert_int_equal(dm__cell_set(&c, big, 5), 0);
  dm__alloc_fail_after(-1);
  assert_int_equal(dm__cell_size(&c), 5);
  assert_memory_equal(dm__cell_data(&c), big, 5);
  /* The longest inline term, and an empty one. */
  char longest[DM__CELL_INLINE];
  memset(longest, 'x', sizeof longest);
  assert_int_equal(dm__cell_set(&c, longest, sizeof longest), 0);
  assert_true(dm__cell_is_inline(&c));
  assert_memory_equal(dm__cell_data(&c), longest, sizeof longest);
  assert_int_equal(dm__cell_set(&c, "", 0), 0);
  assert_true(dm__cell_is_inline(&c));
  assert_false(dm__cell_is_nil(&c));
  assert_int_equal(dm__cell_size(&c), 0);
  dm__cell_clear(&c);
}

static void longer_terms_are_shared_blobs(void **state) {
  (void)state;
  char t[DM__CELL_INLINE + 1];
  memset(t, 'y', sizeof t);
  dm__cell a = DM__CELL_NIL, b = DM__CELL_NIL;
  assert_int_equal(dm__cell_set(&a, t, sizeof t), 0);
  assert_false(dm__cell_is_inline(&a));
  assert_non_null(dm__cell_blob(&a));
  assert_int_equal(dm__blob_refs(dm__cell_blob(&a)), 1);
  dm__cell_copy(&b, &a);
  assert_ptr_equal(dm__cell_blob(&b), dm__cell_blob(&a));
  assert_int_equal(dm__blob_refs(dm__cell_blob(&a)), 2);
  dm__cell_copy(&b, &b); /* onto itself: nothing changes */
  assert_int_equal(dm__blob_refs(dm__cell_blob(&a)), 2);
  /* Setting a short term drops this cell's reference to the blob. */
  assert_int_equal(dm__cell_set(&b, "\x61\x01", 2), 0);
  assert_int_equal(dm__blob_refs(dm__cell_blob(&a)), 1);
  /* An inline copy is a copy of the word. */
  dm__cell_copy(&a, &b);
  assert_true(dm__cell_is_inline(&a));
  assert_memory_equal(dm__cell_data(&a), "\x61\x01", 2);
  dm__cell_clear(&a);
  dm__cell_clear(&b);
}

static void out_of_memory_keeps_the_old_term(void **state) {
  (void)state;
  char t[64];
  memset(t, 'z', sizeof t);
  dm__cell c = DM__CELL_NIL;
  assert_int_equal(dm__cell_set(&c, "\x61\x07", 2), 0);
  dm__alloc_fail_after(0);
  assert_int_equal(dm__cell_set(&c, t, sizeof t), DM_ENOMEM);
  dm__alloc_fail_after(-1);
  assert_memory_equal(dm__cell_data(&c), "\x61\x07", 2);
  assert_int_equal(dm__cell_set(&c, t, sizeof t), 0);
  dm__alloc_fail_after(0);
  assert_int_equal(dm__cell_set(&c, t, 40), DM_ENOMEM);
  dm__alloc_fail_after(-1);
  assert_int_equal(dm__cell_size(&c), sizeof t);
  dm__cell_clear(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(the_empty_cell_is_nil),
      cmocka_unit_test(short_terms_are_inline),
      cmocka_unit_test(longer_terms_are_shared_blobs),
      cmocka_unit_test(out_of_memory_keeps_the_old_term),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
