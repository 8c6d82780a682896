/* Response forms as Tarearbol defines them, and what a call's caller gets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <ei.h>

#include "dm/mgr.h"

static dm__response parse(ei_x_buff *x) {
  dm__response r;
  dm__response_parse(x->buff, (size_t)x->index, &r);
  return r;
}

static void halt_is_halt(void **state) {
  (void)state;
  ei_x_buff x;
  ei_x_new(&x);
  ei_x_encode_atom(&x, "halt");
  assert_int_equal(parse(&x).kind, DM__R_HALT);
  ei_x_free(&x);
}

static void ok_and_replace_unwrap(void **state) {
  (void)state;
  ei_x_buff x, v;
  ei_x_new(&x);
  ei_x_new(&v);
  ei_x_encode_long(&v, 42);
  ei_x_encode_tuple_header(&x, 2);
  ei_x_encode_atom(&x, "ok");
  ei_x_encode_long(&x, 42);
  dm__response r = parse(&x);
  assert_int_equal(r.kind, DM__R_OK);
  assert_int_equal(r.term_len, (size_t)v.index);
  assert_memory_equal(r.term, v.buff, (size_t)v.index);
  assert_ptr_equal(r.reply, r.term);
  x.index = 0;
  ei_x_encode_tuple_header(&x, 2);
  ei_x_encode_atom(&x, "replace");
  ei_x_encode_long(&x, 42);
  r = parse(&x);
  assert_int_equal(r.kind, DM__R_REPLACE);
  assert_memory_equal(r.term, v.buff, (size_t)v.index);
  ei_x_free(&x);
  ei_x_free(&v);
}

static void replace_with_id(void **state) {
  (void)state;
  ei_x_buff x;
  ei_x_new(&x);
  ei_x_encode_tuple_header(&x, 3);
  ei_x_encode_atom(&x, "replace");
  ei_x_encode_binary(&x, "new", 3);
  ei_x_encode_long(&x, 7);
  dm__response r = parse(&x);
  assert_int_equal(r.kind, DM__R_REPLACE_ID);
  assert_int_equal(r.id_len, 8);
  assert_memory_equal(r.id, "\x6d\x00\x00\x00\x03new", 8);
  assert_int_equal(r.term_len, 2);
  assert_ptr_equal(r.reply, r.term);
  ei_x_free(&x);
}

static void timeout_form_sets_the_period(void **state) {
  (void)state;
  ei_x_buff x;
  ei_x_new(&x);
  ei_x_encode_tuple_header(&x, 2);
  ei_x_encode_tuple_header(&x, 2);
  ei_x_encode_atom(&x, "timeout");
  ei_x_encode_long(&x, 1000);
  ei_x_encode_long(&x, 5);
  dm__response r = parse(&x);
  assert_int_equal(r.kind, DM__R_TIMEOUT);
  assert_int_equal(r.timeout_ms, 1000);
  assert_int_equal(r.term_len, 2);
  /* A call answering it replies the whole response (not unwrapped). */
  assert_ptr_equal(r.reply, x.buff);
  /* Negative or non-integer periods are just values. */
  x.index = 0;
  ei_x_encode_tuple_header(&x, 2);
  ei_x_encode_tuple_header(&x, 2);
  ei_x_encode_atom(&x, "timeout");
  ei_x_encode_long(&x, -1);
  ei_x_encode_long(&x, 5);
  assert_int_equal(parse(&x).kind, DM__R_OTHER);
  x.index = 0;
  ei_x_encode_tuple_header(&x, 2);
  ei_x_encode_tuple_header(&x, 2);
  ei_x_encode_atom(&x, "timeout");
  ei_x_encode_atom(&x, "soon");
  ei_x_encode_long(&x, 5);
  assert_int_equal(parse(&x).kind, DM__R_OTHER);
  ei_x_free(&x);
}

static void anything_else_is_a_value(void **state) {
  (void)state;
  ei_x_buff x;
  ei_x_new(&x);
  const char *atoms[] = {"ok", "replace", "error", "halted"};
  for (int k = 0; k < 4; k++) {
    x.index = 0;
    ei_x_encode_atom(&x, atoms[k]);
    dm__response r = parse(&x);
    assert_int_equal(r.kind, DM__R_OTHER);
    assert_ptr_equal(r.term, x.buff);
    assert_int_equal(r.term_len, (size_t)x.index);
  }
  x.index = 0; /* {ok, 1, 2}: three elements but not replace */
  ei_x_encode_tuple_header(&x, 3);
  ei_x_encode_atom(&x, "ok");
  ei_x_encode_long(&x, 1);
  ei_x_encode_long(&x, 2);
  assert_int_equal(parse(&x).kind, DM__R_OTHER);
  x.index = 0; /* [ok, 1] is a list, not a tuple */
  ei_x_encode_list_header(&x, 2);
  ei_x_encode_atom(&x, "ok");
  ei_x_encode_long(&x, 1);
  ei_x_encode_empty_list(&x);
  assert_int_equal(parse(&x).kind, DM__R_OTHER);
  ei_x_free(&x);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(halt_is_halt),
      cmocka_unit_test(ok_and_replace_unwrap),
      cmocka_unit_test(replace_with_id),
      cmocka_unit_test(timeout_form_sets_the_period),
      cmocka_unit_test(anything_else_is_a_value),
  };
  return cmocka_run_group_tests_name("response", tests, NULL, NULL);
}
