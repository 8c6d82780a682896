/* The connection table: ei's identity of this node, the live connections
 * with interned peer names, ticks and net_ticktime, and sending a packet
 * to a node by name. Loop thread only. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "dist/dist.h"
#include "dm.h"

void dm__config_defaults(dm__config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->net_ticktime = 60;
  cfg->max_packet = 64u << 20;
  cfg->handshake_ms = 5000;
  cfg->max_pending_hs = 1024;
  cfg->max_outbuf = (size_t)256 << 20;
  cfg->read_coalescing = 16384;
  cfg->epmd_retry_s = 30;
}

/* FNV-1a: node names are short, and peers choose them, so a hash the
 * peer cannot make collide cheaply matters less than no scan at all. */
static uint32_t name_hash(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

static long find_name(const dm__dist *d, const char *name, size_t *slot) {
  if (!d->name_cap)
    return -1;
  size_t mask = d->name_cap - 1, i = name_hash(name) & mask;
  for (; d->name_slots[i]; i = (i + 1) & mask)
    if (strcmp(d->peer_names[d->name_slots[i] - 1], name) == 0)
      return (long)d->name_slots[i] - 1;
  if (slot)
    *slot = i;
  return -1;
}

static int grow_names(dm__dist *d) {
  size_t cap = d->name_cap ? d->name_cap * 2 : 16;
  uint32_t *slots = dm__calloc(cap, sizeof *slots);
  if (!slots)
    return DM_ENOMEM;
  for (size_t k = 0; k < d->npeer_names; k++) {
    size_t i = name_hash(d->peer_names[k]) & (cap - 1);
    while (slots[i])
      i = (i + 1) & (cap - 1);
    slots[i] = (uint32_t)k + 1;
  }
  dm__free(d->name_slots);
  d->name_slots = slots;
  d->name_cap = cap;
  return 0;
}

int dm__dist_intern(dm__dist *d, const char *name) {
  size_t slot = 0, old_cap = d->cappeer_names;
  long found = find_name(d, name, NULL);
  if (found >= 0)
    return (int)found;
  if ((d->npeer_names + 1) * 2 > d->name_cap && grow_names(d))
    return DM_ENOMEM;
  if (dm__array_grow((void **)&d->peer_names, &d->cappeer_names,
                     d->npeer_names + 1, sizeof *d->peer_names, 8))
    return DM_ENOMEM;
  if (d->cappeer_names != old_cap) {
    dm__conn **c = dm__realloc(d->conn_of, d->cappeer_names * sizeof *c);
    if (!c)
      return DM_ENOMEM;
    memset(c + old_cap, 0, (d->cappeer_names - old_cap) * sizeof *c);
    d->conn_of = c;
  }
  size_t len = strlen(name);
  char *copy = dm__malloc(len + 1);
  if (!copy)
    return DM_ENOMEM;
  memcpy(copy, name, len + 1);
  find_name(d, name, &slot);
  d->peer_names[d->npeer_names] = copy;
  d->name_slots[slot] = (uint32_t)d->npeer_names + 1;
  return (int)d->npeer_names++;
}

dm__conn *dm__dist_conn(dm__dist *d, const char *nodename) {
  long k = find_name(d, nodename, NULL);
  return k < 0 ? NULL : d->conn_of[k];
}

/* A connection closed: swap-removed from the table, and when it was the
 * last one to its peer, the layer above hears of the loss. */
static void on_conn_closed(dm__dist *d, dm__conn *c) {
  d->conns[c->index] = d->conns[--d->nconns];
  d->conns[c->index]->index = c->index;
  if (d->conn_of[c->peer] == c) {
    d->conn_of[c->peer] = NULL;
    d->ops->peer_lost(d->ud, c->peer);
  }
}

int dm__dist_adopt(dm__dist *d, int fd, const char *peer, uint64_t flags,
                   dm__tls *tls) {
  dm__conn *c;
  int idx = dm__dist_intern(d, peer);
  if (idx < 0 || dm__array_grow((void **)&d->conns, &d->capconns, d->nconns + 1,
                                sizeof *d->conns, 8)) {
    close(fd);
    dm__tls_free(tls);
    return DM_ENOMEM;
  }
  /* Two handshakes from one name that crossed: the later one serves. */
  if (d->conn_of[idx])
    dm__conn_close(d->conn_of[idx], "replaced by a newer connection from the same node");
  int r = dm__conn_open(d, fd, (uint32_t)idx, on_conn_closed, tls, &c);
  if (r)
    return r;
  c->flags = flags;
  c->index = d->nconns;
  d->conns[d->nconns++] = c;
  d->conn_of[idx] = c;
  return 0;
}

int dm__dist_send(dm__dist *d, const char *to, const char *pkt, size_t len) {
  dm__conn *c = dm__dist_conn(d, to);
  if (!c)
    return DM_ECLOSED;
  d->stats.packets_out++;
  return dm__conn_write(c, pkt, len);
}

int dm__dist_send_owned(dm__dist *d, const char *to, char **pkt, size_t len,
                        size_t cap) {
  dm__conn *c = dm__dist_conn(d, to);
  if (!c)
    return DM_ECLOSED;
  d->stats.packets_out++;
  return dm__conn_write_owned(c, pkt, len, cap);
}

static void on_tick(uv_timer_t *t) {
  dm__dist *d = t->data;
  uint64_t now = uv_now(d->loop);
  uint64_t period = (uint64_t)d->cfg.net_ticktime * 1000 / 4;
  static const char tick[4] = {0, 0, 0, 0};
  for (size_t i = 0; i < d->nconns;) {
    dm__conn *c = d->conns[i];
    if (now - c->last_read > (uint64_t)d->cfg.net_ticktime * 1000) {
      d->stats.peers_timed_out++;
      DM_WARN("peer %s silent for %llu ms, past net_ticktime",
              d->peer_names[c->peer], (unsigned long long)(now - c->last_read));
      dm__conn_close(c, "net_ticktime expired");
      continue; /* the slot now holds another connection */
    }
    if (now - c->last_write >= period && dm__conn_write(c, tick, 4) == 0)
      d->stats.ticks_out++;
    i++;
  }
}

static unsigned new_creation(void) {
  /* ei keeps whatever creation it is given; one that differs at every start
   * keeps BEAM peers from mixing pids of two incarnations. */
  struct timeval tv;
  gettimeofday(&tv, NULL);
  unsigned c = (unsigned)(tv.tv_sec * 1000u + tv.tv_usec / 1000) ^
               ((unsigned)getpid() << 16);
  return c < 4 ? c + 4 : c;
}

/* The handshake's challenges, d->challenge unless a test fixes them: a
 * peer that could guess one could replay a digest it once saw. */
static int random_challenge(uint32_t *out) {
  return getrandom(out, sizeof *out, 0) == (ssize_t)sizeof *out ? 0 : DM_EIO;
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

int dm__dist_init(dm__dist *d, uv_loop_t *loop, const dm__config *cfg,
                  const char *cookie, const dm__dist_ops *ops, void *ud) {
  char host[EI_MAXHOSTNAMELEN + 1], alive[EI_MAXALIVELEN + 1];
  char full[MAXNODELEN + 1];
  struct in_addr addr;
  memset(d, 0, sizeof *d);
  d->loop = loop;
  d->cfg = *cfg;
  d->ops = ops;
  d->ud = ud;
  d->epmd_fd = d->listen_fd = -1;
  const char *ep = getenv("ERL_EPMD_PORT");
  long epmd_port = ep && *ep ? strtol(ep, NULL, 10) : 4369;
  d->epmd_port = (uint16_t)(epmd_port > 0 && epmd_port < 65536 ? epmd_port : 4369);
  d->challenge = random_challenge;
  d->tls = cfg->tls;
  if (d->cfg.read_coalescing && !lowat_wakes_poll()) {
    DM_INFO("kernel before Linux 4.18: read coalescing is off");
    d->cfg.read_coalescing = 0;
  }
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
  d->listen_ip = addr.s_addr;
  if (ei_connect_xinit(&d->ec, host, alive, full, (Erl_IpAddr)&addr, cookie,
                       new_creation()) < 0) {
    DM_ERROR("ei_connect_xinit failed: %s", strerror(erl_errno));
    return DM_EEI;
  }
  uv_timer_init(loop, &d->tick_timer);
  d->tick_timer.data = d;
  uv_timer_init(loop, &d->lowat_timer);
  d->lowat_timer.data = d;
  d->handles = 1;
  return 0;
}

void dm__dist_start(dm__dist *d) {
  uint64_t period = (uint64_t)d->cfg.net_ticktime * 1000 / 4;
  uv_timer_start(&d->tick_timer, on_tick, period ? period : 1, period ? period : 1);
}

void dm__dist_stop(dm__dist *d) {
  while (d->nconns)
    dm__conn_close(d->conns[d->nconns - 1], "node stopping");
  if (!d->handles)
    return;
  uv_close((uv_handle_t *)&d->tick_timer, NULL);
  uv_close((uv_handle_t *)&d->lowat_timer, NULL);
}

void dm__dist_free(dm__dist *d) {
  for (size_t i = 0; i < d->npeer_names; i++)
    dm__free(d->peer_names[i]);
  dm__free(d->peer_names);
  dm__free(d->name_slots);
  dm__free(d->conn_of);
  dm__free(d->conns);
}
