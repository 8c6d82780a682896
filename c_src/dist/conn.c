/* A connection: one peer after the handshake, framed, non-blocking reads
 * and writes on the loop thread, in plain TCP or through its TLS session.
 * Output produced during one loop iteration is written with one system
 * call per peer just before the loop blocks. Packets go to the table's
 * ops, the close to the table's `closed`. */
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/base.h"
#include "dm.h"
#include "dist/dist.h"

#define READ_BUF_SIZE (64 * 1024)

static const char *peer_name(const dm__conn *c) {
  return c->dist->peer_names[c->peer];
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  dm__conn *c = h->data;
  (void)hint;
  buf->base = c->rbuf;
  buf->len = READ_BUF_SIZE;
}

static int on_packet(void *ud, const char *pkt, size_t len) {
  dm__conn *c = ud;
  dm__dist *d = c->dist;
  if (len == 0) {
    d->stats.ticks_in++;
    return 0;
  }
  d->stats.packets_in++;
  c->rd_msgs += (unsigned)(d->ops->packet(d->ud, c, pkt, len) > 0);
  return c->closing ? DM_ECLOSED : 0;
}

/* Asks the kernel to wake the loop for this peer only once `lowat` bytes
 * are waiting (see dm__lowat_want). When the kernel refuses, the mark it
 * has is still the one recorded: a raised one stays watched by the quiet
 * timer, which tries again. */
static void set_lowat(dm__conn *c, size_t lowat) {
  int fd, v = (int)lowat;
  if (uv_fileno((uv_handle_t *)&c->tcp, &fd) ||
      setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof v))
    return;
  c->lowat = lowat;
}

static void on_lowat_tick(uv_timer_t *t) {
  dm__dist *d = t->data;
  uint64_t now = uv_hrtime();
  int held = 0;
  for (size_t i = 0; i < d->nconns; i++)
    held |= dm__conn_lowat_release(d->conns[i], now);
  if (!held)
    uv_timer_stop(t);
}

static void coalesce(dm__conn *c, size_t nread) {
  dm__dist *n = c->dist;
  /* Messages, not packets: a gen_server:call comes as a monitor and a
   * message together, and one caller must not raise the mark. */
  size_t want = dm__lowat_want(nread, c->rd_msgs, dm__frame_pending(&c->fr),
                               n->cfg.read_coalescing);
  size_t next = dm__lowat_next(c->lowat, want);
  if (next != c->lowat)
    set_lowat(c, next);
  if (c->lowat > 1) {
    c->held_ns = uv_hrtime();
    if (!uv_is_active((uv_handle_t *)&n->lowat_timer))
      uv_timer_start(&n->lowat_timer, on_lowat_tick, 1, 1);
  }
}

int dm__conn_lowat_release(dm__conn *c, uint64_t now) {
  if (c->lowat <= 1)
    return 0;
  if (now - c->held_ns < 500000)
    return 1;
  /* Quiet for half a millisecond: what it has sent is read now (since
   * Linux 4.18, lowering the mark wakes a waiting poll). */
  set_lowat(c, 1);
  c->dist->stats.lowat_releases++;
  return c->lowat > 1;
}

static void mark_dirty(dm__conn *c);
static int overflowing(dm__conn *c, size_t more);

/* TLS: the plaintext the session holds, through the frame reader. The
 * read buffer is free again once the ciphertext is fed, so it takes the
 * plaintext. 0 or what the feed returned; DM_ECLOSED, DM_ETLS. */
static int tls_pump(dm__conn *c) {
  int r = 0;
  for (;;) {
    long n = dm__tls_read(c->tls, c->rbuf, READ_BUF_SIZE);
    if (n <= 0) {
      r = (int)n;
      break;
    }
    if ((r = dm__frame_feed(&c->fr, c->rbuf, (size_t)n, on_packet, c)))
      break;
  }
  /* Reading can make the session answer (a renegotiation, a key update),
   * and a write it held back can go on. What it answers counts against
   * max_outbuf like the rest: a peer that asks and never reads is
   * dropped. */
  if (!c->closing && (dm__tls_pending(c->tls) || c->tls_stalled) && !overflowing(c, 0))
    mark_dirty(c);
  return r;
}

/* What a read (or the session's leftovers) came to: 0, or the error that
 * ends the connection, which closes it with why. */
static void after_read(dm__conn *c, int r) {
  dm__dist *n = c->dist;
  if (r == 0 || c->closing)
    return;
  if (r == DM_ECLOSED) {
    dm__conn_close(c, "the peer ended the TLS session");
  } else if (r == DM_ETLS) {
    DM_WARN("peer %s: TLS: %s", peer_name(c), dm__tls_why(c->tls));
    dm__conn_close(c, dm__tls_why(c->tls));
  } else if (r == DM_ETOOBIG) {
    n->stats.oversized_packets++;
    DM_WARN("peer %s announced a packet over the %u byte maximum",
            peer_name(c), (unsigned)n->cfg.max_packet);
    dm__conn_close(c, "oversized packet");
  } else {
    DM_ERROR("peer %s: %s", peer_name(c), dm_strerror(r));
    dm__conn_close(c, dm_strerror(r));
  }
}

void dm__conn_pump(dm__conn *c) {
  if (!c->tls || c->closing)
    return;
  after_read(c, tls_pump(c));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  dm__conn *c = s->data;
  dm__dist *n = c->dist;
  if (nread < 0) {
    if (dm__frame_partial(&c->fr))
      DM_WARN("peer %s closed the connection inside a packet", peer_name(c));
    dm__conn_close(c, nread == UV_EOF ? "closed by peer" : uv_strerror((int)nread));
    return;
  }
  if (nread == 0)
    return;
  n->stats.bytes_in += (uint64_t)nread;
  n->stats.reads++;
  c->last_read = uv_now(n->loop);
  c->rd_msgs = 0;
  int r;
  if (c->tls) {
    r = dm__tls_feed(c->tls, buf->base, (size_t)nread);
    if (r == 0)
      r = tls_pump(c);
  } else {
    r = dm__frame_feed(&c->fr, buf->base, (size_t)nread, on_packet, c);
  }
  /* Not under TLS: a record cut in two waits in the session, where the
   * frame reader cannot see how much of it is missing, and a mark above
   * that would hold it until the quiet timer (p99 of W2 over TLS at 8
   * callers: 3.7 ms with it, 0.6 ms without). */
  if (r == 0 && !c->closing && !c->tls)
    coalesce(c, (size_t)nread);
  after_read(c, r);
}

static void on_closed(uv_handle_t *h);

int dm__conn_open(dm__dist *d, int fd, uint32_t peer, dm__conn_closed_fn closed,
                  dm__tls *tls, dm__conn **out) {
  int r = DM_ENOMEM, ur;
  dm__conn *c = dm__calloc(1, sizeof *c);
  if (!c)
    goto err_fd;
  c->tls = tls;
  c->rbuf = dm__malloc(READ_BUF_SIZE);
  if (!c->rbuf)
    goto err_conn;
  c->dist = d;
  c->closed = closed;
  c->peer = peer;
  dm__frame_init(&c->fr, d->cfg.max_packet);
  c->last_read = c->last_write = uv_now(d->loop);
  c->lowat = 1;
  if ((ur = uv_tcp_init(d->loop, &c->tcp))) {
    r = DM_EIO;
    goto err_rbuf;
  }
  c->tcp.data = c;
  if ((ur = uv_tcp_open(&c->tcp, fd))) {
    close(fd);
    goto err_handle;
  }
  /* From here on the handle owns fd. */
  if ((ur = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read)))
    goto err_handle;
  *out = c;
  return 0;
err_handle:
  DM_ERROR("cannot serve %s: %s", peer_name(c), uv_strerror(ur));
  c->closing = 1;
  uv_close((uv_handle_t *)&c->tcp, on_closed);
  return DM_EIO;
err_rbuf:
  dm__free(c->rbuf);
err_conn:
  dm__free(c);
err_fd:
  dm__tls_free(tls);
  close(fd);
  return r;
}

static void on_closed(uv_handle_t *h) {
  dm__conn *c = h->data;
  dm__frame_free(&c->fr);
  dm__buf_free(&c->out);
  dm__buf_free(&c->wire);
  dm__buf_free(&c->inflight);
  dm__tls_free(c->tls);
  dm__free(c->rbuf);
  dm__free(c);
}

void dm__conn_close(dm__conn *c, const char *why) {
  dm__dist *d = c->dist;
  if (c->closing)
    return;
  c->closing = 1;
  DM_INFO("connection to %s closed: %s", peer_name(c), why);
  d->stats.connections_closed++;
  if (c->dirty) {
    for (dm__conn **pp = &d->dirty; *pp; pp = &(*pp)->next_dirty)
      if (*pp == c) {
        *pp = c->next_dirty;
        break;
      }
  }
  uv_read_stop((uv_stream_t *)&c->tcp);
  if (c->tls && !c->writing && c->wire.len == 0) {
    /* A clean end says so (close_notify), best-effort: a peer that
     * cannot take it now is gone anyway. */
    dm__buf bye = DM__BUF_INIT;
    dm__tls_close_notify(c->tls);
    if (dm__tls_take(c->tls, &bye, 256) == 0 && bye.len) {
      uv_buf_t b = uv_buf_init(bye.data, (unsigned)bye.len);
      (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    }
    dm__buf_free(&bye);
  }
  uv_close((uv_handle_t *)&c->tcp, on_closed);
  /* The table forgets it now (the memory goes in on_closed), so the peer
   * is gone before its links fire. */
  c->closed(d, c);
}

/* Whether `more` bytes on top of what waits for this peer (queued, being
 * written, and what its TLS session has to send) pass max_outbuf; if so
 * the peer is dropped. */
static int overflowing(dm__conn *c, size_t more) {
  dm__dist *n = c->dist;
  size_t queued = c->out.len - c->out_off + c->wire.len + c->inflight.len +
                  (c->tls ? dm__tls_pending(c->tls) : 0);
  if (queued + more <= n->cfg.max_outbuf)
    return 0;
  n->stats.outbuf_overflows++;
  if (more)
    DM_WARN("peer %s: %zu bytes queued and %zu more would pass --max-outbuf (a reply too big, "
            "or a peer that does not read): dropping it",
            peer_name(c), queued, more);
  else
    DM_WARN("peer %s does not read: %zu bytes queued, dropping it", peer_name(c), queued);
  dm__conn_close(c, "output buffer full");
  return 1;
}

/* Room for len more bytes within max_outbuf, or the peer is dropped. */
static int room(dm__conn *c, size_t len) {
  if (c->closing)
    return DM_ECLOSED;
  return overflowing(c, len) ? DM_ECLOSED : 0;
}

static void mark_dirty(dm__conn *c) {
  dm__dist *n = c->dist;
  if (!c->dirty) {
    c->dirty = 1;
    c->next_dirty = n->dirty;
    n->dirty = c;
  }
}

static void queued(dm__conn *c, size_t len) {
  dm__dist *n = c->dist;
  n->stats.bytes_out += len;
  c->last_write = uv_now(n->loop);
  mark_dirty(c);
}

int dm__conn_write(dm__conn *c, const char *data, size_t len) {
  int r = room(c, len);
  if (r)
    return r;
  if ((r = dm__buf_append(&c->out, data, len))) {
    dm__conn_close(c, "out of memory");
    return r;
  }
  queued(c, len);
  return 0;
}

int dm__conn_write_owned(dm__conn *c, char **data, size_t len, size_t cap) {
  if (c->out.len || c->out_off)
    return dm__conn_write(c, *data, len);
  int r = room(c, len);
  if (r)
    return r;
  dm__buf_free(&c->out);
  c->out.data = *data;
  c->out.len = len;
  c->out.cap = cap;
  *data = NULL;
  queued(c, len);
  return 0;
}

static void flush(dm__conn *c);

/* Queue buffers bigger than this go once written: they grew for one big
 * packet. */
#define KEEP_CAP (256 * 1024)

static int has_output(const dm__conn *c) {
  return c->out.len > 0 || (c->tls && (c->wire.len > 0 || dm__tls_pending(c->tls) > 0));
}

static void on_written(uv_write_t *req, int status) {
  dm__conn *c = req->data;
  c->writing = 0;
  c->inflight.len = 0;
  if (c->inflight.cap > KEEP_CAP)
    dm__buf_free(&c->inflight); /* a big reply does not stay resident */
  if (c->closing)
    return;
  if (status < 0) {
    dm__conn_close(c, uv_strerror(status));
    return;
  }
  if (has_output(c))
    flush(c);
}

/* TLS: at most this much plaintext is encrypted ahead of the socket, so
 * that a 150 MB reply is not held twice, once as ciphertext. */
#define SEAL_CHUNK (256 * 1024)

/* TLS: the next part of `out` encrypted into `wire`. 0, or an error (the
 * connection is closed). */
static int seal(dm__conn *c) {
  size_t todo = c->out.len - c->out_off, taken = 0;
  if (todo > SEAL_CHUNK)
    todo = SEAL_CHUNK;
  c->tls_stalled = 0;
  if (todo && dm__tls_write(c->tls, c->out.data + c->out_off, todo, &taken)) {
    dm__conn_close(c, dm__tls_why(c->tls));
    return DM_ETLS;
  }
  c->tls_stalled = taken < todo; /* goes on once the peer has answered */
  c->out_off += taken;
  if (c->out_off == c->out.len) {
    c->out.len = c->out_off = 0;
    if (c->out.cap > KEEP_CAP)
      dm__buf_free(&c->out);
  }
  if (dm__tls_take(c->tls, &c->wire, SIZE_MAX)) {
    dm__conn_close(c, "out of memory");
    return DM_ENOMEM;
  }
  return 0;
}

static void flush(dm__conn *c) {
  dm__buf *src;
  int w;
  for (;;) {
    if (c->writing || c->closing || !has_output(c))
      return;
    if (c->tls && seal(c))
      return;
    /* What goes on the wire: the queue itself, or its ciphertext. */
    src = c->tls ? &c->wire : &c->out;
    if (src->len == 0)
      return;
    uv_buf_t b = uv_buf_init(src->data, (unsigned)src->len);
    w = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (w != (int)src->len)
      break;
    src->len = 0;
    if (src->cap > KEEP_CAP)
      dm__buf_free(src);
    if (!c->tls || !c->out.len || c->tls_stalled)
      return;
    /* TLS: the next chunk of a big packet. */
  }
  if (w < 0 && w != UV_EAGAIN) {
    dm__conn_close(c, uv_strerror(w));
    return;
  }
  if (w > 0)
    dm__buf_consume(src, (size_t)w);
  /* The rest goes in the background; the queue keeps collecting
   * meanwhile. */
  dm__buf tmp = c->inflight;
  c->inflight = *src;
  *src = tmp;
  src->len = 0;
  c->writing = 1;
  c->wreq.data = c;
  uv_buf_t b = uv_buf_init(c->inflight.data, (unsigned)c->inflight.len);
  int r = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_written);
  if (r) {
    c->writing = 0;
    dm__conn_close(c, uv_strerror(r));
  }
}

void dm__conn_flush_all(dm__dist *n) {
  while (n->dirty) {
    dm__conn *c = n->dirty;
    n->dirty = c->next_dirty;
    c->dirty = 0;
    flush(c);
  }
}
