/* libFuzzer target: the whole node behind a fake connection. One node is
 * built once, as main.c builds it but without listening (no epmd, no
 * signals): its services, the scheduler with the built-in behaviours but
 * probe (which would connect wherever its payload says), and three
 * managers. Each input is the byte stream of one peer: a fresh socketpair
 * is adopted as the connection from fuzzpeer@localhost, the input is
 * written into its other end, and the loop runs until the managers' pools
 * are idle, so packets go through framing, routing, the managers' API,
 * workers, the supervisor and the pool, and replies come back out (read
 * and dropped). Then the peer hangs up, which fires its links. The node
 * keeps its state from one input to the next, and is rebuilt every
 * REBUILD_EVERY inputs or once it holds more than MAX_WORKERS workers, so
 * memory and the work per input stay bounded. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ei.h>

#include "base/base.h"
#include "dm.h"
#include "dm/mgr.h"
#include "node/node.h"

extern const dm_behaviour dm__counter_behaviour;
extern const dm_behaviour dm__counter_hooks_behaviour;
extern const dm_behaviour dm__pingpong_behaviour;

static const dm_behaviour *const builtins[] = {
    &dm__counter_behaviour, &dm__counter_hooks_behaviour, &dm__pingpong_behaviour,
    NULL};

static const char *const managers[] = {
    "counters=counter,children=3,timeout=50,threads=1,max_mailbox=16",
    "hooks=counter_hooks,children=2,threads=1,max_mailbox=16,max_restarts=2",
    "pp=pingpong,threads=1,max_mailbox=16",
};

#define PEER "fuzzpeer@localhost"
/* Local pids carry the node's creation; a fixed one lets inputs name the
 * node's processes (make_seeds.erl uses the same). */
#define CREATION 1234
#define REBUILD_EVERY 2000
#define MAX_WORKERS 256
/* Loop iterations an input may take before the next one comes. */
#define MAX_SPINS 4000

static uv_loop_t loop;
static dm__node node;
static dm__sched sched;
static int up;
static unsigned inputs;

static int node_up(void) {
  dm__config cfg;
  dm__config_defaults(&cfg);
  cfg.name = "fuzz@localhost";
  cfg.net_ticktime = 3600;    /* no peer times out while the fuzzer runs */
  cfg.read_coalescing = 0;    /* not for a unix socket */
  cfg.max_outbuf = 1u << 20;  /* what a peer that never reads may queue */
  cfg.max_packet = 1u << 20;
  if (uv_loop_init(&loop) != 0)
    return -1;
  int r = dm__node_init_unlistened(&node, &loop, &cfg, "fuzzcookie");
  if (r == 0) {
    node.dist.ec.creation = CREATION;
    node.dist.ec.self.creation = CREATION;
    r = dm__services_init(&node);
  }
  if (r == 0)
    r = dm__sched_init(&sched, &node, 1, builtins);
  for (size_t i = 0; r == 0 && i < sizeof managers / sizeof managers[0]; i++)
    r = dm__sched_add_manager(&sched, managers[i]);
  if (r) {
    fprintf(stderr, "fuzz_node: cannot build the node: %s\n", dm_strerror(r));
    return -1;
  }
  dm__node_serve(&node);
  up = 1;
  return 0;
}

static void node_down(void) {
  dm__node_stop(&node);
  uv_run(&loop, UV_RUN_DEFAULT);
  dm__node_free(&node);
  if (uv_loop_close(&loop) != 0)
    __builtin_trap(); /* a handle outlived the node */
  up = 0;
}

static size_t pools_depth(void) {
  size_t k = 0;
  for (size_t i = 0; i < sched.nmanagers; i++)
    k += dm__pool_depth(sched.managers[i]->pool);
  return k;
}

/* Reads and drops what the node wrote to the peer. */
static void drain(int fd) {
  static char sink[65536];
  while (read(fd, sink, sizeof sink) > 0)
    ;
}

/* One loop iteration without blocking, and the peer's mail dropped. */
static void spin(int fd) {
  uv_run(&loop, UV_RUN_NOWAIT);
  drain(fd);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  /* A peer end closed under a write must give EPIPE, as in main.c. */
  signal(SIGPIPE, SIG_IGN);
  dm__log_level = DM_LOG_NONE;
  if (ei_init() != 0 || node_up() != 0)
    __builtin_trap();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int sv[2];
  if (!up || ++inputs % REBUILD_EVERY == 0 || sched.workers.live > MAX_WORKERS) {
    if (up)
      node_down();
    if (node_up() != 0)
      __builtin_trap();
  }
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return 0;
  fcntl(sv[1], F_SETFL, fcntl(sv[1], F_GETFL) | O_NONBLOCK);
  /* The peer takes aliases, as every OTP 24+ node does: replies to
   * alias-tagged calls go out as ALIAS_SEND. */
  if (dm__dist_adopt(&node.dist, sv[0], PEER, DM__DFLAG_ALIAS, NULL) != 0) {
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
      break; /* the node hung up (an oversized or undecodable stream) */
    spin(sv[1]);
  }
  /* Until what the input started has come back from the pools. */
  int idle = 0;
  for (int i = 0; i < MAX_SPINS && idle < 3; i++) {
    spin(sv[1]);
    if (pools_depth() == 0)
      idle++;
    else {
      idle = 0;
      sched_yield();
    }
  }
  /* The peer hangs up: the node sees the end of its stream, drops the
   * connection and fires the links to the peer's processes. */
  close(sv[1]);
  for (int i = 0; i < MAX_SPINS && dm__dist_conn(&node.dist, PEER); i++)
    uv_run(&loop, UV_RUN_NOWAIT);
  uv_run(&loop, UV_RUN_NOWAIT); /* the connection's close callback */
  return 0;
}
