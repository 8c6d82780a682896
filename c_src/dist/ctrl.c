/* Control messages: the bounded decoder of what peers send, the gen_server
 * envelope, and the encoders of what the node sends. */
#include "dist/dist.h"

#include <string.h>

#include "base/base.h"
#include "dm.h"
#include "term/term.h"

#define PASS_THROUGH 112

/* Reads one term slice (no version byte) at *i within [0, end). */
static int slice(const char *b, size_t end, int *i, const char **p,
                 size_t *n) {
  size_t j = (size_t)*i;
  if (dm__term_skip(b, end, &j))
    return -1;
  *p = b + *i;
  *n = j - (size_t)*i;
  *i = (int)j;
  return 0;
}

/* Reads an atom into out; refuses atoms longer than the buffer. */
static int atom(const char *b, int *i, char *out) {
  return ei_decode_atom(b, i, out) < 0 ? -1 : 0;
}

int dm__ctrl_decode(const char *pkt, size_t len, dm__ctrl *c) {
  size_t cend = 1;
  int i = 1, arity;
  long op;
  memset(c, 0, offsetof(dm__ctrl, from));
  c->toname[0] = 0; /* a pid target leaves it empty: readers test it */
  c->reason = c->msg = NULL;
  if (len < 2 || (unsigned char)pkt[0] != PASS_THROUGH)
    return DM_EBADPKT;
  if (len > INT32_MAX)
    return DM_ETOOBIG;
  if (dm__term_skip_versioned(pkt, len, &cend))
    return DM_EBADTERM;
  if (cend < len) {
    size_t mend = cend;
    if (dm__term_skip_versioned(pkt, len, &mend) || mend != len)
      return DM_EBADTERM;
    c->msg = pkt + cend;
    c->msg_len = len - cend;
  }
  if (ei_decode_version(pkt, &i, &arity) < 0 ||
      ei_decode_tuple_header(pkt, &i, &arity) < 0 || arity < 1 ||
      ei_decode_long(pkt, &i, &op) < 0)
    return DM_EBADTERM;
  c->raw_op = op;
  /* A term of the right size but the wrong shape is as malformed as a
   * truncated one: every branch checks arity and field types. */
#define PID(field)                                                             \
  do {                                                                         \
    if (ei_decode_pid(pkt, &i, &c->field) < 0)                                 \
      goto bad;                                                                \
    c->has_##field = 1;                                                        \
  } while (0)
#define SKIP()                                                                 \
  do {                                                                         \
    const char *p_;                                                            \
    size_t n_;                                                                 \
    if (slice(pkt, cend, &i, &p_, &n_))                                        \
      goto bad;                                                                \
  } while (0)
  switch (op) {
  case 1:  /* LINK {1, From, To} */
  case 4:  /* UNLINK */
  case 7:  /* GROUP_LEADER */
    if (arity != 3)
      goto bad;
    PID(from);
    PID(to);
    c->op = (int)op;
    break;
  case 2:  /* SEND {2, Unused, To} */
  case 12: /* SEND_TT {12, Unused, To, Token} */
    if (arity != (op == 2 ? 3 : 4) || !c->msg)
      goto bad;
    SKIP();
    PID(to);
    c->op = DM__OP_SEND;
    break;
  case 22: /* SEND_SENDER {22, From, To} */
  case 23: /* SEND_SENDER_TT {23, From, To, Token} */
    if (arity != (op == 22 ? 3 : 4) || !c->msg)
      goto bad;
    PID(from);
    PID(to);
    c->op = DM__OP_SEND;
    break;
  case 3:  /* EXIT {3, From, To, Reason} */
  case 8:  /* EXIT2 */
  case 13: /* EXIT_TT {13, From, To, Token, Reason} */
  case 18: /* EXIT2_TT */
    if (arity != (op < 10 ? 4 : 5))
      goto bad;
    PID(from);
    PID(to);
    if (op > 10)
      SKIP();
    if (slice(pkt, cend, &i, &c->reason, &c->reason_len))
      goto bad;
    c->op = (op == 3 || op == 13) ? DM__OP_EXIT : DM__OP_EXIT2;
    break;
  case 24: /* PAYLOAD_EXIT {24, From, To} + Reason */
  case 25: /* PAYLOAD_EXIT_TT {25, From, To, Token} + Reason */
  case 26: /* PAYLOAD_EXIT2 */
  case 27: /* PAYLOAD_EXIT2_TT */
    if (arity != ((op & 1) ? 4 : 3) || !c->msg)
      goto bad;
    PID(from);
    PID(to);
    c->reason = c->msg + 1;
    c->reason_len = c->msg_len - 1;
    c->msg = NULL;
    c->msg_len = 0;
    c->op = op < 26 ? DM__OP_EXIT : DM__OP_EXIT2;
    break;
  case 6:  /* REG_SEND {6, From, Unused, ToName} */
  case 16: /* REG_SEND_TT {16, From, Unused, ToName, Token} */
    if (arity != (op == 6 ? 4 : 5) || !c->msg)
      goto bad;
    PID(from);
    SKIP();
    if (atom(pkt, &i, c->toname))
      goto bad;
    c->op = DM__OP_REG_SEND;
    break;
  case 19: /* MONITOR_P {19, From, ToPidOrName, Ref} */
  case 20: /* DEMONITOR_P */
    if (arity != 4)
      goto bad;
    PID(from);
    {
      int type, size;
      if (ei_get_type(pkt, &i, &type, &size) < 0)
        goto bad;
      if (type == ERL_ATOM_EXT || type == ERL_SMALL_ATOM_EXT ||
          type == ERL_ATOM_UTF8_EXT || type == ERL_SMALL_ATOM_UTF8_EXT) {
        if (atom(pkt, &i, c->toname))
          goto bad;
      } else {
        PID(to);
      }
    }
    if (ei_decode_ref(pkt, &i, &c->ref) < 0)
      goto bad;
    c->op = (int)op;
    break;
  case 21: /* MONITOR_P_EXIT {21, FromPidOrName, To, Ref, Reason} */
    if (arity != 5)
      goto bad;
    SKIP();
    PID(to);
    if (ei_decode_ref(pkt, &i, &c->ref) < 0 ||
        slice(pkt, cend, &i, &c->reason, &c->reason_len))
      goto bad;
    c->op = DM__OP_MONITOR_P_EXIT;
    break;
  case 33: /* ALIAS_SEND {33, From, Alias} */
  case 34: /* ALIAS_SEND_TT {34, From, Alias, Token} */
    if (arity != (op == 33 ? 3 : 4) || !c->msg)
      goto bad;
    PID(from);
    if (ei_decode_ref(pkt, &i, &c->ref) < 0)
      goto bad;
    c->op = DM__OP_ALIAS_SEND;
    break;
  case 35: /* UNLINK_ID {35, Id, From, To} */
  case 36: /* UNLINK_ID_ACK */
    if (arity != 4 || ei_decode_ulonglong(pkt, &i, &c->unlink_id) < 0)
      goto bad;
    PID(from);
    PID(to);
    c->op = (int)op;
    break;
  default:
    c->op = DM__OP_OTHER;
    break;
  }
#undef PID
#undef SKIP
  return 0;
bad:
  return DM_EBADTERM;
}

/* At *i, `[alias | Ref]`: reads Ref into ref and moves past it. */
static int alias_form(const char *msg, size_t len, int *i, erlang_ref *ref) {
  int j = *i, size;
  if (ei_decode_list_header(msg, &j, &size) < 0 || size != 1 ||
      !dm__term_is_atom(msg + j, len - (size_t)j, "alias"))
    return -1;
  size_t h = (size_t)j;
  if (dm__term_skip(msg, len, &h))
    return -1;
  j = (int)h;
  if (ei_decode_ref(msg, &j, ref) < 0)
    return -1;
  *i = j;
  return 0;
}

void dm__gen_decode(const char *msg, size_t len, dm__gen *g) {
  int i = 0, arity, type, size;
  g->kind = DM__GEN_OTHER;
  g->has_mref = 0;
  g->alias = 0;
  if (ei_decode_version(msg, &i, &arity) < 0 ||
      ei_decode_tuple_header(msg, &i, &arity) < 0)
    return;
  int call = arity == 3 && dm__term_is_atom(msg + i, len - (size_t)i, "$gen_call");
  /* sys.erl's requests are gen:call's with the label `system`: the same
   * envelope, so the same reply reaches the caller. */
  int sys = !call && arity == 3 && dm__term_is_atom(msg + i, len - (size_t)i, "system");
  if (call || sys) {
    size_t k = (size_t)i;
    if (dm__term_skip(msg, len, &k))
      return;
    i = (int)k;
    if (ei_decode_tuple_header(msg, &i, &arity) < 0 || arity != 2 ||
        ei_decode_pid(msg, &i, &g->from) < 0)
      return;
    g->tag = msg + i;
    if (ei_get_type(msg, &i, &type, &size) < 0)
      return;
    int j = i;
    if (type == ERL_LIST_EXT) {
      /* [alias | Mref], or [[alias | Mref] | _]: Mref is the caller's
       * monitor and its alias. Another list names neither. */
      int h = j;
      if (alias_form(msg, len, &h, &g->mref) == 0 ||
          (ei_decode_list_header(msg, &j, &size) == 0 &&
           alias_form(msg, len, &j, &g->mref) == 0))
        g->has_mref = g->alias = 1;
    } else if (ei_decode_ref(msg, &j, &g->mref) == 0) {
      g->has_mref = 1;
    }
    k = (size_t)i;
    if (dm__term_skip(msg, len, &k))
      return;
    g->tag_len = k - (size_t)i;
    g->req = msg + k;
    if (dm__term_skip(msg, len, &k))
      return;
    g->req_len = (size_t)(msg + k - g->req);
    g->kind = call ? DM__GEN_CALL : DM__GEN_SYSTEM;
  } else if (arity == 2 && dm__term_is_atom(msg + i, len - (size_t)i, "$gen_cast")) {
    size_t k = (size_t)i;
    if (dm__term_skip(msg, len, &k))
      return;
    g->req = msg + k;
    if (dm__term_skip(msg, len, &k))
      return;
    g->req_len = (size_t)(msg + k - g->req);
    g->kind = DM__GEN_CAST;
  }
}

int dm__pkt_begin(ei_x_buff *x) {
  static const char head[5] = {0, 0, 0, 0, PASS_THROUGH};
  return ei_x_append_buf(x, head, 5) < 0 || ei_x_encode_version(x) < 0
             ? DM_ENOMEM
             : 0;
}

int dm__pkt_end(ei_x_buff *x) {
  dm__put32be(x->buff, (uint32_t)(x->index - 4));
  return 0;
}

int dm__enc_send_ctrl(ei_x_buff *x, const erlang_pid *to) {
  if (ei_x_encode_tuple_header(x, 3) < 0 || ei_x_encode_long(x, 2) < 0 ||
      ei_x_encode_atom(x, "") < 0 || ei_x_encode_pid(x, to) < 0)
    return DM_ENOMEM;
  return 0;
}

int dm__enc_alias_send_ctrl(ei_x_buff *x, const erlang_pid *from,
                            const erlang_ref *alias) {
  if (ei_x_encode_tuple_header(x, 3) < 0 || ei_x_encode_long(x, 33) < 0 ||
      ei_x_encode_pid(x, from) < 0 || ei_x_encode_ref(x, alias) < 0)
    return DM_ENOMEM;
  return 0;
}

int dm__enc_reply_head(ei_x_buff *x, const erlang_pid *to,
                       const erlang_pid *self, const erlang_ref *alias,
                       const char *tag, size_t tag_len) {
  if (dm__pkt_begin(x) ||
      (alias ? dm__enc_alias_send_ctrl(x, self, alias)
             : dm__enc_send_ctrl(x, to)) ||
      ei_x_encode_version(x) < 0 || ei_x_encode_tuple_header(x, 2) < 0 ||
      ei_x_append_buf(x, tag, (int)tag_len) < 0)
    return DM_ENOMEM;
  return 0;
}

int dm__enc_reply(ei_x_buff *x, const dm__gen *g, const erlang_pid *self,
                  const char *reply, size_t reply_len) {
  const erlang_ref *alias = self && g->alias ? &g->mref : NULL;
  if (dm__enc_reply_head(x, &g->from, self, alias, g->tag, g->tag_len) ||
      ei_x_append_buf(x, reply, (int)reply_len) < 0)
    return DM_ENOMEM;
  return dm__pkt_end(x);
}

int dm__enc_exit(ei_x_buff *x, const erlang_pid *from, const erlang_pid *to,
                 const char *reason, size_t reason_len) {
  if (dm__pkt_begin(x) || ei_x_encode_tuple_header(x, 4) < 0 ||
      ei_x_encode_long(x, 3) < 0 || ei_x_encode_pid(x, from) < 0 ||
      ei_x_encode_pid(x, to) < 0 ||
      ei_x_append_buf(x, reason, (int)reason_len) < 0)
    return DM_ENOMEM;
  return dm__pkt_end(x);
}

int dm__enc_monitor_p_exit(ei_x_buff *x, const char *from_name,
                           const erlang_pid *from_pid, const erlang_pid *to,
                           const erlang_ref *ref, const char *reason,
                           size_t reason_len) {
  if (dm__pkt_begin(x) || ei_x_encode_tuple_header(x, 5) < 0 ||
      ei_x_encode_long(x, 21) < 0 ||
      (from_name ? ei_x_encode_atom(x, from_name)
                 : ei_x_encode_pid(x, from_pid)) < 0 ||
      ei_x_encode_pid(x, to) < 0 || ei_x_encode_ref(x, ref) < 0 ||
      ei_x_append_buf(x, reason, (int)reason_len) < 0)
    return DM_ENOMEM;
  return dm__pkt_end(x);
}

int dm__enc_unlink_id_ack(ei_x_buff *x, unsigned long long id,
                          const erlang_pid *from, const erlang_pid *to) {
  if (dm__pkt_begin(x) || ei_x_encode_tuple_header(x, 4) < 0 ||
      ei_x_encode_long(x, 36) < 0 || ei_x_encode_ulonglong(x, id) < 0 ||
      ei_x_encode_pid(x, from) < 0 || ei_x_encode_pid(x, to) < 0)
    return DM_ENOMEM;
  return dm__pkt_end(x);
}

/* The target of a monitor or a call: a registered name when to_name is
 * not NULL, else a pid. */
static int enc_target(ei_x_buff *x, const char *to_name, const erlang_pid *to_pid) {
  return (to_name ? ei_x_encode_atom(x, to_name) : ei_x_encode_pid(x, to_pid)) < 0;
}

int dm__enc_monitor_p(ei_x_buff *x, int op, const erlang_pid *from,
                      const char *to_name, const erlang_pid *to_pid,
                      const erlang_ref *ref) {
  if (dm__pkt_begin(x) || ei_x_encode_tuple_header(x, 4) < 0 ||
      ei_x_encode_long(x, op) < 0 || ei_x_encode_pid(x, from) < 0 ||
      enc_target(x, to_name, to_pid) || ei_x_encode_ref(x, ref) < 0)
    return DM_ENOMEM;
  return dm__pkt_end(x);
}

int dm__enc_call(ei_x_buff *x, const erlang_pid *from, const char *to_name,
                 const erlang_pid *to_pid, const erlang_ref *ref,
                 const char *req, size_t req_len) {
  if (dm__pkt_begin(x))
    return DM_ENOMEM;
  int bad = to_name ? ei_x_encode_tuple_header(x, 4) < 0 || ei_x_encode_long(x, 6) < 0 ||
                          ei_x_encode_pid(x, from) < 0 || ei_x_encode_atom(x, "") < 0 ||
                          ei_x_encode_atom(x, to_name) < 0
                    : dm__enc_send_ctrl(x, to_pid) != 0;
  if (bad || ei_x_encode_version(x) < 0 || ei_x_encode_tuple_header(x, 3) < 0 ||
      ei_x_encode_atom(x, "$gen_call") < 0 || ei_x_encode_tuple_header(x, 2) < 0 ||
      ei_x_encode_pid(x, from) < 0 || ei_x_encode_ref(x, ref) < 0 ||
      ei_x_append_buf(x, req, (int)req_len) < 0)
    return DM_ENOMEM;
  return dm__pkt_end(x);
}
