/* Replies: a body is encoded once, straight into the outgoing packet; a
 * body that could not be encoded is replaced by {error, enomem}, never
 * sent truncated; a reply sent later is wrapped as synch_call wants; a
 * call made to exit fires the caller's monitor; a reply goes to the
 * caller's alias when its node takes aliases. On a node without sockets
 * (or with socketpairs for peers): the packet stays in the node's buffer
 * to be read back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "bare_node.h"

static void a_body_encoded_into_the_packet_is_what_the_caller_gets(void **state) {
  bare_node b;
  term tag;
  (void)state;
  bare_node_init(&b);
  dm__gen g = caller(7, NULL, 0, &tag);
  ei_x_buff *x = dm__reply_begin(&b.n, &g);
  assert_non_null(x);
  assert_int_equal(ei_x_encode_tuple_header(x, 2), 0);
  assert_int_equal(ei_x_encode_atom(x, "ok"), 0);
  assert_int_equal(ei_x_encode_long(x, 42), 0);
  assert_int_equal(dm__reply_end(&b.n, &g, 0), DM_ECLOSED); /* no peer here */
  assert_sent(&b.n, SENT_REPLY, 7, "{ok, 42}");
  assert_int_equal(b.n.stats.undeliverable, 1);
  bare_node_free(&b);
}

static void a_body_that_failed_half_way_becomes_error_enomem(void **state) {
  bare_node b;
  term tag;
  (void)state;
  bare_node_init(&b);
  dm__gen g = caller(3, NULL, 0, &tag);
  ei_x_buff *x = dm__reply_begin(&b.n, &g);
  assert_non_null(x);
  /* A map of 1000 pairs of which two were written when memory ran out. */
  assert_int_equal(ei_x_encode_map_header(x, 1000), 0);
  assert_int_equal(ei_x_encode_atom(x, "a"), 0);
  assert_int_equal(ei_x_encode_long(x, 1), 0);
  dm__reply_end(&b.n, &g, DM_ENOMEM);
  assert_sent(&b.n, SENT_REPLY, 3, "{error, enomem}");
  bare_node_free(&b);
}

static void a_whole_reply_at_once_is_sent_as_given(void **state) {
  bare_node b;
  term tag;
  (void)state;
  bare_node_init(&b);
  dm__gen g = caller(5, NULL, 0, &tag);
  term body = T("[1, two, {three}]");
  dm__reply(&b.n, &g, body.b, body.len);
  assert_sent(&b.n, SENT_REPLY, 5, "[1, two, {three}]");
  bare_node_free(&b);
}

static void a_later_reply_is_wrapped_in_ok_when_asked(void **state) {
  bare_node b;
  (void)state;
  bare_node_init(&b);
  dm__replyto *r = caller_reply(9);
  term body = T("{counter, 15}");
  dm__reply_to(&b.n, r, body.b, body.len, 1);
  assert_sent(&b.n, SENT_REPLY, 9, "{ok, {counter, 15}}");
  dm__reply_to(&b.n, r, body.b, body.len, 0);
  assert_sent(&b.n, SENT_REPLY, 9, "{counter, 15}");
  dm__free(r);
  bare_node_free(&b);
}

static void a_call_made_to_exit_fires_the_callers_monitor(void **state) {
  bare_node b;
  (void)state;
  bare_node_init(&b);
  dm__replyto *r = caller_reply(4);
  dm__reply_exit(&b.n, r, DM__A_SHUTDOWN, DM__ALEN(DM__A_SHUTDOWN));
  assert_sent(&b.n, SENT_EXIT, 4, "shutdown");
  dm__free(r);
  bare_node_free(&b);
}

/* An OTP 24+ caller's reply goes to its alias, so that BEAM drops one
 * that comes after the caller gave up, but only when the caller's node
 * took aliases in its handshake; else, and for a tag without an alias, to
 * the caller's pid. A reply sent later from a record does the same. */
static void a_reply_goes_to_the_alias_when_the_callers_node_takes_aliases(void **state) {
  bare_node b;
  term tag;
  (void)state;
  bare_node_init(&b);
  int plain = bare_node_peer(&b, "plain@nohost", 0);
  int aliased = bare_node_peer(&b, "aliased@nohost", DM__DFLAG_ALIAS);
  term body = T("pong");

  dm__gen g = alias_caller(6, "aliased@nohost", &tag);
  assert_int_equal(dm__reply(&b.n, &g, body.b, body.len), 0);
  assert_sent(&b.n, SENT_ALIAS, 6, "pong");
  dm__replyto *r = dm__replyto_new(&g);
  assert_non_null(r);
  dm__reply_to(&b.n, r, body.b, body.len, 1);
  assert_sent(&b.n, SENT_ALIAS, 6, "{ok, pong}");
  dm__free(r);

  g = alias_caller(8, "plain@nohost", &tag);
  assert_int_equal(dm__reply(&b.n, &g, body.b, body.len), 0);
  assert_sent(&b.n, SENT_REPLY, 8, "pong");
  r = dm__replyto_new(&g);
  assert_non_null(r);
  dm__reply_to(&b.n, r, body.b, body.len, 0);
  assert_sent(&b.n, SENT_REPLY, 8, "pong");
  dm__free(r);

  g = caller(9, NULL, 0, &tag); /* a plain tag */
  strcpy(g.from.node, "aliased@nohost");
  assert_int_equal(dm__reply(&b.n, &g, body.b, body.len), 0);
  assert_sent(&b.n, SENT_REPLY, 9, "pong");
  assert_int_equal(b.n.stats.undeliverable, 0);
  bare_node_free(&b);
  close(plain);
  close(aliased);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(a_body_encoded_into_the_packet_is_what_the_caller_gets),
      cmocka_unit_test(a_body_that_failed_half_way_becomes_error_enomem),
      cmocka_unit_test(a_whole_reply_at_once_is_sent_as_given),
      cmocka_unit_test(a_later_reply_is_wrapped_in_ok_when_asked),
      cmocka_unit_test(a_call_made_to_exit_fires_the_callers_monitor),
      cmocka_unit_test(a_reply_goes_to_the_alias_when_the_callers_node_takes_aliases),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
