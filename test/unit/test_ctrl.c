/* Control messages and the gen_server envelope: every form the node serves
 * decodes, malformed ones are refused, and encoders round-trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <ei.h>

#include "dist/dist.h"
#include "dm.h"

static erlang_pid pid_a = {.node = "a@h", .num = 11, .serial = 1, .creation = 5};
static erlang_pid pid_b = {.node = "b@h", .num = 22, .serial = 2, .creation = 6};
static erlang_ref ref_r = {.node = "a@h", .len = 3, .n = {7, 8, 9}, .creation = 5};

/* Starts a packet: 112, then the control term with version. */
static void begin(ei_x_buff *x) {
  ei_x_new(x);
  ei_x_append_buf(x, "p", 1);
  ei_x_encode_version(x);
}

static void reg_send_gen_call_with_alias_tag(void **state) {
  (void)state;
  ei_x_buff x;
  begin(&x);
  ei_x_encode_tuple_header(&x, 4);
  ei_x_encode_long(&x, 6);
  ei_x_encode_pid(&x, &pid_a);
  ei_x_encode_atom(&x, "");
  ei_x_encode_atom(&x, "tarearbol_cnode");
  ei_x_encode_version(&x);
  ei_x_encode_tuple_header(&x, 3);
  ei_x_encode_atom(&x, "$gen_call");
  ei_x_encode_tuple_header(&x, 2);
  ei_x_encode_pid(&x, &pid_a);
  int tag_at = x.index;
  ei_x_encode_list_header(&x, 1);
  ei_x_encode_atom(&x, "alias");
  ei_x_encode_ref(&x, &ref_r);
  int req_at = x.index;
  ei_x_encode_atom(&x, "info");
  dm__ctrl c;
  assert_int_equal(dm__ctrl_decode(x.buff, (size_t)x.index, &c), 0);
  assert_int_equal(c.op, DM__OP_REG_SEND);
  assert_string_equal(c.toname, "tarearbol_cnode");
  assert_true(c.has_from);
  assert_string_equal(c.from.node, "a@h");
  assert_non_null(c.msg);
  dm__gen g;
  dm__gen_decode(c.msg, c.msg_len, &g);
  assert_int_equal(g.kind, DM__GEN_CALL);
  assert_int_equal(g.from.num, 11);
  assert_true(g.has_mref);
  assert_true(g.alias);
  assert_int_equal(g.mref.n[2], 9);
  assert_ptr_equal(g.tag, x.buff + tag_at);
  assert_int_equal(g.tag_len, (size_t)(req_at - tag_at));
  assert_ptr_equal(g.req, x.buff + req_at);
  assert_int_equal(g.req_len, (size_t)(x.index - req_at));
  ei_x_free(&x);
}

static void send_gen_call_with_plain_ref_tag(void **state) {
  (void)state;
  ei_x_buff x;
  begin(&x);
  ei_x_encode_tuple_header(&x, 3);
  ei_x_encode_long(&x, 2);
  ei_x_encode_atom(&x, "");
  ei_x_encode_pid(&x, &pid_b);
  ei_x_encode_version(&x);
  ei_x_encode_tuple_header(&x, 3);
  ei_x_encode_atom(&x, "$gen_call");
  ei_x_encode_tuple_header(&x, 2);
  ei_x_encode_pid(&x, &pid_a);
  ei_x_encode_ref(&x, &ref_r);
  ei_x_encode_tuple_header(&x, 2);
  ei_x_encode_atom(&x, "get");
  ei_x_encode_binary(&x, "id", 2);
  dm__ctrl c;
  assert_int_equal(dm__ctrl_decode(x.buff, (size_t)x.index, &c), 0);
  assert_int_equal(c.op, DM__OP_SEND);
  assert_int_equal(c.to.num, 22);
  dm__gen g;
  dm__gen_decode(c.msg, c.msg_len, &g);
  assert_int_equal(g.kind, DM__GEN_CALL);
  assert_true(g.has_mref);
  assert_false(g.alias);
  assert_int_equal(g.mref.n[0], 7);
  ei_x_free(&x);
}

/* Tag forms, as OTP's gen:reply tells them apart. */
enum { TAG_ALIAS, TAG_ALIAS_FIRST, TAG_ALIAS_HEAD, TAG_OTHER_HEAD, TAG_ALIAS_NOT_REF };

static void encode_tag(ei_x_buff *m, int form) {
  switch (form) {
  case TAG_ALIAS: /* [alias | Ref] */
    ei_x_encode_list_header(m, 1);
    ei_x_encode_atom(m, "alias");
    ei_x_encode_ref(m, &ref_r);
    break;
  case TAG_ALIAS_FIRST: /* [[alias | Ref], x] */
    ei_x_encode_list_header(m, 2);
    ei_x_encode_list_header(m, 1);
    ei_x_encode_atom(m, "alias");
    ei_x_encode_ref(m, &ref_r);
    ei_x_encode_atom(m, "x");
    ei_x_encode_empty_list(m);
    break;
  case TAG_ALIAS_HEAD: /* [[alias | Ref] | x] */
    ei_x_encode_list_header(m, 1);
    ei_x_encode_list_header(m, 1);
    ei_x_encode_atom(m, "alias");
    ei_x_encode_ref(m, &ref_r);
    ei_x_encode_atom(m, "x");
    break;
  case TAG_OTHER_HEAD: /* [other | Ref] */
    ei_x_encode_list_header(m, 1);
    ei_x_encode_atom(m, "other");
    ei_x_encode_ref(m, &ref_r);
    break;
  case TAG_ALIAS_NOT_REF: /* [alias | 5] */
    ei_x_encode_list_header(m, 1);
    ei_x_encode_atom(m, "alias");
    ei_x_encode_long(m, 5);
    break;
  }
}

static dm__gen gen_call_tagged(ei_x_buff *m, int form) {
  dm__gen g;
  ei_x_new_with_version(m);
  ei_x_encode_tuple_header(m, 3);
  ei_x_encode_atom(m, "$gen_call");
  ei_x_encode_tuple_header(m, 2);
  ei_x_encode_pid(m, &pid_a);
  encode_tag(m, form);
  ei_x_encode_atom(m, "info");
  dm__gen_decode(m->buff, (size_t)m->index, &g);
  return g;
}

static void a_tag_names_an_alias_only_in_the_forms_gen_reply_knows(void **state) {
  (void)state;
  static const struct {
    int form, alias;
  } cases[] = {{TAG_ALIAS, 1}, {TAG_ALIAS_FIRST, 1}, {TAG_ALIAS_HEAD, 1},
               {TAG_OTHER_HEAD, 0}, {TAG_ALIAS_NOT_REF, 0}};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    ei_x_buff m;
    dm__gen g = gen_call_tagged(&m, cases[k].form);
    assert_int_equal(g.kind, DM__GEN_CALL);
    assert_int_equal(g.alias, cases[k].alias);
    assert_int_equal(g.has_mref, cases[k].alias);
    if (cases[k].alias)
      assert_int_equal(g.mref.n[1], 8);
    /* The request still follows the tag, whatever its form. */
    assert_true(dm__term_is_atom(g.req, g.req_len, "info"));
    ei_x_free(&m);
  }
}

static void alias_send_decodes_with_its_sender_alias_and_message(void **state) {
  (void)state;
  ei_x_buff x;
  dm__ctrl c;
  begin(&x); /* ALIAS_SEND {33, From, Alias} + Msg */
  ei_x_encode_tuple_header(&x, 3);
  ei_x_encode_long(&x, 33);
  ei_x_encode_pid(&x, &pid_a);
  ei_x_encode_ref(&x, &ref_r);
  int msg_at = x.index;
  ei_x_encode_version(&x);
  ei_x_encode_atom(&x, "msg");
  assert_int_equal(dm__ctrl_decode(x.buff, (size_t)x.index, &c), 0);
  assert_int_equal(c.op, DM__OP_ALIAS_SEND);
  assert_int_equal(c.from.num, 11);
  assert_int_equal(c.ref.n[2], 9);
  assert_ptr_equal(c.msg, x.buff + msg_at);
  ei_x_free(&x);

  begin(&x); /* ALIAS_SEND_TT {34, From, Alias, Token} + Msg */
  ei_x_encode_tuple_header(&x, 4);
  ei_x_encode_long(&x, 34);
  ei_x_encode_pid(&x, &pid_a);
  ei_x_encode_ref(&x, &ref_r);
  ei_x_encode_atom(&x, "token");
  ei_x_encode_version(&x);
  ei_x_encode_atom(&x, "msg");
  assert_int_equal(dm__ctrl_decode(x.buff, (size_t)x.index, &c), 0);
  assert_int_equal(c.op, DM__OP_ALIAS_SEND);
  assert_int_equal(c.raw_op, 34);
  ei_x_free(&x);

  begin(&x); /* without its message */
  ei_x_encode_tuple_header(&x, 3);
  ei_x_encode_long(&x, 33);
  ei_x_encode_pid(&x, &pid_a);
  ei_x_encode_ref(&x, &ref_r);
  assert_int_equal(dm__ctrl_decode(x.buff, (size_t)x.index, &c), DM_EBADTERM);
  ei_x_free(&x);

  begin(&x); /* an alias that is not a reference */
  ei_x_encode_tuple_header(&x, 3);
  ei_x_encode_long(&x, 33);
  ei_x_encode_pid(&x, &pid_a);
  ei_x_encode_atom(&x, "alias");
  ei_x_encode_version(&x);
  ei_x_encode_atom(&x, "msg");
  assert_int_equal(dm__ctrl_decode(x.buff, (size_t)x.index, &c), DM_EBADTERM);
  ei_x_free(&x);
}

static void gen_cast_and_plain_messages(void **state) {
  (void)state;
  ei_x_buff m;
  dm__gen g;
  ei_x_new_with_version(&m);
  ei_x_encode_tuple_header(&m, 2);
  ei_x_encode_atom(&m, "$gen_cast");
  ei_x_encode_tuple_header(&m, 2);
  ei_x_encode_atom(&m, "add");
  ei_x_encode_long(&m, 3);
  dm__gen_decode(m.buff, (size_t)m.index, &g);
  assert_int_equal(g.kind, DM__GEN_CAST);
  assert_int_equal(g.req_len, 9); /* 104 2, then atom add (5 bytes), 97 3 */
  m.index = 0;
  ei_x_encode_version(&m);
  ei_x_encode_tuple_header(&m, 3);
  ei_x_encode_atom(&m, "$gen_call");
  ei_x_encode_atom(&m, "not_a_from");
  ei_x_encode_atom(&m, "x");
  dm__gen_decode(m.buff, (size_t)m.index, &g);
  assert_int_equal(g.kind, DM__GEN_OTHER);
  m.index = 0;
  ei_x_encode_version(&m);
  ei_x_encode_atom(&m, "hello");
  dm__gen_decode(m.buff, (size_t)m.index, &g);
  assert_int_equal(g.kind, DM__GEN_OTHER);
  ei_x_free(&m);
}

/* sys.erl sends gen:call's envelope labelled `system`; a `system` tuple
 * without a {Pid, Tag} is nothing the node answers. */
static void system_messages_decode_as_calls_of_their_own_kind(void **state) {
  (void)state;
  ei_x_buff m;
  dm__gen g;
  ei_x_new_with_version(&m);
  ei_x_encode_tuple_header(&m, 3);
  ei_x_encode_atom(&m, "system");
  ei_x_encode_tuple_header(&m, 2);
  ei_x_encode_pid(&m, &pid_a);
  ei_x_encode_ref(&m, &ref_r);
  int req_at = m.index;
  ei_x_encode_atom(&m, "get_state");
  dm__gen_decode(m.buff, (size_t)m.index, &g);
  assert_int_equal(g.kind, DM__GEN_SYSTEM);
  assert_true(g.has_mref);
  assert_int_equal(g.from.num, 11);
  assert_ptr_equal(g.req, m.buff + req_at);
  assert_int_equal(g.req_len, (size_t)(m.index - req_at));
  m.index = 0;
  ei_x_encode_version(&m);
  ei_x_encode_tuple_header(&m, 3);
  ei_x_encode_atom(&m, "system");
  ei_x_encode_atom(&m, "garbage");
  ei_x_encode_atom(&m, "x");
  dm__gen_decode(m.buff, (size_t)m.index, &g);
  assert_int_equal(g.kind, DM__GEN_OTHER);
  ei_x_free(&m);
}

static void link_exit_unlink_id_monitor(void **state) {
  (void)state;
  ei_x_buff x;
  dm__ctrl c;
  begin(&x);
  ei_x_encode_tuple_header(&x, 3);
  ei_x_encode_long(&x, 1);
  ei_x_encode_pid(&x, &pid_a);
  ei_x_encode_pid(&x, &pid_b);
  assert_int_equal(dm__ctrl_decode(x.buff, (size_t)x.index, &c), 0);
  assert_int_equal(c.op, DM__OP_LINK);
  assert_int_equal(c.from.num, 11);
  assert_int_equal(c.to.num, 22);
  ei_x_free(&x);

  begin(&x);
  ei_x_encode_tuple_header(&x, 4);
  ei_x_encode_long(&x, 3);
  ei_x_encode_pid(&x, &pid_a);
  ei_x_encode_pid(&x, &pid_b);
  ei_x_encode_atom(&x, "killed");
  assert_int_equal(dm__ctrl_decode(x.buff, (size_t)x.index, &c), 0);
  assert_int_equal(c.op, DM__OP_EXIT);
  assert_int_equal(c.reason_len, 8);
  ei_x_free(&x);

  begin(&x);
  ei_x_encode_tuple_header(&x, 4);
  ei_x_encode_long(&x, 35);
  ei_x_encode_ulonglong(&x, 123456789012ULL);
  ei_x_encode_pid(&x, &pid_a);
  ei_x_encode_pid(&x, &pid_b);
  assert_int_equal(dm__ctrl_decode(x.buff, (size_t)x.index, &c), 0);
  assert_int_equal(c.op, DM__OP_UNLINK_ID);
  assert_true(c.unlink_id == 123456789012ULL);
  ei_x_free(&x);

  begin(&x);
  ei_x_encode_tuple_header(&x, 4);
  ei_x_encode_long(&x, 19);
  ei_x_encode_pid(&x, &pid_a);
  ei_x_encode_atom(&x, "somebody");
  ei_x_encode_ref(&x, &ref_r);
  assert_int_equal(dm__ctrl_decode(x.buff, (size_t)x.index, &c), 0);
  assert_int_equal(c.op, DM__OP_MONITOR_P);
  assert_string_equal(c.toname, "somebody");
  ei_x_free(&x);
}

static void trace_token_and_payload_variants_fold(void **state) {
  (void)state;
  ei_x_buff x;
  dm__ctrl c;
  begin(&x); /* SEND_TT {12, '', To, Token} + Msg */
  ei_x_encode_tuple_header(&x, 4);
  ei_x_encode_long(&x, 12);
  ei_x_encode_atom(&x, "");
  ei_x_encode_pid(&x, &pid_b);
  ei_x_encode_atom(&x, "token");
  ei_x_encode_version(&x);
  ei_x_encode_atom(&x, "msg");
  assert_int_equal(dm__ctrl_decode(x.buff, (size_t)x.index, &c), 0);
  assert_int_equal(c.op, DM__OP_SEND);
  ei_x_free(&x);

  begin(&x); /* PAYLOAD_EXIT {24, From, To} + Reason */
  ei_x_encode_tuple_header(&x, 3);
  ei_x_encode_long(&x, 24);
  ei_x_encode_pid(&x, &pid_a);
  ei_x_encode_pid(&x, &pid_b);
  ei_x_encode_version(&x);
  ei_x_encode_atom(&x, "normal");
  assert_int_equal(dm__ctrl_decode(x.buff, (size_t)x.index, &c), 0);
  assert_int_equal(c.op, DM__OP_EXIT);
  assert_null(c.msg);
  assert_int_equal(c.reason_len, 8);
  ei_x_free(&x);
}

static void malformed_packets_are_refused(void **state) {
  (void)state;
  ei_x_buff x;
  dm__ctrl c;
  const char not_p[] = {'q', (char)131, 106};
  assert_int_equal(dm__ctrl_decode(not_p, sizeof not_p, &c), DM_EBADPKT);
  assert_int_equal(dm__ctrl_decode("p", 1, &c), DM_EBADPKT);
  const char garbage[] = {'p', 1, 2, 3, 4};
  assert_int_equal(dm__ctrl_decode(garbage, sizeof garbage, &c), DM_EBADTERM);

  begin(&x); /* control is not a tuple */
  ei_x_encode_atom(&x, "hello");
  assert_int_equal(dm__ctrl_decode(x.buff, (size_t)x.index, &c), DM_EBADTERM);
  ei_x_free(&x);

  begin(&x); /* SEND without the message */
  ei_x_encode_tuple_header(&x, 3);
  ei_x_encode_long(&x, 2);
  ei_x_encode_atom(&x, "");
  ei_x_encode_pid(&x, &pid_b);
  assert_int_equal(dm__ctrl_decode(x.buff, (size_t)x.index, &c), DM_EBADTERM);
  /* ... and with trailing bytes after the message */
  ei_x_encode_version(&x);
  ei_x_encode_atom(&x, "m");
  ei_x_append_buf(&x, "zz", 2);
  assert_int_equal(dm__ctrl_decode(x.buff, (size_t)x.index, &c), DM_EBADTERM);
  ei_x_free(&x);

  begin(&x); /* LINK with the wrong arity */
  ei_x_encode_tuple_header(&x, 2);
  ei_x_encode_long(&x, 1);
  ei_x_encode_pid(&x, &pid_a);
  assert_int_equal(dm__ctrl_decode(x.buff, (size_t)x.index, &c), DM_EBADTERM);
  ei_x_free(&x);

  begin(&x); /* REG_SEND whose name is a binary */
  ei_x_encode_tuple_header(&x, 4);
  ei_x_encode_long(&x, 6);
  ei_x_encode_pid(&x, &pid_a);
  ei_x_encode_atom(&x, "");
  ei_x_encode_binary(&x, "name", 4);
  ei_x_encode_version(&x);
  ei_x_encode_atom(&x, "m");
  assert_int_equal(dm__ctrl_decode(x.buff, (size_t)x.index, &c), DM_EBADTERM);
  ei_x_free(&x);

  begin(&x); /* the op is not an integer */
  ei_x_encode_tuple_header(&x, 1);
  ei_x_encode_atom(&x, "send");
  assert_int_equal(dm__ctrl_decode(x.buff, (size_t)x.index, &c), DM_EBADTERM);
  ei_x_free(&x);
}

static void unknown_ops_decode_as_other(void **state) {
  (void)state;
  ei_x_buff x;
  dm__ctrl c;
  begin(&x);
  ei_x_encode_tuple_header(&x, 2);
  ei_x_encode_long(&x, 99);
  ei_x_encode_atom(&x, "whatever");
  assert_int_equal(dm__ctrl_decode(x.buff, (size_t)x.index, &c), 0);
  assert_int_equal(c.op, DM__OP_OTHER);
  assert_int_equal(c.raw_op, 99);
  ei_x_free(&x);
}

/* A reply packet as the peer reads it: its control and {Tag, Reply}. */
static void read_reply(const ei_x_buff *out, dm__ctrl *c, const ei_x_buff *tag,
                       const char *reply) {
  /* The length prefix covers the rest. */
  assert_int_equal(((unsigned char)out->buff[0] << 24 | (unsigned char)out->buff[1] << 16 |
                    (unsigned char)out->buff[2] << 8 | (unsigned char)out->buff[3]),
                   out->index - 4);
  assert_int_equal(dm__ctrl_decode(out->buff + 4, (size_t)out->index - 4, c), 0);
  int i = 0, arity;
  assert_int_equal(ei_decode_version(c->msg, &i, &arity), 0);
  assert_int_equal(ei_decode_tuple_header(c->msg, &i, &arity), 0);
  assert_int_equal(arity, 2);
  assert_memory_equal(c->msg + i, tag->buff, (size_t)tag->index);
  i += tag->index;
  assert_true(dm__term_is_atom(c->msg + i, c->msg_len - (size_t)i, reply));
}

static void reply_encoder_round_trips(void **state) {
  (void)state;
  ei_x_buff m, tag, reply, out;
  dm__ctrl c;
  erlang_pid self = pid_b;
  dm__gen g = gen_call_tagged(&m, TAG_ALIAS);
  assert_true(g.alias);
  ei_x_new(&tag);
  encode_tag(&tag, TAG_ALIAS);
  ei_x_new(&reply);
  ei_x_encode_atom(&reply, "yes");
  ei_x_new(&out);

  /* Without a sender (the peer takes no aliases): SEND to the caller. */
  assert_int_equal(dm__enc_reply(&out, &g, NULL, reply.buff, (size_t)reply.index), 0);
  read_reply(&out, &c, &tag, "yes");
  assert_int_equal(c.op, DM__OP_SEND);
  assert_int_equal(c.to.num, 11);

  /* With one: ALIAS_SEND {33, Self, Mref}, the tag copied as it came. */
  out.index = 0;
  assert_int_equal(dm__enc_reply(&out, &g, &self, reply.buff, (size_t)reply.index), 0);
  read_reply(&out, &c, &tag, "yes");
  assert_int_equal(c.op, DM__OP_ALIAS_SEND);
  assert_int_equal(c.raw_op, 33);
  assert_int_equal(c.from.num, 22);
  assert_string_equal(c.from.node, "b@h");
  assert_int_equal(c.ref.len, 3);
  assert_memory_equal(c.ref.n, ref_r.n, 3 * sizeof ref_r.n[0]);
  assert_string_equal(c.ref.node, "a@h");
  ei_x_free(&m);

  /* A tag that names no alias goes to the pid, sender or not. */
  g = gen_call_tagged(&m, TAG_OTHER_HEAD);
  tag.index = 0;
  encode_tag(&tag, TAG_OTHER_HEAD);
  out.index = 0;
  assert_int_equal(dm__enc_reply(&out, &g, &self, reply.buff, (size_t)reply.index), 0);
  read_reply(&out, &c, &tag, "yes");
  assert_int_equal(c.op, DM__OP_SEND);
  assert_int_equal(c.to.num, 11);
  ei_x_free(&m);
  ei_x_free(&tag);
  ei_x_free(&reply);
  ei_x_free(&out);
}

static void monitor_exit_and_unlink_ack_encoders(void **state) {
  (void)state;
  ei_x_buff out;
  dm__ctrl c;
  ei_x_new(&out);
  assert_int_equal(dm__enc_monitor_p_exit(&out, "nobody", NULL, &pid_a, &ref_r, DM__A_NOPROC, DM__ALEN(DM__A_NOPROC)), 0);
  assert_int_equal(dm__ctrl_decode(out.buff + 4, (size_t)out.index - 4, &c), 0);
  assert_int_equal(c.raw_op, 21);
  out.index = 0;
  assert_int_equal(dm__enc_unlink_id_ack(&out, 77, &pid_b, &pid_a), 0);
  assert_int_equal(dm__ctrl_decode(out.buff + 4, (size_t)out.index - 4, &c), 0);
  assert_int_equal(c.op, DM__OP_UNLINK_ID_ACK);
  assert_true(c.unlink_id == 77);
  assert_int_equal(c.from.num, 22);
  out.index = 0;
  assert_int_equal(dm__enc_exit(&out, &pid_b, &pid_a, "\x77\x06noproc", 8), 0);
  assert_int_equal(dm__ctrl_decode(out.buff + 4, (size_t)out.index - 4, &c), 0);
  assert_int_equal(c.op, DM__OP_EXIT);
  ei_x_free(&out);
}

int main(void) {
  ei_init();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(reg_send_gen_call_with_alias_tag),
      cmocka_unit_test(send_gen_call_with_plain_ref_tag),
      cmocka_unit_test(a_tag_names_an_alias_only_in_the_forms_gen_reply_knows),
      cmocka_unit_test(alias_send_decodes_with_its_sender_alias_and_message),
      cmocka_unit_test(gen_cast_and_plain_messages),
      cmocka_unit_test(system_messages_decode_as_calls_of_their_own_kind),
      cmocka_unit_test(link_exit_unlink_id_monitor),
      cmocka_unit_test(trace_token_and_payload_variants_fold),
      cmocka_unit_test(malformed_packets_are_refused),
      cmocka_unit_test(unknown_ops_decode_as_other),
      cmocka_unit_test(reply_encoder_round_trips),
      cmocka_unit_test(monitor_exit_and_unlink_ack_encoders),
  };
  return cmocka_run_group_tests_name("ctrl", tests, NULL, NULL);
}
