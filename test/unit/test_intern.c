/* Interned node names: one index per name, found again by hash however
 * many there are (a scan made every handshake slower with each name the
 * node had seen, W5), and the lookup of a node's connection by name goes
 * through them. Sending to a node that is not a node name, or to this
 * node itself, connects nowhere and is counted as dropped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "bare_node.h"

static void a_name_interned_twice_has_one_index(void **state) {
  bare_node b;
  (void)state;
  bare_node_init(&b);
  int a = dm__dist_intern(&b.n.dist, "a@h");
  int c = dm__dist_intern(&b.n.dist, "c@h");
  assert_true(a >= 0 && c >= 0 && a != c);
  assert_int_equal(dm__dist_intern(&b.n.dist, "a@h"), a);
  assert_string_equal(b.n.dist.peer_names[c], "c@h");
  bare_node_free(&b);
}

static void many_names_keep_their_indices_across_growth(void **state) {
  bare_node b;
  char name[32];
  (void)state;
  bare_node_init(&b);
  for (int i = 0; i < 5000; i++) {
    snprintf(name, sizeof name, "peer%d@host", i);
    assert_int_equal(dm__dist_intern(&b.n.dist, name), i);
  }
  for (int i = 4999; i >= 0; i--) {
    snprintf(name, sizeof name, "peer%d@host", i);
    assert_int_equal(dm__dist_intern(&b.n.dist, name), i);
    assert_null(dm__dist_conn(&b.n.dist, name));
  }
  assert_int_equal(b.n.dist.npeer_names, 5000);
  assert_true(b.n.dist.name_cap >= 10000);
  bare_node_free(&b);
}

static void no_connection_for_a_name_never_seen(void **state) {
  bare_node b;
  (void)state;
  bare_node_init(&b);
  assert_null(dm__dist_conn(&b.n.dist, "never@seen"));
  assert_int_equal(b.n.dist.npeer_names, 0);
  bare_node_free(&b);
}

static void a_send_to_no_node_or_to_itself_is_dropped(void **state) {
  bare_node b;
  (void)state;
  bare_node_init(&b);
  assert_int_equal(dm__dist_send_connect(&b.n.dist, "no_at_sign", "x", 1), DM_ECLOSED);
  assert_int_equal(dm__dist_send_connect(&b.n.dist, "unit@localhost", "x", 1), DM_ECLOSED);
  assert_int_equal(dm__dist_send_connect(&b.n.dist, "@", "x", 1), DM_ECLOSED);
  assert_int_equal(b.n.dist.stats.connect_dropped, 3);
  assert_int_equal(dm__dist_connect(&b.n.dist, "unit@localhost"), DM_EINVAL);
  assert_int_equal(dm__dist_connect(&b.n.dist, "trailing@"), DM_EINVAL);
  assert_null(b.n.dist.hs_head);
  bare_node_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(a_name_interned_twice_has_one_index),
      cmocka_unit_test(many_names_keep_their_indices_across_growth),
      cmocka_unit_test(no_connection_for_a_name_never_seen),
      cmocka_unit_test(a_send_to_no_node_or_to_itself_is_dropped),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
