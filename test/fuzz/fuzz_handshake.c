/* libFuzzer target: both sides of the distribution handshake. Each input
 * is the byte stream of one would-be peer: its send_name and
 * challenge_reply, each with a 2-byte length, and whatever follows them,
 * which after a completed handshake is the connection's. An input whose
 * first byte has its top bit set (no length prefix of the accepting side
 * does) plays the accepting peer instead, to the node connecting out as
 * FUZZ_PEER: that byte dropped, the rest is its status, challenge and
 * challenge_ack. A node is built
 * as fuzz_node builds it, without listening, epmd or managers (its
 * services answer what a connected peer sends); one end of a fresh
 * socketpair goes to dm__hs_begin as an accepted socket would, the input
 * is written into the other end, which is then shut for writing, and the
 * loop runs until the handshake and any connection it became are gone.
 * What the node writes back is read and dropped.
 *
 * The node's challenge is fixed (FUZZ_CHALLENGE), so that an input can
 * carry the right digest and get past the challenge_reply;
 * make_hs_seeds.erl writes seeds that do. After every input the target
 * checks that the handshake ended, once: completed or counted as failed,
 * not left pending once its peer is gone, and its socket closed.
 * FUZZ_LOG=1 in the environment turns the node's log on, to see what an
 * input did. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ei.h>

#include "base/base.h"
#include "dm.h"
#include "node/node.h"

/* The node's name, cookie and challenge: make_hs_seeds.erl uses the same. */
#define NODE_NAME "fuzz@localhost"
#define COOKIE "fuzzcookie"
#define FUZZ_CHALLENGE 0x5eed1234u
#define CREATION 1234
#define FUZZ_PEER "fuzzpeer@localhost"
/* Interned peer names pile up (each input may name a new peer): the node
 * is rebuilt every REBUILD_EVERY inputs. */
#define REBUILD_EVERY 2000
/* Loop iterations an input may take. A handshake whose peer has shut its
 * side ends within a few; MAX_SPINS bounds a connection's packets. */
#define MAX_SPINS 4000

static uv_loop_t loop;
static dm__node node;
static int up;
static unsigned inputs;

static int fixed_challenge(uint32_t *out) {
  *out = FUZZ_CHALLENGE;
  return 0;
}

static int node_up(void) {
  dm__config cfg;
  dm__config_defaults(&cfg);
  cfg.name = NODE_NAME;
  cfg.net_ticktime = 3600;   /* no peer times out while the fuzzer runs */
  cfg.read_coalescing = 0;   /* not for a unix socket */
  cfg.max_outbuf = 1u << 20; /* what a peer that never reads may queue */
  cfg.max_packet = 1u << 20;
  if (uv_loop_init(&loop) != 0)
    return -1;
  int r = dm__node_init_unlistened(&node, &loop, &cfg, COOKIE);
  if (r == 0) {
    node.dist.ec.creation = CREATION;
    node.dist.ec.self.creation = CREATION;
    node.dist.challenge = fixed_challenge;
    /* dm__listen_init would; this node does not listen. */
    dm__hs_init(&node.dist);
    r = dm__services_init(&node);
  }
  if (r) {
    fprintf(stderr, "fuzz_handshake: cannot build the node: %s\n",
            dm_strerror(r));
    return -1;
  }
  dm__node_serve(&node);
  up = 1;
  return 0;
}

static void node_down(void) {
  dm__node_stop(&node);
  dm__hs_stop(&node.dist); /* dm__listen_stop would, had the node listened */
  uv_run(&loop, UV_RUN_DEFAULT);
  dm__node_free(&node);
  if (uv_loop_close(&loop) != 0)
    __builtin_trap(); /* a handle outlived the node */
  up = 0;
}

/* Reads and drops what the node wrote to the peer. */
static void drain(int fd) {
  static char sink[65536];
  while (read(fd, sink, sizeof sink) > 0)
    ;
}

static void spin(int fd) {
  uv_run(&loop, UV_RUN_NOWAIT);
  drain(fd);
}

static uint64_t ended(const dm__dist *d) {
  return d->stats.handshakes_completed + d->stats.handshake_failures;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  /* A peer end closed under a write must give EPIPE, as in main.c. */
  signal(SIGPIPE, SIG_IGN);
  dm__log_level = getenv("FUZZ_LOG") ? DM_LOG_DEBUG : DM_LOG_NONE;
  if (ei_init() != 0 || node_up() != 0)
    __builtin_trap();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int sv[2];
  if (!up || ++inputs % REBUILD_EVERY == 0) {
    if (up)
      node_down();
    if (node_up() != 0)
      __builtin_trap();
  }
  dm__dist *d = &node.dist;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return 0;
  fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
  fcntl(sv[1], F_SETFL, fcntl(sv[1], F_GETFL) | O_NONBLOCK);
  uint64_t before = ended(d);
  size_t conns = d->nconns;
  int connecting = size && (data[0] & 0x80);
  if (connecting) {
    data++;
    size--;
  }
  if ((connecting ? dm__hs_connect_socket(d, sv[0], FUZZ_PEER) : dm__hs_begin(d, sv[0])) != 0) {
    close(sv[1]);
    return 0;
  }
  /* The input goes in as the kernel takes it, while the node reads. */
  size_t off = 0;
  for (int i = 0; off < size && i < MAX_SPINS; i++) {
    ssize_t w = write(sv[1], data + off, size - off);
    if (w > 0)
      off += (size_t)w;
    else if (w < 0 && errno != EAGAIN && errno != EINTR)
      break; /* the node hung up */
    spin(sv[1]);
  }
  /* The peer has said all it will: the handshake ends, and so does the
   * connection it may have become, when it reads the end of the stream. */
  shutdown(sv[1], SHUT_WR);
  for (int i = 0; i < MAX_SPINS && (d->nhs || d->nconns > conns); i++)
    spin(sv[1]);
  /* Told nok, a connect waits for the peer's own connection until its
   * deadline, by design: ended here instead of waiting. */
  if (connecting && d->hs_head && d->hs_head->waiting && !d->hs_head->next)
    dm__hs_fail(d->hs_head, 0, "fuzz: no incoming connection will come");
  if (d->nhs || d->stats.handshakes_pending || ended(d) != before + 1)
    __builtin_trap(); /* a handshake outlived its peer, or ended twice */
  if (d->stats.connections_accepted + d->stats.connections_initiated !=
      d->stats.handshakes_completed)
    __builtin_trap();
  close(sv[1]);
  for (int i = 0; i < MAX_SPINS && d->nconns > conns; i++)
    uv_run(&loop, UV_RUN_NOWAIT);
  uv_run(&loop, UV_RUN_NOWAIT); /* the handshake's or connection's close */
  /* Nothing opened a descriptor since: one still open is the node's end,
   * leaked. */
  if (fcntl(sv[0], F_GETFD) != -1)
    __builtin_trap();
  return 0;
}
