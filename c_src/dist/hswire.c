/* The handshake's wire: its messages on the socket, framed with 2-byte
 * lengths on plain TCP, or, with TLS, the TLS handshake first and then
 * 4-byte lengths inside the session, as OTP's inet_tls_dist does. Reads
 * take no more than the message in progress needs, so that what follows
 * the handshake is the connection's; on an accepting TLS node the first
 * byte tells a TLS client from a plain peer. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dist/dist.h"
#include "dm.h"

static void on_poll(uv_poll_t *p, int status, int events);

int dm__hs_watch(dm__hs *h, int fd) {
  h->fd = fd;
  if (uv_poll_init(h->dist->loop, &h->poll, fd))
    return -1;
  h->poll.data = h;
  h->polling = 1;
  h->events = 0;
  return 0;
}

void dm__hs_want(dm__hs *h, int events) {
  if (events != h->events) {
    h->events = events;
    uv_poll_start(&h->poll, events, on_poll);
  }
}

/* Sends from buf at *off on: 0 all sent, 1 the socket is full, -1 h
 * failed. */
static int send_from(dm__hs *h, const char *buf, size_t len, size_t *off) {
  while (*off < len) {
    ssize_t n = send(h->fd, buf + *off, len - *off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return 1;
    if (n < 0) {
      dm__hs_fail(h, 0, strerror(errno));
      return -1;
    }
    *off += (size_t)n;
  }
  return 0;
}

/* TLS: this much ciphertext at most waits to be sent during the
 * handshake (its flights are a few KiB); a peer that makes the session
 * say more without reading it is not shaking hands. */
#define TLS_HS_MAX_UNSENT (64 * 1024)

/* TLS: the queued messages encrypted (once the session is up) and
 * added to the ciphertext to send. 0, or -1 when h failed. */
static int seal(dm__hs *h) {
  if (h->outlen > h->outoff && dm__tls_up(h->tls)) {
    size_t taken = 0;
    if (dm__tls_write(h->tls, h->out + h->outoff, h->outlen - h->outoff, &taken)) {
      dm__hs_tls_fail(h);
      return -1;
    }
    h->outoff += taken;
    if (h->outoff == h->outlen)
      h->outoff = h->outlen = 0;
  }
  if (h->coff == h->cout.len)
    h->coff = h->cout.len = 0;
  if (dm__tls_take(h->tls, &h->cout, SIZE_MAX)) {
    dm__hs_fail(h, 0, "out of memory");
    return -1;
  }
  if (h->cout.len - h->coff > TLS_HS_MAX_UNSENT) {
    h->dist->stats.tls_failed++;
    dm__hs_fail(h, 0, "TLS: the peer does not read what its session makes this node send");
    return -1;
  }
  return 0;
}

int dm__hs_flush(dm__hs *h) {
  int full, held = 0;
  if (h->tls) {
    if (seal(h))
      return -1;
    full = send_from(h, h->cout.data, h->cout.len, &h->coff);
    /* Plaintext the session cannot take before the peer speaks again:
     * what the socket brings unblocks it, not its turning writable. */
    held = h->outlen > 0;
  } else {
    full = send_from(h, (const char *)h->out, h->outlen, &h->outoff);
    if (!full)
      h->outoff = h->outlen = 0;
  }
  if (full < 0)
    return -1;
  if (full) {
    dm__hs_want(h, h->complete_after_write ? UV_WRITABLE : UV_READABLE | UV_WRITABLE);
    return 0;
  }
  if (held) {
    dm__hs_want(h, UV_READABLE);
    return 0;
  }
  if (h->complete_after_write) {
    dm__hs_complete(h);
    return -1;
  }
  dm__hs_want(h, UV_READABLE);
  return 0;
}

void dm__hs_send_now(dm__hs *h) {
  if (h->tls && (dm__tls_up(h->tls) || h->outlen == 0)) {
    size_t taken = 0;
    if (h->outlen > h->outoff && dm__tls_up(h->tls))
      (void)dm__tls_write(h->tls, h->out + h->outoff, h->outlen - h->outoff, &taken);
    if (dm__tls_take(h->tls, &h->cout, SIZE_MAX) == 0 && h->cout.len > h->coff)
      (void)send(h->fd, h->cout.data + h->coff, h->cout.len - h->coff,
                 MSG_NOSIGNAL | MSG_DONTWAIT);
  } else if (!h->tls && h->outlen > h->outoff) {
    (void)send(h->fd, h->out + h->outoff, h->outlen - h->outoff, MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  h->outlen = h->outoff = 0;
  h->cout.len = h->coff = 0;
}

void dm__hs_queue(dm__hs *h, const void *msg, size_t len) {
  int hl = h->tls ? 4 : 2;
  if (h->outlen + (size_t)hl + len > sizeof h->out)
    return; /* cannot happen: the largest message is a send_name */
  unsigned char *p = dm__put_be(h->out + h->outlen, len, hl);
  memcpy(p, msg, len);
  h->outlen += (size_t)hl + len;
}

/* The message in h->in is whole once it holds its length (hl bytes) and
 * that many more: 1, 0 not yet, -1 h failed (a length no message has). */
static int message_whole(dm__hs *h, int hl) {
  if (h->have < (size_t)hl)
    return 0;
  size_t len = (size_t)dm__get_be(h->in, hl);
  if (len == 0 || len > DM__HS_MAX_MSG) {
    dm__hs_fail(h, 0, "bad message length (not a node?)");
    return -1;
  }
  return h->have == (size_t)hl + len;
}

/* Bytes to read for the message in progress, no more: what follows the
 * handshake is the connection's. */
static size_t message_need(const dm__hs *h, int hl) {
  return h->have < (size_t)hl ? (size_t)hl - h->have
                              : (size_t)hl + (size_t)dm__get_be(h->in, hl) - h->have;
}

/* Hands the whole message to its side. 0, or -1 when h is gone or stops
 * reading. */
static int dispatch(dm__hs *h, int hl) {
  size_t len = h->have - (size_t)hl;
  h->have = 0;
  int r = h->on_msg(h, h->in + hl, len);
  return r || h->gone || h->complete_after_write ? -1 : 0;
}

static void closed(dm__hs *h, ssize_t n) {
  const char *why;
  if (n < 0)
    why = strerror(errno);
  else if (h->tls && !dm__tls_up(h->tls))
    why = "the peer closed the connection in the TLS handshake (not a TLS node, or it "
          "refused this node's certificate?)";
  else if (h->role == DM__HS_CONNECT && h->challenge)
    why = "the peer closed the connection (wrong cookie?)";
  else
    why = "the peer closed the connection";
  if (h->tls && !dm__tls_up(h->tls) && (h->sniffed || h->role == DM__HS_CONNECT))
    h->dist->stats.tls_failed++;
  dm__hs_fail(h, 0, why);
}

/* Reads no more than the message in progress needs. 0, or -1 when h is
 * gone or stops reading. */
static int plain_readable(dm__hs *h) {
  for (;;) {
    ssize_t n = recv(h->fd, h->in + h->have, message_need(h, 2), 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return 0;
    if (n <= 0) {
      closed(h, n);
      return -1;
    }
    h->have += (size_t)n;
    int whole = message_whole(h, 2);
    if (whole < 0 || (whole && dispatch(h, 2)))
      return -1;
  }
}

void dm__hs_tls_fail(dm__hs *h) {
  dm__dist *d = h->dist;
  char why[256];
  if (dm__tls_cert_failed(h->tls))
    d->stats.tls_cert_refused++;
  else
    d->stats.tls_failed++;
  snprintf(why, sizeof why, "TLS: %s", dm__tls_why(h->tls));
  dm__hs_send_now(h); /* the alert that tells the peer why */
  dm__hs_fail(h, 0, why);
}

int dm__hs_tls_step(dm__hs *h) {
  if (!dm__tls_up(h->tls)) {
    int r = dm__tls_handshake(h->tls);
    if (r < 0) {
      dm__hs_tls_fail(h);
      return -1;
    }
    if (r == 0)
      return dm__hs_flush(h); /* this side's flight, then wait */
    DM_DEBUG("%s with %s set up", dm__tls_version(h->tls), h->peer[0] ? h->peer : h->from);
    if (h->on_tls_up && h->on_tls_up(h))
      return -1;
    if (dm__hs_flush(h))
      return -1;
  }
  /* The session may hold several messages, or part of one: read them out
   * exactly, as on plain TCP, and leave the rest to the connection. */
  for (;;) {
    long n = dm__tls_read(h->tls, h->in + h->have, message_need(h, 4));
    if (n == 0)
      return dm__hs_flush(h); /* what reading made the session say */
    if (n < 0) {
      if (n == DM_ECLOSED) {
        dm__hs_fail(h, 0, "the peer ended the TLS session");
        return -1;
      }
      dm__hs_tls_fail(h);
      return -1;
    }
    h->have += (size_t)n;
    int whole = message_whole(h, 4);
    if (whole < 0 || (whole && dispatch(h, 4)))
      return -1;
  }
}

/* TLS: this much ciphertext at most waits in a session during the
 * handshake; a peer that sends more is not shaking hands. */
#define TLS_HS_MAX_BUFFERED (256 * 1024)
/* The first byte of a TLS record that starts a handshake. */
#define TLS_HANDSHAKE_RECORD 0x16

/* Accepting with TLS: the first byte tells a TLS client (a handshake
 * record) from a plain distribution peer (its message's length). 1 TLS,
 * 0 not known yet, -1 h is gone or went plain (it has read then). */
static int sniff(dm__hs *h) {
  dm__dist *d = h->dist;
  unsigned char b;
  ssize_t n = recv(h->fd, &b, 1, MSG_PEEK);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
    return 0;
  if (n <= 0) {
    closed(h, n);
    return -1;
  }
  h->sniffed = 1;
  if (b == TLS_HANDSHAKE_RECORD)
    return 1;
  if (d->tls->only) {
    d->stats.tls_plain_refused++;
    dm__hs_fail(h, 0, "refused: a plain TCP peer, and this node takes TLS only (--tls-only)");
    return -1;
  }
  dm__tls_free(h->tls); /* a plain peer, taken as one */
  h->tls = NULL;
  plain_readable(h);
  return -1;
}

static int tls_readable(dm__hs *h) {
  char buf[16384];
  if (!h->sniffed && h->role == DM__HS_ACCEPT) {
    int r = sniff(h);
    if (r <= 0)
      return r;
  }
  /* Once the session is up, one buffer at a time: what follows the
   * distribution handshake is the connection's to read, not this
   * session's to hold. */
  int once = dm__tls_up(h->tls);
  for (;;) {
    ssize_t n = recv(h->fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    if (n <= 0) {
      closed(h, n);
      return -1;
    }
    if (dm__tls_feed(h->tls, buf, (size_t)n)) {
      dm__hs_fail(h, 0, "out of memory");
      return -1;
    }
    if (dm__tls_buffered(h->tls) > TLS_HS_MAX_BUFFERED) {
      h->dist->stats.tls_failed++;
      dm__hs_fail(h, 0, "TLS: more bytes than a handshake has (not a TLS peer?)");
      return -1;
    }
    if ((size_t)n < sizeof buf || once)
      break;
  }
  return dm__hs_tls_step(h);
}

static int on_readable(dm__hs *h) {
  return h->tls ? tls_readable(h) : plain_readable(h);
}

static void on_poll(uv_poll_t *p, int status, int events) {
  dm__hs *h = p->data;
  if (h->gone)
    return;
  if (status < 0) {
    dm__hs_fail(h, 0, uv_strerror(status));
    return;
  }
  if (events & UV_WRITABLE) {
    if (h->on_writable && h->on_writable(h))
      return;
    if (!h->gone && (h->outlen || h->coff < h->cout.len) && dm__hs_flush(h))
      return;
  }
  if ((events & UV_READABLE) && !h->gone && !h->complete_after_write && !h->waiting)
    on_readable(h);
}
