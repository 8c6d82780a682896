/* The listen socket: its acceptor thread, which runs ei's handshake, and
 * the registration with epmd, kept while the node lives and renewed when
 * epmd comes back. Accepted sockets go to the table on the loop thread. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dist/dist.h"
#include "dm.h"

#define PUBLISH_RETRY_MS 500

struct dm__accepted {
  struct dm__accepted *next;
  int fd;
  char peer[MAXNODELEN + 1];
};

/* ---- acceptor thread ------------------------------------------------------ */

static void *acceptor_main(void *arg) {
  dm__dist *d = arg;
  while (!atomic_load(&d->stopping)) {
    struct pollfd pfd = {.fd = d->listen_fd, .events = POLLIN};
    if (poll(&pfd, 1, 200) <= 0)
      continue;
    ErlConnect con;
    int fd = ei_accept_tmo(&d->ec, d->listen_fd, &con, d->cfg.handshake_ms);
    if (fd < 0) {
      atomic_fetch_add(&d->stats.handshake_failures, 1);
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
    atomic_fetch_add(&d->stats.connections_accepted, 1);
    a->fd = fd;
    snprintf(a->peer, sizeof a->peer, "%s", con.nodename);
    pthread_mutex_lock(&d->accept_mx);
    a->next = d->accepted;
    d->accepted = a;
    pthread_mutex_unlock(&d->accept_mx);
    uv_async_send(&d->accept_async);
  }
  return NULL;
}

static void on_accepted(uv_async_t *h) {
  dm__dist *d = h->data;
  pthread_mutex_lock(&d->accept_mx);
  struct dm__accepted *a = d->accepted;
  d->accepted = NULL;
  pthread_mutex_unlock(&d->accept_mx);
  while (a) {
    struct dm__accepted *next = a->next;
    if (atomic_load(&d->stopping)) {
      close(a->fd);
    } else {
      DM_INFO("connection from %s", a->peer);
      dm__dist_adopt(d, a->fd, a->peer);
    }
    dm__free(a);
    a = next;
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
  if (!atomic_load(&d->stopping))
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
  if (atomic_load(&d->stopping))
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
  d->listen_fd = ei_xlisten(&d->ec, (Erl_IpAddr)&d->listen_ip, &d->port, 128);
  if (d->listen_fd < 0) {
    DM_ERROR("cannot listen: %s", strerror(erl_errno));
    return DM_EIO;
  }
  uv_timer_init(d->loop, &d->publish_timer);
  d->publish_timer.data = d;
  uv_async_init(d->loop, &d->accept_async, on_accepted);
  d->accept_async.data = d;
  return 0;
}

int dm__listen_start(dm__dist *d) {
  if (pthread_create(&d->acceptor, NULL, acceptor_main, d) != 0) {
    DM_ERROR("cannot start the acceptor thread");
    return DM_EIO;
  }
  d->acceptor_started = 1;
  publish(d);
  return 0;
}

void dm__listen_stop(dm__dist *d) {
  atomic_store(&d->stopping, 1);
  if (d->listen_fd < 0)
    return;
  if (d->epmd_fd >= 0) {
    uv_poll_stop(&d->epmd_poll);
    uv_close((uv_handle_t *)&d->epmd_poll, on_epmd_closed);
  }
  uv_close((uv_handle_t *)&d->publish_timer, NULL);
  uv_close((uv_handle_t *)&d->accept_async, NULL);
}

void dm__listen_free(dm__dist *d) {
  if (d->acceptor_started)
    pthread_join(d->acceptor, NULL);
  while (d->accepted) {
    struct dm__accepted *a = d->accepted;
    d->accepted = a->next;
    close(a->fd);
    dm__free(a);
  }
  if (d->listen_fd >= 0)
    close(d->listen_fd);
}
