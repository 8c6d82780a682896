/* The accepting side of the handshake (OTP 23 and later): send_name in,
 * status and challenge out, challenge_reply in, challenge_ack out. A peer
 * already connected is asked whether the old connection goes ("alive");
 * a peer this node is connecting to at the same time is settled as BEAM
 * settles it, by comparing the two names. With TLS all of it runs inside
 * the session, and a verified peer's certificate must be for the host it
 * names. */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dist/dist.h"
#include "dm.h"

enum { A_NAME, A_ALIVE, A_REPLY, A_ACK };

static void status(dm__hs *h, const char *s) {
  unsigned char m[24];
  size_t n = strlen(s);
  m[0] = 's';
  memcpy(m + 1, s, n);
  dm__hs_queue(h, m, n + 1);
}

/* A refusal goes out best-effort, without waiting for the socket. */
static int refuse(dm__hs *h, const char *st, const char *why) {
  status(h, st);
  dm__hs_send_now(h);
  dm__hs_fail(h, 0, why);
  return -1;
}

static int send_challenge(dm__hs *h) {
  unsigned char c[DM__HS_MAX_MSG + 4];
  if (dm__hs_challenge(h->dist, &h->challenge)) {
    dm__hs_fail(h, 0, "no random challenge (getrandom failed)");
    return -1;
  }
  dm__hs_queue(h, c, dm__hs_enc_name(h->dist, c, 1, h->challenge));
  h->state = A_REPLY;
  return dm__hs_flush(h);
}

/* The peer is one this node is connecting to as well. As in dist_util,
 * the greater name keeps its own attempt: this side says nok and goes;
 * else it takes over the attempt's waiting messages and goes on. */
static int simultaneous(dm__hs *h, dm__hs *mine) {
  dm__dist *d = h->dist;
  if (strcmp(d->ec.thisnodename, h->peer) > 0 && !mine->waiting) {
    status(h, "nok");
    dm__hs_send_now(h);
    DM_DEBUG("simultaneous connect with %s: ours goes on", h->peer);
    dm__hs_drop(h);
    return -1;
  }
  DM_DEBUG("simultaneous connect with %s: theirs goes on", h->peer);
  dm__hs_take_queue(h, mine);
  dm__hs_drop(mine);
  status(h, "ok_simultaneous");
  return send_challenge(h);
}

/* send_name 'N': Flags:64, Creation:32, NameLen:16, Name. */
static int on_name(dm__hs *h, const unsigned char *m, size_t len) {
  dm__dist *d = h->dist;
  char missing[512], why[600];
  if (len >= 1 && m[0] == 'n') {
    dm__hs_fail(h, 0, "old send_name 'n' (a node before OTP 23): not served");
    return -1;
  }
  if (len < DM__HS_NAME_HEAD || m[0] != 'N') {
    dm__hs_fail(h, 0, "not a send_name (not a node?)");
    return -1;
  }
  uint64_t flags = dm__get_be(m + 1, 8);
  size_t nlen = dm__get_be(m + 13, 2);
  if (nlen == 0 || nlen > MAXNODELEN || DM__HS_NAME_HEAD + nlen != len ||
      memchr(m + DM__HS_NAME_HEAD, 0, nlen) || !memchr(m + DM__HS_NAME_HEAD, '@', nlen)) {
    dm__hs_fail(h, 0, "malformed send_name");
    return -1;
  }
  memcpy(h->peer, m + DM__HS_NAME_HEAD, nlen);
  h->peer[nlen] = 0;
  h->peer_flags = flags;
  if (dm__hs_check_flags(flags, missing, sizeof missing)) {
    snprintf(why, sizeof why, "refused: the peer lacks mandatory flags %s", missing);
    return refuse(h, "not_allowed", why);
  }
  if (strcmp(h->peer, d->ec.thisnodename) == 0)
    return refuse(h, "not_allowed", "refused: the peer claims this node's own name");
  /* A certificate proves a host, and the name claims one: with
   * verification on they must agree, or any holder of a certificate the
   * CA signed could speak as any node. */
  if (h->tls && d->tls->verify &&
      dm__tls_check_host(h->tls, strchr(h->peer, '@') + 1) != 0) {
    status(h, "not_allowed");
    dm__hs_tls_fail(h);
    return -1;
  }
  if (dm__dist_conn(d, h->peer)) {
    /* Connected already: the peer says whether that connection is
     * stale (it restarted) and goes. */
    status(h, "alive");
    h->state = A_ALIVE;
    return dm__hs_flush(h);
  }
  dm__hs *mine = dm__hs_connecting(d, h->peer);
  if (mine)
    return simultaneous(h, mine);
  status(h, "ok");
  return send_challenge(h);
}

/* After "alive": 's' "true" (the old connection goes) or "false". */
static int on_alive_answer(dm__hs *h, const unsigned char *m, size_t len) {
  if (len == 5 && memcmp(m, "strue", 5) == 0) {
    dm__conn *old = dm__dist_conn(h->dist, h->peer);
    if (old)
      dm__conn_close(old, "the peer connected again (its old connection is stale)");
    return send_challenge(h);
  }
  if (len == 6 && memcmp(m, "sfalse", 6) == 0)
    dm__hs_fail(h, 0, "the peer keeps its existing connection");
  else
    dm__hs_fail(h, 0, "no answer to alive");
  return -1;
}

/* challenge_reply 'r': PeerChallenge:32, Digest:16. */
static int on_reply(dm__hs *h, const unsigned char *m, size_t len) {
  unsigned char ack[17];
  if (len != 21 || m[0] != 'r') {
    dm__hs_fail(h, 0, "not a challenge_reply");
    return -1;
  }
  if (!dm__hs_digest_ok(h->dist, h->challenge, m + 5)) {
    dm__hs_fail(h, 0, "wrong cookie (digest mismatch)");
    return -1;
  }
  ack[0] = 'a';
  dm__hs_digest(h->dist, (uint32_t)dm__get_be(m + 1, 4), ack + 1);
  dm__hs_queue(h, ack, sizeof ack);
  h->state = A_ACK;
  h->complete_after_write = 1;
  return dm__hs_flush(h);
}

static int on_msg(dm__hs *h, const unsigned char *m, size_t len) {
  switch (h->state) {
  case A_NAME:
    return on_name(h, m, len);
  case A_ALIVE:
    return on_alive_answer(h, m, len);
  case A_REPLY:
    return on_reply(h, m, len);
  default:
    dm__hs_fail(h, 0, "a message after the handshake's last");
    return -1;
  }
}

int dm__hs_begin(dm__dist *d, int fd) {
  if (d->nhs_accepting >= d->cfg.max_pending_hs) {
    dm__hs *oldest = d->hs_head;
    while (oldest && oldest->role != DM__HS_ACCEPT)
      oldest = oldest->next;
    if (oldest)
      dm__hs_fail(oldest, 0, "dropped, the oldest of too many pending handshakes "
                             "(--max-pending-handshakes)");
  }
  dm__hs *h = dm__hs_new(d, DM__HS_ACCEPT);
  if (!h) {
    close(fd);
    d->stats.handshake_failures++;
    d->stats.handshakes_failed++;
    return DM_ENOMEM;
  }
  struct sockaddr_in a;
  socklen_t alen = sizeof a;
  char ip[INET_ADDRSTRLEN];
  if (getpeername(fd, (struct sockaddr *)&a, &alen) == 0 && a.sin_family == AF_INET &&
      inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip))
    snprintf(h->from, sizeof h->from, "%s:%u", ip, (unsigned)ntohs(a.sin_port));
  if (dm__hs_watch(h, fd)) {
    dm__hs_fail(h, 0, "cannot watch the socket");
    return DM_EIO;
  }
  if (d->tls && dm__tls_new(d->tls, 1, NULL, &h->tls)) {
    dm__hs_fail(h, 0, "out of memory for its TLS session");
    return DM_ENOMEM;
  }
  h->state = A_NAME;
  h->on_msg = on_msg;
  dm__hs_want(h, UV_READABLE);
  return 0;
}
