/* The handshake, what both sides share: the list of pending handshakes
 * with their deadline, the flags, the digest and the completion that
 * hands a socket (and its TLS session) to the table. Its messages on the
 * socket are hswire.c; the accepting side is accept.c, the initiating
 * side connect.c. */
#include <stdio.h>
#include <string.h>
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
#define F_ALIAS DM__DFLAG_ALIAS
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

uint64_t dm__hs_our_flags(void) { return OUR_FLAGS; }

int dm__hs_check_flags(uint64_t flags, char *names, size_t size) {
  size_t n = 0;
  int missing = 0;
  names[0] = 0;
  if (flags & F_MANDATORY_25_DIGEST)
    return 0;
  for (size_t i = 0; i < sizeof mandatory / sizeof mandatory[0]; i++)
    if (!(flags & mandatory[i].flag)) {
      missing = 1;
      if (n < size)
        n += (size_t)snprintf(names + n, size - n, "%sDFLAG_%s", n ? ", " : "",
                              mandatory[i].name);
    }
  return missing ? -1 : 0;
}

size_t dm__hs_enc_name(dm__dist *d, unsigned char *out, int with_challenge,
                       uint32_t challenge) {
  const char *me = d->ec.thisnodename;
  size_t mlen = strlen(me);
  unsigned char *p = out;
  *p++ = 'N';
  p = dm__put_be(p, OUR_FLAGS, 8);
  if (with_challenge)
    p = dm__put_be(p, challenge, 4);
  p = dm__put_be(p, d->ec.creation, 4);
  p = dm__put_be(p, mlen, 2);
  memcpy(p, me, mlen);
  return (size_t)(p - out) + mlen;
}

/* MD5(Cookie ++ decimal Challenge). The cookie is the one ei keeps
 * (ei_thiscookie reads the same field but is not in ei.h). */
void dm__hs_digest(dm__dist *d, uint32_t challenge, unsigned char out[16]) {
  char buf[EI_MAX_COOKIE_SIZE + 16];
  const char *cookie = d->ec.ei_connect_cookie;
  int n = snprintf(buf, sizeof buf, "%s%u", cookie, (unsigned)challenge);
  dm__md5(buf, n > 0 && (size_t)n < sizeof buf ? (size_t)n : 0, out);
  memset(buf, 0, sizeof buf);
}

int dm__hs_digest_ok(dm__dist *d, uint32_t challenge, const unsigned char got[16]) {
  unsigned char want[16];
  unsigned diff = 0;
  dm__hs_digest(d, challenge, want);
  for (int i = 0; i < 16; i++) /* in constant time */
    diff |= want[i] ^ got[i];
  return diff == 0;
}

int dm__hs_challenge(dm__dist *d, uint32_t *out) {
  return d->challenge(out) == 0 ? 0 : -1;
}

/* ---- the pending list ------------------------------------------------------ */

static void on_deadline(uv_timer_t *t);

dm__hs *dm__hs_new(dm__dist *d, int role) {
  dm__hs *h = dm__calloc(1, sizeof *h);
  if (!h)
    return NULL;
  h->dist = d;
  h->role = role;
  h->fd = h->epmd_fd = -1;
  h->refs = 1; /* the list's; each handle closing and a lookup hold one more */
  h->deadline = uv_now(d->loop) + d->cfg.handshake_ms;
  h->prev = d->hs_tail;
  if (d->hs_tail)
    d->hs_tail->next = h;
  else
    d->hs_head = h;
  d->hs_tail = h;
  d->stats.handshakes_pending = ++d->nhs;
  if (role == DM__HS_ACCEPT)
    d->nhs_accepting++;
  if (d->hs_head == h)
    uv_timer_start(&d->hs_timer, on_deadline, d->cfg.handshake_ms, 0);
  return h;
}

void dm__hs_unref(dm__hs *h) {
  if (--h->refs > 0)
    return;
  if (h->fd >= 0)
    close(h->fd);
  if (h->epmd_fd >= 0)
    close(h->epmd_fd);
  dm__buf_free(&h->queued);
  dm__buf_free(&h->cout);
  dm__tls_free(h->tls);
  dm__free(h);
}

void dm__hs_on_closed(uv_handle_t *handle) { dm__hs_unref(handle->data); }

/* Off the list; its handles close (and its sockets with them, unless the
 * table took the node's), and it is freed once they have. */
void dm__hs_drop(dm__hs *h) {
  dm__dist *d = h->dist;
  if (h->gone)
    return;
  h->gone = 1;
  if (h->prev)
    h->prev->next = h->next;
  else
    d->hs_head = h->next;
  if (h->next)
    h->next->prev = h->prev;
  else
    d->hs_tail = h->prev;
  d->nhs--;
  if (h->role == DM__HS_ACCEPT)
    d->nhs_accepting--;
  d->stats.handshakes_pending = d->nhs;
  if (h->polling) {
    h->refs++;
    uv_poll_stop(&h->poll);
    uv_close((uv_handle_t *)&h->poll, dm__hs_on_closed);
  }
  if (h->epmd_polling) {
    h->refs++;
    uv_poll_stop(&h->epmd_poll);
    uv_close((uv_handle_t *)&h->epmd_poll, dm__hs_on_closed);
  }
  if (h->resolving)
    uv_cancel((uv_req_t *)&h->gai); /* its callback still comes, and unrefs */
  dm__hs_unref(h); /* the list's */
}

void dm__hs_fail(dm__hs *h, int timed_out, const char *why) {
  dm__dist *d = h->dist;
  if (h->gone)
    return;
  d->stats.handshake_failures++;
  if (timed_out)
    d->stats.handshakes_timed_out++;
  else
    d->stats.handshakes_failed++;
  /* A peer that never sent a byte has not started TLS at all. */
  if (timed_out && h->tls && !dm__tls_up(h->tls) &&
      (h->sniffed || h->role == DM__HS_CONNECT)) {
    d->stats.tls_timed_out++;
    why = "timed out in the TLS handshake (--handshake-timeout)";
  }
  d->stats.connect_dropped += h->nqueued;
  if (h->role == DM__HS_CONNECT) {
    int peer = dm__dist_intern(d, h->peer);
    d->stats.connects_failed++;
    DM_WARN("connecting to %s failed: %s%s", h->peer, why,
            h->nqueued ? "; the messages waiting for it are dropped" : "");
    dm__hs_drop(h);
    if (peer >= 0 && d->ops->connected)
      d->ops->connected(d->ud, (uint32_t)peer, 0);
    return;
  }
  DM_WARN("handshake from %s failed: %s", h->peer[0] ? h->peer : h->from[0] ? h->from : "a peer",
          why);
  dm__hs_drop(h);
}

void dm__hs_complete(dm__hs *h) {
  dm__dist *d = h->dist;
  int fd = h->fd, role = h->role;
  uint64_t flags = h->peer_flags;
  char peer[sizeof h->peer];
  dm__buf queued = h->queued;
  dm__tls *tls = h->tls;
  memcpy(peer, h->peer, sizeof peer);
  h->tls = NULL;
  d->stats.handshakes_completed++;
  if (tls) {
    d->stats.tls_handshakes++;
    dm__tls_settle(tls);
  }
  if (role == DM__HS_ACCEPT)
    d->stats.connections_accepted++;
  else
    d->stats.connections_initiated++;
  h->fd = -1;
  h->queued = (dm__buf)DM__BUF_INIT;
  h->nqueued = 0;
  /* The poll lets go of the socket before the connection takes it. */
  dm__hs_drop(h);
  DM_INFO("connection %s %s%s%s", role == DM__HS_ACCEPT ? "from" : "to", peer,
          tls ? " over " : "", tls ? dm__tls_version(tls) : "");
  int idx = dm__dist_intern(d, peer);
  if (idx >= 0 && dm__dist_adopt(d, fd, peer, flags, tls) == 0) {
    dm__conn *c = dm__dist_conn(d, peer);
    if (c && queued.len)
      dm__conn_write(c, queued.data, queued.len);
    dm__buf_free(&queued);
    if (d->ops->connected)
      d->ops->connected(d->ud, (uint32_t)idx, 1);
    /* What came with the end of the TLS handshake is in the session, not
     * in the socket: it would wait for the peer's next bytes. */
    if (tls && (c = dm__dist_conn(d, peer)))
      dm__conn_pump(c);
    return;
  }
  if (idx < 0) {
    close(fd);
    dm__tls_free(tls);
  }
  dm__buf_free(&queued);
}

dm__hs *dm__hs_connecting(dm__dist *d, const char *peer) {
  for (dm__hs *h = d->hs_head; h; h = h->next)
    if (h->role == DM__HS_CONNECT && strcmp(h->peer, peer) == 0)
      return h;
  return NULL;
}

dm__hs *dm__hs_pending(dm__dist *d, const char *peer) {
  dm__hs *in = NULL;
  for (dm__hs *h = d->hs_head; h; h = h->next) {
    if (strcmp(h->peer, peer) != 0)
      continue;
    if (h->role == DM__HS_CONNECT)
      return h;
    in = h;
  }
  return in;
}

void dm__hs_take_queue(dm__hs *to, dm__hs *from) {
  if (!from->queued.len)
    return;
  if (dm__buf_append(&to->queued, from->queued.data, from->queued.len) == 0) {
    to->nqueued += from->nqueued;
  } else {
    from->dist->stats.connect_dropped += from->nqueued;
  }
  dm__buf_free(&from->queued);
  from->nqueued = 0;
}

static void on_deadline(uv_timer_t *t) {
  dm__dist *d = t->data;
  uint64_t now = uv_now(d->loop);
  while (d->hs_head && d->hs_head->deadline <= now)
    dm__hs_fail(d->hs_head, 1, "timed out (--handshake-timeout)");
  if (d->hs_head)
    uv_timer_start(&d->hs_timer, on_deadline, d->hs_head->deadline - now, 0);
}

void dm__hs_init(dm__dist *d) {
  uv_timer_init(d->loop, &d->hs_timer);
  d->hs_timer.data = d;
}

void dm__hs_stop(dm__dist *d) {
  if (d->hs_timer.data != d)
    return; /* never set up: the node stops before it could start */
  while (d->hs_head)
    dm__hs_drop(d->hs_head);
  uv_close((uv_handle_t *)&d->hs_timer, NULL);
  d->hs_timer.data = NULL;
}
