/* The children table: workers found by canonical id whatever encoding the
 * id came in, through growth and deletions, and by their pid key when
 * they moved in memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <ei.h>

#include "bare_node.h"
#include "term/term.h"
#include "dm/mgr.h"

/* Pid keys spread over all 28 bits, none 0: the table keeps its tag above
 * them. */
static uint32_t key_of(uint32_t k) {
  return ((k * 2654435761u) & DM__CHILD_KEY_MASK) | 1;
}

/* A worker for id (any encoding) under pid key `key`, in the pid table. */
static dm__worker *worker_for(dm__manager *m, const char *id, size_t len, uint32_t key) {
  dm__buf c = DM__BUF_INIT;
  assert_int_equal(dm__canon(id, len, &c), 0);
  dm__worker *w = calloc(1, sizeof *w);
  assert_int_equal(dm__worker_set_id(w, c.data, c.len), 0);
  w->proc.key = key;
  assert_int_equal(dm__proctab_put(&m->node->pids, &w->proc), 0);
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

static void drop(dm__manager *m, dm__worker *w) {
  dm__proctab_del(&m->node->pids, w->proc.key);
  dm__worker_release_id(w);
  free(w);
}

static void ids_are_found_in_any_encoding(void **state) {
  (void)state;
  bare_node b;
  bare_node_init(&b);
  dm__manager m = {.seed = 7, .node = &b.n};
  /* The atom foo, inserted as ATOM_EXT, found as SMALL_ATOM_UTF8_EXT. */
  dm__worker *w = worker_for(&m, "\x64\x00\x03" "foo", 6, key_of(1));
  assert_int_equal(dm__children_put(&m, w), 0);
  assert_ptr_equal(lookup(&m, "\x77\x03" "foo", 5), w);
  /* "ab" as STRING_EXT, found as a list of small integers. */
  dm__worker *s = worker_for(&m, "\x6b\x00\x02" "ab", 5, key_of(2));
  assert_int_equal(dm__children_put(&m, s), 0);
  assert_ptr_equal(lookup(&m, "\x6c\x00\x00\x00\x02\x61\x61\x61\x62\x6a", 10), s);
  /* 1 and 1.0 are not the same id. */
  dm__worker *one = worker_for(&m, "\x61\x01", 2, key_of(3));
  assert_int_equal(dm__children_put(&m, one), 0);
  assert_null(lookup(&m, "\x46\x3f\xf0\x00\x00\x00\x00\x00\x00", 9));
  assert_ptr_equal(lookup(&m, "\x62\x00\x00\x00\x01", 5), one);
  assert_int_equal(m.count, 3);
  dm__children_del(&m, s);
  assert_null(lookup(&m, "\x6b\x00\x02" "ab", 5));
  assert_ptr_equal(lookup(&m, "\x77\x03" "foo", 5), w);
  drop(&m, w);
  drop(&m, s);
  drop(&m, one);
  dm__free(m.slots);
  bare_node_free(&b);
}

/* Ids up to DM__ID_INLINE bytes live in the worker, longer ones in a blob:
 * both kinds are found, and neither matches the other's prefix. */
static void short_and_long_ids_are_both_found(void **state) {
  (void)state;
  bare_node b;
  bare_node_init(&b);
  dm__manager m = {.seed = 3, .node = &b.n};
  /* <<"0123456789">> is 15 bytes encoded: inline. */
  const char shrt[] = "\x6d\x00\x00\x00\x0a" "0123456789";
  /* <<"0123456789A">> is 16 bytes: a blob. */
  const char lng[] = "\x6d\x00\x00\x00\x0b" "0123456789A";
  dm__worker *a = worker_for(&m, shrt, sizeof shrt - 1, key_of(1));
  dm__worker *c = worker_for(&m, lng, sizeof lng - 1, key_of(2));
  assert_false(a->proc.flags & DM__W_ID_BLOB);
  assert_true(c->proc.flags & DM__W_ID_BLOB);
  assert_int_equal(dm__worker_id_len(a), sizeof shrt - 1);
  assert_memory_equal(dm__worker_id(c), lng, sizeof lng - 1);
  assert_int_equal(dm__children_put(&m, a), 0);
  assert_int_equal(dm__children_put(&m, c), 0);
  assert_ptr_equal(lookup(&m, shrt, sizeof shrt - 1), a);
  assert_ptr_equal(lookup(&m, lng, sizeof lng - 1), c);
  drop(&m, a);
  drop(&m, c);
  dm__free(m.slots);
  bare_node_free(&b);
}

static int binary_id(char *id, size_t cap, int k) {
  int n = snprintf(id + 5, cap - 5, "w%d", k);
  memcpy(id, "\x6d\x00\x00\x00", 4);
  id[4] = (char)n;
  return n + 5;
}

/* Slots are 4 bytes: a pid key with a tag above it. Every id is found
 * through growth and backward-shift deletes, whatever bits its key has. */
static void many_ids_survive_growth_and_deletes(void **state) {
  (void)state;
  bare_node b;
  bare_node_init(&b);
  dm__manager m = {.seed = 99, .node = &b.n};
  enum { N = 50000 };
  dm__worker **ws = calloc(N, sizeof *ws);
  char id[32];
  for (int k = 0; k < N; k++) {
    int n = binary_id(id, sizeof id, k);
    ws[k] = worker_for(&m, id, (size_t)n, key_of((uint32_t)k));
    assert_int_equal(dm__children_put(&m, ws[k]), 0);
  }
  assert_int_equal(sizeof m.slots[0], 4);
  size_t tagged = 0;
  for (size_t i = 0; i < m.cap; i++) {
    if (m.slots[i] & ~DM__CHILD_KEY_MASK)
      tagged++;
    if (m.slots[i])
      assert_int_equal(dm__children_at(&m, i)->proc.key, m.slots[i] & DM__CHILD_KEY_MASK);
    /* A walk, which fetches ahead, sees the same. */
    assert_ptr_equal(dm__children_walk(&m, i), dm__children_at(&m, i));
  }
  assert_true(tagged > N / 2);
  for (int k = 0; k < N; k += 2)
    dm__children_del(&m, ws[k]);
  assert_int_equal(m.count, N / 2);
  for (int k = 0; k < N; k++) {
    int n = binary_id(id, sizeof id, k);
    dm__worker *found = lookup(&m, id, (size_t)n);
    if (k % 2)
      assert_ptr_equal(found, ws[k]);
    else
      assert_null(found);
  }
  for (int k = 0; k < N; k++)
    drop(&m, ws[k]);
  free(ws);
  dm__free(m.slots);
  bare_node_free(&b);
}

/* A worker copied to another place (compaction) is found there by id
 * once the pid table is told: the children table has nothing to change. */
static void a_moved_worker_is_found_by_id_at_its_new_place(void **state) {
  (void)state;
  bare_node b;
  bare_node_init(&b);
  dm__manager m = {.seed = 5, .node = &b.n};
  char id[32];
  dm__worker *ws[100];
  for (int k = 0; k < 100; k++) {
    int n = binary_id(id, sizeof id, k);
    ws[k] = worker_for(&m, id, (size_t)n, key_of((uint32_t)k + 1));
    assert_int_equal(dm__children_put(&m, ws[k]), 0);
  }
  uint32_t *before = malloc(m.cap * sizeof *before);
  memcpy(before, m.slots, m.cap * sizeof *before);
  dm__worker *to = calloc(1, sizeof *to);
  memcpy(to, ws[42], sizeof *to);
  assert_int_equal(dm__proctab_moved(&b.n.pids, &to->proc), 0);
  memset(ws[42], 0, sizeof *ws[42]);
  free(ws[42]);
  ws[42] = to;
  assert_memory_equal(m.slots, before, m.cap * sizeof *before);
  int n = binary_id(id, sizeof id, 42);
  assert_ptr_equal(lookup(&m, id, (size_t)n), to);
  dm__children_del(&m, to);
  assert_null(lookup(&m, id, (size_t)n));
  for (int k = 0; k < 100; k++)
    drop(&m, ws[k]);
  free(before);
  dm__free(m.slots);
  bare_node_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(ids_are_found_in_any_encoding),
      cmocka_unit_test(short_and_long_ids_are_both_found),
      cmocka_unit_test(many_ids_survive_growth_and_deletes),
      cmocka_unit_test(a_moved_worker_is_found_by_id_at_its_new_place),
  };
  return cmocka_run_group_tests_name("children", tests, NULL, NULL);
}
