/* Child options: proplists and maps, defaults, and every bad value refused
 * with the detail a caller gets back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <ei.h>

#include "dm.h"
#include "dm/mgr.h"

static dm__child_opts defaults(void) {
  dm__child_opts o = {.timeout_ms = 1000, .lull = 1.1f};
  return o;
}

static void proplist_and_map_give_the_same_options(void **state) {
  (void)state;
  ei_x_buff l, m;
  ei_x_new(&l);
  ei_x_new(&m);
  ei_x_encode_list_header(&l, 5);
  ei_x_encode_tuple_header(&l, 2);
  ei_x_encode_atom(&l, "payload");
  ei_x_encode_long(&l, 9);
  ei_x_encode_tuple_header(&l, 2);
  ei_x_encode_atom(&l, "timeout");
  ei_x_encode_long(&l, 250);
  ei_x_encode_tuple_header(&l, 2);
  ei_x_encode_atom(&l, "lull");
  ei_x_encode_double(&l, 2.5);
  ei_x_encode_atom(&l, "instant_perform?"); /* bare atom: true */
  ei_x_encode_tuple_header(&l, 2);
  ei_x_encode_atom(&l, "restart");
  ei_x_encode_atom(&l, "transient");
  ei_x_encode_empty_list(&l);
  ei_x_encode_map_header(&m, 5);
  ei_x_encode_atom(&m, "payload");
  ei_x_encode_long(&m, 9);
  ei_x_encode_atom(&m, "timeout");
  ei_x_encode_long(&m, 250);
  ei_x_encode_atom(&m, "lull");
  ei_x_encode_double(&m, 2.5);
  ei_x_encode_atom(&m, "instant_perform");
  ei_x_encode_atom(&m, "true");
  ei_x_encode_atom(&m, "restart");
  ei_x_encode_atom(&m, "transient");
  dm__child_opts a = defaults(), b = defaults();
  assert_int_equal(dm__opts_parse(l.buff, (size_t)l.index, &a, NULL), 0);
  assert_int_equal(dm__opts_parse(m.buff, (size_t)m.index, &b, NULL), 0);
  assert_int_equal(a.timeout_ms, 250);
  assert_true(a.lull > 2.49f && a.lull < 2.51f);
  assert_int_equal(a.instant, 1);
  assert_int_equal(a.instant_ms, 0);
  assert_int_equal(a.restart, DM__TRANSIENT);
  assert_int_equal(a.payload_len, 2);
  assert_int_equal(b.timeout_ms, a.timeout_ms);
  assert_int_equal(b.instant, a.instant);
  assert_int_equal(b.restart, a.restart);
  assert_memory_equal(a.payload, b.payload, 2);
  ei_x_free(&l);
  ei_x_free(&m);
}

static void empty_opts_keep_the_defaults(void **state) {
  (void)state;
  dm__child_opts o = defaults();
  assert_int_equal(dm__opts_parse("\x6a", 1, &o, NULL), 0);
  assert_int_equal(o.timeout_ms, 1000);
  assert_null(o.payload);
  assert_int_equal(dm__opts_parse("\x74\x00\x00\x00\x00", 5, &o, NULL), 0);
  /* timeout infinity means never; instant as a delay. */
  ei_x_buff x;
  ei_x_new(&x);
  ei_x_encode_map_header(&x, 2);
  ei_x_encode_atom(&x, "timeout");
  ei_x_encode_atom(&x, "infinity");
  ei_x_encode_atom(&x, "instant_perform");
  ei_x_encode_long(&x, 30);
  assert_int_equal(dm__opts_parse(x.buff, (size_t)x.index, &o, NULL), 0);
  assert_int_equal(o.timeout_ms, 0);
  assert_int_equal(o.instant, 1);
  assert_int_equal(o.instant_ms, 30);
  ei_x_free(&x);
}

/* Parses {Key, Value} alone and expects it refused with that detail. */
static void refused(const char *key, void (*value)(ei_x_buff *)) {
  ei_x_buff x, want, d;
  ei_x_new(&x);
  ei_x_new(&want);
  ei_x_new(&d);
  ei_x_encode_list_header(&x, 1);
  ei_x_encode_tuple_header(&x, 2);
  ei_x_encode_atom(&x, key);
  value(&x);
  ei_x_encode_empty_list(&x);
  ei_x_encode_tuple_header(&want, 2);
  ei_x_encode_atom(&want, key);
  value(&want);
  dm__child_opts o = defaults();
  assert_int_equal(dm__opts_parse(x.buff, (size_t)x.index, &o, &d), DM_EINVAL);
  assert_int_equal(d.index, want.index);
  assert_memory_equal(d.buff, want.buff, (size_t)want.index);
  ei_x_free(&x);
  ei_x_free(&want);
  ei_x_free(&d);
}

static void v_neg(ei_x_buff *x) { ei_x_encode_long(x, -1); }
static void v_zero(ei_x_buff *x) { ei_x_encode_long(x, 0); }
static void v_bin(ei_x_buff *x) { ei_x_encode_binary(x, "x", 1); }
static void v_atom(ei_x_buff *x) { ei_x_encode_atom(x, "sometimes"); }
static void v_huge(ei_x_buff *x) { ei_x_encode_longlong(x, 1LL << 40); }

static void bad_values_are_refused_with_key_and_value(void **state) {
  (void)state;
  refused("timeout", v_neg);
  refused("timeout", v_bin);
  refused("timeout", v_huge);
  refused("lull", v_zero);
  refused("lull", v_atom);
  refused("restart", v_atom);
  refused("instant_perform?", v_atom);
  refused("instant_perform", v_neg);
}

static void unknown_keys_and_non_opts_are_refused(void **state) {
  (void)state;
  ei_x_buff x, d;
  ei_x_new(&x);
  ei_x_new(&d);
  ei_x_encode_list_header(&x, 1);
  ei_x_encode_tuple_header(&x, 2);
  ei_x_encode_atom(&x, "colour");
  ei_x_encode_atom(&x, "red");
  ei_x_encode_empty_list(&x);
  dm__child_opts o = defaults();
  assert_int_equal(dm__opts_parse(x.buff, (size_t)x.index, &o, &d), DM_EINVAL);
  assert_memory_equal(d.buff, "\x68\x02\x77\x0eunknown_option\x77\x06" "colour", 25);
  const char *not_opts[] = {"\x61\x2a", "\x6d\x00\x00\x00\x01x", "\x77\x02ok"};
  size_t lens[] = {2, 6, 4};
  for (int k = 0; k < 3; k++) {
    d.index = 0;
    assert_int_equal(dm__opts_parse(not_opts[k], lens[k], &o, &d), DM_EINVAL);
    assert_int_equal(d.index, (int)lens[k]);
    assert_memory_equal(d.buff, not_opts[k], lens[k]);
  }
  /* An improper list. */
  const char improper[] = "\x6c\x00\x00\x00\x01\x68\x02\x77\x07timeout\x61\x01\x77\x01x";
  assert_int_equal(dm__opts_parse(improper, sizeof improper - 1, &o, &d), DM_EINVAL);
  ei_x_free(&x);
  ei_x_free(&d);
}

static void command_line_defaults(void **state) {
  (void)state;
  dm__child_opts o = defaults();
  assert_int_equal(dm__opts_default("timeout", "250", &o), 0);
  assert_int_equal(o.timeout_ms, 250);
  assert_int_equal(dm__opts_default("timeout", "infinity", &o), 0);
  assert_int_equal(o.timeout_ms, 0);
  assert_int_equal(dm__opts_default("lull", "1.5", &o), 0);
  assert_int_equal(dm__opts_default("instant_perform", "40", &o), 0);
  assert_int_equal(o.instant_ms, 40);
  assert_int_equal(dm__opts_default("restart", "temporary", &o), 0);
  assert_int_equal(o.restart, DM__TEMPORARY);
  const char *bad[][2] = {{"timeout", "-1"}, {"timeout", "1x"}, {"timeout", ""},
                          {"lull", "0"},     {"lull", "nan"},   {"restart", "never"},
                          {"instant_perform", "maybe"}, {"colour", "red"}};
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
    assert_int_equal(dm__opts_default(bad[k][0], bad[k][1], &o), DM_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(proplist_and_map_give_the_same_options),
      cmocka_unit_test(empty_opts_keep_the_defaults),
      cmocka_unit_test(bad_values_are_refused_with_key_and_value),
      cmocka_unit_test(unknown_keys_and_non_opts_are_refused),
      cmocka_unit_test(command_line_defaults),
  };
  return cmocka_run_group_tests_name("opts", tests, NULL, NULL);
}
