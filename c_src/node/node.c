/* The node: ei set-up, the listen socket and its acceptor thread, epmd
 * registration, ticks, and the routing of control messages to processes. */
#include "node/node.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "base/base.h"
#include "dm.h"

#define PUBLISH_RETRY_MS 500

const dm__proc_ops *const dm__proc_kinds[DM__P_KINDS] = {
    &dm__service_ops, &dm__net_kernel_ops, &dm__manager_ops, &dm__worker_ops};

struct dm__accepted {
  struct dm__accepted *next;
  int fd;
  char peer[MAXNODELEN + 1];
};

void dm__config_defaults(dm__config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->net_ticktime = 60;
  cfg->max_packet = 64u << 20;
  cfg->handshake_ms = 5000;
  cfg->max_outbuf = (size_t)256 << 20;
  cfg->read_coalescing = 16384;
}

/* ---- processes ---------------------------------------------------------- */

static uint32_t pid_key(const erlang_pid *p) {
  return (p->num & 0x7fffu) | (p->serial & 0x1fffu) << 15;
}

int dm__proc_spawn(dm__node *n, dm__proc *p) {
  erlang_pid pid;
  if (ei_make_pid(&n->ec, &pid) < 0)
    return DM_EEI;
  p->key = pid_key(&pid);
  return dm__pidtab_put(&n->pids, p->key, p);
}

int dm__proc_register(dm__node *n, dm__proc *p, const char *name) {
  return dm__nametab_put(&n->names, name, p);
}

void dm__proc_pid(const dm__node *n, const dm__proc *p, erlang_pid *out) {
  strcpy(out->node, n->ec.thisnodename);
  out->num = p->key & 0x7fffu;
  out->serial = p->key >> 15;
  out->creation = n->ec.creation;
}

dm__proc *dm__node_local(dm__node *n, const erlang_pid *pid) {
  if (pid->creation != n->ec.creation || pid->num > 0x7fff ||
      pid->serial > 0x1fff || strcmp(pid->node, n->ec.thisnodename) != 0)
    return NULL;
  return dm__pidtab_get(&n->pids, pid_key(pid));
}

static int rpid_of(dm__node *n, const erlang_pid *pid, dm__rpid *out) {
  int peer = dm__node_intern(n, pid->node);
  if (peer < 0)
    return peer;
  out->peer = (uint32_t)peer;
  out->num = pid->num;
  out->serial = pid->serial;
  out->creation = pid->creation;
  return 0;
}

int dm__proc_link(dm__node *n, dm__proc *p, const erlang_pid *remote) {
  dm__rpid r;
  int e = rpid_of(n, remote, &r);
  if (e)
    return e;
  dm__links *l = p->links;
  for (uint32_t i = 0; l && i < l->count; i++)
    if (!memcmp(&l->items[i], &r, sizeof r))
      return 0;
  if (!l || l->count == l->cap) {
    uint32_t cap = l ? l->cap * 2 : 2;
    dm__links *nl = dm__realloc(l, sizeof *nl + cap * sizeof nl->items[0]);
    if (!nl)
      return DM_ENOMEM;
    if (!l) {
      nl->count = 0;
      n->nlinked++;
    }
    nl->cap = cap;
    p->links = l = nl;
  }
  l->items[l->count++] = r;
  return 0;
}

void dm__proc_unlink(dm__node *n, dm__proc *p, const erlang_pid *remote) {
  dm__links *l = p->links;
  dm__rpid r;
  if (!l || rpid_of(n, remote, &r))
    return;
  for (uint32_t i = 0; i < l->count; i++) {
    if (!memcmp(&l->items[i], &r, sizeof r)) {
      l->items[i] = l->items[--l->count];
      break;
    }
  }
  if (l->count == 0)
    dm__proc_free_links(n, p);
}

void dm__proc_free_links(dm__node *n, dm__proc *p) {
  if (!p->links)
    return;
  dm__free(p->links);
  p->links = NULL;
  n->nlinked--;
}

static int has_peer(const dm__links *l, uint32_t peer) {
  for (uint32_t i = 0; i < l->count; i++)
    if (l->items[i].peer == peer)
      return 1;
  return 0;
}

/* Fires, one at a time, the links of the process with this key to
 * processes on `peer`. An exit signal may stop the process (or, past its
 * manager's intensity, every worker), and a stopped process leaves the
 * pid table, so it is looked up again before each signal. */
static void fire_peer_links(dm__node *n, uint32_t key, uint32_t peer) {
  static const char noconnection[] = "\x77\x0cnoconnection";
  dm__proc *p;
  while ((p = dm__pidtab_get(&n->pids, key)) && p->links) {
    dm__links *l = p->links;
    uint32_t i = 0;
    while (i < l->count && l->items[i].peer != peer)
      i++;
    if (i == l->count)
      return;
    erlang_pid from;
    snprintf(from.node, sizeof from.node, "%s", n->peer_names[peer]);
    from.num = l->items[i].num;
    from.serial = l->items[i].serial;
    from.creation = l->items[i].creation;
    l->items[i] = l->items[--l->count];
    if (l->count == 0)
      dm__proc_free_links(n, p);
    if (dm__proc_ops_of(p)->exit)
      dm__proc_ops_of(p)->exit(p, n, &from, noconnection, sizeof noconnection - 1);
  }
}

void dm__node_peer_lost(dm__node *n, uint32_t peer) {
  /* Links to processes on a lost node fire as noconnection. Most nodes
   * have no links at all, and then a disconnect costs nothing. */
  if (!n->nlinked)
    return;
  /* Keys first, signals after: firing while walking the table would see
   * it change under the walk. */
  uint32_t *keys = NULL;
  size_t nkeys = 0, cap = 0;
  for (size_t s = 0; s < n->pids.cap; s++) {
    dm__proc *p = n->pids.keys[s] ? n->pids.vals[s] : NULL;
    if (!p || !p->links || !has_peer(p->links, peer))
      continue;
    if (nkeys == cap) {
      size_t ncap = cap ? cap * 2 : 16;
      uint32_t *k = dm__realloc(keys, ncap * sizeof *k);
      if (!k) {
        DM_ERROR("out of memory: some links to %s do not fire", n->peer_names[peer]);
        break;
      }
      keys = k;
      cap = ncap;
    }
    keys[nkeys++] = n->pids.keys[s];
  }
  for (size_t k = 0; k < nkeys; k++)
    fire_peer_links(n, keys[k], peer);
  dm__free(keys);
}

/* ---- peers and output ----------------------------------------------------- */

int dm__node_intern(dm__node *n, const char *name) {
  for (size_t i = 0; i < n->npeer_names; i++)
    if (strcmp(n->peer_names[i], name) == 0)
      return (int)i;
  if (n->npeer_names == n->cappeer_names) {
    size_t cap = n->cappeer_names ? n->cappeer_names * 2 : 8;
    char **names = dm__realloc(n->peer_names, cap * sizeof *names);
    if (!names)
      return DM_ENOMEM;
    n->peer_names = names;
    n->cappeer_names = cap;
  }
  size_t len = strlen(name);
  char *copy = dm__malloc(len + 1);
  if (!copy)
    return DM_ENOMEM;
  memcpy(copy, name, len + 1);
  n->peer_names[n->npeer_names] = copy;
  return (int)n->npeer_names++;
}

dm__conn *dm__node_conn(dm__node *n, const char *nodename) {
  for (size_t i = 0; i < n->nconns; i++)
    if (strcmp(n->peer_names[n->conns[i]->peer], nodename) == 0)
      return n->conns[i];
  return NULL;
}

int dm__node_send(dm__node *n, const char *to, const ei_x_buff *x) {
  dm__conn *c = dm__node_conn(n, to);
  if (!c) {
    n->stats.undeliverable++;
    return DM_ECLOSED;
  }
  n->stats.packets_out++;
  return dm__conn_write(c, x->buff, (size_t)x->index);
}

int dm__node_reply(dm__node *n, const dm__gen *g, const char *reply,
                   size_t len) {
  n->x.index = 0;
  int r = dm__enc_reply(&n->x, g, reply, len);
  return r ? r : dm__node_send(n, g->from.node, &n->x);
}

void dm__node_noproc(dm__node *n, const dm__ctrl *ctl) {
  dm__gen g;
  if (!ctl->msg)
    return;
  dm__gen_decode(ctl->msg, ctl->msg_len, &g);
  if (g.kind != DM__GEN_CALL || !g.has_mref)
    return;
  n->x.index = 0;
  if (dm__enc_monitor_p_exit(&n->x, ctl->op == DM__OP_REG_SEND ? ctl->toname : NULL,
                             &ctl->to, &g.from, &g.mref, DM__NOPROC) == 0)
    dm__node_send(n, g.from.node, &n->x);
}

/* ---- dispatch ------------------------------------------------------------- */

static void send_exit_noproc(dm__node *n, const erlang_pid *dead,
                             const erlang_pid *to) {
  static const char noproc[] = "\x77\x06noproc";
  n->x.index = 0;
  if (dm__enc_exit(&n->x, dead, to, noproc, sizeof noproc - 1) == 0)
    dm__node_send(n, to->node, &n->x);
}

void dm__node_dispatch(dm__node *n, dm__conn *c, const char *pkt, size_t len) {
  dm__ctrl ctl;
  dm__proc *p;
  int r = dm__ctrl_decode(pkt, len, &ctl);
  if (r) {
    n->stats.bad_packets++;
    DM_WARN("peer %s sent an undecodable packet of %zu bytes (%s)",
            n->peer_names[c->peer], len, dm_strerror(r));
    return;
  }
  switch (ctl.op) {
  case DM__OP_REG_SEND:
    c->rd_msgs++;
    p = dm__nametab_get(&n->names, ctl.toname);
    if (!p) {
      n->stats.undeliverable++;
      DM_DEBUG("message to unregistered name %s", ctl.toname);
      dm__node_noproc(n, &ctl);
      return;
    }
    dm__proc_ops_of(p)->message(p, n, &ctl);
    return;
  case DM__OP_SEND:
    c->rd_msgs++;
    p = dm__node_local(n, &ctl.to);
    if (!p) {
      n->stats.undeliverable++;
      dm__node_noproc(n, &ctl);
      return;
    }
    dm__proc_ops_of(p)->message(p, n, &ctl);
    return;
  case DM__OP_LINK:
    p = dm__node_local(n, &ctl.to);
    if (!p)
      send_exit_noproc(n, &ctl.to, &ctl.from);
    else if (dm__proc_link(n, p, &ctl.from))
      DM_ERROR("out of memory recording a link");
    return;
  case DM__OP_UNLINK:
  case DM__OP_UNLINK_ID:
    p = dm__node_local(n, &ctl.to);
    if (p)
      dm__proc_unlink(n, p, &ctl.from);
    if (ctl.op == DM__OP_UNLINK_ID) {
      n->x.index = 0;
      if (dm__enc_unlink_id_ack(&n->x, ctl.unlink_id, &ctl.to, &ctl.from) == 0)
        dm__node_send(n, ctl.from.node, &n->x);
    }
    return;
  case DM__OP_EXIT:
  case DM__OP_EXIT2:
    p = dm__node_local(n, &ctl.to);
    if (!p)
      return;
    if (ctl.op == DM__OP_EXIT)
      dm__proc_unlink(n, p, &ctl.from);
    if (dm__proc_ops_of(p)->exit)
      dm__proc_ops_of(p)->exit(p, n, &ctl.from, ctl.reason, ctl.reason_len);
    return;
  case DM__OP_MONITOR_P: {
    /* libei advertises DFLAG_DIST_MONITOR; a monitor on a process that does
     * not exist fires at once, as on a BEAM node. Live targets are not
     * tracked: their monitors fire on disconnect. */
    erlang_pid *from = &ctl.from;
    int named = ctl.toname[0] != 0;
    p = named ? dm__nametab_get(&n->names, ctl.toname)
              : dm__node_local(n, &ctl.to);
    if (!p) {
      n->x.index = 0;
      if (dm__enc_monitor_p_exit(&n->x, named ? ctl.toname : NULL, &ctl.to,
                                 from, &ctl.ref, DM__NOPROC) == 0)
        dm__node_send(n, from->node, &n->x);
    }
    return;
  }
  case DM__OP_DEMONITOR_P:
  case DM__OP_UNLINK_ID_ACK:
  case DM__OP_GROUP_LEADER:
    return;
  default:
    n->stats.unknown_control++;
    DM_WARN("peer %s sent control message %ld, which this node does not serve",
            n->peer_names[c->peer], ctl.raw_op);
    return;
  }
}

/* ---- acceptor thread ------------------------------------------------------ */

static void *acceptor_main(void *arg) {
  dm__node *n = arg;
  while (!atomic_load(&n->stopping)) {
    struct pollfd pfd = {.fd = n->listen_fd, .events = POLLIN};
    if (poll(&pfd, 1, 200) <= 0)
      continue;
    ErlConnect con;
    int fd = ei_accept_tmo(&n->ec, n->listen_fd, &con, n->cfg.handshake_ms);
    if (fd < 0) {
      atomic_fetch_add(&n->stats.handshake_failures, 1);
      DM_WARN("handshake failed: %s (wrong cookie, not a node, or too slow)",
              strerror(erl_errno));
      continue;
    }
    struct dm__accepted *a = dm__malloc(sizeof *a);
    if (!a) {
      DM_ERROR("out of memory: dropping connection from %s", con.nodename);
      close(fd);
      continue;
    }
    atomic_fetch_add(&n->stats.connections_accepted, 1);
    a->fd = fd;
    snprintf(a->peer, sizeof a->peer, "%s", con.nodename);
    pthread_mutex_lock(&n->accept_mx);
    a->next = n->accepted;
    n->accepted = a;
    pthread_mutex_unlock(&n->accept_mx);
    uv_async_send(&n->accept_async);
  }
  return NULL;
}

static void on_accepted(uv_async_t *h) {
  dm__node *n = h->data;
  pthread_mutex_lock(&n->accept_mx);
  struct dm__accepted *a = n->accepted;
  n->accepted = NULL;
  pthread_mutex_unlock(&n->accept_mx);
  while (a) {
    struct dm__accepted *next = a->next;
    if (atomic_load(&n->stopping)) {
      close(a->fd);
    } else {
      DM_INFO("connection from %s", a->peer);
      dm__conn_open(n, a->fd, a->peer);
    }
    dm__free(a);
    a = next;
  }
}

/* ---- epmd ----------------------------------------------------------------- */

static void publish(dm__node *n);

static void on_publish_timer(uv_timer_t *t) { publish(t->data); }

static void on_epmd_closed(uv_handle_t *h) {
  dm__node *n = h->data;
  if (n->epmd_fd >= 0)
    close(n->epmd_fd);
  n->epmd_fd = -1;
  if (!atomic_load(&n->stopping))
    uv_timer_start(&n->publish_timer, on_publish_timer, PUBLISH_RETRY_MS, 0);
}

static void on_epmd_event(uv_poll_t *h, int status, int events) {
  dm__node *n = h->data;
  char b[64];
  (void)events;
  /* epmd never writes on a registration socket; readable means it closed. */
  if (status == 0 && read(n->epmd_fd, b, sizeof b) > 0)
    return;
  DM_WARN("epmd went away; registering again when it is back");
  uv_poll_stop(h);
  uv_close((uv_handle_t *)h, on_epmd_closed);
}

static void publish(dm__node *n) {
  if (atomic_load(&n->stopping))
    return;
  int fd = ei_publish_tmo(&n->ec, n->port, 1000);
  if (fd < 0) {
    if (erl_errno == EIO)
      DM_WARN("epmd refused the name %s (is it taken?); retrying", n->ec.thisnodename);
    else
      DM_DEBUG("epmd registration failed (%s); retrying", strerror(erl_errno));
    uv_timer_start(&n->publish_timer, on_publish_timer, PUBLISH_RETRY_MS, 0);
    return;
  }
  n->epmd_fd = fd;
  n->stats.epmd_registrations++;
  uv_poll_init(n->loop, &n->epmd_poll, fd);
  n->epmd_poll.data = n;
  uv_poll_start(&n->epmd_poll, UV_READABLE | UV_DISCONNECT, on_epmd_event);
  DM_INFO("registered with epmd as %s on port %d", n->ec.thisnodename, n->port);
  if (!n->ready) {
    n->ready = 1;
    printf("READY %s\n", n->ec.thisnodename);
    fflush(stdout);
  }
}

/* ---- ticks, flushing, signals --------------------------------------------- */

static void on_tick(uv_timer_t *t) {
  dm__node *n = t->data;
  uint64_t now = uv_now(n->loop);
  uint64_t period = (uint64_t)n->cfg.net_ticktime * 1000 / 4;
  static const char tick[4] = {0, 0, 0, 0};
  for (size_t i = 0; i < n->nconns;) {
    dm__conn *c = n->conns[i];
    if (now - c->last_read > (uint64_t)n->cfg.net_ticktime * 1000) {
      n->stats.peers_timed_out++;
      DM_WARN("peer %s silent for %llu ms, past net_ticktime",
              n->peer_names[c->peer],
              (unsigned long long)(now - c->last_read));
      dm__conn_close(c, "net_ticktime expired");
      continue; /* the slot now holds another connection */
    }
    if (now - c->last_write >= period && dm__conn_write(c, tick, 4) == 0)
      n->stats.ticks_out++;
    i++;
  }
}

static void on_prepare(uv_prepare_t *h) {
  dm__node *n = h->data;
  /* Just before the loop blocks: callbacks queued during this iteration go
   * to the pools in one batch, the wheel's timer is set for the earliest
   * perform, and replies go out in one write per peer. */
  dm__managers_check(n);
  dm__conn_flush_all(n);
}

static void on_stdin(uv_poll_t *h, int status, int events) {
  char b[256];
  (void)events;
  ssize_t r = status == 0 ? read(0, b, sizeof b) : -1;
  if (r > 0 || (r < 0 && (errno == EAGAIN || errno == EINTR)))
    return; /* input is ignored; only its end matters */
  DM_INFO("standard input closed: stopping");
  dm__node_stop(h->data);
}

static void on_signal(uv_signal_t *h, int signum) {
  DM_INFO("signal %d: stopping", signum);
  dm__node_stop(h->data);
}

/* ---- life cycle ----------------------------------------------------------- */

static unsigned new_creation(void) {
  /* ei keeps whatever creation it is given; one that differs at every start
   * keeps BEAM peers from mixing pids of two incarnations. */
  struct timeval tv;
  gettimeofday(&tv, NULL);
  unsigned c = (unsigned)(tv.tv_sec * 1000u + tv.tv_usec / 1000) ^
               ((unsigned)getpid() << 16);
  return c < 4 ? c + 4 : c;
}

/* Read coalescing lowers a socket's SO_RCVLOWAT to release what a quiet
 * peer sent; only since Linux 4.18 does that wake a waiting poll. */
static int lowat_wakes_poll(void) {
  struct utsname u;
  unsigned major = 0, minor = 0;
  if (uname(&u) || sscanf(u.release, "%u.%u", &major, &minor) != 2)
    return 0;
  return major > 4 || (major == 4 && minor >= 18);
}

int dm__node_init(dm__node *n, uv_loop_t *loop, const dm__config *cfg,
                  const char *cookie) {
  char host[EI_MAXHOSTNAMELEN + 1], alive[EI_MAXALIVELEN + 1];
  char full[MAXNODELEN + 1];
  struct in_addr addr;
  memset(n, 0, sizeof *n);
  n->loop = loop;
  n->cfg = *cfg;
  if (n->cfg.read_coalescing && !lowat_wakes_poll()) {
    DM_INFO("kernel before Linux 4.18: read coalescing is off");
    n->cfg.read_coalescing = 0;
  }
  n->epmd_fd = n->listen_fd = -1;
  n->version = DM_VERSION;
  n->start_ms = uv_now(loop);
  {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    n->start_wall_us = (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
  }
  dm__nametab_init(&n->names);
  dm__pidtab_init(&n->pids);
  pthread_mutex_init(&n->accept_mx, NULL);
  if (ei_x_new(&n->x) < 0 || ei_x_new(&n->reply) < 0)
    return DM_ENOMEM;

  const char *at = strchr(cfg->name, '@');
  size_t alen = at ? (size_t)(at - cfg->name) : strlen(cfg->name);
  if (alen == 0 || alen > EI_MAXALIVELEN) {
    DM_ERROR("bad node name '%s'", cfg->name);
    return DM_EINVAL;
  }
  memcpy(alive, cfg->name, alen);
  alive[alen] = 0;
  if (at) {
    snprintf(host, sizeof host, "%s", at + 1);
  } else {
    if (gethostname(host, sizeof host) != 0) {
      DM_ERROR("gethostname: %s", strerror(errno));
      return DM_EIO;
    }
    host[sizeof host - 1] = 0;
    if (!cfg->longnames) {
      char *dot = strchr(host, '.');
      if (dot)
        *dot = 0;
    }
  }
  if (cfg->longnames && !strchr(host, '.') && !at) {
    DM_ERROR("--name needs a fully qualified NAME@HOST");
    return DM_EINVAL;
  }
  if ((size_t)snprintf(full, sizeof full, "%s@%s", alive, host) >= sizeof full) {
    DM_ERROR("node name too long");
    return DM_EINVAL;
  }
  addr.s_addr = htonl(INADDR_ANY);
  if (cfg->listen_addr && inet_pton(AF_INET, cfg->listen_addr, &addr) != 1) {
    DM_ERROR("--listen wants an IPv4 address, got '%s'", cfg->listen_addr);
    return DM_EINVAL;
  }
  if (ei_connect_xinit(&n->ec, host, alive, full, (Erl_IpAddr)&addr, cookie,
                       new_creation()) < 0) {
    DM_ERROR("ei_connect_xinit failed: %s", strerror(erl_errno));
    return DM_EEI;
  }
  n->port = 0;
  n->listen_fd = ei_xlisten(&n->ec, (Erl_IpAddr)&addr, &n->port, 128);
  if (n->listen_fd < 0) {
    DM_ERROR("cannot listen: %s", strerror(erl_errno));
    return DM_EIO;
  }

  uv_timer_init(loop, &n->publish_timer);
  n->publish_timer.data = n;
  uv_timer_init(loop, &n->tick_timer);
  n->tick_timer.data = n;
  uv_prepare_init(loop, &n->flush_prepare);
  uv_timer_init(loop, &n->lowat_timer);
  n->lowat_timer.data = n;
  n->flush_prepare.data = n;
  uv_signal_init(loop, &n->sigterm);
  n->sigterm.data = n;
  uv_signal_init(loop, &n->sigint);
  n->sigint.data = n;
  uv_async_init(loop, &n->accept_async, on_accepted);
  n->accept_async.data = n;
  n->handles = 1;
  int r = dm__managers_init(n);
  return r ? r : dm__services_init(n);
}

int dm__node_start(dm__node *n) {
  uint64_t period = (uint64_t)n->cfg.net_ticktime * 1000 / 4;
  uv_timer_start(&n->tick_timer, on_tick, period ? period : 1, period ? period : 1);
  uv_prepare_start(&n->flush_prepare, on_prepare);
  uv_signal_start(&n->sigterm, on_signal, SIGTERM);
  uv_signal_start(&n->sigint, on_signal, SIGINT);
  if (n->cfg.exit_with_stdin) {
    /* The BEAM port that started us closes our stdin when its owner
     * dies; no orphan is left behind. */
    if (uv_poll_init(n->loop, &n->stdin_poll, 0) != 0) {
      DM_ERROR("--exit-with-stdin: standard input cannot be watched");
      return DM_EINVAL;
    }
    n->stdin_poll.data = n;
    uv_poll_start(&n->stdin_poll, UV_READABLE | UV_DISCONNECT, on_stdin);
  }
  if (pthread_create(&n->acceptor, NULL, acceptor_main, n) != 0) {
    DM_ERROR("cannot start the acceptor thread");
    return DM_EIO;
  }
  n->acceptor_started = 1;
  publish(n);
  return 0;
}

void dm__node_stop(dm__node *n) {
  if (atomic_exchange(&n->stopping, 1) || !n->handles)
    return;
  while (n->nconns)
    dm__conn_close(n->conns[n->nconns - 1], "node stopping");
  if (n->epmd_fd >= 0) {
    uv_poll_stop(&n->epmd_poll);
    uv_close((uv_handle_t *)&n->epmd_poll, on_epmd_closed);
  }
  uv_close((uv_handle_t *)&n->publish_timer, NULL);
  uv_close((uv_handle_t *)&n->tick_timer, NULL);
  uv_close((uv_handle_t *)&n->flush_prepare, NULL);
  uv_close((uv_handle_t *)&n->lowat_timer, NULL);
  uv_close((uv_handle_t *)&n->sigterm, NULL);
  uv_close((uv_handle_t *)&n->sigint, NULL);
  uv_close((uv_handle_t *)&n->accept_async, NULL);
  if (n->stdin_poll.data == n)
    uv_close((uv_handle_t *)&n->stdin_poll, NULL);
  dm__managers_stop(n);
}

void dm__node_free(dm__node *n) {
  if (n->acceptor_started)
    pthread_join(n->acceptor, NULL);
  while (n->accepted) {
    struct dm__accepted *a = n->accepted;
    n->accepted = a->next;
    close(a->fd);
    dm__free(a);
  }
  if (n->listen_fd >= 0)
    close(n->listen_fd);
  dm__managers_free(n);
  dm__services_free(n);
  for (size_t i = 0; i < n->npeer_names; i++)
    dm__free(n->peer_names[i]);
  dm__free(n->peer_names);
  dm__free(n->conns);
  dm__nametab_free(&n->names);
  dm__pidtab_free(&n->pids);
  ei_x_free(&n->x);
  ei_x_free(&n->reply);
  pthread_mutex_destroy(&n->accept_mx);
}
