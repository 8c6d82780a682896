/* The listen socket: accepting connections on the loop thread, each
 * handed to a handshake of its own (handshake.c), and the registration
 * with epmd, kept while the node lives and renewed when epmd comes back. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dist/dist.h"
#include "dm.h"

#define PUBLISH_RETRY_MS 500
/* Connections taken per wakeup, so a flood cannot starve the loop. */
#define ACCEPT_BATCH 64
/* Connections the kernel holds before they are accepted. At 128 (what
 * ei and BEAM ask for), 200 peers connecting at once overflowed it and
 * the dropped ones came back a second later (W5); the kernel caps this
 * at net.core.somaxconn. */
#define LISTEN_BACKLOG 1024
/* Out of descriptors, accepting pauses this long, twice as long after a
 * retry that could take no connection, up to the most (see back_off). */
#define ACCEPT_BACKOFF_MS 100
#define ACCEPT_BACKOFF_MAX_MS 1000

/* ---- accepting ------------------------------------------------------------ */

static void on_listen_readable(uv_poll_t *p, int status, int events);

static void on_accept_retry(uv_timer_t *t) {
  dm__dist *d = t->data;
  if (!d->stopping)
    uv_poll_start(&d->listen_poll, UV_READABLE, on_listen_readable);
}

/* accept failed for want of a descriptor (or of kernel memory). The
 * connection stays in the backlog and the listen socket readable: polling
 * it would spin the loop until a descriptor is freed. It is left alone
 * for a while instead: ACCEPT_BACKOFF_MS again after a wakeup that took
 * some connections, twice the last pause after one that took none. Only
 * the first pause of a run is logged, and its end: the first wakeup that
 * takes all that waits, or a whole batch, without running out. */
static void back_off(dm__dist *d, int err, int took) {
  if (!d->accept_backoff_ms) {
    DM_WARN("accept: %s; pausing accepting, retrying every %d to %d ms",
            strerror(err), ACCEPT_BACKOFF_MS, ACCEPT_BACKOFF_MAX_MS);
    d->accept_backoff_ms = ACCEPT_BACKOFF_MS;
  } else if (took) {
    d->accept_backoff_ms = ACCEPT_BACKOFF_MS;
  } else if ((d->accept_backoff_ms *= 2) > ACCEPT_BACKOFF_MAX_MS) {
    d->accept_backoff_ms = ACCEPT_BACKOFF_MAX_MS;
  }
  d->stats.accept_backoffs++;
  uv_poll_stop(&d->listen_poll);
  uv_timer_start(&d->accept_timer, on_accept_retry, d->accept_backoff_ms, 0);
}

static void on_listen_readable(uv_poll_t *p, int status, int events) {
  dm__dist *d = p->data;
  int took = 0;
  (void)events;
  if (status < 0) {
    DM_WARN("listen socket: %s", uv_strerror(status));
    return;
  }
  for (int i = 0; i < ACCEPT_BATCH && !d->stopping; i++) {
    int fd = accept4(d->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
          errno == ENOMEM) {
        back_off(d, errno, took);
        return;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        break;
      DM_WARN("accept: %s", strerror(errno));
      return;
    }
    took++;
    /* As ei_accept did: no Nagle delay, and dead peers found out. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    dm__hs_begin(d, fd);
  }
  if (d->accept_backoff_ms && !d->stopping) {
    DM_INFO("accepting again");
    d->accept_backoff_ms = 0;
  }
}

/* ---- epmd ----------------------------------------------------------------- */

static void publish(dm__dist *d);

static void on_publish_timer(uv_timer_t *t) { publish(t->data); }

static void on_epmd_closed(uv_handle_t *h) {
  dm__dist *d = h->data;
  if (d->epmd_fd >= 0)
    close(d->epmd_fd);
  d->epmd_fd = -1;
  if (!d->stopping)
    uv_timer_start(&d->publish_timer, on_publish_timer, PUBLISH_RETRY_MS, 0);
}

static void on_epmd_event(uv_poll_t *h, int status, int events) {
  dm__dist *d = h->data;
  char b[64];
  (void)events;
  /* epmd never writes on a registration socket; readable means it closed. */
  if (status == 0 && read(d->epmd_fd, b, sizeof b) > 0)
    return;
  DM_WARN("epmd went away; registering again when it is back");
  uv_poll_stop(h);
  uv_close((uv_handle_t *)h, on_epmd_closed);
}

/* ei says EIO both when epmd refuses the name and when there is no epmd
 * to ask: whether epmd accepts a connection on the loopback (where ei
 * looks for it, at $ERL_EPMD_PORT or 4369) tells the two apart. */
static int epmd_reachable(void) {
  const char *env = getenv("ERL_EPMD_PORT");
  long port = env && *env ? strtol(env, NULL, 10) : 4369;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return 0;
  int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
  if (!ok && errno == EINPROGRESS) {
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int err = 0;
    socklen_t len = sizeof err;
    ok = poll(&p, 1, 1000) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 &&
         err == 0;
  }
  close(fd);
  return ok;
}

/* The first registration failed: a taken name is final, as for a BEAM
 * node; a missing epmd is waited for, up to epmd_retry_s. Once the node
 * was published, it registers again for as long as it lives. Returns 1
 * when publishing goes on. */
static int publish_failed(dm__dist *d) {
  int err = erl_errno;
  int taken = err == EIO && epmd_reachable();
  if (d->published) {
    if (taken)
      DM_WARN("epmd refused the name %s (is it taken?); retrying", d->ec.thisnodename);
    else
      DM_DEBUG("epmd registration failed (%s); retrying", strerror(err));
    return 1;
  }
  if (taken) {
    DM_ERROR("the name %s is taken: epmd refused it (another node runs under "
             "that name)", d->ec.thisnodename);
    return 0;
  }
  uint64_t waited = uv_now(d->loop) - d->publish_since;
  if (waited >= (uint64_t)d->cfg.epmd_retry_s * 1000) {
    DM_ERROR("epmd is not reachable after %u s (--epmd-retry-s): giving up",
             d->cfg.epmd_retry_s);
    return 0;
  }
  if (!waited)
    DM_WARN("epmd is not reachable; retrying for up to %u s", d->cfg.epmd_retry_s);
  return 1;
}

static void publish(dm__dist *d) {
  if (d->stopping)
    return;
  if (!d->published && !d->publish_since)
    d->publish_since = uv_now(d->loop);
  int fd = ei_publish_tmo(&d->ec, d->port, 1000);
  if (fd < 0) {
    if (publish_failed(d))
      uv_timer_start(&d->publish_timer, on_publish_timer, PUBLISH_RETRY_MS, 0);
    else
      d->ops->unpublished(d->ud);
    return;
  }
  d->epmd_fd = fd;
  d->stats.epmd_registrations++;
  uv_poll_init(d->loop, &d->epmd_poll, fd);
  d->epmd_poll.data = d;
  uv_poll_start(&d->epmd_poll, UV_READABLE | UV_DISCONNECT, on_epmd_event);
  DM_INFO("registered with epmd as %s on port %d", d->ec.thisnodename, d->port);
  if (!d->published) {
    d->published = 1;
    d->ops->published(d->ud);
  }
}

/* ---- life cycle ----------------------------------------------------------- */

int dm__listen_init(dm__dist *d) {
  d->port = 0;
  d->listen_fd = ei_xlisten(&d->ec, (Erl_IpAddr)&d->listen_ip, &d->port, LISTEN_BACKLOG);
  if (d->listen_fd < 0) {
    DM_ERROR("cannot listen: %s", strerror(erl_errno));
    return DM_EIO;
  }
  int fl = fcntl(d->listen_fd, F_GETFL);
  if (fl < 0 || fcntl(d->listen_fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
      uv_poll_init(d->loop, &d->listen_poll, d->listen_fd)) {
    DM_ERROR("cannot watch the listen socket: %s", strerror(errno));
    close(d->listen_fd);
    d->listen_fd = -1;
    return DM_EIO;
  }
  d->listen_poll.data = d;
  d->listening = 1;
  uv_timer_init(d->loop, &d->publish_timer);
  d->publish_timer.data = d;
  uv_timer_init(d->loop, &d->accept_timer);
  d->accept_timer.data = d;
  return 0;
}

int dm__listen_start(dm__dist *d) {
  int r = uv_poll_start(&d->listen_poll, UV_READABLE, on_listen_readable);
  if (r) {
    DM_ERROR("cannot accept: %s", uv_strerror(r));
    return DM_EIO;
  }
  publish(d);
  return 0;
}

void dm__listen_stop(dm__dist *d) {
  d->stopping = 1;
  if (!d->listening)
    return;
  if (d->epmd_fd >= 0) {
    uv_poll_stop(&d->epmd_poll);
    uv_close((uv_handle_t *)&d->epmd_poll, on_epmd_closed);
  }
  uv_close((uv_handle_t *)&d->listen_poll, NULL);
  uv_close((uv_handle_t *)&d->publish_timer, NULL);
  uv_close((uv_handle_t *)&d->accept_timer, NULL);
}

void dm__listen_free(dm__dist *d) {
  if (d->listen_fd >= 0)
    close(d->listen_fd);
}
