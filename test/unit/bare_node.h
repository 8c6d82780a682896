/* A node without sockets, for the dm layer's unit tests: ei's identity,
 * the process tables, the packet buffer and a loop, but no listen socket
 * and no connection. Whatever the node sends finds no peer, is counted in
 * stats.undeliverable, and stays in the node's packet buffer until the
 * next send, where sent() reads it back. Include after cmocka.h. */
#ifndef TEST_BARE_NODE_H
#define TEST_BARE_NODE_H

#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ei.h>

#include "base/base.h"
#include "dm.h"
#include "node/node.h"

/* An encoded term, no version byte. */
typedef struct {
  char b[256];
  size_t len;
} term;

/* The term ei_x_format writes for text ("{ok, 5}", "[{restart, temporary}]"). */
static inline term T(const char *text) {
  term t = {{0}, 0};
  ei_x_buff x;
  assert_int_equal(ei_x_new(&x), 0);
  assert_int_equal(ei_x_format_wo_ver(&x, text), 0);
  assert_true((size_t)x.index <= sizeof t.b);
  memcpy(t.b, x.buff, (size_t)x.index);
  t.len = (size_t)x.index;
  ei_x_free(&x);
  return t;
}

#define assert_term_equal(data_, len_, term_)                                  \
  do {                                                                         \
    term t_ = (term_);                                                         \
    assert_int_equal((len_), t_.len);                                          \
    assert_memory_equal((data_), t_.b, t_.len);                                \
  } while (0)

typedef struct {
  uv_loop_t loop;
  dm__node n;
} bare_node;

/* A node as the program makes it, without the listen socket: a pid can
 * be made and a reply built, and none can leave. */
static inline void bare_node_init(bare_node *b) {
  dm__config cfg;
  memset(b, 0, sizeof *b);
  assert_int_equal(uv_loop_init(&b->loop), 0);
  dm__config_defaults(&cfg);
  cfg.name = "unit@localhost";
  assert_int_equal(dm__node_init_unlistened(&b->n, &b->loop, &cfg, "cookie"), 0);
}

/* The node stopped and freed as the program does it: the loop must close,
 * nothing is left behind. */
static inline void bare_node_free(bare_node *b) {
  dm__node_stop(&b->n);
  uv_run(&b->loop, UV_RUN_DEFAULT);
  dm__node_free(&b->n);
  assert_int_equal(uv_loop_close(&b->loop), 0);
}

/* A peer named `name` that advertised `flags`: one end of a socketpair
 * served as its connection. Returns the other end, which the test closes
 * after bare_node_free. */
static inline int bare_node_peer(bare_node *b, const char *name, uint64_t flags) {
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  assert_int_equal(dm__dist_adopt(&b->n.dist, sv[0], name, flags, NULL), 0);
  return sv[1];
}

/* ---- callers ----------------------------------------------------------- */

/* A gen call from caller k on a node we have no connection to. Its tag
 * is the integer k and its monitor's reference carries k too, so a reply
 * and an exit both say whose call they answer. tag must outlive g. */
static inline dm__gen caller(int k, const char *req, size_t req_len, term *tag) {
  dm__gen g;
  memset(&g, 0, sizeof g);
  g.kind = DM__GEN_CALL;
  strcpy(g.from.node, "caller@nohost");
  g.from.num = (unsigned)k;
  g.from.creation = 1;
  int i = 0;
  assert_int_equal(ei_encode_long(tag->b, &i, k), 0);
  tag->len = (size_t)i;
  g.tag = tag->b;
  g.tag_len = tag->len;
  g.has_mref = 1;
  strcpy(g.mref.node, "caller@nohost");
  g.mref.len = 3;
  g.mref.n[0] = (unsigned)k;
  g.mref.creation = 1;
  g.req = req;
  g.req_len = req_len;
  return g;
}

/* The same from an OTP 24+ caller on `node`: its tag is [alias | Mref].
 * tag must outlive g. */
static inline dm__gen alias_caller(int k, const char *node, term *tag) {
  dm__gen g = caller(k, NULL, 0, tag);
  strcpy(g.from.node, node);
  int i = 0;
  assert_int_equal(ei_encode_list_header(tag->b, &i, 1), 0);
  assert_int_equal(ei_encode_atom(tag->b, &i, "alias"), 0);
  assert_int_equal(ei_encode_ref(tag->b, &i, &g.mref), 0);
  tag->len = (size_t)i;
  g.tag_len = tag->len;
  g.alias = 1;
  return g;
}

/* A reply record of caller k, as a call's delivery makes it. */
static inline dm__replyto *caller_reply(int k) {
  term tag;
  dm__gen g = caller(k, NULL, 0, &tag);
  dm__replyto *r = dm__replyto_new(&g);
  assert_non_null(r);
  return r;
}

/* ---- what was sent ----------------------------------------------------- */

enum { SENT_REPLY = 1, SENT_ALIAS, SENT_EXIT };

typedef struct {
  int what; /* SENT_REPLY {Tag, Reply} to the caller's pid, SENT_ALIAS the
             * same to its alias, or SENT_EXIT (the call's monitor fired) */
  long k;   /* the caller, from the tag or the monitor's reference */
  term body; /* the reply, or the exit reason */
} sent_t;

/* The last packet the node sent: a reply to a call or a monitor exit. */
static inline sent_t sent(dm__node *n) {
  sent_t s;
  const char *p = n->pkt.buff + 4; /* past the length prefix */
  size_t len = (size_t)n->pkt.index - 4;
  int i = 1, arity, ver;
  long op;
  memset(&s, 0, sizeof s);
  assert_true(n->pkt.index > 4);
  assert_int_equal(ei_decode_version(p, &i, &ver), 0);
  assert_int_equal(ei_decode_tuple_header(p, &i, &arity), 0);
  assert_int_equal(ei_decode_long(p, &i, &op), 0);
  if (op == 2 || op == 33) {
    /* SEND {2, '', To} or ALIAS_SEND {33, From, Alias}, then {Tag, Reply}:
     * the tag is k, or [alias | Mref] with k in Mref, and an ALIAS_SEND
     * goes to that Mref. */
    dm__ctrl c;
    dm__gen g;
    assert_int_equal(dm__ctrl_decode(p, len, &c), 0);
    i = 0;
    assert_int_equal(ei_decode_version(c.msg, &i, &ver), 0);
    assert_int_equal(ei_decode_tuple_header(c.msg, &i, &arity), 0);
    assert_int_equal(arity, 2);
    int at = i;
    if (ei_decode_long(c.msg, &i, &s.k) < 0) {
      assert_int_equal(ei_decode_list_header(c.msg, &at, &arity), 0);
      assert_int_equal(ei_skip_term(c.msg, &at), 0);
      assert_int_equal(ei_decode_ref(c.msg, &at, &g.mref), 0);
      s.k = (long)g.mref.n[0];
      i = at;
    }
    s.what = op == 2 ? SENT_REPLY : SENT_ALIAS;
    if (op == 33)
      assert_int_equal(c.ref.n[0], (unsigned)s.k);
    s.body.len = c.msg_len - (size_t)i;
    memcpy(s.body.b, c.msg + i, s.body.len);
    return s;
  }
  /* MONITOR_P_EXIT {21, From, To, Ref, Reason} */
  erlang_ref ref;
  assert_int_equal(op, 21);
  assert_int_equal(arity, 5);
  assert_int_equal(ei_skip_term(p, &i), 0);
  assert_int_equal(ei_skip_term(p, &i), 0);
  assert_int_equal(ei_decode_ref(p, &i, &ref), 0);
  int start = i;
  assert_int_equal(ei_skip_term(p, &i), 0);
  s.what = SENT_EXIT;
  s.k = (long)ref.n[0];
  s.body.len = (size_t)(i - start);
  memcpy(s.body.b, p + start, s.body.len);
  return s;
}

#define assert_sent(n, what_, k_, body_)                                       \
  do {                                                                         \
    sent_t s_ = sent(n);                                                       \
    assert_int_equal(s_.what, (what_));                                        \
    assert_int_equal(s_.k, (k_));                                              \
    assert_term_equal(s_.body.b, s_.body.len, T(body_));                       \
  } while (0)

#endif
