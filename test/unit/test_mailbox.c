/* A worker's mailbox: mails come out in order and the mailbox goes once
 * empty; freed with callers still waiting, each caller's call exits; a
 * push that runs out of memory leaves the reply with the caller. On a
 * node without sockets: what it sends is counted, not delivered. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "bare_node.h"
#include "dm/mgr.h"

static dm__mail *pop_expecting(dm__mailbox **mb, int kind, const char *msg) {
  dm__mail *m = dm__mailbox_pop(mb);
  assert_non_null(m);
  assert_int_equal(m->kind, kind);
  assert_term_equal(m->msg, m->len, T(msg));
  return m;
}

static void drop(dm__mail *m) {
  dm__free(m->reply);
  dm__free(m);
}

static void push(dm__mailbox **mb, int kind, const char *msg, dm__replyto *r,
                 int wrap) {
  term t = T(msg);
  assert_int_equal(dm__mailbox_push(mb, kind, t.b, t.len, r, wrap), 0);
}

static void mails_come_out_in_the_order_they_went_in(void **state) {
  (void)state;
  dm__mailbox *mb = NULL;
  push(&mb, DM__JOB_CALL, "first", caller_reply(1), 1);
  push(&mb, DM__JOB_CAST, "{second, 2}", NULL, 0);
  push(&mb, DM__JOB_PAYLOAD, "[third]", NULL, 0);
  assert_int_equal(dm__mailbox_count(mb), 3);
  dm__mail *m = pop_expecting(&mb, DM__JOB_CALL, "first");
  /* The mail carries what its delivery needs: the caller and the form. */
  assert_int_equal(m->wrap, 1);
  assert_int_equal(m->reply->from.num, 1);
  drop(m);
  assert_int_equal(dm__mailbox_count(mb), 2);
  m = pop_expecting(&mb, DM__JOB_CAST, "{second, 2}");
  assert_null(m->reply);
  drop(m);
  drop(pop_expecting(&mb, DM__JOB_PAYLOAD, "[third]"));
  assert_null(dm__mailbox_pop(&mb));
}

/* An idle worker carries a NULL pointer only: the mailbox is made by the
 * first push and freed by the pop that empties it. */
static void the_mailbox_exists_only_while_mail_waits(void **state) {
  (void)state;
  dm__mailbox *mb = NULL;
  assert_int_equal(dm__mailbox_count(mb), 0);
  assert_null(dm__mailbox_pop(&mb));
  push(&mb, DM__JOB_CAST, "a", NULL, 0);
  assert_non_null(mb);
  push(&mb, DM__JOB_CAST, "b", NULL, 0);
  drop(dm__mailbox_pop(&mb));
  assert_non_null(mb);
  drop(dm__mailbox_pop(&mb));
  assert_null(mb);
  assert_int_equal(dm__mailbox_count(mb), 0);
}

/* As a BEAM caller's monitor would fire when the callee dies. */
static void freeing_with_waiting_callers_exits_each_call(void **state) {
  (void)state;
  bare_node b;
  dm__mailbox *mb = NULL;
  bare_node_init(&b);
  push(&mb, DM__JOB_CALL, "a", caller_reply(1), 0);
  push(&mb, DM__JOB_CAST, "b", NULL, 0);
  push(&mb, DM__JOB_CALL, "c", caller_reply(2), 0);
  dm__mailbox_free(mb, &b.n, DM__A_SHUTDOWN, DM__ALEN(DM__A_SHUTDOWN));
  /* One exit per call, none for the cast, the last to the last caller. */
  assert_int_equal(b.n.stats.undeliverable, 2);
  assert_sent(&b.n, SENT_EXIT, 2, "shutdown");
  bare_node_free(&b);
}

/* A worker freed outright (its manager going) has no one to tell. */
static void freeing_without_a_node_sends_nothing(void **state) {
  (void)state;
  bare_node b;
  dm__mailbox *mb = NULL;
  bare_node_init(&b);
  push(&mb, DM__JOB_CALL, "a", caller_reply(1), 0);
  dm__mailbox_free(mb, NULL, NULL, 0);
  dm__mailbox_free(NULL, &b.n, DM__A_SHUTDOWN, DM__ALEN(DM__A_SHUTDOWN));
  assert_int_equal(b.n.stats.undeliverable, 0);
  bare_node_free(&b);
}

/* Either allocation of a push failing (the mail, or the mailbox itself
 * when none exists) returns DM_ENOMEM with nothing kept: the caller still
 * owns the reply, and what already waited is untouched. */
static void a_push_out_of_memory_leaves_the_reply_with_the_caller(void **state) {
  (void)state;
  term t = T("late");
  for (long after = 0; after < 2; after++) {
    dm__mailbox *mb = NULL;
    dm__replyto *r = caller_reply(1);
    dm__alloc_fail_after(after);
    assert_int_equal(dm__mailbox_push(&mb, DM__JOB_CALL, t.b, t.len, r, 0), DM_ENOMEM);
    dm__alloc_fail_after(-1);
    assert_null(mb);
    assert_int_equal(r->from.num, 1); /* still whole, still ours */
    dm__free(r);
  }
  dm__mailbox *mb = NULL;
  push(&mb, DM__JOB_CAST, "early", NULL, 0);
  dm__replyto *r = caller_reply(2);
  dm__alloc_fail_after(0);
  assert_int_equal(dm__mailbox_push(&mb, DM__JOB_CALL, t.b, t.len, r, 0), DM_ENOMEM);
  dm__alloc_fail_after(-1);
  dm__free(r);
  assert_int_equal(dm__mailbox_count(mb), 1);
  drop(pop_expecting(&mb, DM__JOB_CAST, "early"));
  assert_null(mb);
}

int main(void) {
  ei_init();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(mails_come_out_in_the_order_they_went_in),
      cmocka_unit_test(the_mailbox_exists_only_while_mail_waits),
      cmocka_unit_test(freeing_with_waiting_callers_exits_each_call),
      cmocka_unit_test(freeing_without_a_node_sends_nothing),
      cmocka_unit_test(a_push_out_of_memory_leaves_the_reply_with_the_caller),
  };
  return cmocka_run_group_tests_name("mailbox", tests, NULL, NULL);
}
