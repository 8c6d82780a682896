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

/* A slot of the shrink tests: live while tag is non-zero; tag 2 refuses
 * to move (its address is held). */
typedef struct {
  void *link;
  int tag;
  int value;
} obj;

static int obj_live(const void *slot, void *ud) {
  (void)ud;
  return ((const obj *)slot)->tag != 0;
}

static int obj_move(void *from, void *to, void *ud) {
  obj *a = from;
  if (a->tag == 2)
    return 1;
  memcpy(to, from, sizeof *a);
  a->tag = 0;
  (*(int *)ud)++;
  return 0;
}

/* 90% of 100k slots freed at random: the survivors move into the first
 * chunks, keep their values, and the other chunks go. Allocation goes on
 * from the free slots left. */
static void shrink_moves_survivors_and_frees_chunks(void **state) {
  (void)state;
  dm__slab s;
  enum { N = 100000 };
  obj **p = malloc(N * sizeof *p);
  assert_int_equal(dm__slab_init(&s, sizeof(obj), 1 << 16), 0);
  for (int i = 0; i < N; i++) {
    p[i] = dm__slab_alloc(&s);
    p[i]->tag = 1;
    p[i]->value = i;
  }
  size_t before = s.nchunks;
  int moved = 0;
  /* Nothing to give back while more than a quarter is in use. */
  assert_int_equal(dm__slab_shrink(&s, obj_live, obj_move, &moved), 0);
  srand(7);
  char *gone = calloc(N, 1);
  for (int left = N; left > N / 10;) {
    int i = rand() % N;
    if (gone[i])
      continue;
    gone[i] = 1;
    p[i]->tag = 0;
    dm__slab_free(&s, p[i]);
    left--;
  }
  size_t freed = dm__slab_shrink(&s, obj_live, obj_move, &moved);
  assert_true(freed > 0);
  assert_int_equal(s.nchunks, before - freed);
  assert_true(s.nchunks <= (N / 10) / s.per_chunk + 1);
  assert_true(moved > 0);
  /* Every survivor is still there once, with its value. */
  char *seen = calloc(N, 1);
  size_t n, count = 0;
  char *base;
  for (size_t k = 0; (base = dm__slab_chunk(&s, k, &n)); k++)
    for (size_t i = 0; i < n; i++) {
      obj *o = (obj *)(base + i * s.size);
      if (!o->tag)
        continue;
      assert_false(gone[o->value]);
      assert_false(seen[o->value]);
      seen[o->value] = 1;
      count++;
    }
  assert_int_equal(count, N / 10);
  assert_int_equal(s.live, N / 10);
  /* The kept chunks' free slots serve the next allocations. */
  for (int i = 0; i < 1000; i++)
    assert_non_null(dm__slab_alloc(&s));
  assert_int_equal(s.nchunks, before - freed);
  free(seen);
  free(gone);
  free(p);
  dm__slab_destroy(&s);
}

/* A slot that refuses to move keeps its chunk, which takes no new slots
 * (its never-used tail is zeroed for walks); the next shrink looks though
 * the slab is no longer sparse, and frees the chunk once the slot moves. */
static void a_slot_that_stays_keeps_its_chunk_until_it_moves(void **state) {
  (void)state;
  dm__slab s;
  assert_int_equal(dm__slab_init(&s, sizeof(obj), 64 * sizeof(obj)), 0);
  enum { N = 64 * 8 + 10 };
  obj *p[N];
  for (int i = 0; i < N; i++) {
    p[i] = dm__slab_alloc(&s);
    p[i]->tag = 1;
    p[i]->value = i;
  }
  for (int i = 1; i < N; i++)
    if (i != N - 1) {
      p[i]->tag = 0;
      dm__slab_free(&s, p[i]);
    }
  p[N - 1]->tag = 2; /* in the newest chunk, held */
  int moved = 0;
  assert_int_equal(dm__slab_shrink(&s, obj_live, obj_move, &moved), 7);
  assert_int_equal(s.nchunks, 2);
  assert_int_equal(moved, 0);
  assert_int_equal(p[0]->tag, 1);
  assert_int_equal(p[N - 1]->tag, 2);
  /* The first chunk's free slots serve allocations; the held chunk's do
   * not: past them a new chunk comes. */
  obj *q[64];
  for (int i = 0; i < 63; i++) {
    q[i] = dm__slab_alloc(&s);
    assert_non_null(q[i]);
    assert_true((char *)q[i] >= s.chunks[0] && (char *)q[i] < s.chunks[0] + 64 * sizeof(obj));
    q[i]->tag = 1;
  }
  /* Two chunks half full: not sparse by count, but the held chunk makes
   * the next shrink look. */
  assert_true(s.unsettled);
  assert_true(dm__slab_sparse(&s));
  for (int i = 0; i < 63; i++) {
    q[i]->tag = 0;
    dm__slab_free(&s, q[i]);
  }
  /* The slot lets go: the next shrink moves it and frees its chunk. */
  p[N - 1]->tag = 1;
  assert_int_equal(dm__slab_shrink(&s, obj_live, obj_move, &moved), 1);
  assert_int_equal(s.nchunks, 1);
  assert_int_equal(moved, 1);
  assert_false(s.unsettled);
  dm__slab_destroy(&s);
}

/* Every slot's place is its chunk's place times per_chunk, plus its own
 * in the chunk, before a shrink and after it moved chunks; a pointer that
 * is no slot has none. */
static void a_slot_knows_its_place_in_memory_order(void **state) {
  (void)state;
  dm__slab s;
  assert_int_equal(dm__slab_init(&s, sizeof(obj), 16 * sizeof(obj)), 0);
  enum { N = 16 * 20 };
  obj *p[N];
  for (int i = 0; i < N; i++) {
    p[i] = dm__slab_alloc(&s);
    p[i]->tag = 1;
    p[i]->value = i;
    assert_int_equal(dm__slab_place(&s, p[i]), (size_t)i);
  }
  int outside = 0;
  assert_int_equal(dm__slab_place(&s, &outside), SIZE_MAX);
  assert_int_equal(dm__slab_place(&s, (char *)p[3] + 1), SIZE_MAX);
  /* All of chunks 0..7 go, and all but one slot of each chunk after: the
   * survivors move into the first chunks, the others are freed. */
  for (int i = 0; i < N; i++)
    if (i % 16 != 0 || i < 16 * 8) {
      p[i]->tag = 0;
      dm__slab_free(&s, p[i]);
    }
  int moved = 0;
  assert_true(dm__slab_shrink(&s, obj_live, obj_move, &moved) > 0);
  size_t n, seen = 0;
  char *base;
  for (size_t k = 0; (base = dm__slab_chunk(&s, k, &n)); k++)
    for (size_t i = 0; i < n; i++) {
      obj *o = (obj *)(base + i * s.size);
      assert_int_equal(dm__slab_place(&s, o), k * s.per_chunk + i);
      seen += o->tag == 1;
    }
  assert_int_equal(seen, 12);
  /* New chunks, wherever malloc puts them, are found too. */
  for (int i = 0; i < 100; i++) {
    obj *o = dm__slab_alloc(&s);
    size_t at = dm__slab_place(&s, o);
    assert_int_not_equal(at, SIZE_MAX);
    assert_ptr_equal(s.chunks[at / s.per_chunk] + (at % s.per_chunk) * s.size, o);
  }
  dm__slab_destroy(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(slots_are_zeroed_and_reused),
      cmocka_unit_test(many_chunks),
      cmocka_unit_test(out_of_memory_is_null),
      cmocka_unit_test(shrink_moves_survivors_and_frees_chunks),
      cmocka_unit_test(a_slot_that_stays_keeps_its_chunk_until_it_moves),
      cmocka_unit_test(a_slot_knows_its_place_in_memory_order),
  };
  return cmocka_run_group_tests_name("slab", tests, NULL, NULL);
}
