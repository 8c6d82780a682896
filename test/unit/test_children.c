/* The children table: workers found by canonical id whatever encoding the
 * id came in, through growth and deletions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <ei.h>

#include "base/base.h"
#include "term/term.h"
#include "dm/mgr.h"

static dm__worker *worker_for(dm__manager *m, const char *id, size_t len) {
  dm__buf c = DM__BUF_INIT;
  assert_int_equal(dm__canon(id, len, &c), 0);
  dm__worker *w = calloc(1, sizeof *w);
  assert_int_equal(dm__worker_set_id(w, c.data, c.len), 0);
  w->hash = dm__id_hash(m, c.data, c.len);
  dm__buf_free(&c);
  return w;
}

static dm__worker *lookup(dm__manager *m, const char *id, size_t len) {
  dm__buf c = DM__BUF_INIT;
  assert_int_equal(dm__canon(id, len, &c), 0);
  dm__worker *w = dm__children_get(m, c.data, c.len, dm__id_hash(m, c.data, c.len));
  dm__buf_free(&c);
  return w;
}

static void drop(dm__worker *w) {
  dm__worker_release_id(w);
  free(w);
}

static void ids_are_found_in_any_encoding(void **state) {
  (void)state;
  dm__manager m = {.seed = 7};
  /* The atom foo, inserted as ATOM_EXT, found as SMALL_ATOM_UTF8_EXT. */
  dm__worker *w = worker_for(&m, "\x64\x00\x03" "foo", 6);
  assert_int_equal(dm__children_put(&m, w), 0);
  assert_ptr_equal(lookup(&m, "\x77\x03" "foo", 5), w);
  /* "ab" as STRING_EXT, found as a list of small integers. */
  dm__worker *s = worker_for(&m, "\x6b\x00\x02" "ab", 5);
  assert_int_equal(dm__children_put(&m, s), 0);
  assert_ptr_equal(lookup(&m, "\x6c\x00\x00\x00\x02\x61\x61\x61\x62\x6a", 10), s);
  /* 1 and 1.0 are not the same id. */
  dm__worker *one = worker_for(&m, "\x61\x01", 2);
  assert_int_equal(dm__children_put(&m, one), 0);
  assert_null(lookup(&m, "\x46\x3f\xf0\x00\x00\x00\x00\x00\x00", 9));
  assert_ptr_equal(lookup(&m, "\x62\x00\x00\x00\x01", 5), one);
  assert_int_equal(m.count, 3);
  dm__children_del(&m, s);
  assert_null(lookup(&m, "\x6b\x00\x02" "ab", 5));
  assert_ptr_equal(lookup(&m, "\x77\x03" "foo", 5), w);
  drop(w);
  drop(s);
  drop(one);
  dm__free(m.slots);
}

/* Ids up to DM__ID_INLINE bytes live in the worker, longer ones in a blob:
 * both kinds are found, and neither matches the other's prefix. */
static void short_and_long_ids_are_both_found(void **state) {
  (void)state;
  dm__manager m = {.seed = 3};
  /* <<"0123456789">> is 15 bytes encoded: inline. */
  const char shrt[] = "\x6d\x00\x00\x00\x0a" "0123456789";
  /* <<"0123456789A">> is 16 bytes: a blob. */
  const char lng[] = "\x6d\x00\x00\x00\x0b" "0123456789A";
  dm__worker *a = worker_for(&m, shrt, sizeof shrt - 1);
  dm__worker *b = worker_for(&m, lng, sizeof lng - 1);
  assert_false(a->flags & DM__W_ID_BLOB);
  assert_true(b->flags & DM__W_ID_BLOB);
  assert_int_equal(dm__worker_id_len(a), sizeof shrt - 1);
  assert_memory_equal(dm__worker_id(b), lng, sizeof lng - 1);
  assert_int_equal(dm__children_put(&m, a), 0);
  assert_int_equal(dm__children_put(&m, b), 0);
  assert_ptr_equal(lookup(&m, shrt, sizeof shrt - 1), a);
  assert_ptr_equal(lookup(&m, lng, sizeof lng - 1), b);
  drop(a);
  drop(b);
  dm__free(m.slots);
}

static void survive_growth_and_deletes(int untagged) {
  dm__manager m = {.seed = 99, .untagged = untagged};
  enum { N = 50000 };
  dm__worker **ws = calloc(N, sizeof *ws);
  char id[32];
  for (int k = 0; k < N; k++) {
    int n = snprintf(id + 5, sizeof id - 5, "w%d", k);
    memcpy(id, "\x6d\x00\x00\x00", 4);
    id[4] = (char)n;
    ws[k] = worker_for(&m, id, (size_t)n + 5);
    assert_int_equal(dm__children_put(&m, ws[k]), 0);
  }
  /* Slots carry hash bits above the address unless tags are off; either
   * way dm__children_at gives back the bare address. */
  size_t tagged = 0;
  for (size_t i = 0; i < m.cap; i++) {
    if (m.slots[i] >> 48)
      tagged++;
    if (m.slots[i])
      assert_true((uintptr_t)dm__children_at(&m, i) >> 48 == 0);
  }
  if (untagged)
    assert_int_equal(tagged, 0);
  else
    assert_true(tagged > N / 2);
  for (int k = 0; k < N; k += 2)
    dm__children_del(&m, ws[k]);
  assert_int_equal(m.count, N / 2);
  for (int k = 0; k < N; k++) {
    int n = snprintf(id + 5, sizeof id - 5, "w%d", k);
    id[4] = (char)n;
    dm__worker *found = lookup(&m, id, (size_t)n + 5);
    if (k % 2)
      assert_ptr_equal(found, ws[k]);
    else
      assert_null(found);
  }
  for (int k = 0; k < N; k++)
    drop(ws[k]);
  free(ws);
  dm__free(m.slots);
}

static void many_ids_survive_growth_and_deletes(void **state) {
  (void)state;
  survive_growth_and_deletes(0);
}

static void a_table_without_tags_finds_the_same(void **state) {
  (void)state;
  survive_growth_and_deletes(1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(ids_are_found_in_any_encoding),
      cmocka_unit_test(short_and_long_ids_are_both_found),
      cmocka_unit_test(many_ids_survive_growth_and_deletes),
      cmocka_unit_test(a_table_without_tags_finds_the_same),
  };
  return cmocka_run_group_tests_name("children", tests, NULL, NULL);
}
