/* The node-level processes: `tarearbol_cnode` (info, stats) and the part
 * of `net_kernel` that makes net_adm:ping work. Their replies are encoded
 * once, into the outgoing packet. */
#include <string.h>

#include "dm.h"
#include "node/node.h"

typedef struct {
  dm__proc proc;
} service;

typedef struct {
  dm__node *node;
  service *svc[2];
  int kind_service, kind_net_kernel;
} services;

static services the_services; /* one node per process */

#define ENC(call)                                                              \
  do {                                                                         \
    if ((call) < 0)                                                            \
      return DM_ENOMEM;                                                        \
  } while (0)

static int encode_info(dm__node *n, ei_x_buff *x) {
  erlang_pid self;
  dm__proc *p = dm__nametab_get(&n->names, "tarearbol_cnode");
  dm__dist *d = &n->dist;
  dm__proc_pid(n, p, &self);
  ENC(ei_x_encode_map_header(x, 8));
  ENC(ei_x_encode_atom(x, "node"));
  ENC(ei_x_encode_atom(x, d->ec.thisnodename));
  ENC(ei_x_encode_atom(x, "version"));
  ENC(ei_x_encode_binary(x, n->version, (long)strlen(n->version)));
  ENC(ei_x_encode_atom(x, "creation"));
  ENC(ei_x_encode_ulong(x, d->ec.creation));
  ENC(ei_x_encode_atom(x, "uptime_ms"));
  ENC(ei_x_encode_ulonglong(x, uv_now(n->loop) - n->start_ms));
  ENC(ei_x_encode_atom(x, "port"));
  ENC(ei_x_encode_long(x, d->port));
  ENC(ei_x_encode_atom(x, "pid"));
  ENC(ei_x_encode_pid(x, &self));
  ENC(ei_x_encode_atom(x, "peers"));
  if (d->nconns)
    ENC(ei_x_encode_list_header(x, (long)d->nconns));
  for (size_t i = 0; i < d->nconns; i++)
    ENC(ei_x_encode_atom(x, d->peer_names[d->conns[i]->peer]));
  ENC(ei_x_encode_empty_list(x));
  ENC(ei_x_encode_atom(x, "managers"));
  for (size_t i = 0; i < n->nhooks; i++)
    if (n->hooks[i].ops->describe)
      return n->hooks[i].ops->describe(n->hooks[i].ud, x);
  ENC(ei_x_encode_empty_list(x));
  return 0;
}

static int encode_stats(dm__node *n, ei_x_buff *x) {
  dm__dist_stats *ds = &n->dist.stats;
  dm__node_stats *ns = &n->stats;
  int count = 1 /* monitors */
#define DM__ONE(name) +1
              DM__DIST_STATS_MAP(DM__ONE) DM__NODE_STATS_MAP(DM__ONE)
#undef DM__ONE
      ;
  ENC(ei_x_encode_map_header(x, count));
  /* A gauge: monitors remote processes hold on this node's now. Every
   * gen_server call from BEAM adds one and takes it back. */
  ENC(ei_x_encode_atom(x, "monitors"));
  ENC(ei_x_encode_ulonglong(x, n->nmonitors));
#define DM__ENC(name)                                                          \
  ENC(ei_x_encode_atom(x, #name));                                             \
  ENC(ei_x_encode_ulonglong(x, s->name));
  {
    dm__dist_stats *s = ds;
    DM__DIST_STATS_MAP(DM__ENC)
  }
  {
    dm__node_stats *s = ns;
    DM__NODE_STATS_MAP(DM__ENC)
  }
#undef DM__ENC
  return 0;
}

/* {error, {unknown_request, Req}}: the one encoder of it, for every
 * process of the node. */
int dm__enc_unknown_request(ei_x_buff *x, const char *req, size_t len) {
  static const char head[] = "\x68\x02" DM__A_ERROR "\x68\x02\x77\x0f" "unknown_request";
  ENC(ei_x_append_buf(x, head, (int)sizeof head - 1));
  ENC(ei_x_append_buf(x, req, (int)len));
  return 0;
}

static void node_service_message(dm__proc *p, dm__node *n, const dm__ctrl *ctl) {
  dm__gen g;
  (void)p;
  dm__gen_decode(ctl->msg, ctl->msg_len, &g);
  if (g.kind == DM__GEN_SYSTEM) {
    dm__sys_refuse(n, &g); /* at once: sys never waits on a service */
    return;
  }
  if (g.kind != DM__GEN_CALL) {
    if (!dm__remote_reply(n, ctl->msg, ctl->msg_len))
      DM_DEBUG("tarearbol_cnode ignores a message that is not a call");
    return;
  }
  if (dm__remote_request(n, &g))
    return;
  ei_x_buff *x = dm__reply_begin(n, &g);
  int r = DM_ENOMEM;
  if (!x) {
  } else if (dm__term_is_atom(g.req, g.req_len, "info")) {
    r = encode_info(n, x);
  } else if (dm__term_is_atom(g.req, g.req_len, "stats")) {
    r = encode_stats(n, x);
  } else {
    n->stats.unknown_requests++;
    r = dm__enc_unknown_request(x, g.req, g.req_len);
  }
  r = dm__reply_end(n, &g, r);
  if (r && r != DM_ECLOSED)
    DM_ERROR("tarearbol_cnode: cannot reply: %s", dm_strerror(r));
}

static void net_kernel_message(dm__proc *p, dm__node *n, const dm__ctrl *ctl) {
  dm__gen g;
  int arity = 0, i = 0;
  (void)p;
  dm__gen_decode(ctl->msg, ctl->msg_len, &g);
  if (g.kind == DM__GEN_SYSTEM)
    dm__sys_refuse(n, &g);
  if (g.kind != DM__GEN_CALL)
    return;
  ei_x_buff *x = dm__reply_begin(n, &g);
  int r = DM_ENOMEM;
  if (!x) {
  } else if (ei_decode_tuple_header(g.req, &i, &arity) == 0 && arity == 2 &&
             dm__term_is_atom(g.req + i, g.req_len - (size_t)i, "is_auth")) {
    /* {is_auth, Node}: reaching this point means the handshake succeeded. */
    r = ei_x_encode_atom(x, "yes") < 0 ? DM_ENOMEM : 0;
  } else {
    n->stats.unknown_requests++;
    r = dm__enc_unknown_request(x, g.req, g.req_len);
  }
  dm__reply_end(n, &g, r);
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

static const dm__proc_ops service_ops = {node_service_message, service_exit, NULL};
static const dm__proc_ops net_kernel_ops = {net_kernel_message, service_exit, NULL};
static const char *const names[] = {"tarearbol_cnode", "net_kernel"};

static void services_free(void *ud) {
  services *ss = ud;
  for (size_t i = 0; i < 2; i++) {
    service *s = ss->svc[i];
    if (!s)
      continue;
    dm__nametab_del(&ss->node->names, names[i]);
    dm__proctab_del(&ss->node->pids, s->proc.key);
    dm__proc_release(ss->node, &s->proc);
    dm__free(s);
    ss->svc[i] = NULL;
  }
}

static const dm__node_hooks services_hooks = {.free = services_free};

static int start_service(dm__node *n, services *ss, size_t i, int kind) {
  service *s = dm__calloc(1, sizeof *s);
  int r;
  if (!s)
    return DM_ENOMEM;
  s->proc.kind = (uint8_t)kind;
  if ((r = dm__proc_spawn(n, &s->proc)))
    goto err;
  if ((r = dm__proc_register(n, &s->proc, names[i]))) {
    dm__proctab_del(&n->pids, s->proc.key);
    goto err;
  }
  ss->svc[i] = s;
  return 0;
err:
  dm__free(s);
  return r;
}

int dm__services_init(dm__node *n) {
  services *ss = &the_services;
  memset(ss, 0, sizeof *ss);
  ss->node = n;
  int r = dm__node_add_hooks(n, &services_hooks, ss);
  int k1 = dm__node_add_kind(n, &service_ops);
  int k2 = dm__node_add_kind(n, &net_kernel_ops);
  if (r || k1 < 0 || k2 < 0)
    return DM_ENOMEM;
  r = start_service(n, ss, 0, k1);
  return r ? r : start_service(n, ss, 1, k2);
}
