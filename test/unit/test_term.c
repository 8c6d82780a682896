/* The bounded term walker: every well-formed term is walked to its end,
 * every truncation is refused, and nesting costs no stack. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <ei.h>

#include "dm.h"
#include "term/term.h"

/* Checks that the whole term walks, and that every prefix is refused. */
static void walks_exactly(const ei_x_buff *x) {
  size_t i = 0;
  assert_int_equal(dm__term_skip_versioned(x->buff, (size_t)x->index, &i), 0);
  assert_int_equal(i, (size_t)x->index);
  for (size_t cut = 0; cut < (size_t)x->index; cut++) {
    size_t j = 0;
    assert_int_equal(dm__term_skip_versioned(x->buff, cut, &j), DM_EBADTERM);
    assert_int_equal(j, 0);
  }
}

static void every_kind_of_term_walks(void **state) {
  (void)state;
  ei_x_buff x;
  erlang_pid pid = {.node = "n@h", .num = 1, .serial = 2, .creation = 3};
  erlang_ref ref = {.node = "n@h", .len = 3, .n = {1, 2, 3}, .creation = 9};
  erlang_port port = {.node = "n@h", .id = 7, .creation = 3};
  ei_x_new_with_version(&x);
  ei_x_encode_tuple_header(&x, 12);
  ei_x_encode_long(&x, 5);
  ei_x_encode_long(&x, 100000);
  ei_x_encode_longlong(&x, 1LL << 62);
  ei_x_encode_double(&x, 1.5);
  ei_x_encode_atom(&x, "atom");
  ei_x_encode_binary(&x, "bin", 3);
  ei_x_encode_string(&x, "str");
  ei_x_encode_pid(&x, &pid);
  ei_x_encode_ref(&x, &ref);
  ei_x_encode_port(&x, &port);
  ei_x_encode_map_header(&x, 1);
  ei_x_encode_atom(&x, "k");
  ei_x_encode_list_header(&x, 2);
  ei_x_encode_long(&x, 1);
  ei_x_encode_long(&x, 2);
  ei_x_encode_empty_list(&x);
  ei_x_encode_bitstring(&x, "\xff\x80", 0, 9);
  walks_exactly(&x);
  ei_x_free(&x);
}

static void improper_list_walks(void **state) {
  (void)state;
  ei_x_buff x;
  ei_x_new_with_version(&x);
  ei_x_encode_list_header(&x, 1);
  ei_x_encode_atom(&x, "alias");
  ei_x_encode_long(&x, 7); /* tail */
  walks_exactly(&x);
  ei_x_free(&x);
}

static void deep_nesting_needs_no_stack(void **state) {
  (void)state;
  /* A million nested one-element lists: [[[...]]] */
  const size_t depth = 1000000;
  size_t len = 1 + depth * 5 + 1 + depth;
  char *b = malloc(len);
  size_t k = 0;
  b[k++] = (char)131;
  for (size_t d = 0; d < depth; d++) {
    b[k++] = 108;
    b[k++] = 0, b[k++] = 0, b[k++] = 0, b[k++] = 1;
  }
  b[k++] = 106;
  for (size_t d = 0; d < depth; d++)
    b[k++] = 106; /* each list's tail */
  size_t i = 0;
  assert_int_equal(dm__term_skip_versioned(b, k, &i), 0);
  assert_int_equal(i, k);
  i = 0;
  assert_int_equal(dm__term_skip_versioned(b, k - 1, &i), DM_EBADTERM);
  free(b);
}

static void huge_counts_are_refused_without_work(void **state) {
  (void)state;
  /* Arity far beyond the bytes present. */
  const char tuple[] = {(char)131, 105, (char)0xff, (char)0xff, (char)0xff, (char)0xff, 106};
  const char list[] = {(char)131, 108, (char)0x7f, (char)0xff, (char)0xff, (char)0xff, 106};
  const char map[] = {(char)131, 116, 0, 0, 0, 2, 106, 106, 106};
  const char bin[] = {(char)131, 109, 0, 0, 0, 9, 'a'};
  const char atom[] = {(char)131, 118, 0, 9, 'a'};
  const char *cases[] = {tuple, list, map, bin, atom};
  size_t lens[] = {sizeof tuple, sizeof list, sizeof map, sizeof bin, sizeof atom};
  for (size_t c = 0; c < 5; c++) {
    size_t i = 0;
    assert_int_equal(dm__term_skip_versioned(cases[c], lens[c], &i), DM_EBADTERM);
  }
}

static void unknown_tags_and_missing_version_are_refused(void **state) {
  (void)state;
  const char unknown[] = {(char)131, 42};
  const char compressed[] = {(char)131, 80, 0, 0, 0, 1, 0};
  const char noversion[] = {97, 1};
  const char badbits[] = {(char)131, 77, 0, 0, 0, 1, 9, 0};
  size_t i = 0;
  assert_int_equal(dm__term_skip_versioned(unknown, 2, &i), DM_EBADTERM);
  assert_int_equal(dm__term_skip_versioned(compressed, 7, &i), DM_EBADTERM);
  assert_int_equal(dm__term_skip_versioned(noversion, 2, &i), DM_EBADTERM);
  assert_int_equal(dm__term_skip_versioned(badbits, 8, &i), DM_EBADTERM);
  assert_int_equal(dm__term_skip_versioned(noversion, 0, &i), DM_EBADTERM);
}

static void random_bytes_never_walk_out_of_bounds(void **state) {
  (void)state;
  /* Run under valgrind or ASan, this proves no read past `len`. */
  srand(1234);
  for (int round = 0; round < 20000; round++) {
    size_t len = (size_t)(rand() % 64);
    char *b = malloc(len ? len : 1);
    for (size_t k = 0; k < len; k++)
      b[k] = (char)(rand() % 4 == 0 ? 131 : 97 + rand() % 24);
    size_t i = 0;
    int r = dm__term_skip_versioned(b, len, &i);
    assert_true(r == 0 || r == DM_EBADTERM);
    assert_true(i <= len);
    free(b);
  }
}

static void atom_check_is_bounded(void **state) {
  (void)state;
  const char a[] = {119, 4, 'i', 'n', 'f', 'o'};
  assert_true(dm__term_is_atom(a, sizeof a, "info"));
  assert_false(dm__term_is_atom(a, sizeof a - 1, "info"));
  assert_false(dm__term_is_atom(a, sizeof a, "inf"));
  assert_false(dm__term_is_atom(a, 1, "info"));
  const char b[] = {100, 0, 4, 'i', 'n', 'f', 'o'};
  assert_true(dm__term_is_atom(b, sizeof b, "info"));
  const char c[] = {109, 0, 0, 0, 4, 'i', 'n', 'f', 'o'};
  assert_false(dm__term_is_atom(c, sizeof c, "info"));
}

static void depth_is_bounded_without_recursion(void **state) {
  (void)state;
  /* [[[...]]] nested d deep */
  for (size_t d = 1; d <= 20001; d += 10000) {
    size_t k = 0;
    char *b = malloc(d * 6 + 1);
    for (size_t i = 0; i < d; i++) {
      memcpy(b + k, "\x6c\x00\x00\x00\x01", 5);
      k += 5;
    }
    b[k++] = 106;
    for (size_t i = 0; i < d; i++)
      b[k++] = 106;
    assert_int_equal(dm__term_depth_ok(b, k, 10000), d <= 10000);
    free(b);
  }
  /* Wide is not deep: a 100k-element list of tuples. */
  ei_x_buff x;
  ei_x_new(&x);
  ei_x_encode_list_header(&x, 100000);
  for (int i = 0; i < 100000; i++) {
    ei_x_encode_tuple_header(&x, 1);
    ei_x_encode_long(&x, i);
  }
  ei_x_encode_empty_list(&x);
  assert_true(dm__term_depth_ok(x.buff, (size_t)x.index, 3));
  assert_false(dm__term_depth_ok(x.buff, (size_t)x.index, 1));
  ei_x_free(&x);
  assert_false(dm__term_depth_ok("\x68\x02\x61", 3, 10)); /* truncated */
}

static void reserve_makes_room_once_and_keeps_the_bytes(void **state) {
  (void)state;
  ei_x_buff x;
  assert_int_equal(ei_x_new(&x), 0);
  assert_int_equal(ei_x_encode_atom(&x, "kept"), 0);
  int used = x.index;
  assert_int_equal(dm_x_reserve(&x, 1 << 20), 0);
  assert_true(x.buffsz >= used + (1 << 20));
  char *b = x.buff;
  /* Encoding within the reserve does not move the buffer. */
  for (int k = 0; k < 1000; k++)
    assert_int_equal(ei_x_encode_long(&x, k), 0);
  assert_ptr_equal(x.buff, b);
  int i = 0;
  char a[MAXATOMLEN_UTF8];
  assert_int_equal(ei_decode_atom(x.buff, &i, a), 0);
  assert_string_equal(a, "kept");
  /* Room already there: nothing changes. */
  assert_int_equal(dm_x_reserve(&x, 10), 0);
  assert_ptr_equal(x.buff, b);
  /* Past what an ei buffer can index: refused, the buffer intact. */
  assert_int_equal(dm_x_reserve(&x, SIZE_MAX), DM_ENOMEM);
  assert_ptr_equal(x.buff, b);
  ei_x_free(&x);
}

/* Printed as Erlang writes them, for log lines, and bounded. */
static const char *printed(const char *fmt, char *out, size_t cap) {
  ei_x_buff x;
  assert_int_equal(ei_x_new(&x), 0);
  assert_int_equal(ei_x_format_wo_ver(&x, fmt), 0);
  static char keep[4096];
  const char *r = dm__term_print(x.buff, (size_t)x.index, out, cap);
  snprintf(keep, sizeof keep, "%s", r);
  ei_x_free(&x);
  return keep;
}

static void terms_print_as_erlang_writes_them_and_bounded(void **state) {
  char out[64];
  (void)state;
  assert_string_equal(printed("{bad, thing}", out, sizeof out), "{bad, thing}");
  assert_string_equal(printed("[1, -2, ok]", out, sizeof out), "[1, -2, ok]");
  assert_string_equal(printed("\"abc\"", out, sizeof out), "\"abc\"");
  /* Binaries: printable as text, else as bytes. */
  const char bin_c1[] = "\x6d\x00\x00\x00\x02" "c1";
  assert_string_equal(dm__term_print(bin_c1, sizeof bin_c1 - 1, out, sizeof out), "<<\"c1\">>");
  const char bin_raw[] = "\x6d\x00\x00\x00\x02\x01\x02";
  assert_string_equal(dm__term_print(bin_raw, sizeof bin_raw - 1, out, sizeof out), "<<1,2>>");
  /* Cut to the buffer, with a mark. */
  char small[12];
  const char *r = printed("{aaaaaaaaaa, bbbbbbbbbb}", small, sizeof small);
  assert_int_equal(strlen(r), sizeof small - 1);
  assert_string_equal(r + sizeof small - 4, "...");
  /* A large term is named by its size, not walked. */
  static char big[8000];
  big[0] = 0x6d;
  big[1] = 0;
  big[2] = 0;
  big[3] = (char)((sizeof big - 5) >> 8);
  big[4] = (char)((sizeof big - 5) & 0xff);
  memset(big + 5, 'x', sizeof big - 5);
  assert_string_equal(dm__term_print(big, sizeof big, out, sizeof out), "<a term of 8000 bytes>");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(reserve_makes_room_once_and_keeps_the_bytes),
      cmocka_unit_test(terms_print_as_erlang_writes_them_and_bounded),
      cmocka_unit_test(every_kind_of_term_walks),
      cmocka_unit_test(improper_list_walks),
      cmocka_unit_test(deep_nesting_needs_no_stack),
      cmocka_unit_test(huge_counts_are_refused_without_work),
      cmocka_unit_test(unknown_tags_and_missing_version_are_refused),
      cmocka_unit_test(random_bytes_never_walk_out_of_bounds),
      cmocka_unit_test(atom_check_is_bounded),
      cmocka_unit_test(depth_is_bounded_without_recursion),
  };
  return cmocka_run_group_tests_name("term", tests, NULL, NULL);
}
