/* Links, kept out of line by process key: made once per remote pid,
 * unmade, fired as noconnection when their peer is lost, and gone with
 * their process. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "bare_node.h"

static struct {
  int count;
  erlang_pid from[8];
  const dm__proc *to[8];
} exits;

static void on_exit_signal(dm__proc *p, dm__node *n, const erlang_pid *from,
                           const char *reason, size_t len) {
  (void)n;
  assert_true(exits.count < 8);
  assert_term_equal(reason, len, T("noconnection"));
  exits.from[exits.count] = *from;
  exits.to[exits.count++] = p;
}

static const dm__proc_ops ops = {NULL, on_exit_signal, NULL};

static erlang_pid remote(const char *node, unsigned num) {
  erlang_pid p;
  memset(&p, 0, sizeof p);
  snprintf(p.node, sizeof p.node, "%s", node);
  p.num = num;
  p.creation = 1;
  return p;
}

/* Two processes of a bare node, spawned. */
typedef struct {
  bare_node b;
  dm__proc p, q;
} fixture;

static void setup(fixture *f) {
  memset(&exits, 0, sizeof exits);
  bare_node_init(&f->b);
  int kind = dm__node_add_kind(&f->b.n, &ops);
  assert_true(kind >= 0);
  f->p.kind = f->q.kind = (uint8_t)kind;
  assert_int_equal(dm__proc_spawn(&f->b.n, &f->p), 0);
  assert_int_equal(dm__proc_spawn(&f->b.n, &f->q), 0);
}

static void teardown(fixture *f) {
  dm__node *n = &f->b.n;
  dm__proctab_del(&n->pids, f->p.key);
  dm__proctab_del(&n->pids, f->q.key);
  dm__proc_release(n, &f->p);
  dm__proc_release(n, &f->q);
  assert_int_equal(n->links.count, 0);
  bare_node_free(&f->b);
}

static void a_lost_peer_fires_only_the_links_to_it(void **state) {
  (void)state;
  fixture f;
  setup(&f);
  dm__node *n = &f.b.n;
  erlang_pid a1 = remote("a@h", 1), b2 = remote("b@h", 2), b3 = remote("b@h", 3);
  assert_int_equal(dm__proc_link(n, &f.p, &a1), 0);
  assert_int_equal(dm__proc_link(n, &f.p, &a1), 0); /* once per pid */
  assert_int_equal(dm__proc_link(n, &f.p, &b2), 0);
  assert_int_equal(dm__proc_link(n, &f.q, &b3), 0);
  assert_int_equal(n->links.count, 2); /* processes with links */
  dm__proc_peer_lost(n, (uint32_t)dm__dist_intern(&n->dist, "a@h"));
  assert_int_equal(exits.count, 1);
  assert_ptr_equal(exits.to[0], &f.p);
  assert_int_equal(exits.from[0].num, 1);
  assert_string_equal(exits.from[0].node, "a@h");
  assert_int_equal(n->links.count, 2);
  dm__proc_peer_lost(n, (uint32_t)dm__dist_intern(&n->dist, "b@h"));
  assert_int_equal(exits.count, 3);
  assert_int_equal(n->links.count, 0);
  teardown(&f);
}

/* Unlinking the last link, releasing the process and its end each drop
 * its entry; the list grows past its first room. */
static void links_go_with_their_last_unlink_and_their_process(void **state) {
  (void)state;
  fixture f;
  setup(&f);
  dm__node *n = &f.b.n;
  erlang_pid a[5];
  for (unsigned i = 0; i < 5; i++) {
    a[i] = remote("a@h", i + 1);
    assert_int_equal(dm__proc_link(n, &f.p, &a[i]), 0);
  }
  assert_int_equal(n->links.count, 1);
  for (unsigned i = 0; i < 4; i++)
    dm__proc_unlink(n, &f.p, &a[i]);
  assert_int_equal(n->links.count, 1);
  dm__proc_unlink(n, &f.p, &a[4]);
  assert_int_equal(n->links.count, 0);
  assert_int_equal(dm__proc_link(n, &f.q, &a[0]), 0);
  dm__proc_release(n, &f.q);
  assert_int_equal(n->links.count, 0);
  /* Its end sends each link its exit (no peer here: undeliverable). */
  assert_int_equal(dm__proc_link(n, &f.p, &a[0]), 0);
  assert_int_equal(dm__proc_link(n, &f.p, &a[1]), 0);
  uint64_t undeliverable = n->stats.undeliverable;
  dm__proc_down(n, &f.p, DM__A_NORMAL, DM__ALEN(DM__A_NORMAL));
  assert_int_equal(n->stats.undeliverable, undeliverable + 2);
  assert_int_equal(n->links.count, 0);
  teardown(&f);
}

/* Out of memory for the list or for its entry: no link, nothing kept. */
static void out_of_memory_makes_no_link(void **state) {
  (void)state;
  fixture f;
  setup(&f);
  dm__node *n = &f.b.n;
  erlang_pid a1 = remote("a@h", 1);
  assert_true(dm__dist_intern(&n->dist, "a@h") >= 0);
  for (long after = 0; after < 2; after++) {
    dm__alloc_fail_after(after);
    assert_int_equal(dm__proc_link(n, &f.p, &a1), DM_ENOMEM);
    dm__alloc_fail_after(-1);
    assert_int_equal(n->links.count, 0);
  }
  assert_int_equal(dm__proc_link(n, &f.p, &a1), 0);
  assert_int_equal(n->links.count, 1);
  teardown(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(a_lost_peer_fires_only_the_links_to_it),
      cmocka_unit_test(links_go_with_their_last_unlink_and_their_process),
      cmocka_unit_test(out_of_memory_makes_no_link),
  };
  return cmocka_run_group_tests_name("links", tests, NULL, NULL);
}
