/* What the node sends: messages, exit signals, monitor exits and replies
 * to gen calls, each built once in the node's own packet buffer and
 * queued on the peer's connection. Loop thread only. */
#include <stdlib.h>
#include <string.h>

#include "dm.h"
#include "node/node.h"

/* A packet buffer bigger than this shrinks back to it once no packet
 * has needed more for TRIM_MS: the memory of one big reply goes back,
 * and a node that answers big replies all the time keeps its buffer
 * rather than growing it again for each (ei grows a buffer by a few
 * hundred bytes at a time). */
#define PKT_KEEP (64 * 1024)
#define TRIM_MS 1000

/* The node's packet buffer, emptied for a new packet. Only this file
 * touches it. */
static ei_x_buff *pkt(dm__node *n) {
  if ((size_t)n->pkt.index > PKT_KEEP)
    n->pkt_big_at = uv_now(n->loop); /* the packet before was big */
  n->pkt.index = 0;
  n->pkt_body = 0; /* no reply open */
  return &n->pkt;
}


void dm__node_pkt_trim(dm__node *n) {
  uint64_t now = uv_now(n->loop);
  if ((size_t)n->pkt.index > PKT_KEEP)
    n->pkt_big_at = now; /* the last loop turn that needed a big buffer */
  if (n->pkt.buffsz <= PKT_KEEP || now - n->pkt_big_at < TRIM_MS)
    return;
  char *p = realloc(n->pkt.buff, PKT_KEEP); /* ei allocates with malloc */
  if (p) {
    n->pkt.buff = p;
    n->pkt.buffsz = PKT_KEEP;
    n->pkt.index = 0;
  }
}

/* A packet this big goes to its connection as it is, without a copy,
 * when the connection has nothing queued; the node's buffer starts anew. */
#define PKT_HAND_OVER (1024 * 1024)

static int send_pkt(dm__node *n, const char *to) {
  int r;
  if (n->pkt.index >= PKT_HAND_OVER) {
    r = dm__dist_send_owned(&n->dist, to, &n->pkt.buff, (size_t)n->pkt.index,
                            (size_t)n->pkt.buffsz);
    if (!n->pkt.buff) {
      n->pkt.buffsz = 0;
      n->pkt.index = 0;
    }
  } else {
    r = dm__dist_send(&n->dist, to, n->pkt.buff, (size_t)n->pkt.index);
  }
  if (r == DM_ECLOSED)
    n->stats.undeliverable++;
  return r;
}

/* A process's own message connects to its node if need be, as a send on
 * a BEAM node does; replies and signals go only to a node still there. */
int dm__node_send_msg(dm__node *n, const erlang_pid *to, const char *msg,
                      size_t len) {
  ei_x_buff *x = pkt(n);
  if (dm__pkt_begin(x) || dm__enc_send_ctrl(x, to) || ei_x_encode_version(x) < 0 ||
      ei_x_append_buf(x, msg, (int)len) < 0 || dm__pkt_end(x))
    return DM_ENOMEM;
  int r = dm__dist_send_connect(&n->dist, to->node, x->buff, (size_t)x->index);
  if (r == DM_ECLOSED)
    n->stats.undeliverable++;
  return r;
}

int dm__node_send_monitor(dm__node *n, int op, const erlang_pid *from,
                          const char *node, const char *to_name,
                          const erlang_pid *to_pid, const erlang_ref *ref) {
  if (dm__enc_monitor_p(pkt(n), op, from, to_name, to_pid, ref))
    return DM_ENOMEM;
  return send_pkt(n, node);
}

int dm__node_send_call(dm__node *n, const erlang_pid *from, const char *node,
                       const char *to_name, const erlang_pid *to_pid,
                       const erlang_ref *ref, const char *req, size_t len) {
  if (dm__enc_call(pkt(n), from, to_name, to_pid, ref, req, len))
    return DM_ENOMEM;
  return send_pkt(n, node);
}

int dm__node_send_exit(dm__node *n, const erlang_pid *from,
                       const erlang_pid *to, const char *reason, size_t len) {
  if (dm__enc_exit(pkt(n), from, to, reason, len))
    return DM_ENOMEM;
  return send_pkt(n, to->node);
}

int dm__node_send_monitor_exit(dm__node *n, const char *from_name,
                               const erlang_pid *from_pid,
                               const erlang_pid *to, const erlang_ref *ref,
                               const char *reason, size_t len) {
  if (dm__enc_monitor_p_exit(pkt(n), from_name, from_pid, to, ref, reason, len))
    return DM_ENOMEM;
  return send_pkt(n, to->node);
}

int dm__node_send_unlink_id_ack(dm__node *n, unsigned long long id,
                                const erlang_pid *from, const erlang_pid *to) {
  if (dm__enc_unlink_id_ack(pkt(n), id, from, to))
    return DM_ENOMEM;
  return send_pkt(n, to->node);
}

void dm__node_noproc(dm__node *n, const dm__ctrl *ctl) {
  dm__gen g;
  if (!ctl->msg)
    return;
  dm__gen_decode(ctl->msg, ctl->msg_len, &g);
  if ((g.kind != DM__GEN_CALL && g.kind != DM__GEN_SYSTEM) || !g.has_mref)
    return;
  dm__node_send_monitor_exit(n, ctl->op == DM__OP_REG_SEND ? ctl->toname : NULL,
                             &ctl->to, &g.from, &g.mref, DM__A_NOPROC,
                             DM__ALEN(DM__A_NOPROC));
}

/* ---- replies ---------------------------------------------------------------- */

/* A pid of this node, for a signal whose sender the receiver never sees
 * (an ALIAS_SEND's, a call's exit): the caller's own numbers, our node. */
static void our_pid(const dm__node *n, const erlang_pid *like, erlang_pid *out) {
  *out = *like;
  strcpy(out->node, n->dist.ec.thisnodename);
  out->creation = n->dist.ec.creation;
}

/* A reply goes to the caller's alias when its tag names one and its node
 * takes ALIAS_SEND: given up (the call timed out), the alias makes BEAM
 * drop the reply, which sent to the pid would land in the mailbox. */
static const erlang_ref *alias_of(dm__node *n, const erlang_pid *to, int alias,
                                  const erlang_ref *mref) {
  const dm__conn *c = alias ? dm__dist_conn(&n->dist, to->node) : NULL;
  return c && (c->flags & DM__DFLAG_ALIAS) ? mref : NULL;
}

static ei_x_buff *open_reply(dm__node *n, const erlang_pid *to, int alias,
                             const erlang_ref *mref, const char *tag,
                             size_t tag_len) {
  ei_x_buff *x = pkt(n);
  const erlang_ref *to_alias = alias_of(n, to, alias, mref);
  erlang_pid self;
  if (to_alias)
    our_pid(n, to, &self);
  if (dm__enc_reply_head(x, to, &self, to_alias, tag, tag_len))
    return NULL;
  n->pkt_body = (size_t)x->index;
  return x;
}

ei_x_buff *dm__reply_begin(dm__node *n, const dm__gen *g) {
  return open_reply(n, &g->from, g->alias, &g->mref, g->tag, g->tag_len);
}

/* The call exits instead: with nothing sensible to say, the caller's
 * monitor fires, as it would for a callee that died. */
static int exit_with(dm__node *n, const erlang_pid *to, int has_mref,
                     const erlang_ref *mref, const char *reason, size_t len) {
  if (!has_mref)
    return DM_ENOMEM;
  erlang_pid self; /* any pid of ours would do; the caller only sees the ref */
  our_pid(n, to, &self);
  return dm__node_send_monitor_exit(n, NULL, &self, to, mref, reason, len);
}

static int exit_call(dm__node *n, const erlang_pid *to, int has_mref,
                     const erlang_ref *mref) {
  return exit_with(n, to, has_mref, mref, DM__A_ENOMEM, DM__ALEN(DM__A_ENOMEM));
}

static int close_reply(dm__node *n, const erlang_pid *to, int has_mref,
                       const erlang_ref *mref, int rc) {
  ei_x_buff *x = &n->pkt;
  if (rc && !n->pkt_body)
    return exit_call(n, to, has_mref, mref); /* not even the head was written */
  if (rc) {
    /* Whatever part of the body was written goes: {error, enomem} takes
     * its place, in memory the buffer already had. */
    static const char nomem[] = "\x68\x02" DM__A_ERROR DM__A_ENOMEM;
    x->index = (int)n->pkt_body;
    if (ei_x_append_buf(x, nomem, (int)sizeof nomem - 1) < 0)
      return exit_call(n, to, has_mref, mref);
  }
  dm__pkt_end(x);
  return send_pkt(n, to->node);
}

int dm__reply_end(dm__node *n, const dm__gen *g, int rc) {
  return close_reply(n, &g->from, g->has_mref, &g->mref, rc);
}

int dm__reply(dm__node *n, const dm__gen *g, const char *term, size_t len) {
  ei_x_buff *x = dm__reply_begin(n, g);
  if (!x)
    return exit_call(n, &g->from, g->has_mref, &g->mref);
  return dm__reply_end(n, g, ei_x_append_buf(x, term, (int)len) < 0 ? DM_ENOMEM : 0);
}

dm__replyto *dm__replyto_new(const dm__gen *g) {
  dm__replyto *r = dm__malloc(sizeof *r + g->tag_len);
  if (!r)
    return NULL;
  r->from = g->from;
  r->has_mref = g->has_mref;
  r->alias = g->alias;
  r->mref = g->mref;
  r->tag_len = g->tag_len;
  memcpy(r->tag, g->tag, g->tag_len);
  return r;
}

void dm__reply_to(dm__node *n, const dm__replyto *r, const char *term,
                  size_t len, int wrap) {
  static const char ok2[] = "\x68\x02" DM__A_OK; /* {ok, Reply} */
  if (!r)
    return;
  ei_x_buff *x = open_reply(n, &r->from, r->alias, &r->mref, r->tag, r->tag_len);
  if (!x) {
    exit_call(n, &r->from, r->has_mref, &r->mref);
    return;
  }
  int rc = (wrap && ei_x_append_buf(x, ok2, (int)sizeof ok2 - 1) < 0) ||
           ei_x_append_buf(x, term, (int)len) < 0;
  close_reply(n, &r->from, r->has_mref, &r->mref, rc ? DM_ENOMEM : 0);
}

void dm__reply_exit(dm__node *n, const dm__replyto *r, const char *reason,
                    size_t len) {
  if (r)
    exit_with(n, &r->from, r->has_mref, &r->mref, reason, len);
}
