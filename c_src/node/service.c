/* The node-level processes: `tarearbol_cnode` (info, stats) and the part of
 * `net_kernel` that makes net_adm:ping work. */
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "dm.h"
#include "node/node.h"
#include "term/term.h"

typedef struct {
  dm__proc proc;
} service;

static int encode_info(dm__node *n, ei_x_buff *x) {
  erlang_pid self;
  dm__proc *p = dm__nametab_get(&n->names, "tarearbol_cnode");
  dm__proc_pid(n, p, &self);
  if (ei_x_encode_map_header(x, 8) < 0 || ei_x_encode_atom(x, "node") < 0 ||
      ei_x_encode_atom(x, n->ec.thisnodename) < 0 ||
      ei_x_encode_atom(x, "version") < 0 ||
      ei_x_encode_binary(x, n->version, (long)strlen(n->version)) < 0 ||
      ei_x_encode_atom(x, "creation") < 0 ||
      ei_x_encode_ulong(x, n->ec.creation) < 0 ||
      ei_x_encode_atom(x, "uptime_ms") < 0 ||
      ei_x_encode_ulonglong(x, uv_now(n->loop) - n->start_ms) < 0 ||
      ei_x_encode_atom(x, "port") < 0 || ei_x_encode_long(x, n->port) < 0 ||
      ei_x_encode_atom(x, "pid") < 0 || ei_x_encode_pid(x, &self) < 0 ||
      ei_x_encode_atom(x, "peers") < 0)
    return DM_ENOMEM;
  if (n->nconns && ei_x_encode_list_header(x, (long)n->nconns) < 0)
    return DM_ENOMEM;
  for (size_t i = 0; i < n->nconns; i++)
    if (ei_x_encode_atom(x, n->peer_names[n->conns[i]->peer]) < 0)
      return DM_ENOMEM;
  if (ei_x_encode_empty_list(x) < 0 || ei_x_encode_atom(x, "managers") < 0)
    return DM_ENOMEM;
  return dm__encode_managers(n, x);
}

static int encode_stats(dm__node *n, ei_x_buff *x) {
  dm__stats *s = &n->stats;
  int count = 2 + 0
#define DM__ONE(name) +1
              DM__STATS_MAP(DM__ONE)
#undef DM__ONE
      ;
  if (ei_x_encode_map_header(x, count) < 0)
    return DM_ENOMEM;
#define DM__ENC(name)                                                          \
  if (ei_x_encode_atom(x, #name) < 0 ||                                        \
      ei_x_encode_ulonglong(x, s->name) < 0)                                   \
    return DM_ENOMEM;
  DM__STATS_MAP(DM__ENC)
#undef DM__ENC
  if (ei_x_encode_atom(x, "connections_accepted") < 0 ||
      ei_x_encode_ulonglong(x, atomic_load(&s->connections_accepted)) < 0 ||
      ei_x_encode_atom(x, "handshake_failures") < 0 ||
      ei_x_encode_ulonglong(x, atomic_load(&s->handshake_failures)) < 0)
    return DM_ENOMEM;
  return 0;
}

/* {error, {unknown_request, Req}} */
static int encode_unknown(ei_x_buff *x, const dm__gen *g) {
  if (ei_x_encode_tuple_header(x, 2) < 0 || ei_x_encode_atom(x, "error") < 0 ||
      ei_x_encode_tuple_header(x, 2) < 0 ||
      ei_x_encode_atom(x, "unknown_request") < 0 ||
      ei_x_append_buf(x, g->req, (int)g->req_len) < 0)
    return DM_ENOMEM;
  return 0;
}

static int is_atom_req(const dm__gen *g, const char *name) {
  return dm__term_is_atom(g->req, g->req_len, name);
}

static void node_service_message(dm__proc *p, dm__node *n,
                                 const dm__ctrl *ctl) {
  dm__gen g;
  ei_x_buff *x = &n->reply;
  int r;
  (void)p;
  dm__gen_decode(ctl->msg, ctl->msg_len, &g);
  if (g.kind != DM__GEN_CALL) {
    DM_DEBUG("tarearbol_cnode ignores a message that is not a call");
    return;
  }
  x->index = 0;
  if (is_atom_req(&g, "info")) {
    r = encode_info(n, x);
  } else if (is_atom_req(&g, "stats")) {
    r = encode_stats(n, x);
  } else {
    n->stats.unknown_requests++;
    r = encode_unknown(x, &g);
  }
  if (r == 0)
    r = dm__node_reply(n, &g, x->buff, (size_t)x->index);
  if (r && r != DM_ECLOSED)
    DM_ERROR("tarearbol_cnode: cannot reply: %s", dm_strerror(r));
}

static void net_kernel_message(dm__proc *p, dm__node *n, const dm__ctrl *ctl) {
  dm__gen g;
  ei_x_buff *x = &n->reply;
  int arity = 0, i = 0;
  (void)p;
  dm__gen_decode(ctl->msg, ctl->msg_len, &g);
  if (g.kind != DM__GEN_CALL)
    return;
  x->index = 0;
  /* {is_auth, Node}: reaching this point means the handshake succeeded. */
  if (ei_decode_tuple_header(g.req, &i, &arity) == 0 && arity == 2 &&
      dm__term_is_atom(g.req + i, g.req_len - (size_t)i, "is_auth")) {
    if (ei_x_encode_atom(x, "yes") < 0)
      return;
  } else {
    n->stats.unknown_requests++;
    if (encode_unknown(x, &g))
      return;
  }
  dm__node_reply(n, &g, x->buff, (size_t)x->index);
}

static void service_exit(dm__proc *p, dm__node *n, const erlang_pid *from,
                         const char *reason, size_t len) {
  /* Node services outlive their peers: an exit signal is noted, not obeyed,
   * as for a process that traps exits. */
  (void)p;
  (void)n;
  (void)reason;
  (void)len;
  DM_DEBUG("service got an exit signal from a process on %s", from->node);
}

const dm__proc_ops dm__service_ops = {node_service_message, service_exit};
const dm__proc_ops dm__net_kernel_ops = {net_kernel_message, service_exit};

static int start_service(dm__node *n, uint8_t kind, const char *name) {
  service *s = dm__calloc(1, sizeof *s);
  int r;
  if (!s)
    return DM_ENOMEM;
  s->proc.kind = kind;
  if ((r = dm__proc_spawn(n, &s->proc)))
    goto err;
  if ((r = dm__proc_register(n, &s->proc, name))) {
    dm__pidtab_del(&n->pids, s->proc.key);
    goto err;
  }
  return 0;
err:
  dm__free(s);
  return r;
}

int dm__services_init(dm__node *n) {
  int r = start_service(n, DM__P_NODE_SERVICE, "tarearbol_cnode");
  return r ? r : start_service(n, DM__P_NET_KERNEL, "net_kernel");
}

void dm__services_free(dm__node *n) {
  static const char *const names[] = {"tarearbol_cnode", "net_kernel"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    service *s = dm__nametab_del(&n->names, names[i]);
    if (s) {
      dm__pidtab_del(&n->pids, s->proc.key);
      dm__proc_free_links(n, &s->proc);
      dm__free(s);
    }
  }
}
