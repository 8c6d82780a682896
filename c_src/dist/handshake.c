/* The handshake: the accepting side of the distribution handshake (OTP 23
 * and later), as a state machine on the loop thread. Any number run at
 * once, each within a deadline for the whole of it; past the limit of
 * pending ones, the oldest goes. A handshake that completes hands its
 * socket to the table. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dist/dist.h"
#include "dm.h"

/* Distribution flags (erl_dist_protocol, dist.hrl). */
#define F_EXTENDED_REFERENCES 0x04ull
#define F_DIST_MONITOR 0x08ull
#define F_FUN_TAGS 0x10ull
#define F_NEW_FUN_TAGS 0x80ull
#define F_EXTENDED_PIDS_PORTS 0x100ull
#define F_EXPORT_PTR_TAG 0x200ull
#define F_BIT_BINARIES 0x400ull
#define F_NEW_FLOATS 0x800ull
#define F_SMALL_ATOM_TAGS 0x4000ull
#define F_UTF8_ATOMS 0x10000ull
#define F_MAP_TAG 0x20000ull
#define F_BIG_CREATION 0x40000ull
#define F_HANDSHAKE_23 0x01000000ull
#define F_UNLINK_ID 0x02000000ull
#define F_MANDATORY_25_DIGEST 0x04000000ull
#define F_V4_NC (0x04ull << 32)

/* What the node serves: ei's OTP 25 set, plus DIST_MONITOR_NAME (BEAM
 * then sends MONITOR_P for erlang:monitor/2 by pid and by name, which the
 * node keeps and fires) and ALIAS (replies to an OTP 24+ call go to the
 * caller's alias, so a late one is dropped). Not the atom cache,
 * fragments or spawn: the node cannot decode or serve them. */
#define F_DIST_MONITOR_NAME 0x20ull
#define F_ALIAS (0x08ull << 32)
#define OUR_FLAGS                                                              \
  (F_EXTENDED_REFERENCES | F_DIST_MONITOR | F_DIST_MONITOR_NAME |             \
   F_FUN_TAGS | F_NEW_FUN_TAGS | F_EXTENDED_PIDS_PORTS | F_EXPORT_PTR_TAG |    \
   F_BIT_BINARIES | F_NEW_FLOATS | F_SMALL_ATOM_TAGS | F_UTF8_ATOMS |          \
   F_MAP_TAG | F_BIG_CREATION | F_HANDSHAKE_23 | F_UNLINK_ID |                 \
   F_MANDATORY_25_DIGEST | F_V4_NC | F_ALIAS)

/* What OTP 25 requires of a peer; MANDATORY_25_DIGEST stands for all. */
static const struct {
  uint64_t flag;
  const char *name;
} mandatory[] = {
    {F_EXTENDED_REFERENCES, "EXTENDED_REFERENCES"},
    {F_FUN_TAGS, "FUN_TAGS"},
    {F_EXTENDED_PIDS_PORTS, "EXTENDED_PIDS_PORTS"},
    {F_NEW_FUN_TAGS, "NEW_FUN_TAGS"},
    {F_EXPORT_PTR_TAG, "EXPORT_PTR_TAG"},
    {F_BIT_BINARIES, "BIT_BINARIES"},
    {F_NEW_FLOATS, "NEW_FLOATS"},
    {F_UTF8_ATOMS, "UTF8_ATOMS"},
    {F_MAP_TAG, "MAP_TAG"},
    {F_BIG_CREATION, "BIG_CREATION"},
    {F_HANDSHAKE_23, "HANDSHAKE_23"},
};

/* A send_name: tag, flags, creation, name length, name. */
#define NAME_HEAD 15
#define MAX_MSG (NAME_HEAD + MAXNODELEN)

enum { HS_NAME, HS_REPLY, HS_ACK };

struct dm__hs {
  uv_poll_t poll;
  dm__dist *dist;
  dm__hs *prev, *next; /* pending ones, oldest first */
  int fd;              /* -1 once the table has it */
  int state, events;
  uint64_t deadline; /* loop ms */
  uint32_t challenge;
  uint64_t peer_flags; /* from the peer's send_name */
  size_t have; /* bytes of the message being read, its length included */
  unsigned char in[2 + MAX_MSG];
  unsigned char out[64 + MAXNODELEN];
  size_t outlen, outoff;
  char peer[MAXNODELEN + 1];
};

static uint64_t get_be(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++)
    v = v << 8 | p[i];
  return v;
}

static unsigned char *put_be(unsigned char *p, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; i--, v >>= 8)
    p[i] = (unsigned char)v;
  return p + n;
}

/* MD5(Cookie ++ decimal Challenge). The cookie is the one ei keeps
 * (ei_thiscookie reads the same field but is not in ei.h). */
static void digest(dm__dist *d, uint32_t challenge, unsigned char out[16]) {
  char buf[EI_MAX_COOKIE_SIZE + 16];
  const char *cookie = d->ec.ei_connect_cookie;
  int n = snprintf(buf, sizeof buf, "%s%u", cookie, (unsigned)challenge);
  dm__md5(buf, n > 0 && (size_t)n < sizeof buf ? (size_t)n : 0, out);
  memset(buf, 0, sizeof buf);
}

static void on_closed(uv_handle_t *handle) {
  dm__hs *h = handle->data;
  if (h->fd >= 0)
    close(h->fd);
  dm__free(h);
}

/* Out of the pending list, the poll closed (and the socket with it, unless
 * the table took it). */
static void finish(dm__hs *h) {
  dm__dist *d = h->dist;
  if (h->prev)
    h->prev->next = h->next;
  else
    d->hs_head = h->next;
  if (h->next)
    h->next->prev = h->prev;
  else
    d->hs_tail = h->prev;
  d->nhs--;
  d->stats.handshakes_pending = d->nhs;
  uv_poll_stop(&h->poll);
  uv_close((uv_handle_t *)&h->poll, on_closed);
}

static void fail(dm__hs *h, int timed_out, const char *why) {
  dm__dist *d = h->dist;
  d->stats.handshake_failures++;
  if (timed_out)
    d->stats.handshakes_timed_out++;
  else
    d->stats.handshakes_failed++;
  DM_WARN("handshake%s%s failed: %s", h->peer[0] ? " from " : "", h->peer, why);
  finish(h);
}

static void complete(dm__hs *h) {
  dm__dist *d = h->dist;
  int fd = h->fd;
  uint64_t flags = h->peer_flags;
  char peer[sizeof h->peer];
  memcpy(peer, h->peer, sizeof peer);
  d->stats.handshakes_completed++;
  d->stats.connections_accepted++;
  h->fd = -1;
  /* The poll lets go of the socket before the connection takes it. */
  finish(h);
  DM_INFO("connection from %s", peer);
  dm__dist_adopt(d, fd, peer, flags);
}

static void on_poll(uv_poll_t *p, int status, int events);

static void want(dm__hs *h, int events) {
  if (events != h->events) {
    h->events = events;
    uv_poll_start(&h->poll, events, on_poll);
  }
}

/* Hands what is queued to the kernel. 0, or -1 when h is gone. */
static int flush(dm__hs *h) {
  while (h->outoff < h->outlen) {
    ssize_t n = send(h->fd, h->out + h->outoff, h->outlen - h->outoff, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      want(h, h->state == HS_ACK ? UV_WRITABLE : UV_READABLE | UV_WRITABLE);
      return 0;
    }
    if (n < 0) {
      fail(h, 0, strerror(errno));
      return -1;
    }
    h->outoff += (size_t)n;
  }
  h->outoff = h->outlen = 0;
  if (h->state == HS_ACK) {
    complete(h);
    return -1;
  }
  want(h, UV_READABLE);
  return 0;
}

/* A message with its 2-byte length, queued. */
static void queue(dm__hs *h, const unsigned char *msg, size_t len) {
  unsigned char *p = put_be(h->out + h->outlen, len, 2);
  memcpy(p, msg, len);
  h->outlen += 2 + len;
}

static int refuse_flags(dm__hs *h, uint64_t flags) {
  char names[512];
  size_t n = 0;
  names[0] = 0;
  for (size_t i = 0; i < sizeof mandatory / sizeof mandatory[0]; i++)
    if (!(flags & mandatory[i].flag))
      n += (size_t)snprintf(names + n, sizeof names - n, "%sDFLAG_%s", n ? ", " : "",
                            mandatory[i].name);
  static const unsigned char na[] = "snot_allowed";
  queue(h, na, sizeof na - 1);
  (void)send(h->fd, h->out, h->outlen, MSG_NOSIGNAL | MSG_DONTWAIT);
  char why[600];
  snprintf(why, sizeof why, "refused: the peer lacks mandatory flags %s", names);
  fail(h, 0, why);
  return -1;
}

/* send_name 'N': Flags:64, Creation:32, NameLen:16, Name. */
static int on_name(dm__hs *h, const unsigned char *m, size_t len) {
  dm__dist *d = h->dist;
  if (len >= 1 && m[0] == 'n') {
    fail(h, 0, "old send_name 'n' (a node before OTP 23): not served");
    return -1;
  }
  if (len < NAME_HEAD || m[0] != 'N') {
    fail(h, 0, "not a send_name (not a node?)");
    return -1;
  }
  uint64_t flags = get_be(m + 1, 8);
  size_t nlen = get_be(m + 13, 2);
  if (nlen == 0 || nlen > MAXNODELEN || NAME_HEAD + nlen != len ||
      memchr(m + NAME_HEAD, 0, nlen) || !memchr(m + NAME_HEAD, '@', nlen)) {
    fail(h, 0, "malformed send_name");
    return -1;
  }
  memcpy(h->peer, m + NAME_HEAD, nlen);
  h->peer[nlen] = 0;
  h->peer_flags = flags;
  if (!(flags & F_MANDATORY_25_DIGEST)) {
    for (size_t i = 0; i < sizeof mandatory / sizeof mandatory[0]; i++)
      if (!(flags & mandatory[i].flag))
        return refuse_flags(h, flags);
  }
  uint32_t ch;
  if (getrandom(&ch, sizeof ch, 0) != (ssize_t)sizeof ch) {
    fail(h, 0, "no random challenge (getrandom failed)");
    return -1;
  }
  h->challenge = ch;
  static const unsigned char ok[] = "sok";
  queue(h, ok, sizeof ok - 1);
  const char *me = d->ec.thisnodename;
  size_t mlen = strlen(me);
  unsigned char c[NAME_HEAD + MAXNODELEN + 4], *p = c;
  *p++ = 'N';
  p = put_be(p, OUR_FLAGS, 8);
  p = put_be(p, ch, 4);
  p = put_be(p, d->ec.creation, 4);
  p = put_be(p, mlen, 2);
  memcpy(p, me, mlen);
  queue(h, c, (size_t)(p - c) + mlen);
  h->state = HS_REPLY;
  return flush(h);
}

/* challenge_reply 'r': PeerChallenge:32, Digest:16. */
static int on_reply(dm__hs *h, const unsigned char *m, size_t len) {
  unsigned char want_d[16], ack[17];
  if (len != 21 || m[0] != 'r') {
    fail(h, 0, "not a challenge_reply");
    return -1;
  }
  digest(h->dist, h->challenge, want_d);
  unsigned diff = 0;
  for (int i = 0; i < 16; i++)
    diff |= want_d[i] ^ m[5 + i];
  if (diff) {
    fail(h, 0, "wrong cookie (digest mismatch)");
    return -1;
  }
  ack[0] = 'a';
  digest(h->dist, (uint32_t)get_be(m + 1, 4), ack + 1);
  queue(h, ack, sizeof ack);
  h->state = HS_ACK;
  return flush(h);
}

/* Reads no more than the message in progress needs: what follows the
 * handshake is the connection's. 0, or -1 when h is gone. */
static int on_readable(dm__hs *h) {
  for (;;) {
    size_t need = h->have < 2 ? 2 - h->have : 2 + get_be(h->in, 2) - h->have;
    ssize_t n = recv(h->fd, h->in + h->have, need, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return 0;
    if (n <= 0) {
      fail(h, 0, n == 0 ? "peer closed the connection" : strerror(errno));
      return -1;
    }
    h->have += (size_t)n;
    if (h->have < 2)
      continue;
    size_t len = get_be(h->in, 2);
    if (len == 0 || len > MAX_MSG) {
      fail(h, 0, "bad message length (not a node?)");
      return -1;
    }
    if (h->have < 2 + len)
      continue;
    h->have = 0;
    int r = h->state == HS_NAME ? on_name(h, h->in + 2, len) : on_reply(h, h->in + 2, len);
    if (r || h->state == HS_ACK)
      return r;
  }
}

static void on_poll(uv_poll_t *p, int status, int events) {
  dm__hs *h = p->data;
  if (status < 0) {
    fail(h, 0, uv_strerror(status));
    return;
  }
  if ((events & UV_WRITABLE) && flush(h))
    return;
  if ((events & UV_READABLE) && h->state != HS_ACK)
    on_readable(h);
}

static void on_deadline(uv_timer_t *t) {
  dm__dist *d = t->data;
  uint64_t now = uv_now(d->loop);
  while (d->hs_head && d->hs_head->deadline <= now)
    fail(d->hs_head, 1, "timed out (--handshake-timeout)");
  if (d->hs_head)
    uv_timer_start(&d->hs_timer, on_deadline, d->hs_head->deadline - now, 0);
}

void dm__hs_init(dm__dist *d) {
  uv_timer_init(d->loop, &d->hs_timer);
  d->hs_timer.data = d;
}

int dm__hs_begin(dm__dist *d, int fd) {
  if (d->nhs >= d->cfg.max_pending_hs && d->hs_head)
    fail(d->hs_head, 0, "dropped, the oldest of too many pending handshakes "
                        "(--max-pending-handshakes)");
  dm__hs *h = dm__calloc(1, sizeof *h);
  if (!h) {
    close(fd);
    d->stats.handshake_failures++;
    d->stats.handshakes_failed++;
    return DM_ENOMEM;
  }
  h->dist = d;
  h->fd = fd;
  if (uv_poll_init(d->loop, &h->poll, fd)) {
    close(fd);
    dm__free(h);
    return DM_EIO;
  }
  h->poll.data = h;
  h->deadline = uv_now(d->loop) + d->cfg.handshake_ms;
  h->prev = d->hs_tail;
  if (d->hs_tail)
    d->hs_tail->next = h;
  else
    d->hs_head = h;
  d->hs_tail = h;
  d->stats.handshakes_pending = ++d->nhs;
  if (d->hs_head == h)
    uv_timer_start(&d->hs_timer, on_deadline, d->cfg.handshake_ms, 0);
  want(h, UV_READABLE);
  return 0;
}

void dm__hs_stop(dm__dist *d) {
  while (d->hs_head)
    finish(d->hs_head);
  uv_close((uv_handle_t *)&d->hs_timer, NULL);
}
