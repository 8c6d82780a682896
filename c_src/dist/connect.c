/* The initiating side of the handshake: the peer's host resolved (off the
 * loop, by libuv's resolver threads), its port asked of the epmd there
 * (PORT_PLEASE2), the TCP connect, with TLS the TLS handshake (the
 * peer's certificate verified for its host), then send_name out, status
 * in, challenge in, challenge_reply out, challenge_ack in. Every step is
 * non-blocking and the whole is bounded by the handshake deadline. */
#include <errno.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dist/dist.h"
#include "dm.h"

enum { C_RESOLVE, C_EPMD, C_EPMD_ASKED, C_CONNECT, C_TLS, C_STATUS, C_CHALLENGE, C_ACK, C_WAIT };

#define PORT_PLEASE2_REQ 122
#define PORT2_RESP 119
/* The oldest distribution version with the OTP 23 handshake. */
#define DIST_VSN_6 6

static int nonblocking_connect(const struct sockaddr_in *addr, int *out) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) < 0 &&
      errno != EINPROGRESS) {
    int e = errno;
    close(fd);
    return -e;
  }
  *out = fd;
  return 0;
}

static int socket_error(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
    return errno;
  return err;
}

/* ---- the node's own socket ---------------------------------------------- */

static void start_connect(dm__hs *h, uint16_t port) {
  char why[128];
  struct sockaddr_in a = h->addr;
  int fd, r;
  a.sin_port = htons(port);
  if ((r = nonblocking_connect(&a, &fd))) {
    snprintf(why, sizeof why, "cannot connect: %s", strerror(-r));
    dm__hs_fail(h, 0, why);
    return;
  }
  if (dm__hs_watch(h, fd)) {
    dm__hs_fail(h, 0, "cannot watch the socket");
    return;
  }
  h->state = C_CONNECT;
  dm__hs_want(h, UV_WRITABLE);
}

static int send_name(dm__hs *h) {
  unsigned char m[DM__HS_MAX_MSG];
  dm__hs_queue(h, m, dm__hs_enc_name(h->dist, m, 0, 0));
  h->state = C_STATUS;
  return dm__hs_flush(h);
}

/* The TLS session is up: the distribution handshake starts inside it. */
static int tls_up(dm__hs *h) { return send_name(h); }

/* The TLS handshake first, as a client of the peer's host. */
static int start_tls(dm__hs *h) {
  char host[MAXNODELEN + 1];
  snprintf(host, sizeof host, "%s", strchr(h->peer, '@') + 1);
  int r = dm__tls_new(h->dist->tls, 0, host, &h->tls);
  if (r) {
    dm__hs_fail(h, 0, r == DM_ENOMEM ? "out of memory for its TLS session"
                                     : "its host cannot be checked against a certificate");
    return -1;
  }
  h->on_tls_up = tls_up;
  h->state = C_TLS;
  return dm__hs_tls_step(h);
}

static int on_writable(dm__hs *h) {
  char why[128];
  if (h->state != C_CONNECT)
    return 0;
  int err = socket_error(h->fd);
  if (err) {
    snprintf(why, sizeof why, "cannot connect: %s", strerror(err));
    dm__hs_fail(h, 0, why);
    return -1;
  }
  /* As ei_connect did: no Nagle delay, and dead peers found out. */
  int one = 1;
  setsockopt(h->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(h->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  return h->dist->tls ? start_tls(h) : send_name(h);
}

/* 's' Status: ok and ok_simultaneous go on; nok means the peer connects
 * to this node itself (a simultaneous connect it won), so the messages
 * wait for that; alive means it holds a connection from an earlier
 * incarnation of this name, which this one replaces. */
static int on_status(dm__hs *h, const unsigned char *m, size_t len) {
  char why[96];
  if (len < 2 || m[0] != 's') {
    dm__hs_fail(h, 0, "not a status message (not a node?)");
    return -1;
  }
  if ((len == 3 && memcmp(m, "sok", 3) == 0) ||
      (len == 16 && memcmp(m, "sok_simultaneous", 16) == 0)) {
    h->state = C_CHALLENGE;
    return 0;
  }
  if (len == 6 && memcmp(m, "salive", 6) == 0) {
    dm__hs_queue(h, "strue", 5);
    h->state = C_CHALLENGE;
    return dm__hs_flush(h);
  }
  if (len == 4 && memcmp(m, "snok", 4) == 0) {
    DM_DEBUG("simultaneous connect with %s: theirs goes on", h->peer);
    h->waiting = 1;
    h->state = C_WAIT;
    uv_poll_stop(&h->poll);
    h->events = 0;
    return -1;
  }
  snprintf(why, sizeof why, "refused by the peer (%.*s)", (int)(len - 1), m + 1);
  dm__hs_fail(h, 0, why);
  return -1;
}

/* challenge 'N': Flags:64, Challenge:32, Creation:32, NameLen:16, Name. */
static int on_challenge(dm__hs *h, const unsigned char *m, size_t len) {
  char missing[512], why[600];
  unsigned char reply[21];
  if (len < DM__HS_NAME_HEAD + 4 || m[0] != 'N') {
    dm__hs_fail(h, 0, "not a challenge");
    return -1;
  }
  size_t nlen = dm__get_be(m + 17, 2);
  if (DM__HS_NAME_HEAD + 4 + nlen != len || nlen != strlen(h->peer) ||
      memcmp(m + 19, h->peer, nlen) != 0) {
    dm__hs_fail(h, 0, "the challenge names another node");
    return -1;
  }
  h->peer_flags = dm__get_be(m + 1, 8);
  if (dm__hs_check_flags(h->peer_flags, missing, sizeof missing)) {
    snprintf(why, sizeof why, "refused: the peer lacks mandatory flags %s", missing);
    dm__hs_fail(h, 0, why);
    return -1;
  }
  if (dm__hs_challenge(h->dist, &h->challenge)) {
    dm__hs_fail(h, 0, "no random challenge (getrandom failed)");
    return -1;
  }
  reply[0] = 'r';
  for (int i = 0; i < 4; i++)
    reply[1 + i] = (unsigned char)(h->challenge >> (24 - 8 * i));
  dm__hs_digest(h->dist, (uint32_t)dm__get_be(m + 9, 4), reply + 5);
  dm__hs_queue(h, reply, sizeof reply);
  h->state = C_ACK;
  return dm__hs_flush(h);
}

/* challenge_ack 'a': Digest:16, the peer's proof that it has the cookie. */
static int on_ack(dm__hs *h, const unsigned char *m, size_t len) {
  if (len != 17 || m[0] != 'a') {
    dm__hs_fail(h, 0, "not a challenge_ack");
    return -1;
  }
  if (!dm__hs_digest_ok(h->dist, h->challenge, m + 1)) {
    dm__hs_fail(h, 0, "wrong cookie (the peer's digest does not match)");
    return -1;
  }
  /* Complete once nothing of this side is left unsent (with TLS, its
   * session may still have bytes for the socket). */
  h->complete_after_write = 1;
  dm__hs_flush(h);
  return -1;
}

static int on_msg(dm__hs *h, const unsigned char *m, size_t len) {
  switch (h->state) {
  case C_STATUS:
    return on_status(h, m, len);
  case C_CHALLENGE:
    return on_challenge(h, m, len);
  case C_ACK:
    return on_ack(h, m, len);
  default:
    dm__hs_fail(h, 0, "a message out of turn");
    return -1;
  }
}

/* ---- epmd ------------------------------------------------------------------ */

static void on_epmd_closed(uv_handle_t *handle) {
  dm__hs *h = handle->data;
  close(h->epmd_fd);
  h->epmd_fd = -1;
  dm__hs_unref(h);
}

static void end_epmd(dm__hs *h) {
  h->epmd_polling = 0;
  h->refs++;
  uv_poll_stop(&h->epmd_poll);
  uv_close((uv_handle_t *)&h->epmd_poll, on_epmd_closed);
}

/* PORT2_RESP: 119, Result, then on success PortNo:16, NodeType,
 * Protocol, HighestVersion:16, LowestVersion:16, and more not needed. */
static void epmd_answered(dm__hs *h, int closed) {
  char why[MAXNODELEN + 80];
  const unsigned char *r = h->epmd_in;
  if (h->epmd_have >= 2 && r[0] == PORT2_RESP && r[1] != 0) {
    snprintf(why, sizeof why, "no such node: epmd at its host does not know %s", h->peer);
  } else if (h->epmd_have >= 10 && r[0] == PORT2_RESP) {
    if (dm__get_be(r + 6, 2) < DIST_VSN_6) {
      dm__hs_fail(h, 0, "the peer is older than OTP 23 (no 'N' handshake)");
      return;
    }
    end_epmd(h);
    start_connect(h, (uint16_t)dm__get_be(r + 2, 2));
    return;
  } else if (h->epmd_have && r[0] != PORT2_RESP) {
    snprintf(why, sizeof why, "epmd at %s's host answered garbage", h->peer);
  } else if (!closed) {
    return; /* more to come */
  } else {
    snprintf(why, sizeof why, "epmd at %s's host closed without an answer", h->peer);
  }
  dm__hs_fail(h, 0, why);
}

static void on_epmd_event(uv_poll_t *p, int status, int events) {
  dm__hs *h = p->data;
  char why[128];
  if (h->gone || !h->epmd_polling)
    return;
  if (status < 0) {
    snprintf(why, sizeof why, "epmd at the peer's host: %s", uv_strerror(status));
    dm__hs_fail(h, 0, why);
    return;
  }
  if ((events & UV_WRITABLE) && h->state == C_EPMD) {
    int err = socket_error(h->epmd_fd);
    const char *at = strchr(h->peer, '@');
    size_t alen = (size_t)(at - h->peer);
    unsigned char req[3 + MAXNODELEN];
    if (err) {
      snprintf(why, sizeof why, "no epmd at the peer's host: %s", strerror(err));
      dm__hs_fail(h, 0, why);
      return;
    }
    req[0] = (unsigned char)((alen + 1) >> 8);
    req[1] = (unsigned char)(alen + 1);
    req[2] = PORT_PLEASE2_REQ;
    memcpy(req + 3, h->peer, alen);
    /* A few bytes on a fresh socket: the kernel takes them whole. */
    if (send(h->epmd_fd, req, 3 + alen, MSG_NOSIGNAL) != (ssize_t)(3 + alen)) {
      dm__hs_fail(h, 0, "cannot ask epmd at the peer's host");
      return;
    }
    h->state = C_EPMD_ASKED;
    uv_poll_start(&h->epmd_poll, UV_READABLE, on_epmd_event);
    return;
  }
  if (events & UV_READABLE) {
    ssize_t n = recv(h->epmd_fd, h->epmd_in + h->epmd_have,
                     sizeof h->epmd_in - h->epmd_have, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
      return;
    if (n > 0)
      h->epmd_have += (size_t)n;
    epmd_answered(h, n <= 0 || h->epmd_have == sizeof h->epmd_in);
  }
}

static void ask_epmd(dm__hs *h) {
  char why[128];
  struct sockaddr_in a = h->addr;
  int fd, r;
  a.sin_port = htons(h->dist->epmd_port);
  if ((r = nonblocking_connect(&a, &fd))) {
    snprintf(why, sizeof why, "no epmd at the peer's host: %s", strerror(-r));
    dm__hs_fail(h, 0, why);
    return;
  }
  h->epmd_fd = fd;
  if (uv_poll_init(h->dist->loop, &h->epmd_poll, fd)) {
    dm__hs_fail(h, 0, "cannot watch the epmd socket");
    return;
  }
  h->epmd_poll.data = h;
  h->epmd_polling = 1;
  h->state = C_EPMD;
  uv_poll_start(&h->epmd_poll, UV_WRITABLE, on_epmd_event);
}

/* ---- the host --------------------------------------------------------------- */

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  dm__hs *h = req->data;
  char why[160];
  h->resolving = 0;
  if (!h->gone) {
    if (status < 0 || !res) {
      snprintf(why, sizeof why, "cannot resolve its host: %s",
               uv_strerror(status < 0 ? status : UV_EAI_NONAME));
      dm__hs_fail(h, 0, why);
    } else {
      memcpy(&h->addr, res->ai_addr, sizeof h->addr);
      ask_epmd(h);
    }
  }
  if (res)
    uv_freeaddrinfo(res);
  dm__hs_unref(h); /* the lookup's */
}

static int start(dm__dist *d, const char *peer) {
  const char *at = strchr(peer, '@');
  struct addrinfo hints;
  size_t len = strlen(peer);
  if (!at || at == peer || !at[1] || len > MAXNODELEN ||
      (size_t)(at - peer) > EI_MAXALIVELEN) {
    DM_WARN("cannot connect to '%s': not a node name", peer);
    return DM_EINVAL;
  }
  dm__hs *h = dm__hs_new(d, DM__HS_CONNECT);
  if (!h)
    return DM_ENOMEM;
  memcpy(h->peer, peer, len + 1);
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  h->gai.data = h;
  h->state = C_RESOLVE;
  h->on_msg = on_msg;
  h->on_writable = on_writable;
  h->refs++; /* the lookup's, dropped by its callback */
  h->resolving = 1;
  int r = uv_getaddrinfo(d->loop, &h->gai, on_resolved, at + 1, NULL, &hints);
  if (r) {
    char why[128];
    h->resolving = 0;
    h->refs--;
    snprintf(why, sizeof why, "cannot resolve its host: %s", uv_strerror(r));
    dm__hs_fail(h, 0, why);
    return 0; /* reported */
  }
  DM_DEBUG("connecting to %s", peer);
  return 0;
}

int dm__hs_connect_socket(dm__dist *d, int fd, const char *peer) {
  size_t len = strlen(peer);
  dm__hs *h = len <= MAXNODELEN && strchr(peer, '@') ? dm__hs_new(d, DM__HS_CONNECT) : NULL;
  if (!h) {
    close(fd);
    return len <= MAXNODELEN && strchr(peer, '@') ? DM_ENOMEM : DM_EINVAL;
  }
  memcpy(h->peer, peer, len + 1);
  h->on_msg = on_msg;
  h->on_writable = on_writable;
  if (dm__hs_watch(h, fd)) {
    dm__hs_fail(h, 0, "cannot watch the socket");
    return DM_EIO;
  }
  h->state = C_CONNECT;
  dm__hs_want(h, UV_WRITABLE);
  return 0;
}

/* ---- sending to a node not connected yet ---------------------------------- */

int dm__dist_connect(dm__dist *d, const char *name) {
  const char *at = strchr(name, '@');
  if (!at || at == name || !at[1] || strlen(name) > MAXNODELEN ||
      strcmp(name, d->ec.thisnodename) == 0)
    return DM_EINVAL;
  if (dm__dist_conn(d, name))
    return 1;
  if (dm__hs_pending(d, name)) /* either side: its completion will tell */
    return 0;
  int idx = dm__dist_intern(d, name);
  if (idx < 0)
    return idx;
  return start(d, name);
}

int dm__dist_send_connect(dm__dist *d, const char *to, const char *pkt,
                          size_t len) {
  dm__conn *c = dm__dist_conn(d, to);
  if (c) {
    d->stats.packets_out++;
    return dm__conn_write(c, pkt, len);
  }
  dm__hs *h = NULL;
  if (dm__dist_connect(d, to) == 0)
    h = dm__hs_pending(d, to);
  if (!h || h->queued.len + len > d->cfg.max_outbuf) {
    d->stats.connect_dropped++;
    return DM_ECLOSED;
  }
  if (dm__buf_append(&h->queued, pkt, len)) {
    d->stats.connect_dropped++;
    return DM_ENOMEM;
  }
  h->nqueued++;
  d->stats.connect_queued++;
  d->stats.packets_out++;
  return 0;
}
