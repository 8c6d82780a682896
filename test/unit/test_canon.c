/* Canonical ids: every encoding of one term gives the same bytes, different
 * terms give different bytes, and hostile input is refused. */
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
#include "dm.h"

/* Canonical bytes of a raw term; asserts success. */
static dm__buf canon_of(const char *b, size_t len) {
  dm__buf out = DM__BUF_INIT;
  assert_int_equal(dm__canon(b, len, &out), 0);
  return out;
}

static void assert_same(const char *a, size_t al, const char *b, size_t bl) {
  dm__buf x = canon_of(a, al), y = canon_of(b, bl);
  assert_int_equal(x.len, y.len);
  assert_memory_equal(x.data, y.data, x.len);
  dm__buf_free(&x);
  dm__buf_free(&y);
}

static void assert_differ(const char *a, size_t al, const char *b, size_t bl) {
  dm__buf x = canon_of(a, al), y = canon_of(b, bl);
  assert_false(x.len == y.len && memcmp(x.data, y.data, x.len) == 0);
  dm__buf_free(&x);
  dm__buf_free(&y);
}

#define SAME(a, b) assert_same(a, sizeof(a) - 1, b, sizeof(b) - 1)
#define DIFFER(a, b) assert_differ(a, sizeof(a) - 1, b, sizeof(b) - 1)

static void atoms_in_every_encoding_agree(void **state) {
  (void)state;
  SAME("\x64\x00\x03" "foo", "\x77\x03" "foo");     /* ATOM_EXT vs SMALL_ATOM_UTF8 */
  SAME("\x73\x03" "foo", "\x76\x00\x03" "foo");     /* SMALL_ATOM vs ATOM_UTF8 */
  SAME("\x73\x02" "\xe9t", "\x77\x03" "\xc3\xa9t"); /* latin-1 é vs UTF-8 */
}

static void integers_in_every_encoding_agree(void **state) {
  (void)state;
  SAME("\x61\x05", "\x62\x00\x00\x00\x05");
  SAME("\x61\x05", "\x6e\x01\x00\x05");
  SAME("\x61\x05", "\x6e\x04\x00\x05\x00\x00\x00");      /* padded bignum */
  SAME("\x62\xff\xff\xff\xfb", "\x6e\x01\x01\x05");      /* -5 */
  SAME("\x6e\x04\x00\x00\x00\x00\x80", "\x6f\x00\x00\x00\x05\x00\x00\x00\x00\x80\x00");
  DIFFER("\x62\x7f\xff\xff\xff", "\x6e\x04\x00\x00\x00\x00\x80"); /* 2^31-1 vs 2^31 */
  SAME("\x61\x00", "\x6e\x01\x01\x00");                  /* -0 bignum is 0 */
}

static void strings_and_lists_agree(void **state) {
  (void)state;
  SAME("\x6b\x00\x02" "ab", "\x6c\x00\x00\x00\x02\x61\x61\x61\x62\x6a");
  /* [1 | [2]] written as nested LIST_EXT is [1, 2]. */
  SAME("\x6c\x00\x00\x00\x01\x61\x01\x6c\x00\x00\x00\x01\x61\x02\x6a",
       "\x6c\x00\x00\x00\x02\x61\x01\x61\x02\x6a");
  /* A string is a whole list: what follows it is not part of it. */
  SAME("\x68\x02\x6b\x00\x01" "a\x61\x07", "\x68\x02\x6c\x00\x00\x00\x01\x61\x61\x6a\x61\x07");
  SAME("\x6c\x00\x00\x00\x00\x6a", "\x6a"); /* empty LIST_EXT is [] */
}

static void pids_refs_and_floats_agree(void **state) {
  (void)state;
  /* PID_EXT (creation 1 byte) vs NEW_PID_EXT (creation 4 bytes) */
  SAME("\x67\x77\x03" "n@h" "\x00\x00\x00\x07\x00\x00\x00\x00\x02",
       "\x58\x77\x03" "n@h" "\x00\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00\x02");
  /* NEW_REFERENCE_EXT vs NEWER_REFERENCE_EXT */
  SAME("\x72\x00\x01\x77\x03" "n@h" "\x02\x00\x00\x00\x09",
       "\x5a\x00\x01\x77\x03" "n@h" "\x00\x00\x00\x02\x00\x00\x00\x09");
  /* FLOAT_EXT "1.50000000000000000000e+00" vs NEW_FLOAT_EXT 1.5 */
  char old[32] = "\x63" "1.50000000000000000000e+00";
  assert_same(old, 32, "\x46\x3f\xf8\x00\x00\x00\x00\x00\x00", 9);
}

static void maps_agree_whatever_the_key_order(void **state) {
  (void)state;
  SAME("\x74\x00\x00\x00\x02\x77\x01" "a\x61\x01\x77\x01" "b\x61\x02",
       "\x74\x00\x00\x00\x02\x77\x01" "b\x61\x02\x77\x01" "a\x61\x01");
  /* Duplicate keys once canonical are refused. */
  dm__buf out = DM__BUF_INIT;
  const char dup[] = "\x74\x00\x00\x00\x02\x77\x01" "a\x61\x01\x64\x00\x01" "a\x61\x02";
  assert_int_equal(dm__canon(dup, sizeof dup - 1, &out), DM_EBADTERM);
  assert_int_equal(out.len, 0);
  dm__buf_free(&out);
}

static void different_terms_differ(void **state) {
  (void)state;
  DIFFER("\x61\x01", "\x46\x3f\xf0\x00\x00\x00\x00\x00\x00"); /* 1 vs 1.0 */
  DIFFER("\x6d\x00\x00\x00\x01" "a", "\x6b\x00\x01" "a");    /* <<"a">> vs "a" */
  DIFFER("\x6a", "\x6d\x00\x00\x00\x00");                     /* [] vs <<>> */
  DIFFER("\x77\x01" "a", "\x6d\x00\x00\x00\x01" "a");
}

static void canonical_output_is_a_valid_fixed_point(void **state) {
  (void)state;
  const char t[] = "\x68\x03\x6b\x00\x02" "ab\x74\x00\x00\x00\x01\x64\x00\x01" "k\x62\x00\x00\x00\x09"
                   "\x6e\x01\x00\x05";
  dm__buf a = canon_of(t, sizeof t - 1);
  size_t i = 0;
  assert_int_equal(dm__term_skip(a.data, a.len, &i), 0);
  assert_int_equal(i, a.len);
  dm__buf b = canon_of(a.data, a.len);
  assert_int_equal(a.len, b.len);
  assert_memory_equal(a.data, b.data, a.len);
  dm__buf_free(&a);
  dm__buf_free(&b);
}

static void hostile_input_is_refused(void **state) {
  (void)state;
  dm__buf out = DM__BUF_INIT;
  assert_int_equal(dm__canon("\x61", 1, &out), DM_EBADTERM);       /* truncated */
  assert_int_equal(dm__canon("\x61\x01\x61", 3, &out), DM_EBADTERM); /* trailing */
  assert_int_equal(dm__canon("\x2a", 1, &out), DM_EBADTERM);       /* unknown tag */
  /* Nesting past the cap, up to a million levels, is refused at once. */
  size_t depth = 1000000, k = 0;
  char *deep = malloc(depth * 6 + 1);
  for (size_t d = 0; d < depth; d++) {
    memcpy(deep + k, "\x6c\x00\x00\x00\x01", 5);
    k += 5;
  }
  deep[k++] = 0x6a;
  for (size_t d = 0; d < depth; d++)
    deep[k++] = 0x6a;
  assert_int_equal(dm__canon(deep, k, &out), DM_EBADTERM);
  /* ... while DM__CANON_MAX_DEPTH levels are fine. */
  k = 0;
  for (size_t d = 0; d < DM__CANON_MAX_DEPTH; d++) {
    memcpy(deep + k, "\x68\x01", 2);
    k += 2;
  }
  deep[k++] = 0x6a;
  assert_int_equal(dm__canon(deep, k, &out), 0);
  free(deep);
  dm__buf_free(&out);
}

static void allocation_failure_is_an_error(void **state) {
  (void)state;
  dm__buf out = DM__BUF_INIT;
  const char m[] = "\x74\x00\x00\x00\x02\x77\x01" "a\x61\x01\x77\x01" "b\x61\x02";
  for (long n = 0; n < 4; n++) {
    dm__alloc_fail_after(n);
    int r = dm__canon(m, sizeof m - 1, &out);
    dm__alloc_fail_after(-1);
    assert_true(r == DM_ENOMEM || r == 0);
    if (r)
      assert_int_equal(out.len, 0);
    out.len = 0;
  }
  dm__buf_free(&out);
}

static void hash_is_seeded_and_spreads(void **state) {
  (void)state;
  assert_true(dm__hash("abc", 3, 1) != dm__hash("abc", 3, 2));
  assert_true(dm__hash("abc", 3, 1) == dm__hash("abc", 3, 1));
  enum { N = 100000, B = 1 << 17 };
  unsigned short *load = calloc(B, sizeof *load);
  unsigned maxload = 0;
  for (int k = 1; k <= N; k++) {
    char id[16];
    int n = snprintf(id, sizeof id, "c%d", k);
    unsigned b = (unsigned)(dm__hash(id, (size_t)n, 42) & (B - 1));
    if (++load[b] > maxload)
      maxload = load[b];
  }
  assert_true(maxload <= 10);
  free(load);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(atoms_in_every_encoding_agree),
      cmocka_unit_test(integers_in_every_encoding_agree),
      cmocka_unit_test(strings_and_lists_agree),
      cmocka_unit_test(pids_refs_and_floats_agree),
      cmocka_unit_test(maps_agree_whatever_the_key_order),
      cmocka_unit_test(different_terms_differ),
      cmocka_unit_test(canonical_output_is_a_valid_fixed_point),
      cmocka_unit_test(hostile_input_is_refused),
      cmocka_unit_test(allocation_failure_is_an_error),
      cmocka_unit_test(hash_is_seeded_and_spreads),
  };
  return cmocka_run_group_tests_name("canon", tests, NULL, NULL);
}
