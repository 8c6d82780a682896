/* The node object: distribution, the process tables and the packet
 * buffer set up together; the loop's phases (the hooks of the layers
 * above, then output) and its signals; an orderly stop. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "dm.h"
#include "node/node.h"

static int on_packet(void *ud, dm__conn *c, const char *pkt, size_t len) {
  return dm__node_route(ud, c, pkt, len);
}

static void on_peer_lost(void *ud, uint32_t peer) {
  dm__proc_peer_lost(ud, peer);
  dm__watch_peer_lost(ud, peer);
  dm__remote_peer_lost(ud, peer);
}

static void on_connected(void *ud, uint32_t peer, int ok) {
  dm__remote_connected(ud, peer, ok);
}

static void on_published(void *ud) {
  dm__node *n = ud;
  if (n->ready)
    return;
  n->ready = 1;
  printf("READY %s\n", n->dist.ec.thisnodename);
  fflush(stdout);
}

/* The name cannot be had: the node stops and the program exits 1, as a
 * BEAM node does. */
static void on_unpublished(void *ud) {
  dm__node *n = ud;
  n->exit_status = 1;
  dm__node_stop(n);
}

static const dm__dist_ops dist_ops = {on_packet, on_peer_lost, on_published,
                                      on_unpublished, on_connected};

int dm__node_add_hooks(dm__node *n, const dm__node_hooks *ops, void *ud) {
  if (n->nhooks == DM__HOOKS_MAX)
    return DM_ENOMEM;
  n->hooks[n->nhooks].ops = ops;
  n->hooks[n->nhooks].ud = ud;
  n->nhooks++;
  return 0;
}

static void on_prepare(uv_prepare_t *h) {
  dm__node *n = h->data;
  /* Just before the loop blocks: the layers above do their batched work
   * (callbacks to the pools, the wheel's timer), then replies go out in
   * one write per peer. */
  for (size_t i = 0; i < n->nhooks; i++)
    if (n->hooks[i].ops->prepare)
      n->hooks[i].ops->prepare(n->hooks[i].ud);
  dm__conn_flush_all(&n->dist);
  dm__node_pkt_trim(n);
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

int dm__node_init_unlistened(dm__node *n, uv_loop_t *loop, const dm__config *cfg,
                             const char *cookie) {
  memset(n, 0, sizeof *n);
  n->loop = loop;
  n->exit_with_stdin = cfg->exit_with_stdin;
  n->version = DM_VERSION;
  n->start_ms = uv_now(loop);
  {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    n->start_wall_us = (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
  }
  dm__nametab_init(&n->names);
  dm__proctab_init(&n->pids);
  dm__pidtab_init(&n->monitors);
  dm__pidtab_init(&n->links);
  if (ei_x_new(&n->pkt) < 0)
    return DM_ENOMEM;
  int r = dm__dist_init(&n->dist, loop, cfg, cookie, &dist_ops, n);
  if (r)
    return r;
  /* Handshakes are made without a listen socket too: a send to a node
   * not connected yet starts one. */
  dm__hs_init(&n->dist);
  uv_prepare_init(loop, &n->flush_prepare);
  n->flush_prepare.data = n;
  uv_signal_init(loop, &n->sigterm);
  n->sigterm.data = n;
  uv_signal_init(loop, &n->sigint);
  n->sigint.data = n;
  dm__remote_init(n);
  n->handles = 1;
  return 0;
}

int dm__node_init(dm__node *n, uv_loop_t *loop, const dm__config *cfg,
                  const char *cookie) {
  int r = dm__node_init_unlistened(n, loop, cfg, cookie);
  return r ? r : dm__listen_init(&n->dist);
}

void dm__node_serve(dm__node *n) {
  dm__dist_start(&n->dist);
  uv_prepare_start(&n->flush_prepare, on_prepare);
}

int dm__node_start(dm__node *n) {
  dm__node_serve(n);
  uv_signal_start(&n->sigterm, on_signal, SIGTERM);
  uv_signal_start(&n->sigint, on_signal, SIGINT);
  if (n->exit_with_stdin) {
    /* The BEAM port that started us closes our stdin when its owner
     * dies; no orphan is left behind. */
    if (uv_poll_init(n->loop, &n->stdin_poll, 0) != 0) {
      DM_ERROR("--exit-with-stdin: standard input cannot be watched");
      return DM_EINVAL;
    }
    n->stdin_poll.data = n;
    uv_poll_start(&n->stdin_poll, UV_READABLE | UV_DISCONNECT, on_stdin);
  }
  return dm__listen_start(&n->dist);
}

void dm__node_stop(dm__node *n) {
  if (n->stopping)
    return;
  n->stopping = 1;
  dm__listen_stop(&n->dist);
  dm__hs_stop(&n->dist);
  dm__dist_stop(&n->dist);
  if (n->handles) {
    uv_close((uv_handle_t *)&n->flush_prepare, NULL);
    uv_close((uv_handle_t *)&n->sigterm, NULL);
    uv_close((uv_handle_t *)&n->sigint, NULL);
    dm__remote_stop(n);
  }
  if (n->stdin_poll.data == n)
    uv_close((uv_handle_t *)&n->stdin_poll, NULL);
  for (size_t i = 0; i < n->nhooks; i++)
    if (n->hooks[i].ops->stop)
      n->hooks[i].ops->stop(n->hooks[i].ud);
}

void dm__node_free(dm__node *n) {
  dm__listen_free(&n->dist);
  /* Last registered, first freed: a layer's processes go before the
   * tables they are in. */
  for (size_t i = n->nhooks; i-- > 0;)
    if (n->hooks[i].ops->free)
      n->hooks[i].ops->free(n->hooks[i].ud);
  dm__remote_free(n);
  dm__watch_free(n);
  dm__dist_free(&n->dist);
  dm__nametab_free(&n->names);
  dm__proctab_free(&n->pids);
  dm__pidtab_free(&n->monitors);
  dm__pidtab_free(&n->links);
  ei_x_free(&n->pkt);
}
